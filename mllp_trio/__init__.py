"""mllp_trio: the HL7 v2 transport for Trio.

A sans-IO framing core (MLLP release 1 and 2, HLLP), a Trio listener and
client over mutual TLS, the HL7 acknowledgement layer, and a durable store
that commits every message before it is acknowledged. Everything public is
imported from here; the underscore modules are private.
"""

from mllp_trio._client import MLLPClient, open_mllp_connection
from mllp_trio._config import ClientConfig, FramingConfig, ServerConfig
from mllp_trio._errors import (
    ConnectionClosedError,
    DeliveryFailed,
    LocalProtocolError,
    MLLPError,
    MLLPTimeoutError,
    RemoteProtocolError,
)
from mllp_trio._hl7._ack import (
    AckErrorDetail,
    AckReply,
    ApplicationError,
    ApplicationReject,
    CommitError,
    CommitReject,
    ControlIdMismatch,
    ErrorInfo,
    InvalidReply,
    NegativeAcknowledgement,
    build_ack,
    parse_reply,
)
from mllp_trio._hl7._charsets import CharsetError
from mllp_trio._hl7._msh import MSHError, MSHInfo, read_msh
from mllp_trio._hl7._peer import ClientIdentity, PeerInfo
from mllp_trio._hl7._pipeline import (
    Handler,
    HL7Config,
    HL7Error,
    HL7Refusal,
    HL7Reject,
    InboundMessage,
    Outcome,
    Router,
)
from mllp_trio._io._sslsocket import SSLSocketStream
from mllp_trio._io._stream import MLLPStream
from mllp_trio._io._tlsstream import TLSStreamFactory, ssl_socket_stream, trio_ssl_stream
from mllp_trio._server import MLLPServer, ServerStats, serve_mllp
from mllp_trio._tls._context import (
    AllowList,
    ClientNotAllowed,
    ClientTLSConfig,
    ServerTLS,
    ServerTLSConfig,
    TLSConfigError,
    client_ssl_context,
    identity_from_ssl,
    server_ssl_context,
)
from mllp_trio._tls._devcerts import DevCertPaths, DevCertsExist, ensure_dev_certs, write_dev_certs
from mllp_trio._version import __version__
from mllp_trio.proto._events import (
    NEED_DATA,
    BadBlock,
    CommitAck,
    CommitNak,
    EndOfStream,
    HLLPNak,
    InvalidFrame,
    Message,
    NakReason,
)
from mllp_trio.proto._framing import DEFAULT_MAX_MESSAGE_SIZE, FramingStats
from mllp_trio.proto._hllp import HLLPConnection, oracle_checksum, sum_checksum, xor_checksum
from mllp_trio.proto._mllp import MLLPConnection
from mllp_trio.store._base import (
    CommitResult,
    InboundRecord,
    MessageInfo,
    MessageStore,
    OutboundMessage,
    OutboundStats,
    StoredMessage,
    StoreError,
    StoreErrorKind,
    StoreStats,
    backoff_delay,
)
from mllp_trio.store._journal import Delivery, DurableProcessor
from mllp_trio.store._queue import QueueConfig, QueuedSender, SendReport
from mllp_trio.store._sqlite import SQLiteStore, SQLiteStoreConfig, open_sqlite_store

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "NEED_DATA",
    "AckErrorDetail",
    "AckReply",
    "AllowList",
    "ApplicationError",
    "ApplicationReject",
    "BadBlock",
    "CharsetError",
    "ClientConfig",
    "ClientIdentity",
    "ClientNotAllowed",
    "ClientTLSConfig",
    "CommitAck",
    "CommitError",
    "CommitNak",
    "CommitReject",
    "CommitResult",
    "ConnectionClosedError",
    "ControlIdMismatch",
    "Delivery",
    "DeliveryFailed",
    "DevCertPaths",
    "DevCertsExist",
    "DurableProcessor",
    "EndOfStream",
    "ErrorInfo",
    "FramingConfig",
    "FramingStats",
    "HL7Config",
    "HL7Error",
    "HL7Refusal",
    "HL7Reject",
    "HLLPConnection",
    "HLLPNak",
    "Handler",
    "InboundMessage",
    "InboundRecord",
    "InvalidFrame",
    "InvalidReply",
    "LocalProtocolError",
    "MLLPClient",
    "MLLPConnection",
    "MLLPError",
    "MLLPServer",
    "MLLPStream",
    "MLLPTimeoutError",
    "MSHError",
    "MSHInfo",
    "Message",
    "MessageInfo",
    "MessageStore",
    "NakReason",
    "NegativeAcknowledgement",
    "OutboundMessage",
    "OutboundStats",
    "Outcome",
    "PeerInfo",
    "QueueConfig",
    "QueuedSender",
    "RemoteProtocolError",
    "Router",
    "SQLiteStore",
    "SQLiteStoreConfig",
    "SSLSocketStream",
    "SendReport",
    "ServerConfig",
    "ServerStats",
    "ServerTLS",
    "ServerTLSConfig",
    "StoreError",
    "StoreErrorKind",
    "StoreStats",
    "StoredMessage",
    "TLSConfigError",
    "TLSStreamFactory",
    "__version__",
    "backoff_delay",
    "build_ack",
    "client_ssl_context",
    "ensure_dev_certs",
    "identity_from_ssl",
    "open_mllp_connection",
    "open_sqlite_store",
    "oracle_checksum",
    "parse_reply",
    "read_msh",
    "serve_mllp",
    "server_ssl_context",
    "ssl_socket_stream",
    "sum_checksum",
    "trio_ssl_stream",
    "write_dev_certs",
    "xor_checksum",
]

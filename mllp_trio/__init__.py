"""mllp_trio: the HL7 v2 transport for Trio.

A Trio listener (:func:`serve_mllp`) and client (:func:`open_mllp_client`)
for MLLP release 1 and 2 and HLLP over mutual TLS, with the HL7
acknowledgement rules built in. Two public namespaces go further:
:mod:`mllp_trio.proto`, the sans-IO framing and exchange core, and
:mod:`mllp_trio.store`, the journal that stores every message before it is
acknowledged and the durable sending queue. Everything else is private.
"""

from mllp_trio import proto, store
from mllp_trio._client import MLLPClient, open_mllp_client
from mllp_trio._config import ClientConfig, ServerConfig
from mllp_trio._errors import (
    ConnectError,
    ConnectionClosedError,
    DeliveryFailed,
    MLLPError,
    MLLPTimeoutError,
    ProtocolError,
    TLSHandshakeError,
    TLSRefusedError,
    TransportError,
)
from mllp_trio._hl7 import (
    AckCode,
    AckErrorDetail,
    AckReply,
    ApplicationError,
    ApplicationReject,
    Charset,
    CharsetError,
    ClientIdentity,
    CommitError,
    CommitReject,
    ControlIdMismatch,
    ErrorInfo,
    Handler,
    HL7Config,
    HL7Error,
    HL7Refusal,
    HL7Reject,
    InboundMessage,
    InvalidReply,
    MSHError,
    MSHInfo,
    NegativeAcknowledgement,
    Outcome,
    PeerInfo,
    Router,
    build_ack,
    parse_reply,
    read_msh,
)
from mllp_trio._public import expose
from mllp_trio._server import HL7Processor, MLLPServer, Processor, ServerStats, serve_mllp
from mllp_trio._service import ServiceConfig, ServiceMonitor
from mllp_trio._tls import (
    AllowList,
    ClientTLSConfig,
    ServerTLS,
    ServerTLSConfig,
    TLSConfigError,
    client_ssl_context,
    server_ssl_context,
)
from mllp_trio._version import __version__
from mllp_trio.proto import Framing, FramingConfig

__all__ = [
    "AckCode",
    "AckErrorDetail",
    "AckReply",
    "AllowList",
    "ApplicationError",
    "ApplicationReject",
    "Charset",
    "CharsetError",
    "ClientConfig",
    "ClientIdentity",
    "ClientTLSConfig",
    "CommitError",
    "CommitReject",
    "ConnectError",
    "ConnectionClosedError",
    "ControlIdMismatch",
    "DeliveryFailed",
    "ErrorInfo",
    "Framing",
    "FramingConfig",
    "HL7Config",
    "HL7Error",
    "HL7Processor",
    "HL7Refusal",
    "HL7Reject",
    "Handler",
    "InboundMessage",
    "InvalidReply",
    "MLLPClient",
    "MLLPError",
    "MLLPServer",
    "MLLPTimeoutError",
    "MSHError",
    "MSHInfo",
    "NegativeAcknowledgement",
    "Outcome",
    "PeerInfo",
    "Processor",
    "ProtocolError",
    "Router",
    "ServerConfig",
    "ServerStats",
    "ServerTLS",
    "ServerTLSConfig",
    "ServiceConfig",
    "ServiceMonitor",
    "TLSConfigError",
    "TLSHandshakeError",
    "TLSRefusedError",
    "TransportError",
    "__version__",
    "build_ack",
    "client_ssl_context",
    "open_mllp_client",
    "parse_reply",
    "proto",
    "read_msh",
    "serve_mllp",
    "server_ssl_context",
    "store",
]

expose("mllp_trio", globals(), __all__)

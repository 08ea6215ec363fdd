"""mllp_trio.proto: the sans-IO core, for any I/O framework (like h11 for HTTP).

Framing state machines for MLLP release 1 and 2 (:class:`MLLPConnection`)
and HLLP (:class:`HLLPConnection`): bytes in with ``receive_data()``, events
out with ``next_event()``, bytes to write from ``send()``. :class:`Exchange`
adds the delivery rules on top (commit wait, NAK, resend, ACK timeout).
Nothing here opens a socket, reads a clock or imports Trio.
"""

from mllp_trio._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from mllp_trio._public import expose
from mllp_trio.proto._config import Framing, FramingConfig, HLLPChecksum
from mllp_trio.proto._events import (
    NEED_DATA,
    BadBlock,
    CommitAck,
    CommitNak,
    EndOfStream,
    Event,
    HLLPNak,
    InvalidFrame,
    Message,
    NakReason,
)
from mllp_trio.proto._exchange import (
    Delivered,
    DeliveryFailure,
    Exchange,
    ExchangeEvent,
    Rejected,
    Resend,
)
from mllp_trio.proto._framing import DEFAULT_MAX_MESSAGE_SIZE, FramingStats
from mllp_trio.proto._hllp import (
    HLLP_MAX_DATA,
    Checksum,
    HLLPConnection,
    oracle_checksum,
    sum_checksum,
    xor_checksum,
)
from mllp_trio.proto._mllp import MLLPConnection

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HLLP_MAX_DATA",
    "NEED_DATA",
    "BadBlock",
    "Checksum",
    "CommitAck",
    "CommitNak",
    "Delivered",
    "DeliveryFailure",
    "EndOfStream",
    "Event",
    "Exchange",
    "ExchangeEvent",
    "Framing",
    "FramingConfig",
    "FramingStats",
    "HLLPChecksum",
    "HLLPConnection",
    "HLLPNak",
    "InvalidFrame",
    "LocalProtocolError",
    "MLLPConnection",
    "Message",
    "NakReason",
    "ProtocolError",
    "Rejected",
    "RemoteProtocolError",
    "Resend",
    "oracle_checksum",
    "sum_checksum",
    "xor_checksum",
]

expose("mllp_trio.proto", globals(), [n for n in __all__ if "Error" not in n])

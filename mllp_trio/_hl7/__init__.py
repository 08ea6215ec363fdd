"""The sans-IO HL7 layer: from the bytes of one message to its acknowledgements.

Nothing here does I/O or imports Trio. The modules, each with one job, in
the order they import each other (no module imports one listed after it):

* ``_msh``: the MSH reader, segment terminators, HL7 escaping and unescaping;
* ``_charsets``: MSH-18 (table 0211) to Python codecs;
* ``_peer``: who sent a message (address, TLS identity);
* ``_ack``: building acknowledgements, control ids, timestamps;
* ``_policy``: which codes are negative, which failures pass (stated once);
* ``_reply``: reading received acknowledgements;
* ``_config``: :class:`HL7Config`;
* ``_handler``: the handler contract (message, refusals, router);
* ``_pipeline``: the stages from message to acknowledgements.

Import from this package (``from mllp_trio._hl7 import respond``), not from
the modules: it re-exports every name the other layers use.
"""

from mllp_trio._hl7._ack import (
    TABLE_0357,
    AckCode,
    ErrorInfo,
    build_ack,
    framing_safe,
    hl7_timestamp,
    new_control_id,
)
from mllp_trio._hl7._charsets import (
    Charset,
    CharsetError,
    codec_for,
    decode_text,
    message_charset,
    resolve_charset,
)
from mllp_trio._hl7._config import HL7Config, message_type_pattern
from mllp_trio._hl7._handler import (
    Handler,
    HL7Error,
    HL7Refusal,
    HL7Reject,
    InboundMessage,
    Router,
)
from mllp_trio._hl7._msh import (
    MSHError,
    MSHInfo,
    escape_text,
    normalise_segments,
    read_msh,
    unescape,
)
from mllp_trio._hl7._peer import ClientIdentity, PeerInfo
from mllp_trio._hl7._pipeline import (
    Disposition,
    Outcome,
    Verdict,
    acknowledge,
    admit,
    check_rules,
    handler_failed,
    handler_returned,
    incoming_ack,
    prepare_message,
    refuse,
    refuse_unreadable,
    respond,
    run_handler,
)
from mllp_trio._hl7._policy import (
    NEGATIVE_CODES,
    REJECT_CODES,
    RETRY_LATER_CODE,
    is_negative,
    is_rejection,
    is_transient,
)
from mllp_trio._hl7._reply import (
    AckErrorDetail,
    AckReply,
    ApplicationError,
    ApplicationReject,
    CommitError,
    CommitReject,
    ControlIdMismatch,
    InvalidReply,
    NegativeAcknowledgement,
    acknowledged_id,
    parse_reply,
    reply_code,
)

__all__ = [
    "NEGATIVE_CODES",
    "REJECT_CODES",
    "RETRY_LATER_CODE",
    "TABLE_0357",
    "AckCode",
    "AckErrorDetail",
    "AckReply",
    "ApplicationError",
    "ApplicationReject",
    "Charset",
    "CharsetError",
    "ClientIdentity",
    "CommitError",
    "CommitReject",
    "ControlIdMismatch",
    "Disposition",
    "ErrorInfo",
    "HL7Config",
    "HL7Error",
    "HL7Refusal",
    "HL7Reject",
    "Handler",
    "InboundMessage",
    "InvalidReply",
    "MSHError",
    "MSHInfo",
    "NegativeAcknowledgement",
    "Outcome",
    "PeerInfo",
    "Router",
    "Verdict",
    "acknowledge",
    "acknowledged_id",
    "admit",
    "build_ack",
    "check_rules",
    "codec_for",
    "decode_text",
    "escape_text",
    "framing_safe",
    "handler_failed",
    "handler_returned",
    "hl7_timestamp",
    "incoming_ack",
    "is_negative",
    "is_rejection",
    "is_transient",
    "message_charset",
    "message_type_pattern",
    "new_control_id",
    "normalise_segments",
    "parse_reply",
    "prepare_message",
    "read_msh",
    "refuse",
    "refuse_unreadable",
    "reply_code",
    "resolve_charset",
    "respond",
    "run_handler",
    "unescape",
]

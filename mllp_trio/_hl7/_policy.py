"""The acknowledgement rules, each stated once: which codes say no, and which failures pass.

Every layer that judges an acknowledgement asks here instead of comparing
codes itself: the pipeline (is the handler's reply a refusal?), the journal
(is a stored reply a refusal? is a failure worth retrying?), the release 2
listener (commit NAK or commit ACK?) and the outbound queue (retry or dead
letter?).
"""

from __future__ import annotations

from typing import Final

from mllp_trio._hl7._ack import AckCode, ErrorInfo

__all__ = [
    "NEGATIVE_CODES",
    "REJECT_CODES",
    "RETRY_LATER_CODE",
    "is_negative",
    "is_rejection",
    "is_transient",
]

#: MSA-1 codes that say the message was not taken: AE, AR (original mode),
#: CE, CR (enhanced mode, accept acknowledgement).
NEGATIVE_CODES: Final[frozenset[str]] = frozenset({AckCode.AE, AckCode.AR, AckCode.CE, AckCode.CR})

#: The negative codes that refuse a message for good (AR, CR): sending it
#: again unchanged cannot succeed. AE and CE report an error in processing.
REJECT_CODES: Final[frozenset[str]] = frozenset({AckCode.AR, AckCode.CR})

#: Table 0357 code 207, "application internal error": the code this library
#: answers when it could not process a message for a passing reason (the
#: handler raised, the store failed), and reads as "send it again later".
RETRY_LATER_CODE: Final = 207


def is_negative(code: str) -> bool:
    """Whether an MSA-1 code says the message was not taken (AE, AR, CE or CR).

    AA, CA, and an empty or unknown code (a reply without MSA) are not negative.

    Args:
        code: MSA-1, as an :class:`AckCode` or its text.
    """
    return code in NEGATIVE_CODES


def is_rejection(code: str) -> bool:
    """Whether an MSA-1 code refuses the message for good (AR or CR).

    Args:
        code: MSA-1, as an :class:`AckCode` or its text.
    """
    return code in REJECT_CODES


def is_transient(error: ErrorInfo | None) -> bool:
    """Whether a refusal's reason is a passing failure: the sender should retry later.

    True for table 0357 code 207 (:data:`RETRY_LATER_CODE`); every other
    code (a rule, a charset, a handler's own code) is final, and so is the
    absence of a reason.

    Args:
        error: The ERR reason of a negative acknowledgement, or ``None``.
    """
    return error is not None and error.code == RETRY_LATER_CODE

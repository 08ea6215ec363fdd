"""Events exchanged with the sans-IO framing core, and the NEED_DATA sentinel."""

from __future__ import annotations

import enum
from typing import Final

import attrs

from mllp_trio._errors import LocalProtocolError

__all__ = [
    "NEED_DATA",
    "BadBlock",
    "CommitAck",
    "CommitNak",
    "EndOfStream",
    "Event",
    "HLLPNak",
    "InvalidFrame",
    "Message",
    "NakReason",
    "NeedData",
]

_END_OF_BLOCK: Final = b"\x1c\x0d"


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    __str__ = __repr__


#: Returned by ``next_event()`` when more bytes must be received first.
NEED_DATA: Final = NeedData.NEED_DATA


def _check_message_data(value: bytes) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"Message.data must be bytes, not {type(value).__name__}")
    if not value:
        raise LocalProtocolError("Message.data must not be empty: an empty frame is invalid")
    # The one-byte test runs at memchr speed; the two-byte search (several
    # times slower) only runs when an end byte is there at all.
    if 0x1C in value and _END_OF_BLOCK in value:
        raise LocalProtocolError(
            "Message.data contains the end-of-block sequence 0x1C 0x0D; it cannot be framed"
        )


@attrs.frozen(init=False)
class Message:
    """One HL7 message (a content block), as raw bytes.

    The framing core never decodes the bytes: character sets are the HL7
    layer's business.

    Attributes:
        data: The message bytes between the start and end of block, with the
            segment terminators as they were sent. Never empty and never
            containing the end-of-block sequence ``0x1C 0x0D``.
    """

    data: bytes

    def __init__(self, data: bytes) -> None:
        # Hand-written so that building a message to send costs one inline
        # test and one slot store, not the generic attrs machinery; the
        # helper (a call) only runs to accept a subclass or to raise.
        if type(data) is not bytes or not data or (0x1C in data and _END_OF_BLOCK in data):
            _check_message_data(data)
        _set_message_data(self, data)

    def __repr__(self) -> str:
        # Never print message content: it is patient data.
        return f"Message(<{len(self.data)} bytes>)"


_new_object = object.__new__
# The slot descriptor of the frozen class sets the value directly; the plain
# way, object.__setattr__, adds a type check and a lookup per decoded frame:
# measured 5-8% of the 1 KB decode rate (none at 64 KB), so this stays.
_set_message_data = Message.__dict__["data"].__set__


def trusted_message(data: bytes) -> Message:
    """Build a :class:`Message` without validation, for the decoder's hot path.

    The decoder has already proven what the validator checks; skipping it
    (and the frozen-class ``__setattr__``) keeps a frame at one allocation.
    """
    message: Message = _new_object(Message)
    _set_message_data(message, data)
    return message


@attrs.frozen
class CommitAck:
    """MLLP release 2 commit acknowledgement: the content is safely stored."""


@attrs.frozen
class CommitNak:
    """MLLP release 2 negative commit acknowledgement: resend the content."""


class NakReason(enum.StrEnum):
    """The reason letter of an HLLP NAK block."""

    BYTE_COUNT = "C"
    """The block size field did not match the data."""
    CHECKSUM = "X"
    """The checksum did not match the data."""
    TOO_LONG = "B"
    """The data is larger than the receiver accepts."""
    OTHER = "G"
    """Any other error."""


@attrs.frozen
class HLLPNak:
    """An HLLP NAK block: the peer asks us to resend our last data block.

    Attributes:
        reason: Why the block was refused.
    """

    reason: NakReason = attrs.field(converter=NakReason)


@attrs.frozen
class BadBlock:
    """An HLLP data block that failed verification and was dropped.

    The I/O layer answers it with ``send(event.nak)`` so that the peer resends.

    Attributes:
        reason: The NAK reason matching the fault.
        detail: A description of the fault for logs (never message content).
        answer: Whether to answer it with a NAK block; ``False`` for a NAK
            block that failed verification (answering a NAK with a NAK makes
            two peers whose checksums differ NAK each other for ever).
    """

    reason: NakReason = attrs.field(converter=NakReason)
    detail: str
    answer: bool = True

    @property
    def nak(self) -> HLLPNak:
        """The NAK block event to send in answer."""
        return HLLPNak(self.reason)


@attrs.frozen
class InvalidFrame:
    """A frame the receiver rejected and dropped; the connection goes on.

    Produced for an empty frame, an end byte not followed by CR, and a frame
    cut short by the end of the stream. Nothing of the frame is delivered.

    Attributes:
        reason: What was wrong, for logs (never message content).
        size: How many bytes of content were dropped.
    """

    reason: str
    size: int


@attrs.frozen
class EndOfStream:
    """The peer closed its side of the connection."""


#: Everything ``next_event()`` can return besides :data:`NEED_DATA`.
Event = Message | CommitAck | CommitNak | HLLPNak | BadBlock | InvalidFrame | EndOfStream

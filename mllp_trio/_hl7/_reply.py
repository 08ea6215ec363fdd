"""Reading the acknowledgements we receive for the messages we send.

:func:`parse_reply` is the sender's side: it reads MSA and ERR of a reply,
insists that MSA-2 names the message sent, and raises a typed
:class:`NegativeAcknowledgement` for AE, AR, CE and CR. :func:`reply_code`
is the quick look at MSA-1 that the receiving side needs for a reply it
already holds (a handler's verbatim reply, a stored acknowledgement).
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._ack import AckCode
from mllp_trio._hl7._charsets import CharsetError, resolve_charset
from mllp_trio._hl7._msh import MSHError, MSHInfo, read_msh
from mllp_trio._hl7._policy import is_negative

__all__ = [
    "AckErrorDetail",
    "AckReply",
    "ApplicationError",
    "ApplicationReject",
    "CommitError",
    "CommitReject",
    "ControlIdMismatch",
    "InvalidReply",
    "NegativeAcknowledgement",
    "acknowledged_id",
    "parse_reply",
    "reply_code",
]

_MSA_CODE: Final = re.compile(rb"(?:^|[\r\n])MSA[^A-Za-z0-9\r\n]([A-Z]{2})(?![A-Za-z0-9])")


def reply_code(reply: bytes) -> str:
    """Return MSA-1 of an acknowledgement with a quick scan, or ``""`` without one.

    Reads the first MSA segment's first field when it is two capital letters,
    without decoding or checking the rest (for that, use :func:`parse_reply`).

    Args:
        reply: The acknowledgement bytes.
    """
    match = _MSA_CODE.search(reply)
    return match.group(1).decode("ascii") if match else ""


def acknowledged_id(reply: bytes) -> bytes | None:
    """Return MSA-2 of an acknowledgement as raw bytes (still escaped), or ``None``.

    A quick look that decodes nothing, for telling the reply to the message
    just sent from a late copy of an earlier one. ``None`` when there is no
    MSH-1 or no MSA segment.

    Args:
        reply: The acknowledgement bytes.
    """
    if len(reply) < 4 or not reply.startswith(b"MSH"):
        return None
    fs = reply[3:4]
    start = reply.find(b"\rMSA" + fs)
    if start < 0:
        start = reply.find(b"\nMSA" + fs)
        if start < 0:
            return None
    start += 5
    end = reply.find(b"\r", start)
    if end < 0:
        end = len(reply)
    lf = reply.find(b"\n", start, end)
    if lf >= 0:
        end = lf
    fields = reply[start:end].split(fs, 2)
    return fields[1] if len(fields) > 1 else b""


@attrs.frozen(kw_only=True)
class AckErrorDetail:
    """One ERR segment of a received acknowledgement.

    Attributes:
        code: The error code (ERR-3.1, or ERR-1.4.1 before v2.5), e.g. ``"207"``.
        code_text: The code's text (ERR-3.2 / ERR-1.4.2).
        severity: ERR-4 (``"E"``, ``"W"``, ``"I"``), empty before v2.5.
        location: ERR-2 (or ERR-1.1-3) as received, e.g. ``"MSH^1^9"``.
        message: ERR-8 user message, else ERR-7 diagnostics. Not in the repr.
    """

    code: str
    code_text: str
    severity: str
    location: str
    message: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class AckReply:
    """What a received acknowledgement says.

    Attributes:
        code: MSA-1.
        control_id: MSA-2: the control id of the message acknowledged.
        text: MSA-3 text (may be empty). Not in the repr.
        errors: The ERR segments, in order.
        header: The reply's own MSH.
        raw: The reply bytes. Not in the repr.
    """

    code: AckCode
    control_id: str
    text: str = attrs.field(repr=False)
    errors: tuple[AckErrorDetail, ...]
    header: MSHInfo
    raw: bytes = attrs.field(repr=False)

    @property
    def accepted(self) -> bool:
        """Whether the code is AA or CA (not negative)."""
        return not is_negative(self.code)

    def raise_for_code(self) -> None:
        """Raise the :class:`NegativeAcknowledgement` subclass matching a negative code."""
        if is_negative(self.code):
            raise _EXCEPTIONS[self.code](self)


class InvalidReply(MLLPError):
    """The reply is not a readable acknowledgement (no MSH, no MSA, bad MSA-1)."""


class ControlIdMismatch(InvalidReply):
    """MSA-2 of the reply does not name the message that was sent.

    Attributes:
        expected: The MSH-10 sent.
        received: The MSA-2 received.
    """

    def __init__(self, expected: str, received: str) -> None:
        super().__init__(f"reply acknowledges control id {received!r}, expected {expected!r}")
        self.expected = expected
        self.received = received


class NegativeAcknowledgement(MLLPError):
    """The peer answered AE, AR, CE or CR.

    Attributes:
        reply: The parsed reply (texts in it, not in the exception message).
    """

    def __init__(self, reply: AckReply) -> None:
        codes = ",".join(e.code for e in reply.errors if e.code) or "none"
        super().__init__(f"{reply.code} for control id {reply.control_id!r} (error codes: {codes})")
        self.reply = reply


class ApplicationError(NegativeAcknowledgement):
    """AE: the receiver hit an error processing the message; resending may not help."""


class ApplicationReject(NegativeAcknowledgement):
    """AR: the receiver refused the message (type, version, processing id, or busy)."""


class CommitError(NegativeAcknowledgement):
    """CE: enhanced mode, the receiver could not accept the message (content error)."""


class CommitReject(NegativeAcknowledgement):
    """CR: enhanced mode, the receiver rejected the message before storing it."""


# The exception raised for each negative code (the keys are NEGATIVE_CODES).
_EXCEPTIONS: Final[dict[str, type[NegativeAcknowledgement]]] = {
    AckCode.AE: ApplicationError,
    AckCode.AR: ApplicationReject,
    AckCode.CE: CommitError,
    AckCode.CR: CommitReject,
}


def _component(field: str, cs: str, index: int) -> str:
    parts = field.split(cs)
    return parts[index] if index < len(parts) else ""


def _field(fields: list[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


def parse_reply(
    reply: bytes,
    expected_control_id: str | bytes,
    *,
    raise_on_negative: bool = True,
    default_charset: str = "UNICODE UTF-8",
    charset_override: str | None = None,
) -> AckReply:
    """Read an acknowledgement received for a message we sent.

    The reply is decoded per its MSH-18 (leniently: undecodable bytes become
    U+FFFD, an unknown charset falls back to Latin-1) and then split, so
    multibyte texts are read right.

    The control ids are compared decoded the same way: MSA-2 as read from
    the reply, the expected id decoded in the reply's character set when it
    is given as bytes. Pass ``MSHInfo.control_id_raw`` of the message sent:
    its text form, ``MSHInfo.control_id``, reads every byte as Latin-1, which
    a non-ASCII control id in UTF-8 does not match. (A ``str`` that only
    matches when its characters are taken as those Latin-1 bytes is accepted
    too, for callers that pass ``control_id``.)

    Args:
        reply: The reply bytes.
        expected_control_id: MSH-10 of the message sent: raw bytes as sent
            (still escaped), or unescaped text.
        raise_on_negative: Raise for AE/AR/CE/CR (default); when False the
            caller inspects :attr:`AckReply.code` or calls
            :meth:`AckReply.raise_for_code`.
        default_charset: The charset assumed when the reply's MSH-18 is blank.
        charset_override: When set, the reply's MSH-18 is ignored and it is
            read in this charset.

    Returns:
        The reply's content.

    Raises:
        ControlIdMismatch: MSA-2 is not ``expected_control_id``.
        InvalidReply: No readable MSH or MSA, or an MSA-1 outside table 0008.
        NegativeAcknowledgement: AE, AR, CE or CR (the matching subclass),
            unless ``raise_on_negative`` is False.
    """
    try:
        header = read_msh(reply)
    except MSHError as exc:
        raise InvalidReply(f"reply has no readable MSH: {exc}") from None
    try:
        codec = resolve_charset(
            header.charset,
            repetition_separator=header.repetition_separator.decode("latin-1"),
            default=default_charset,
            override=charset_override,
        ).codec
    except CharsetError:
        codec = "latin_1"
    text = reply.decode(codec, "replace").replace("\r\n", "\r").replace("\n", "\r")
    fs = header.field_separator.decode("latin-1")
    cs = header.component_separator.decode("latin-1")
    ss = header.subcomponent_separator.decode("latin-1")
    msa: list[str] | None = None
    errors: list[AckErrorDetail] = []
    for segment in text.split("\r"):
        if segment.startswith("MSA") and msa is None:
            msa = segment.split(fs)
        elif segment.startswith("ERR"):
            errors.append(_read_err(segment.split(fs), header, codec, cs, ss))
    if msa is None:
        raise InvalidReply("reply has no MSA segment")
    try:
        code = AckCode(_field(msa, 1).strip())
    except ValueError:
        raise InvalidReply("reply MSA-1 is not an acknowledgement code") from None
    control_id = header.unescape(_field(msa, 2), codec=codec)
    if isinstance(expected_control_id, bytes):
        expected = header.unescape(expected_control_id.decode(codec, "replace"), codec=codec)
        matched = control_id == expected
    else:
        expected = expected_control_id
        matched = control_id == expected or _latin1_reading(expected, codec) == control_id
    if not matched:
        raise ControlIdMismatch(expected, control_id)
    result = AckReply(
        code=code,
        control_id=control_id,
        text=header.unescape(_field(msa, 3), codec=codec),
        errors=tuple(errors),
        header=header,
        raw=reply,
    )
    if raise_on_negative:
        result.raise_for_code()
    return result


def _latin1_reading(text: str, codec: str) -> str | None:
    """``text`` taken as the Latin-1 reading of bytes in ``codec``, decoded right."""
    try:
        return text.encode("latin-1").decode(codec)
    except (UnicodeError, LookupError):
        return None


def _read_err(fields: list[str], header: MSHInfo, codec: str, cs: str, ss: str) -> AckErrorDetail:
    def unesc(value: str) -> str:
        return header.unescape(value, codec=codec)

    err3 = _field(fields, 3)
    if err3:
        return AckErrorDetail(
            code=unesc(_component(err3, cs, 0)),
            code_text=unesc(_component(err3, cs, 1)),
            severity=_field(fields, 4),
            location=_field(fields, 2),
            message=unesc(_field(fields, 8) or _field(fields, 7)),
        )
    err1 = _field(fields, 1).split(header.repetition_separator.decode("latin-1") or "\r")[0]
    coded = _component(err1, cs, 3)
    return AckErrorDetail(
        code=unesc(_component(coded, ss, 0) if ss else coded),
        code_text=unesc(_component(coded, ss, 1) if ss else ""),
        severity="",
        location=cs.join(err1.split(cs)[:3]).strip(cs),
        message="",
    )

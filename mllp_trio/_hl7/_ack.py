"""Building HL7 acknowledgements as bytes, and reading the acknowledgements we receive.

:func:`build_ack` writes an ACK straight from the inbound :class:`MSHInfo`
(no ``hl7.parse``), keeping the inbound separators and character set:

* MSH-3/4 = inbound MSH-5/6 and MSH-5/6 = inbound MSH-3/4, whole fields;
* MSH-7 = now, ``YYYYMMDDHHMMSS+ZZZZ``; MSH-10 a new unique id;
* MSH-9 = ``ACK^<inbound MSH-9.2>``, plus ``^ACK`` from v2.5 on;
* MSH-11, MSH-12 and (when valued) MSH-18 echoed;
* MSA-1 the code, MSA-2 the inbound MSH-10;
* errors: from v2.5 ``ERR-2`` location, ``ERR-3`` = ``code^text^HL70357``,
  ``ERR-4`` = ``E`` and ERR-8 the text; before v2.5 (and when MSH-12 is not a
  number) ``ERR-1`` = ``seg^seq^field^code&text&HL70357`` plus the text in MSA-3.

:func:`parse_reply` is the sender's side: it reads MSA and ERR of a reply,
insists that MSA-2 names the message sent, and raises a typed
:class:`NegativeAcknowledgement` for AE, AR, CE and CR.
"""

from __future__ import annotations

import enum
import itertools
import os
import re
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Final

import attrs

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._charsets import CharsetError, resolve_charset
from mllp_trio._hl7._msh import MSHError, MSHInfo, escape_text, read_msh

__all__ = [
    "TABLE_0357",
    "AckCode",
    "AckErrorDetail",
    "AckReply",
    "ApplicationError",
    "ApplicationReject",
    "CommitError",
    "CommitReject",
    "ControlIdMismatch",
    "ErrorInfo",
    "InvalidReply",
    "NegativeAcknowledgement",
    "build_ack",
    "hl7_timestamp",
    "new_control_id",
    "parse_reply",
]

#: HL7 table 0357 (message error condition codes) with their standard texts.
TABLE_0357: Final[dict[int, str]] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}


class AckCode(enum.StrEnum):
    """MSA-1 acknowledgement codes (HL7 table 0008)."""

    AA = "AA"
    """Original mode: application accept."""
    AE = "AE"
    """Original mode: application error."""
    AR = "AR"
    """Original mode: application reject."""
    CA = "CA"
    """Enhanced mode: commit accept."""
    CE = "CE"
    """Enhanced mode: commit error."""
    CR = "CR"
    """Enhanced mode: commit reject."""


def _check_code(_inst: object, _attr: object, value: int) -> None:
    if value not in TABLE_0357 or value == 0:
        raise ValueError(f"{value} is not an HL7 table 0357 error code")


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """The reason carried in an ERR segment.

    Attributes:
        code: HL7 table 0357 error code, e.g. 207.
        text: Free text for the sender (ERR-8, or MSA-3 before v2.5); empty
            to send only the code's standard text. Not shown in the repr.
        location: ``(segment id, sequence, field)`` of the faulty field, e.g.
            ``("MSH", 1, 9)``, or ``None``.
    """

    code: int = attrs.field(validator=_check_code)
    text: str = attrs.field(default="", repr=False)
    location: tuple[str, int, int] | None = None


# --- Timestamps and control ids ------------------------------------------------


def hl7_timestamp(now: datetime | None = None) -> str:
    """Format an HL7 TS with seconds and timezone offset, e.g. ``20240131235959+0100``.

    Args:
        now: The time to format, keeping its offset when it is aware (a naive
            datetime is taken as local time); the current local time when ``None``.
    """
    if now is not None:
        moment = now if now.tzinfo is not None else now.astimezone()
        return moment.strftime("%Y%m%d%H%M%S%z")
    return _current_stamp()[1]


def _current_stamp() -> tuple[int, str, bytes]:
    # strftime costs more than the rest of an ACK: format once per second,
    # and keep the bytes for build_ack.
    global _stamp_cache
    second = int(time.time())
    if _stamp_cache[0] != second:
        local = time.localtime(second)
        offset, sign = abs(local.tm_gmtoff), "-" if local.tm_gmtoff < 0 else "+"
        zone = f"{sign}{offset // 3600:02d}{offset % 3600 // 60:02d}"
        stamp = time.strftime("%Y%m%d%H%M%S", local) + zone
        _stamp_cache = (second, stamp, stamp.encode("ascii"))
    return _stamp_cache


_stamp_cache: tuple[int, str, bytes] = (-1, "", b"")


_B36: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_COUNTER_WIDTH: Final = 6
_COUNTER_LIMIT: Final = 36**_COUNTER_WIDTH
# Every two-digit base 36 string, so that the counter is formatted with
# three lookups instead of a loop of divisions.
_PAIRS: Final = [a + b for a in _B36 for b in _B36]


def _base36(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rem = divmod(value, 36)
        digits.append(_B36[rem])
    return "".join(reversed(digits))


class _IdSource:
    # 20 characters: 6 of start time (base 36 seconds; wraps every ~69
    # years, harmless next to the random part), 8 random (41 bits: tells
    # apart processes started in the same second), 6 of counter. A new
    # prefix is drawn when the counter wraps and after fork, so that parent
    # and child never share one.
    def __init__(self) -> None:
        self._reseed()

    def _reseed(self) -> None:
        self._prefix = _base36(int(time.time()) % 36**6, 6) + _base36(secrets.randbits(41), 8)
        self._counter: Iterator[int] = itertools.count()

    def next(self) -> str:
        n = next(self._counter)
        if n >= _COUNTER_LIMIT:
            self._reseed()
            n = next(self._counter)
        pairs = _PAIRS
        return self._prefix + pairs[n // 1679616] + pairs[n // 1296 % 1296] + pairs[n % 1296]


_ids = _IdSource()
os.register_at_fork(after_in_child=_ids._reseed)


def new_control_id() -> str:
    """Return a new message control id, unique across processes and restarts.

    Twenty upper-case alphanumerics: MSH-10 is ST of length 20 in many versions.
    """
    return _ids.next()


# --- Building ------------------------------------------------------------------


def _error_segment(header: MSHInfo, error: ErrorInfo, modern: bool, codec: str) -> bytes:
    cs = header.component_separator
    desc = TABLE_0357[error.code].encode("ascii")
    code = str(error.code).encode("ascii")
    loc = error.location
    loc_parts = [loc[0].encode("ascii"), b"%d" % loc[1], b"%d" % loc[2]] if loc else [b""] * 3
    fs = header.field_separator
    if modern:
        text = escape_text(error.text, header).encode(codec, "replace") if error.text else b""
        fields = [
            b"ERR",
            b"",
            cs.join(loc_parts) if loc else b"",
            cs.join([code, desc, b"HL70357"]),
            b"E",
        ]
        if text:
            fields += [b"", b"", b"", text]
        return fs.join(fields)
    ss = header.subcomponent_separator
    coded = ss.join([code, desc, b"HL70357"]) if ss else code
    return fs.join([b"ERR", cs.join([*loc_parts, coded])])


# MSA-1 as bytes, by code. Keyed by the members: callers mostly pass
# members, found by identity; plain strings match them too.
_MSA1: Final[dict[str, bytes]] = {c: c.value.encode("ascii") for c in AckCode}
# Codecs that write ASCII letters and digits as ASCII, so that a plain
# alphanumeric control id needs neither escaping nor encoding work.
_ASCII_SUPERSETS: Final = frozenset(
    {"ascii", "latin_1", "utf_8", "cp1252", "gb18030", "euc_kr", "big5", "iso2022_jp"}
    | {"iso2022_jp_1"}
    | {f"iso8859_{n}" for n in (*range(2, 10), 15)}
)


def build_ack(
    header: MSHInfo,
    code: str,
    *,
    error: ErrorInfo | None = None,
    codec: str = "ascii",
    now: datetime | None = None,
    control_id: str | None = None,
) -> bytes:
    """Build the acknowledgement of a message as bytes.

    Args:
        header: The inbound message's MSH.
        code: MSA-1: one of :class:`AckCode`.
        error: The ERR reason; ``None`` for no ERR segment.
        codec: Python codec of the inbound message, used for texts we add
            (the echoed fields are already bytes in that charset).
        now: MSH-7 time (for tests); the current time when ``None``.
        control_id: MSH-10 of the ACK (for tests); a new id when ``None``.

    Returns:
        The ACK, segments terminated by CR.

    Raises:
        ValueError: ``code`` is not one of :class:`AckCode`.
    """
    # AckCode() raises the ValueError for a code outside table 0008.
    msa1 = _MSA1.get(code) or AckCode(code).value.encode("ascii")
    fs, cs = header.field_separator, header.component_separator
    # The raw fields, MSH-n at index n - 1 (read_msh pads them to MSH-18):
    # one list instead of a dozen property reads.
    f = header._f
    version = header.version
    modern = version is not None and version >= (2, 5)
    type_parts = f[8].split(cs, 2)
    trigger = type_parts[1] if len(type_parts) > 1 else b""
    msh9 = b"ACK" + cs + trigger + cs + b"ACK" if modern else b"ACK" + cs + trigger
    ack_id = control_id if control_id is not None else new_control_id()
    if ack_id.isalnum() and ack_id.isascii() and codec in _ASCII_SUPERSETS:
        ack_id_bytes = ack_id.encode("ascii")
    else:
        ack_id_bytes = escape_text(ack_id, header).encode(codec, "replace")
    if now is None:
        stamp = _stamp_cache[2] if _stamp_cache[0] == int(time.time()) else _current_stamp()[2]
    else:
        stamp = hl7_timestamp(now).encode("ascii")
    # MSH-3/4 and MSH-5/6 swapped, MSH-11 and MSH-12 echoed.
    msh = fs.join(
        (
            b"MSH",
            header.encoding_characters,
            f[4],
            f[5],
            f[2],
            f[3],
            stamp,
            b"",
            msh9,
            ack_id_bytes,
            f[10],
            f[11],
        )
    )
    if f[17]:
        msh += fs * 6 + f[17]  # MSH-13 to MSH-17 empty, then MSH-18 echoed
    if error is None:
        return b"%s\rMSA%s%s%s%s\r" % (msh, fs, msa1, fs, f[9])
    msa = [b"MSA", msa1, f[9]]
    if not modern:
        text = error.text or TABLE_0357[error.code]
        msa.append(escape_text(text, header).encode(codec, "replace"))
    segments = [msh, fs.join(msa), _error_segment(header, error, modern, codec)]
    return b"\r".join(segments) + b"\r"


# --- Reading replies -----------------------------------------------------------


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
        """Whether the code is AA or CA."""
        return self.code in (AckCode.AA, AckCode.CA)

    def raise_for_code(self) -> None:
        """Raise the :class:`NegativeAcknowledgement` subclass matching a negative code."""
        exc_type = _NEGATIVE.get(self.code)
        if exc_type is not None:
            raise exc_type(self)


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


_NEGATIVE: Final[dict[AckCode, type[NegativeAcknowledgement]]] = {
    AckCode.AE: ApplicationError,
    AckCode.AR: ApplicationReject,
    AckCode.CE: CommitError,
    AckCode.CR: CommitReject,
}


def _unescape_text(value: str, header: MSHInfo, codec: str) -> str:
    esc = header.escape_character.decode("latin-1")
    if not esc or esc not in value:
        return value
    delims = {
        "F": header.field_separator,
        "S": header.component_separator,
        "T": header.subcomponent_separator,
        "R": header.repetition_separator,
        "E": header.escape_character,
    }
    e = re.escape(esc)

    def repl(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq in delims:
            return delims[seq].decode("latin-1")
        if seq[:1] == "X" and len(seq) % 2 and re.fullmatch("[0-9A-Fa-f]*", seq[1:]):
            return bytes.fromhex(seq[1:]).decode(codec, "replace")
        return m.group(0)

    return re.sub(f"{e}([^{e}]*){e}", repl, value)


def _component(field: str, cs: str, index: int) -> str:
    parts = field.split(cs)
    return parts[index] if index < len(parts) else ""


def _field(fields: list[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


def parse_reply(
    reply: bytes,
    expected_control_id: str,
    *,
    raise_on_negative: bool = True,
    default_charset: str = "UNICODE UTF-8",
) -> AckReply:
    """Read an acknowledgement received for a message we sent.

    The reply is decoded per its MSH-18 (leniently: undecodable bytes become
    U+FFFD, an unknown charset falls back to Latin-1) and then split, so
    multibyte texts are read right.

    Args:
        reply: The reply bytes.
        expected_control_id: MSH-10 of the message sent.
        raise_on_negative: Raise for AE/AR/CE/CR (default); when False the
            caller inspects :attr:`AckReply.code` or calls
            :meth:`AckReply.raise_for_code`.
        default_charset: The charset assumed when the reply's MSH-18 is blank.

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
    control_id = _unescape_text(_field(msa, 2), header, codec)
    if control_id != expected_control_id:
        raise ControlIdMismatch(expected_control_id, control_id)
    result = AckReply(
        code=code,
        control_id=control_id,
        text=_unescape_text(_field(msa, 3), header, codec),
        errors=tuple(errors),
        header=header,
        raw=reply,
    )
    if raise_on_negative:
        result.raise_for_code()
    return result


def _read_err(fields: list[str], header: MSHInfo, codec: str, cs: str, ss: str) -> AckErrorDetail:
    def unesc(value: str) -> str:
        return _unescape_text(value, header, codec)

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

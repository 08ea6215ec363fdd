"""Building HL7 acknowledgements as bytes.

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

Reading the acknowledgements we receive is ``_reply``'s job.
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

from mllp_trio._hl7._msh import MSHInfo, escape_text

__all__ = [
    "TABLE_0357",
    "AckCode",
    "ErrorInfo",
    "build_ack",
    "framing_safe",
    "hl7_timestamp",
    "new_control_id",
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
# Every two-digit base 36 string: the counter is formatted with three
# lookups, where _base36's loop of divisions would add a tenth to respond().
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
        # The 6 counter digits as 3 pairs: 36**4 = 1679616 and 36**2 = 1296.
        return self._prefix + _PAIRS[n // 1679616] + _PAIRS[n // 1296 % 1296] + _PAIRS[n % 1296]


_ids = _IdSource()
os.register_at_fork(after_in_child=_ids._reseed)


def new_control_id() -> str:
    """Return a new message control id, unique across processes and restarts.

    Twenty upper-case alphanumerics: MSH-10 is ST of length 20 in many versions.
    """
    return _ids.next()


# --- Building ------------------------------------------------------------------

# Control characters other than TAB: the MLLP and HLLP framing bytes (0x0B,
# 0x1C) among them. A text carrying one (an exception message, say) would
# make the acknowledgement impossible to frame, so none reaches the wire.
_CONTROLS: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def _text_bytes(text: str, header: MSHInfo, codec: str) -> bytes:
    r"""One text we put into an acknowledgement, escaped and encoded.

    Delimiters are escaped (:func:`escape_text`); control characters become
    ``\Xhh\`` (a space without an escape character), so that the result
    never holds a framing byte.
    """
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        # Replace what the charset cannot carry before escaping, so that the
        # replacement ('?') is escaped too when it is a delimiter here.
        text = text.encode(codec, "replace").decode(codec)
    text = escape_text(text, header)
    if _CONTROLS.search(text) is not None:
        esc = header.escape_character.decode("latin-1")
        text = _CONTROLS.sub(
            (lambda m: f"{esc}X{ord(m.group()):02X}{esc}") if esc else (lambda m: " "), text
        )
    return text.encode(codec, "replace")


def framing_safe(reply: bytes) -> bool:
    """Whether bytes can travel as one MLLP or HLLP block (no 0x0B or 0x1C inside)."""
    # Integer needles: a bytes needle makes bytes.__contains__ raise and
    # clear a TypeError first (CPython tries the integer form first).
    return 0x0B not in reply and 0x1C not in reply


def _error_segment(header: MSHInfo, error: ErrorInfo, modern: bool, codec: str) -> bytes:
    cs = header.component_separator
    desc = TABLE_0357[error.code].encode("ascii")
    code = str(error.code).encode("ascii")
    loc = error.location
    loc_parts = [loc[0].encode("ascii"), b"%d" % loc[1], b"%d" % loc[2]] if loc else [b""] * 3
    fs = header.field_separator
    if modern:
        text = _text_bytes(error.text, header, codec) if error.text else b""
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
    msa1 = _MSA1.get(code)
    if msa1 is None:
        raise ValueError(f"{code!r} is not an acknowledgement code (HL7 table 0008)")
    f = header.fields  # MSH-n is f[n - 1]
    if error is None:
        # The usual ACK: everything but MSH-7, MSH-10 and MSA-2 is the same
        # for every message of one sender, so it is built once (see _Template).
        key = (header._d, f[2], f[3], f[4], f[5], f[8], f[10], f[11], f[17], msa1)
        template = _templates.get(key)
        if template is None:
            template = _template(header, msa1, key)
        stamp = _stamp_bytes(now)
        if stamp[-5] in template.delimiters:  # an int needle (see framing_safe)
            stamp = stamp[:-5]  # as below
        return b"".join(
            (
                template.head,
                stamp,
                template.middle,
                _id_bytes(control_id, header, codec),
                template.tail,
                f[9],
                b"\r",
            )
        )
    fs, cs = header.field_separator, header.component_separator
    version = header.version
    modern = version is not None and version >= (2, 5)
    type_parts = f[8].split(cs, 2)
    trigger = type_parts[1] if len(type_parts) > 1 else b""
    msh9 = b"ACK" + cs + trigger + cs + b"ACK" if modern else b"ACK" + cs + trigger
    ack_id_bytes = _id_bytes(control_id, header, codec)
    stamp = _stamp_bytes(now)
    if stamp[-5] in fs + header.encoding_characters:
        # The zone's sign is a delimiter here (MSH-1 '+' or '-'): TS allows
        # the time without its zone, which cannot split the field.
        stamp = stamp[:-5]
    # MSH-2 as read (valid), MSH-3/4 and MSH-5/6 swapped, MSH-11 and MSH-12 echoed.
    enc = header.encoding_characters
    msh = fs.join(
        (b"MSH", enc, f[4], f[5], f[2], f[3], stamp, b"", msh9, ack_id_bytes, f[10], f[11])
    )
    if f[17]:
        msh += fs * 6 + f[17]  # MSH-13 to MSH-17 empty, then MSH-18 echoed
    msa = [b"MSA", msa1, f[9]]
    if not modern:
        text = error.text or TABLE_0357[error.code]
        msa.append(_text_bytes(text, header, codec))
    segments = [msh, fs.join(msa), _error_segment(header, error, modern, codec)]
    return b"\r".join(segments) + b"\r"


def _id_bytes(control_id: str | None, header: MSHInfo, codec: str) -> bytes:
    """MSH-10 of an ACK as bytes: a new id, or the one given (escaped if need be)."""
    if control_id is None:
        return _ids.next().encode("ascii")  # ours: upper-case ASCII alphanumerics
    ack_id = control_id
    if ack_id.isalnum() and ack_id.isascii():
        # Our own ids: nothing to escape, and every supported charset writes ASCII as ASCII.
        return ack_id.encode("ascii")
    return _text_bytes(ack_id, header, codec)


def _stamp_bytes(now: datetime | None) -> bytes:
    """MSH-7 of an ACK with its zone: now (formatted once a second), or ``now``."""
    if now is None:
        return _stamp_cache[2] if _stamp_cache[0] == int(time.time()) else _current_stamp()[2]
    return hl7_timestamp(now).encode("ascii")


@attrs.frozen
class _Template:
    """The fixed parts of one sender's ACK with one code and no ERR segment.

    The ACK is ``head + MSH-7 + middle + MSH-10 + tail + MSA-2 + CR``;
    MSH-7 loses its zone when the zone's sign is one of ``delimiters``.
    """

    head: bytes
    middle: bytes
    tail: bytes
    delimiters: bytes


#: Templates by the header fields an ACK echoes (bounded: see _template).
_templates: dict[tuple[object, ...], _Template] = {}
_MAX_TEMPLATES: Final = 256
#: Longest echoed fields kept in a template key: real senders repeat a
#: handful of short values; a stream of huge distinct ones is not cached.
_MAX_TEMPLATE_KEY: Final = 512


def _template(header: MSHInfo, msa1: bytes, key: tuple[object, ...]) -> _Template:
    """Build (and cache, when small) the template of ``build_ack(header, msa1)``."""
    fs, cs = header.field_separator, header.component_separator
    f = header.fields
    version = header.version
    modern = version is not None and version >= (2, 5)
    type_parts = f[8].split(cs, 2)
    trigger = type_parts[1] if len(type_parts) > 1 else b""
    msh9 = b"ACK" + cs + trigger + cs + b"ACK" if modern else b"ACK" + cs + trigger
    # MSH-2 as read (valid), MSH-3/4 and MSH-5/6 swapped, MSH-11 and MSH-12 echoed.
    head = fs.join((b"MSH", header.encoding_characters, f[4], f[5], f[2], f[3], b""))
    tail = fs + f[10] + fs + f[11]
    if f[17]:
        tail += fs * 6 + f[17]  # MSH-13 to MSH-17 empty, then MSH-18 echoed
    tail += b"\rMSA" + fs + msa1 + fs
    template = _Template(head, fs + fs + msh9 + fs, tail, fs + header.encoding_characters)
    if sum(len(part) for part in key[1:] if isinstance(part, bytes)) <= _MAX_TEMPLATE_KEY:
        if len(_templates) >= _MAX_TEMPLATES:
            _templates.clear()
        _templates[key] = template
    return template


# MSA-1 as bytes, by code. AckCode is a StrEnum: its members and their plain
# strings find the same entry.
_MSA1: Final[dict[str, bytes]] = {code: code.encode("ascii") for code in AckCode}

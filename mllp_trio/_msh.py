"""A fast reader of the MSH segment of raw HL7 bytes, for the acknowledgement hot path.

Full parsing with ``hl7.parse`` costs far more than the wire allows per
message, yet acknowledging, duplicate keys and charset detection only need a
dozen MSH fields. :func:`read_msh` finds the first segment of the raw bytes,
takes the separators from it, splits it once, and keeps every field as the
raw bytes it arrived as (ready to be echoed into an ACK); only the fields that
are interpreted (control id, message type, version...) are unescaped and
turned into text.

Working on bytes is sound because the MSH delimiters are ASCII in every
supported character set. One caveat: in the multibyte sets (``BIG-5``, ``GB
18030-2000``, ``ISO IR87``) a trail byte can equal a delimiter byte, so MSH-3
to MSH-10 must carry ASCII only for the byte-level reader to split them right
(which is what those national guides require anyway). Full parsing through
:attr:`InboundMessage.parsed` decodes first and is not affected.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from ._errors import MLLPError

__all__ = ["MSHError", "MSHInfo", "escape_text", "read_msh", "unescape"]

#: Table 0357 codes used for an unreadable header.
CODE_SEGMENT_SEQUENCE = 100
CODE_REQUIRED_FIELD_MISSING = 101
CODE_DATA_TYPE = 102

_DEFAULT_ENCODING: Final = b"^~\\&"
_HEX: Final = re.compile(rb"[0-9A-Fa-f]*")


class MSHError(MLLPError):
    """The first segment of a message is not a usable MSH.

    Attributes:
        code: Table 0357 code for the ERR segment: 100 (segment sequence
            error: no MSH first), 101 (required field missing) or 102 (data
            type error: bad separators).
        header: The header as far as it could be read when MSH-10 (the
            control id) was readable, so that an AR can still be sent;
            ``None`` otherwise (nothing can be answered).
    """

    def __init__(self, message: str, *, code: int, header: MSHInfo | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.header = header

    @property
    def control_id_readable(self) -> bool:
        """Whether MSH-10 could be read, so that a reject can be sent."""
        return self.header is not None


@attrs.frozen(kw_only=True, repr=False)
class MSHInfo:
    r"""The MSH fields the transport needs, read from raw bytes.

    Raw fields are the bytes as received (escape sequences and components
    intact) in the message's own character set; text fields are unescaped
    (interpreted) and decoded as Latin-1, which is lossless for any byte and
    equals ASCII for the ASCII values these fields carry in practice.

    Attributes:
        field_separator: MSH-1, one byte.
        encoding_characters: MSH-2 as received (or ``^~\&`` when it was unusable).
        component_separator: First byte of MSH-2.
        repetition_separator: Second byte of MSH-2, or ``b""``.
        escape_character: Third byte of MSH-2, or ``b""``.
        subcomponent_separator: Fourth byte of MSH-2, or ``b""``.
        sending_application: MSH-3, raw.
        sending_facility: MSH-4, raw.
        receiving_application: MSH-5, raw.
        receiving_facility: MSH-6, raw.
        date_time: MSH-7, raw.
        message_type_raw: MSH-9, raw.
        message_code: MSH-9.1, e.g. ``"ADT"``.
        trigger_event: MSH-9.2, e.g. ``"A01"``.
        message_structure: MSH-9.3, e.g. ``"ADT_A01"``.
        control_id_raw: MSH-10, raw (echoed into MSA-2).
        control_id: MSH-10, unescaped.
        processing_id_raw: MSH-11, raw.
        processing_id: MSH-11.1, e.g. ``"P"``.
        version_id_raw: MSH-12, raw.
        version_id: MSH-12.1, e.g. ``"2.5.1"``.
        accept_ack_type: MSH-15, e.g. ``"AL"`` (empty if absent).
        application_ack_type: MSH-16 (empty if absent).
        charset_raw: MSH-18, raw, all repetitions.
        charset: MSH-18 as text, all repetitions.
        segment_terminator: What ended the MSH segment: ``b"\r"``,
            ``b"\n"``, ``b"\r\n"``, or ``b""`` when MSH is the only content.
    """

    field_separator: bytes
    encoding_characters: bytes
    component_separator: bytes
    repetition_separator: bytes
    escape_character: bytes
    subcomponent_separator: bytes
    sending_application: bytes
    sending_facility: bytes
    receiving_application: bytes
    receiving_facility: bytes
    date_time: bytes
    message_type_raw: bytes
    message_code: str
    trigger_event: str
    message_structure: str
    control_id_raw: bytes
    control_id: str
    processing_id_raw: bytes
    processing_id: str
    version_id_raw: bytes
    version_id: str
    accept_ack_type: str
    application_ack_type: str
    charset_raw: bytes
    charset: str
    segment_terminator: bytes

    @property
    def message_type(self) -> str:
        """``"CODE^EVENT"`` (just ``"CODE"`` when MSH-9.2 is empty)."""
        if self.trigger_event:
            return f"{self.message_code}^{self.trigger_event}"
        return self.message_code

    @property
    def is_ack(self) -> bool:
        """Whether this is an acknowledgement (MSH-9.1 ``ACK``): never acknowledged."""
        return self.message_code == "ACK"

    @property
    def enhanced_mode(self) -> bool:
        """Whether MSH-15 or MSH-16 asks for enhanced acknowledgement mode."""
        return bool(self.accept_ack_type or self.application_ack_type)

    @property
    def version(self) -> tuple[int, ...] | None:
        """MSH-12.1 as a tuple of ints, e.g. ``(2, 5, 1)``; ``None`` if not numeric."""
        try:
            return tuple(int(p) for p in self.version_id.split("."))
        except ValueError:
            return None

    def __repr__(self) -> str:
        # MSH-3..6 may name people (ordering providers as applications...);
        # show only the routing keys that are never patient data.
        return (
            f"MSHInfo(message_type={self.message_type!r}, control_id={self.control_id!r}, "
            f"version_id={self.version_id!r})"
        )


def unescape(
    value: bytes,
    *,
    escape: bytes,
    field: bytes,
    component: bytes,
    repetition: bytes,
    subcomponent: bytes,
) -> bytes:
    r"""Resolve HL7 escape sequences in a raw value.

    ``\F\ \S\ \T\ \R\ \E\`` become the delimiters and ``\Xhh..\`` the bytes
    it names. Formatting escapes (``\H\``, ``\.br\`` ...) and anything
    unknown or unterminated are kept verbatim: the interpreted fields
    (identifiers, codes) have no use for formatting.
    """
    if not escape or escape not in value:
        return value
    table = {b"F": field, b"S": component, b"T": subcomponent, b"R": repetition, b"E": escape}
    out: list[bytes] = []
    pos = 0
    while True:
        start = value.find(escape, pos)
        end = value.find(escape, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(value[pos:])
            return b"".join(out)
        out.append(value[pos:start])
        seq = value[start + 1 : end]
        repl = table.get(seq)
        if repl is None and seq[:1] == b"X" and len(seq) % 2 and _HEX.fullmatch(seq, 1):
            repl = bytes.fromhex(seq[1:].decode("ascii"))
        out.append(value[start : end + 1] if repl is None else repl)
        pos = end + 1


def escape_text(text: str, info: MSHInfo) -> str:
    """Escape a text for use as one field value in a message with ``info``'s delimiters.

    Line breaks become spaces (a value cannot span segments). Without an
    escape character in MSH-2 the delimiters are replaced by spaces instead.

    Args:
        text: The value to escape.
        info: The header whose separators apply.

    Returns:
        The escaped text.
    """
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    esc = info.escape_character.decode("latin-1")
    pairs = [
        (info.field_separator, "F"),
        (info.component_separator, "S"),
        (info.repetition_separator, "R"),
        (info.subcomponent_separator, "T"),
    ]
    if esc:
        text = text.replace(esc, f"{esc}E{esc}")
    for sep, letter in pairs:
        if sep:
            ch = sep.decode("latin-1")
            text = text.replace(ch, f"{esc}{letter}{esc}" if esc else " ")
    return text


def _text(value: bytes) -> str:
    return value.decode("latin-1")


# Printable ASCII punctuation only: letters, digits, space and controls
# would make the message ambiguous.
_DELIMITERS: Final = frozenset(b for b in range(0x21, 0x7F) if not chr(b).isalnum())


def read_msh(raw: bytes) -> MSHInfo:
    """Read the MSH segment at the start of raw message bytes.

    The first segment ends at the first CR, LF or CRLF.

    Args:
        raw: The message bytes as framed.

    Returns:
        The header.

    Raises:
        MSHError: No MSH first, bad separators, or required fields missing.
            ``header`` is set when MSH-10 was readable.
    """
    cr = raw.find(b"\r")
    lf = raw.find(b"\n", 0, cr) if cr >= 0 else raw.find(b"\n")
    if lf >= 0:
        end, term = lf, b"\n"
    elif cr >= 0:
        end, term = cr, (b"\r\n" if raw[cr + 1 : cr + 2] == b"\n" else b"\r")
    else:
        end, term = len(raw), b""
    segment = raw[:end]
    if segment[:3] != b"MSH":
        raise MSHError("the first segment is not MSH", code=CODE_SEGMENT_SEQUENCE)
    if len(segment) < 4 or segment[3] not in _DELIMITERS:
        raise MSHError("MSH-1 (field separator) is missing or invalid", code=CODE_DATA_TYPE)
    fs = segment[3:4]
    parts = segment.split(fs)
    # parts[0] is "MSH" and parts[1] is MSH-2, so MSH-n is parts[n - 1].
    if len(parts) < 10:
        raise MSHError(
            f"MSH is truncated: {len(parts) + 1} of at least 12 fields", code=CODE_SEGMENT_SEQUENCE
        )
    parts.extend([b""] * (18 - len(parts)))

    enc = parts[1]
    enc_problem = not (1 <= len(enc) <= 5 and _DELIMITERS.issuperset(enc))
    enc_problem = enc_problem or len(set(enc + fs)) != len(enc) + 1
    if enc_problem:
        enc = _DEFAULT_ENCODING
    cs, rs, esc, ss = enc[0:1], enc[1:2], enc[2:3], enc[3:4]

    def unesc(value: bytes) -> bytes:
        return unescape(value, escape=esc, field=fs, component=cs, repetition=rs, subcomponent=ss)

    msh9 = parts[8]
    type_parts = [*msh9.split(cs), b"", b"", b""]
    msh11, msh12, msh18 = parts[10], parts[11], parts[17]
    header = MSHInfo(
        field_separator=fs,
        encoding_characters=enc,
        component_separator=cs,
        repetition_separator=rs,
        escape_character=esc,
        subcomponent_separator=ss,
        sending_application=parts[2],
        sending_facility=parts[3],
        receiving_application=parts[4],
        receiving_facility=parts[5],
        date_time=parts[6],
        message_type_raw=msh9,
        message_code=_text(unesc(type_parts[0])).strip(),
        trigger_event=_text(unesc(type_parts[1])).strip(),
        message_structure=_text(unesc(type_parts[2])).strip(),
        control_id_raw=parts[9],
        control_id=_text(unesc(parts[9])),
        processing_id_raw=msh11,
        processing_id=_text(msh11.split(cs, 1)[0]).strip(),
        version_id_raw=msh12,
        version_id=_text(msh12.split(cs, 1)[0]).strip(),
        accept_ack_type=_text(parts[14]).strip().upper(),
        application_ack_type=_text(parts[15]).strip().upper(),
        charset_raw=msh18,
        charset=_text(msh18),
        segment_terminator=term,
    )
    if not header.control_id:
        raise MSHError("MSH-10 (message control id) is empty", code=CODE_REQUIRED_FIELD_MISSING)
    if enc_problem:
        raise MSHError("MSH-2 (encoding characters) is invalid", code=CODE_DATA_TYPE, header=header)
    if not header.message_code:
        raise MSHError(
            "MSH-9 (message type) is empty", code=CODE_REQUIRED_FIELD_MISSING, header=header
        )
    return header

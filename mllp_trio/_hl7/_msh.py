"""A fast reader of the MSH segment of raw HL7 bytes, for the acknowledgement hot path.

Full parsing with ``hl7.parse`` costs far more than the wire allows per
message, yet acknowledging, duplicate keys and charset detection only need a
dozen MSH fields. :func:`read_msh` finds the first segment of the raw bytes,
takes the separators from it, splits it once, and keeps every field as the
raw bytes it arrived as (ready to be echoed into an ACK); only the fields that
are interpreted (control id, message type, version...) are unescaped and
turned into text, and most of those only when first asked for.

Working on bytes is sound because the MSH delimiters are ASCII in every
supported character set. One caveat: in the multibyte sets (``BIG-5``, ``GB
18030-2000``, ``ISO IR87``) a trail byte can equal a delimiter byte, so MSH-3
to MSH-10 must carry ASCII only for the byte-level reader to split them right
(which is what those national guides require anyway). Full parsing through
:attr:`InboundMessage.parsed` decodes first and is not affected.

The module also holds the two other byte- and text-level rules every reader
and writer of HL7 shares: segment terminators (:func:`normalise_segments`) and
escape sequences (:func:`escape_text`, :func:`unescape`, the only HL7
unescaper of the package).
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

from mllp_trio._errors import MLLPError

__all__ = ["MSHError", "MSHInfo", "escape_text", "normalise_segments", "read_msh", "unescape"]

#: Table 0357 codes used for an unreadable header.
CODE_SEGMENT_SEQUENCE = 100
CODE_REQUIRED_FIELD_MISSING = 101
CODE_DATA_TYPE = 102

_DEFAULT_ENCODING: Final = b"^~\\&"
_HEX: Final = re.compile(r"[0-9A-Fa-f]*")
# The caches below are keyed by bytes a sender chooses: bounded in count
# and in key size, so that a stream of distinct or huge values cannot grow
# them without limit (real senders repeat a handful of short values).
_MAX_KEY: Final = 64
_MAX_DIALECTS: Final = 32
_MAX_ENTRIES: Final = 256

_V = TypeVar("_V")


def _remember(cache: dict[bytes, _V], key: bytes, value: _V, limit: int = _MAX_ENTRIES) -> _V:
    if len(key) <= _MAX_KEY:
        if len(cache) >= limit:
            cache.clear()
        cache[key] = value
    return value


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


class _Dialect:
    # The separators of one (MSH-1, MSH-2) pair and the work that depends on
    # them alone, shared by every message that uses the pair: senders keep
    # their separators, so this is computed once per sender, not per message.
    __slots__ = (
        "cs",
        "delimiters",
        "enc",
        "esc",
        "esc_s",
        "fs",
        "problem",
        "rs",
        "specials",
        "ss",
        "types",
        "versions",
    )

    def __init__(self, fs: bytes, enc: bytes) -> None:
        problem = not (1 <= len(enc) <= 5 and _DELIMITERS.issuperset(enc))
        problem = problem or len(set(enc + fs)) != len(enc) + 1
        if problem:
            enc = _DEFAULT_ENCODING
        self.fs, self.enc, self.problem = fs, enc, problem
        self.cs, self.rs, self.esc, self.ss = enc[0:1], enc[1:2], enc[2:3], enc[3:4]
        self.esc_s = self.esc.decode("latin-1")
        # The keyword arguments of unescape(), as text.
        self.delimiters = {
            "escape": self.esc_s,
            "field": _text(fs),
            "component": _text(self.cs),
            "repetition": _text(self.rs),
            "subcomponent": _text(self.ss),
        }
        # Characters escape_text changes: a text without any is returned as is.
        chars = "\r\n" + (fs + self.cs + self.rs + self.esc + self.ss).decode("latin-1")
        self.specials = re.compile("[" + re.escape(chars) + "]")
        # MSH-9 raw -> (MSH-9.1, MSH-9.2, MSH-9.3) as text.
        self.types: dict[bytes, tuple[str, str, str]] = {}
        # MSH-12 raw -> (MSH-12.1 as text, as a tuple of ints or None).
        self.versions: dict[bytes, tuple[str, tuple[int, ...] | None]] = {}

    def unescape(self, value: str, codec: str = "latin-1") -> str:
        if not self.esc_s or self.esc_s not in value:  # the usual case, without a call
            return value
        return unescape(value, codec=codec, **self.delimiters)

    def message_type(self, msh9: bytes) -> tuple[str, str, str]:
        found = self.types.get(msh9)
        if found is None:
            parts = [*_text(msh9).split(_text(self.cs)), "", "", ""]
            found = _remember(
                self.types,
                msh9,
                (
                    self.unescape(parts[0]).strip(),
                    self.unescape(parts[1]).strip(),
                    self.unescape(parts[2]).strip(),
                ),
            )
        return found

    def version(self, msh12: bytes) -> tuple[str, tuple[int, ...] | None]:
        found = self.versions.get(msh12)
        if found is None:
            text = _text(msh12.split(self.cs, 1)[0]).strip()
            found = _remember(self.versions, msh12, (text, _version_tuple(text)))
        return found


_dialects: dict[bytes, _Dialect] = {}


def _dialect(fs: bytes, enc: bytes) -> _Dialect:
    # Keyed by MSH-1 + MSH-2, unambiguous since MSH-1 is one byte.
    return _dialects.get(fs + enc) or _remember(
        _dialects, fs + enc, _Dialect(fs, enc), _MAX_DIALECTS
    )


class MSHInfo:
    r"""The MSH fields the transport needs, read from raw bytes.

    Made by :func:`read_msh`; every attribute is read-only. Raw fields are
    the bytes as received (escape sequences and components intact) in the
    message's own character set; text fields are unescaped (interpreted)
    and decoded as Latin-1, which is lossless for any byte and equals ASCII
    for the ASCII values these fields carry in practice. Text fields not
    needed to validate the header are computed when read.

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

    # Read-only properties over five slots: building the header is the
    # per-message cost, so it stores the split fields and little else.
    __slots__ = ("_cid", "_d", "_f", "_term", "_type")

    def __init__(
        self,
        dialect: _Dialect,
        fields: tuple[bytes, ...],
        control_id: str,
        message_type: tuple[str, str, str],
        terminator: bytes,
    ) -> None:
        self._d = dialect
        self._f = fields  # MSH-n is fields[n - 1] (n >= 2), at least 18 of them
        self._cid = control_id
        self._type = message_type
        self._term = terminator

    @property
    def fields(self) -> tuple[bytes, ...]:
        """The MSH segment split at the field separator, every field raw.

        ``fields[n - 1]`` is MSH-n for n from 2 (``fields[0]`` is ``b"MSH"``,
        and MSH-1 is the separator itself), padded with empty fields up to
        MSH-18: the indexing that ``build_ack`` uses to echo a dozen fields
        at the cost of one attribute read.
        """
        return self._f

    @property
    def field_separator(self) -> bytes:
        return self._d.fs

    @property
    def encoding_characters(self) -> bytes:
        return self._d.enc

    @property
    def component_separator(self) -> bytes:
        return self._d.cs

    @property
    def repetition_separator(self) -> bytes:
        return self._d.rs

    @property
    def escape_character(self) -> bytes:
        return self._d.esc

    @property
    def subcomponent_separator(self) -> bytes:
        return self._d.ss

    @property
    def sending_application(self) -> bytes:
        return self._f[2]

    @property
    def sending_facility(self) -> bytes:
        return self._f[3]

    @property
    def receiving_application(self) -> bytes:
        return self._f[4]

    @property
    def receiving_facility(self) -> bytes:
        return self._f[5]

    @property
    def date_time(self) -> bytes:
        return self._f[6]

    @property
    def message_type_raw(self) -> bytes:
        return self._f[8]

    @property
    def message_code(self) -> str:
        return self._type[0]

    @property
    def trigger_event(self) -> str:
        return self._type[1]

    @property
    def message_structure(self) -> str:
        return self._type[2]

    @property
    def control_id_raw(self) -> bytes:
        return self._f[9]

    @property
    def control_id(self) -> str:
        return self._cid

    @property
    def processing_id_raw(self) -> bytes:
        return self._f[10]

    @property
    def processing_id(self) -> str:
        return _text(self._f[10].split(self._d.cs, 1)[0]).strip()

    @property
    def version_id_raw(self) -> bytes:
        return self._f[11]

    @property
    def version_id(self) -> str:
        return self._d.version(self._f[11])[0]

    @property
    def accept_ack_type(self) -> str:
        return _ack_type(self._f[14])

    @property
    def application_ack_type(self) -> str:
        return _ack_type(self._f[15])

    @property
    def charset_raw(self) -> bytes:
        return self._f[17]

    @property
    def charset(self) -> str:
        return _text(self._f[17])

    @property
    def segment_terminator(self) -> bytes:
        return self._term

    @property
    def message_type(self) -> str:
        """``"CODE^EVENT"`` (just ``"CODE"`` when MSH-9.2 is empty)."""
        code, event, _ = self._type
        return f"{code}^{event}" if event else code

    @property
    def is_ack(self) -> bool:
        """Whether this is an acknowledgement (MSH-9.1 ``ACK``): never acknowledged."""
        return self._type[0] == "ACK"

    @property
    def enhanced_mode(self) -> bool:
        """Whether MSH-15 or MSH-16 asks for enhanced acknowledgement mode."""
        fields = self._f
        # Empty fields (the usual case) need no decoding.
        if not (fields[14] or fields[15]):
            return False
        return bool(self.accept_ack_type or self.application_ack_type)

    @property
    def version(self) -> tuple[int, ...] | None:
        """MSH-12.1 as a tuple of ints, e.g. ``(2, 5, 1)``; ``None`` if not numeric."""
        return self._d.version(self._f[11])[1]

    def unescape(self, value: str, *, codec: str = "latin-1") -> str:
        r"""Resolve the escape sequences of a value from this message (see :func:`unescape`).

        Args:
            value: A field or component of the message, decoded in ``codec``.
            codec: The message's Python codec, for ``\X..\`` sequences.
        """
        return self._d.unescape(value, codec)

    def _key(self) -> tuple[Any, ...]:
        # Equality over the public fields, as the attrs class before it had.
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MSHInfo):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        # MSH-3..6 may name people (ordering providers as applications...);
        # show only the routing keys that are never patient data.
        return (
            f"MSHInfo(message_type={self.message_type!r}, control_id={self.control_id!r}, "
            f"version_id={self.version_id!r})"
        )


_FIELDS: Final = (
    "field_separator",
    "encoding_characters",
    "component_separator",
    "repetition_separator",
    "escape_character",
    "subcomponent_separator",
    "sending_application",
    "sending_facility",
    "receiving_application",
    "receiving_facility",
    "date_time",
    "message_type_raw",
    "message_code",
    "trigger_event",
    "message_structure",
    "control_id_raw",
    "control_id",
    "processing_id_raw",
    "processing_id",
    "version_id_raw",
    "version_id",
    "accept_ack_type",
    "application_ack_type",
    "charset_raw",
    "charset",
    "segment_terminator",
)


_ack_types: dict[bytes, str] = {}


def _ack_type(raw: bytes) -> str:
    # MSH-15/16 hold a handful of values (table 0155): decode each once.
    found = _ack_types.get(raw)
    if found is None:
        found = _remember(_ack_types, raw, _text(raw).strip().upper())
    return found


def _version_tuple(version_id: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in version_id.split("."))
    except ValueError:
        return None


def unescape(
    value: str,
    *,
    escape: str,
    field: str,
    component: str,
    repetition: str,
    subcomponent: str,
    codec: str = "latin-1",
) -> str:
    r"""Resolve HL7 escape sequences in one field value.

    ``\F\ \S\ \T\ \R\ \E\`` become the delimiters, and ``\Xhh..\`` the
    bytes it names, decoded in ``codec`` (undecodable bytes become U+FFFD).
    Formatting escapes (``\H\``, ``\.br\`` ...) and anything unknown or
    unterminated are kept verbatim: the fields read here (identifiers, codes,
    error texts) have no use for formatting.

    Args:
        value: The value, decoded but still escaped.
        escape: The escape character (MSH-2.3); empty means nothing is escaped.
        field: The field separator.
        component: The component separator.
        repetition: The repetition separator.
        subcomponent: The subcomponent separator (may be empty).
        codec: The message's Python codec, for ``\X..\`` sequences. The
            default, Latin-1, maps each byte to the character of that number.

    Returns:
        The unescaped value.
    """
    if not escape or escape not in value:
        return value
    table = {"F": field, "S": component, "T": subcomponent, "R": repetition, "E": escape}
    out: list[str] = []
    pos = 0
    while True:
        start = value.find(escape, pos)
        end = value.find(escape, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(value[pos:])
            return "".join(out)
        out.append(value[pos:start])
        seq = value[start + 1 : end]
        repl = table.get(seq)
        if repl is None and seq[:1] == "X" and len(seq) % 2 and _HEX.fullmatch(seq, 1):
            repl = bytes.fromhex(seq[1:]).decode(codec, "replace")
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
    dialect = info._d
    if dialect.specials.search(text) is None:
        return text
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    esc = dialect.esc_s
    pairs = [(dialect.fs, "F"), (dialect.cs, "S"), (dialect.rs, "R"), (dialect.ss, "T")]
    if esc:
        text = text.replace(esc, f"{esc}E{esc}")
    for sep, letter in pairs:
        if sep:
            ch = sep.decode("latin-1")
            text = text.replace(ch, f"{esc}{letter}{esc}" if esc else " ")
    return text


def normalise_segments(raw: bytes) -> bytes:
    """Turn LF and CRLF segment terminators into CR (HL7's own).

    Safe on bytes in every supported charset: 0x0A and 0x0D never occur
    inside a multibyte character of UTF-8, GB 18030, Big5, EUC-KR or ISO 2022.
    """
    if 0x0A not in raw:  # the usual case, found at memchr speed
        return raw
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def _text(value: bytes) -> str:
    return value.decode("latin-1")


# Printable ASCII punctuation only: letters, digits, space and controls
# would make the message ambiguous.
_DELIMITERS: Final = frozenset(b for b in range(0x21, 0x7F) if not chr(b).isalnum())
# Empty fields that bring a short MSH up to MSH-18, by number of fields present.
_PADDING: Final = [(b"",) * (18 - n) for n in range(19)]


_DEFAULT_DIALECT: Final = _Dialect(b"|", _DEFAULT_ENCODING)
_DEFAULT_ESCAPES: Final = tuple(
    (byte, b"\\" + letter + b"\\")
    for byte, letter in ((b"\\", b"E"), (b"|", b"F"), (b"^", b"S"), (b"~", b"R"), (b"&", b"T"))
)


def _reply_fields(fields: tuple[bytes, ...]) -> tuple[bytes, ...]:
    r"""Fields split at a field separator from ``^~\&``, made safe to echo under ``|^~\&``.

    They hold no byte of their own separator; the default separators in
    them are escaped so that the reject echoes them as plain values.
    """
    out = []
    for value in fields:
        # The escape character first, so that the escapes added are not escaped again.
        for byte, seq in _DEFAULT_ESCAPES:
            if byte in value:
                value = value.replace(byte, seq)
        out.append(value)
    return tuple(out)


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
    if not raw.startswith(b"MSH", 0, end):
        raise MSHError("the first segment is not MSH", code=CODE_SEGMENT_SEQUENCE)
    if end < 4 or raw[3] not in _DELIMITERS:
        raise MSHError("MSH-1 (field separator) is missing or invalid", code=CODE_DATA_TYPE)
    fs = raw[3:4]
    parts = raw[:end].split(fs)
    # parts[0] is "MSH" and parts[1] is MSH-2, so MSH-n is parts[n - 1].
    count = len(parts)
    if count < 10:
        raise MSHError(
            f"MSH is truncated: {count + 1} of at least 12 fields", code=CODE_SEGMENT_SEQUENCE
        )
    fields = tuple(parts) if count >= 18 else (*parts, *_PADDING[count])
    # The cached lookups inline: this runs once per message.
    dialect = _dialects.get(fs + parts[1]) or _dialect(fs, parts[1])
    control_id = parts[9].decode("latin-1")
    esc = dialect.esc_s
    if esc and esc in control_id:
        control_id = dialect.unescape(control_id)
    if not control_id:
        raise MSHError("MSH-10 (message control id) is empty", code=CODE_REQUIRED_FIELD_MISSING)
    message_type = dialect.types.get(parts[8]) or dialect.message_type(parts[8])
    if dialect.problem:
        if fs in _DEFAULT_ENCODING:
            # MSH-1 is one of the default encoding characters, which stand in
            # for the unusable MSH-2: no reply could use both. The reject is
            # written with the default separators instead (see _reply_fields).
            dialect, fields = _DEFAULT_DIALECT, _reply_fields(fields)
        header = MSHInfo(dialect, fields, control_id, message_type, term)
        raise MSHError("MSH-2 (encoding characters) is invalid", code=CODE_DATA_TYPE, header=header)
    header = MSHInfo(dialect, fields, control_id, message_type, term)
    if not message_type[0]:
        raise MSHError(
            "MSH-9 (message type) is empty", code=CODE_REQUIRED_FIELD_MISSING, header=header
        )
    return header

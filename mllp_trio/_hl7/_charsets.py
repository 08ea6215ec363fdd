"""HL7 character set names (MSH-18, table 0211) mapped to Python codecs.

Names are matched case-insensitively, ignoring spaces, hyphens and
underscores, so ``UNICODE UTF-8``, ``unicode utf8`` and ``UNICODE_UTF-8`` are
one name. Supported table 0211 values and the codec each decodes with:

=====================  ==============  ==========================================
MSH-18                 codec           note
=====================  ==============  ==========================================
``ASCII``, ``ISO IR6``  ``ascii``
``8859/1`` .. ``/9``    ``iso8859_N``  ``ISO IR100`` is ``8859/1``
``8859/15``             ``iso8859_15``
``UNICODE UTF-8``       ``utf_8``
``UNICODE``             ``utf_8``      unspecified Unicode form; only UTF-8 can
                                       travel in MLLP
``ISO IR87``            ``iso2022_jp`` JIS X 0208 switched in by ISO 2022 escapes
``ISO IR159``           ``iso2022_jp_1`` JIS X 0212 likewise
``GB 18030-2000``       ``gb18030``
``KS X 1001``           ``euc_kr``     the 8-bit EUC form used in practice
``BIG-5``               ``big5``
=====================  ==============  ==========================================

Real-world aliases accepted as well (senders put IANA names in MSH-18 more
often than one would hope): ``UTF-8``, ``ISO IR192`` (UTF-8), ``ISO-8859-N``,
``LATIN1``, ``GB18030``, ``EUC-KR``, ``BIG5``, ``ISO-2022-JP`` and
``WINDOWS-1252`` / ``CP1252`` (the usual real content of "Latin-1" feeds).

Japanese messages name the ISO 2022 code extensions in later repetitions:
``MSH-18 = ~ISO IR87`` or ``ISO IR6~ISO IR87`` mean "ASCII, with JIS X 0208
switched in by escape sequences", which is what ``iso2022_jp`` decodes.

``UNICODE UTF-16`` and ``UNICODE UTF-32`` are refused: their NUL bytes and
two-byte delimiters cannot travel inside MLLP frames. ``ISO IR14``, ``CNS
11643-1992`` and other names without a Python codec are refused as unknown.
"""

from __future__ import annotations

import functools
from typing import Final

import attrs

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._msh import MSHInfo

__all__ = [
    "Charset",
    "CharsetError",
    "codec_for",
    "decode_text",
    "message_charset",
    "resolve_charset",
]

#: Table 0357 code for a value missing from an HL7 table (here table 0211).
CODE_TABLE_VALUE_NOT_FOUND = 103
#: Table 0357 code for data that does not fit its type (bytes invalid in a charset).
CODE_DATA_TYPE_ERROR = 102


def _norm(name: str) -> str:
    return name.upper().replace(" ", "").replace("-", "").replace("_", "")


_CODECS: dict[str, str] = {
    # HL7 table 0211
    "ASCII": "ascii",
    "ISOIR6": "ascii",
    "8859/1": "latin_1",
    "ISOIR100": "latin_1",
    **{f"8859/{n}": f"iso8859_{n}" for n in range(2, 10)},
    "8859/15": "iso8859_15",
    "UNICODEUTF8": "utf_8",
    "UNICODE": "utf_8",
    "ISOIR87": "iso2022_jp",
    "ISOIR159": "iso2022_jp_1",
    "GB180302000": "gb18030",
    "KSX1001": "euc_kr",
    "BIG5": "big5",
    # Real-world aliases
    "UTF8": "utf_8",
    "ISOIR192": "utf_8",
    "USASCII": "ascii",
    "LATIN1": "latin_1",
    "ISO88591": "latin_1",
    **{f"ISO8859{n}": f"iso8859_{n}" for n in (*range(2, 10), 15)},
    "GB18030": "gb18030",
    "EUCKR": "euc_kr",
    "ISO2022JP": "iso2022_jp",
    "WINDOWS1252": "cp1252",
    "CP1252": "cp1252",
}

_REFUSED_PREFIXES = ("UNICODEUTF16", "UNICODEUTF32", "UTF16", "UTF32", "UCS2", "UCS4")

# The ISO 2022 code extensions that may follow the first MSH-18 repetition,
# and the codec that decodes "ASCII plus these".
_EXTENSIONS: dict[frozenset[str], str] = {
    frozenset({"ISOIR87"}): "iso2022_jp",
    frozenset({"ISOIR159"}): "iso2022_jp_1",
    frozenset({"ISOIR87", "ISOIR159"}): "iso2022_jp_1",
}
_ASCII_NAMES = frozenset({"", "ASCII", "ISOIR6"})


class CharsetError(MLLPError):
    """A message's character set is unknown, refused, or its bytes do not decode.

    The pipeline answers it with AE (CE in enhanced mode).

    Attributes:
        code: The table 0357 error code for the ERR segment: 103 (table value
            not found) for an unknown or refused MSH-18, 102 (data type error)
            for bytes that are invalid in the character set.
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class Charset:
    """A resolved message character set.

    Attributes:
        name: The MSH-18 value it was resolved from (or the configured name).
        codec: The Python codec name.
    """

    name: str
    codec: str


def codec_for(name: str) -> str:
    """Return the Python codec for one HL7 character set name.

    Args:
        name: A table 0211 value or accepted alias, e.g. ``"8859/1"``.

    Returns:
        The Python codec name, e.g. ``"latin_1"``.

    Raises:
        CharsetError: The name is unknown, or is UTF-16/UTF-32 (refused).
    """
    key = _norm(name.strip())
    codec = _CODECS.get(key)
    if codec is not None:
        return codec
    if key.startswith(_REFUSED_PREFIXES):
        raise CharsetError(
            f"character set {name!r} refused: UTF-16 and UTF-32 cannot travel in MLLP",
            code=CODE_TABLE_VALUE_NOT_FOUND,
        )
    raise CharsetError(
        f"unknown character set {name!r} (HL7 table 0211)", code=CODE_TABLE_VALUE_NOT_FOUND
    )


def resolve_charset(
    msh18: str, *, repetition_separator: str = "~", default: str, override: str | None = None
) -> Charset:
    """Choose the character set of a message from its MSH-18 field.

    Args:
        msh18: The whole MSH-18 field (all repetitions), as ASCII text.
        repetition_separator: The message's repetition separator.
        default: The name used when MSH-18 is blank.
        override: When set, MSH-18 is ignored and this name is used.

    Returns:
        The resolved :class:`Charset`.

    Raises:
        CharsetError: The name is unknown or refused (code 103).
    """
    if override is not None:
        return Charset(override, codec_for(override))
    reps = (
        [r.strip() for r in msh18.split(repetition_separator)]
        if repetition_separator
        else [msh18.strip()]
    )
    first, extensions = reps[0], [r for r in reps[1:] if r]
    if not extensions:
        if not first:
            return Charset(default, codec_for(default))
        return Charset(first, codec_for(first))
    ext_key = frozenset(_norm(e) for e in extensions)
    codec = _EXTENSIONS.get(ext_key)
    if codec is None or _norm(first) not in _ASCII_NAMES:
        raise CharsetError(
            f"unsupported character set combination {msh18!r} in MSH-18",
            code=CODE_TABLE_VALUE_NOT_FOUND,
        )
    return Charset(msh18, codec)


#: Longest MSH-18 whose resolution :func:`message_charset` caches. The longest
#: real value is about 20 bytes; longer ones (padding, repeated extensions)
#: are resolved each time, so that a sender cannot fill memory with distinct
#: huge values.
MAX_CACHED_MSH18: Final = 64


def message_charset(header: MSHInfo, *, default: str, override: str | None = None) -> Charset:
    """Choose the character set of a received message from its header (see :func:`resolve_charset`).

    The per-message path: results are cached by the raw MSH-18 bytes, as long
    as they are short (:data:`MAX_CACHED_MSH18`), so that the usual message
    costs one lookup.

    Args:
        header: The message's MSH.
        default: The name used when MSH-18 is blank (from the configuration).
        override: When set, MSH-18 is ignored and this name is used (likewise).

    Raises:
        CharsetError: The name is unknown or refused (code 103).
    """
    msh18 = b"" if override is not None else header.charset_raw
    if not msh18:
        # The usual message (blank MSH-18, or an override): one dict lookup
        # by the configuration's names, bounded as they are few.
        key = (default, override)
        charset = _blank_charsets.get(key)
        if charset is None:
            charset = _resolve_raw(b"", b"", default, override)
            if len(_blank_charsets) < _MAX_BLANK_CHARSETS:
                _blank_charsets[key] = charset
        return charset
    if len(msh18) > MAX_CACHED_MSH18:
        return _resolve_raw(msh18, header.repetition_separator, default, override)
    return _resolve_cached(msh18, header.repetition_separator, default, override)


def _resolve_raw(msh18: bytes, rep_sep: bytes, default: str, override: str | None) -> Charset:
    # MSH-2 is at most one repetition separator byte, and default and override
    # are configuration values: only MSH-18 can make a key large.
    return resolve_charset(
        msh18.decode("latin-1"),
        repetition_separator=rep_sep.decode("latin-1"),
        default=default,
        override=override,
    )


# The charset caches. Errors are not cached: they are raised anew each time.
_resolve_cached = functools.lru_cache(maxsize=256)(_resolve_raw)
_blank_charsets: dict[tuple[str, str | None], Charset] = {}
_MAX_BLANK_CHARSETS: Final = 64


def decode_text(raw: bytes, charset: Charset) -> str:
    """Decode message bytes in a character set, strictly.

    Args:
        raw: The message bytes.
        charset: The resolved character set.

    Returns:
        The decoded text.

    Raises:
        CharsetError: A byte sequence is invalid in the character set (code
            102). The error names the offset, never the bytes.
    """
    try:
        return raw.decode(charset.codec)
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"bytes invalid in character set {charset.name!r} at offset {exc.start}",
            code=CODE_DATA_TYPE_ERROR,
        ) from None

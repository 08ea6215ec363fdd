from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllp_trio._errors import MLLPError
from mllp_trio._hl7 import (
    MSHError,
    MSHInfo,
    escape_text,
    normalise_segments,
    read_msh,
    unescape,
)

from .hl7_samples import ADT_A01_V23, ADT_A01_V251, make_message


def test_reads_the_ack_fields() -> None:
    h = read_msh(
        make_message(version="2.5.1", accept_ack="AL", application_ack="ne", charset="8859/1")
    )
    assert h.field_separator == b"|"
    assert h.encoding_characters == b"^~\\&"
    assert (h.component_separator, h.repetition_separator) == (b"^", b"~")
    assert (h.escape_character, h.subcomponent_separator) == (b"\\", b"&")
    assert h.sending_application == b"LAB^1.2.3^ISO"
    assert h.sending_facility == b"HOSP"
    assert h.receiving_application == b"EHR"
    assert h.receiving_facility == b"CLINIC^WARD"
    assert h.date_time == b"20240131120000"
    assert h.message_type_raw == b"ADT^A01^ADT_A01"
    assert (h.message_code, h.trigger_event, h.message_structure) == ("ADT", "A01", "ADT_A01")
    assert h.message_type == "ADT^A01"
    assert (h.control_id, h.control_id_raw) == ("MSG00001", b"MSG00001")
    assert (h.processing_id, h.version_id, h.version) == ("P", "2.5.1", (2, 5, 1))
    assert (h.accept_ack_type, h.application_ack_type) == ("AL", "NE")
    assert h.enhanced_mode
    assert (h.charset, h.charset_raw) == ("8859/1", b"8859/1")
    assert h.segment_terminator == b"\r"
    assert not h.is_ack


def test_fields_are_the_raw_msh_split_and_padded() -> None:
    h = read_msh(make_message(version="2.5.1", accept_ack="AL", charset="8859/1"))
    assert isinstance(h.fields, tuple)
    assert h.fields[0] == b"MSH"
    assert h.fields[1] == b"^~\\&"  # MSH-2; MSH-1 is the separator itself
    assert (h.fields[2], h.fields[9], h.fields[11]) == (b"LAB^1.2.3^ISO", b"MSG00001", b"2.5.1")
    assert (h.fields[14], h.fields[17]) == (b"AL", b"8859/1")
    short = read_msh(ADT_A01_V23)
    assert len(short.fields) == 18
    assert short.fields[12:] == (b"",) * 6
    long = read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5|||||||||21\r")
    assert long.fields[20] == b"21"


def test_short_msh_leaves_later_fields_empty() -> None:
    h = read_msh(ADT_A01_V23)
    assert h.message_structure == ""
    assert (h.accept_ack_type, h.application_ack_type, h.charset_raw) == ("", "", b"")
    assert not h.enhanced_mode


def test_components_of_msh11_and_msh12() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X1|P^T|2.5.1^DEU&&ISO3166\rOBR|1\r"
    h = read_msh(raw)
    assert (h.processing_id, h.processing_id_raw) == ("P", b"P^T")
    assert (h.version_id, h.version_id_raw) == ("2.5.1", b"2.5.1^DEU&&ISO3166")


def test_is_ack() -> None:
    assert read_msh(b"MSH|^~\\&|A|B|C|D|1||ACK^A01^ACK|X|P|2.5\rMSA|AA|Y\r").is_ack


def test_escape_sequences_in_interpreted_fields() -> None:
    raw = (
        b"MSH|^~\\&|A\\F\\B|F|R|RF|1||AD\\E\\T^A\\S\\01|"
        b"C\\F\\1\\S\\2\\T\\3\\R\\4\\X41\\\\H\\|P|2.5\r"
    )
    h = read_msh(raw)
    assert h.control_id == "C|1^2&3~4A\\H\\"
    assert h.control_id_raw == b"C\\F\\1\\S\\2\\T\\3\\R\\4\\X41\\\\H\\"
    assert (h.message_code, h.trigger_event) == ("AD\\T", "A^01")
    # Raw fields keep their escapes for echoing.
    assert h.sending_application == b"A\\F\\B"


_DELIMITERS = {
    "escape": "\\",
    "field": "|",
    "component": "^",
    "repetition": "~",
    "subcomponent": "&",
}


def test_unescape_unterminated_and_odd_hex_kept_verbatim() -> None:
    assert unescape("A\\F", **_DELIMITERS) == "A\\F"
    assert unescape("\\X4\\", **_DELIMITERS) == "\\X4\\"
    assert unescape("\\X0D0A\\", **_DELIMITERS) == "\r\n"
    assert unescape("\\XZZ\\ \\H\\x\\.br\\", **_DELIMITERS) == "\\XZZ\\ \\H\\x\\.br\\"
    assert unescape("a\\E\\b\\T\\c", **_DELIMITERS) == "a\\b&c"
    no_escape = {**_DELIMITERS, "escape": ""}
    assert unescape("plain\\F\\", **no_escape) == "plain\\F\\"


def test_unescape_hex_decodes_in_the_codec() -> None:
    # \Xhh\ names bytes of the message's charset: Latin-1 by default (byte = code point).
    assert unescape("M\\XC3BC\\ller", **_DELIMITERS) == "M\u00c3\u00bcller"
    assert unescape("M\\XC3BC\\ller", codec="utf_8", **_DELIMITERS) == "M\u00fcller"
    assert unescape("\\XFF\\", codec="utf_8", **_DELIMITERS) == "\ufffd"


def test_header_unescapes_with_its_own_delimiters() -> None:
    h = read_msh(b"MSH#$~!@#APP#FAC#RAPP#RFAC#20240101##ORU$R01#ID#P#2.5\r")
    assert h.unescape("a!F!b!S!c!T!d!R!e!E!f") == "a#b$c@d~e!f"
    assert h.unescape("a\\F\\b") == "a\\F\\b"  # not this header's escape character
    assert h.unescape("!XE282AC!", codec="utf_8") == "\u20ac"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"MSH|1\rPID|2\r", b"MSH|1\rPID|2\r"),
        (b"MSH|1\nPID|2\n", b"MSH|1\rPID|2\r"),
        (b"MSH|1\r\nPID|2\r\n", b"MSH|1\rPID|2\r"),
        (b"MSH|1\n\rPID|2", b"MSH|1\r\rPID|2"),
    ],
)
def test_normalise_segments(raw: bytes, normal: bytes) -> None:
    assert normalise_segments(raw) == normal


def test_custom_separators() -> None:
    raw = b"MSH#$~!@#APP$X#FAC#RAPP#RFAC#20240101##ORU$R01$ORU_R01#ID!F!9#P#2.4\rPID#1\r"
    h = read_msh(raw)
    assert h.field_separator == b"#"
    assert h.encoding_characters == b"$~!@"
    assert h.component_separator == b"$"
    assert h.sending_application == b"APP$X"
    assert (h.message_code, h.trigger_event, h.message_structure) == ("ORU", "R01", "ORU_R01")
    assert h.control_id == "ID#9"


def test_hash_field_separator_with_standard_encoding() -> None:
    h = read_msh(b"MSH#^~\\&#A#B#C#D#1##ADT^A08#Z9#P#2.3\r")
    assert (h.field_separator, h.message_type, h.control_id) == (b"#", "ADT^A08", "Z9")


@pytest.mark.parametrize(
    ("raw", "term"),
    [
        (make_message(terminator="\n"), b"\n"),
        (make_message(terminator="\r\n"), b"\r\n"),
        (make_message(terminator="\r"), b"\r"),
        (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5", b""),
    ],
)
def test_first_segment_terminators(raw: bytes, term: bytes) -> None:
    h = read_msh(raw)
    assert h.segment_terminator == term
    assert h.version_id == "2.5"


def test_lf_before_cr_ends_the_segment_at_lf() -> None:
    h = read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.3\nPID|1\r")
    assert h.segment_terminator == b"\n"
    assert h.version_id == "2.3"


@pytest.mark.parametrize(
    "raw",
    [b"", b"PID|1\rMSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5\r", b"\rMSH|^~\\&|A\r", b"msh|^~\\&|A\r"],
)
def test_missing_msh(raw: bytes) -> None:
    with pytest.raises(MSHError) as info:
        read_msh(raw)
    assert info.value.code == 100
    assert not info.value.control_id_readable
    assert isinstance(info.value, MLLPError)


@pytest.mark.parametrize(
    "raw",
    [b"MSH", b"MSH|^~\\&|A|B|C|D|1||ADT^A01\r", b"MSH|^~\\&|A|B\rPID|1|2|3|4|5|6|7|8|9|10\r"],
)
def test_truncated_msh_has_no_header(raw: bytes) -> None:
    with pytest.raises(MSHError) as info:
        read_msh(raw)
    assert info.value.header is None


@pytest.mark.parametrize("raw", [b"MSHA^~\\&|A", b"MSH ^~\\&", b"MSH\r"])
def test_invalid_field_separator(raw: bytes) -> None:
    with pytest.raises(MSHError) as info:
        read_msh(raw)
    assert info.value.code in (100, 102)
    assert info.value.header is None


def test_empty_control_id_is_unanswerable() -> None:
    with pytest.raises(MSHError) as info:
        read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r")
    assert (info.value.code, info.value.control_id_readable) == (101, False)


def test_empty_message_type_keeps_header_for_a_reject() -> None:
    with pytest.raises(MSHError) as info:
        read_msh(b"MSH|^~\\&|A|B|C|D|1|||X7|P|2.5\r")
    assert info.value.code == 101
    assert info.value.header is not None
    assert info.value.header.control_id == "X7"


@pytest.mark.parametrize("enc", [b"", b"^^\\&", b"^~ &", b"^A\\&", b"^~\\&%$"])
def test_invalid_encoding_characters_keep_header(enc: bytes) -> None:
    with pytest.raises(MSHError) as info:
        read_msh(b"MSH|" + enc + b"|A|B|C|D|1||ADT^A01|X8|P|2.5\r")
    assert info.value.code == 102
    assert info.value.header is not None
    assert info.value.header.encoding_characters == b"^~\\&"
    assert info.value.header.control_id == "X8"


def test_repr_shows_no_routing_names() -> None:
    h = read_msh(make_message())
    assert "LAB" not in repr(h)
    assert "MSG00001" in repr(h)


def test_escape_text_without_escape_character() -> None:
    h = read_msh(b"MSH|^~|A|B|C|D|1||ADT^A01|X|P|2.5\r")
    assert escape_text("a|b^c~d\r\ne", h) == "a b c d e"


def test_version_not_numeric() -> None:
    h = read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|V25\r")
    assert h.version is None


# "." would collide with the version number written unescaped.
_PUNCT = [c for c in string.punctuation if c != "."]
_VALUE = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=20
)


@st.composite
def _separators(draw: st.DrawFn) -> tuple[str, str]:
    chosen = draw(st.lists(st.sampled_from(_PUNCT), min_size=5, max_size=5, unique=True))
    return chosen[0], "".join(chosen[1:])


@given(
    seps=_separators(),
    apps=st.lists(_VALUE, min_size=4, max_size=4),
    control_id=_VALUE.filter(lambda v: v != ""),
    code=st.text(alphabet=string.ascii_uppercase + string.punctuation, min_size=1, max_size=5),
    event=st.text(alphabet=string.ascii_uppercase + string.digits + "|^&~\\", max_size=5),
)
def test_reader_returns_what_was_put_in(
    seps: tuple[str, str], apps: list[str], control_id: str, code: str, event: str
) -> None:
    fs, enc = seps
    # A header with these separators, to escape with.
    template = read_msh(f"MSH{fs}{enc}{fs}{fs}{fs}{fs}{fs}{fs}{fs}X{fs}1{fs}P{fs}2.5".encode())

    def esc(v: str) -> str:
        return escape_text(v, template)

    fields = [
        "MSH",
        enc,
        *(esc(a) for a in apps),
        "20240101",
        "",
        enc[0].join([esc(code), esc(event)]),
        esc(control_id),
        "P",
        "2.5.1",
    ]
    h = read_msh(fs.join(fields).encode() + b"\rPID\r")
    assert h.field_separator == fs.encode()
    assert h.encoding_characters == enc.encode()
    assert [
        h.sending_application,
        h.sending_facility,
        h.receiving_application,
        h.receiving_facility,
    ] == [esc(a).encode() for a in apps]
    assert h.control_id == control_id
    assert h.control_id_raw == esc(control_id).encode()
    assert h.message_code == code
    assert h.trigger_event == event
    assert h.version_id == "2.5.1"


def test_msh_info_is_frozen() -> None:
    h = read_msh(ADT_A01_V251)
    assert isinstance(h, MSHInfo)
    with pytest.raises(AttributeError):
        h.control_id = "other"  # type: ignore[misc]


# --- the lazily computed, cached header -------------------------------------------

_ATTRIBUTES = [
    "fields",
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
]


@pytest.mark.parametrize("name", _ATTRIBUTES)
def test_every_attribute_is_read_only(name: str) -> None:
    h = read_msh(ADT_A01_V251)
    before = getattr(h, name)
    with pytest.raises(AttributeError):
        setattr(h, name, before)
    with pytest.raises(AttributeError):
        h.extra = 1  # type: ignore[attr-defined]
    assert getattr(h, name) == before


def test_headers_compare_by_value() -> None:
    a, b = read_msh(make_message()), read_msh(make_message())
    assert a == b
    assert hash(a) == hash(b)
    assert a != read_msh(make_message(control_id="OTHER"))
    assert a != read_msh(make_message(terminator="\n"))
    assert a != "MSH"


def test_blank_ack_types_are_not_enhanced_mode() -> None:
    h = read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5||| | \t|\r")
    assert (h.accept_ack_type, h.application_ack_type) == ("", "")
    assert not h.enhanced_mode
    assert read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5||||er\r").enhanced_mode


def test_fields_of_one_sender_read_right_message_after_message() -> None:
    # Same separators throughout, so the per-separator caches are shared.
    for version, event, ack in [("2.3", "A01", "AL"), ("2.5.1", "A08", ""), ("V9", "A01", "NE")]:
        h = read_msh(make_message(version=version, message_type=f"ADT^{event}", accept_ack=ack))
        assert (h.version_id, h.trigger_event, h.accept_ack_type) == (version, event, ack)
    assert read_msh(make_message(version="2.3")).version == (2, 3)
    assert read_msh(make_message(version="V9")).version is None


def test_caches_stay_bounded_and_correct() -> None:
    from mllp_trio._hl7 import _msh

    for n in range(2000):
        raw = f"MSH|^~\\&|A|B|C|D|1||Z{n:04d}^E{n}|X{n}|P|2.{n}|||T{n % 300}\r".encode()
        h = read_msh(raw)
        assert (h.message_code, h.trigger_event, h.version_id) == (f"Z{n:04d}", f"E{n}", f"2.{n}")
        assert h.accept_ack_type == f"T{n % 300}"
    for n in range(2, 102):  # distinct invalid MSH-2 values
        with pytest.raises(MSHError):
            read_msh(f"MSH|{'^' * n}~|A|B|C|D|1||ADT^A01|X|P|2.5\r".encode())
    # A huge value is read right but never kept.
    huge = read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^" + b"E" * 10_000 + b"|X|P|2.5\r")
    assert huge.trigger_event == "E" * 10_000
    assert len(_msh._dialects) <= _msh._MAX_DIALECTS
    for dialect in _msh._dialects.values():
        assert len(dialect.types) <= _msh._MAX_ENTRIES
        assert len(dialect.versions) <= _msh._MAX_ENTRIES
        assert all(len(key) <= _msh._MAX_KEY for key in dialect.types)
    assert len(_msh._ack_types) <= _msh._MAX_ENTRIES


def _escape_reference(text: str, info: MSHInfo) -> str:
    # The plain replace chain, without escape_text's shortcut for clean texts.
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    esc = info.escape_character.decode("latin-1")
    if esc:
        text = text.replace(esc, f"{esc}E{esc}")
    for sep, letter in [
        (info.field_separator, "F"),
        (info.component_separator, "S"),
        (info.repetition_separator, "R"),
        (info.subcomponent_separator, "T"),
    ]:
        if sep:
            text = text.replace(sep.decode("latin-1"), f"{esc}{letter}{esc}" if esc else " ")
    return text


@given(
    seps=_separators(),
    short=st.booleans(),
    text=st.text(alphabet=string.printable + "éü\x85", max_size=30),
)
def test_escape_text_matches_the_replace_chain(
    seps: tuple[str, str], short: bool, text: str
) -> None:
    fs, enc = seps
    enc = enc[:2] if short else enc  # also without escape character
    info = read_msh(f"MSH{fs}{enc}{fs}A{fs}B{fs}C{fs}D{fs}1{fs}{fs}ADT{fs}X{fs}P{fs}2.5".encode())
    assert escape_text(text, info) == _escape_reference(text, info)


def test_escape_text_returns_clean_text_unchanged() -> None:
    info = read_msh(ADT_A01_V251)
    text = "Bed 3, ward 7 (east)"
    assert escape_text(text, info) is text
    assert escape_text("a\\b", info) == "a\\E\\b"


@given(
    seps=_separators(),
    text=st.text(alphabet=string.printable.replace("\r", "").replace("\n", "") + "éü", max_size=30),
)
def test_unescape_undoes_escape_text(seps: tuple[str, str], text: str) -> None:
    fs, enc = seps
    info = read_msh(f"MSH{fs}{enc}{fs}A{fs}B{fs}C{fs}D{fs}1{fs}{fs}ADT{fs}X{fs}P{fs}2.5".encode())
    assert info.unescape(escape_text(text, info)) == text

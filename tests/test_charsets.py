from __future__ import annotations

import pytest

from mllp_trio._hl7 import (
    ApplicationError,
    Charset,
    CharsetError,
    HL7Config,
    HL7Error,
    InboundMessage,
    MSHInfo,
    PeerInfo,
    _charsets,
    codec_for,
    decode_text,
    message_charset,
    parse_reply,
    read_msh,
    resolve_charset,
    respond,
)

from .hl7_samples import NOW, ack_msh, ids, make_message

PEER = PeerInfo(address="127.0.0.1:2575")

# (MSH-18, codec, a family name the charset carries)
ROUND_TRIPS = [
    ("ASCII", "ascii", "DOE"),
    ("ISO IR6", "ascii", "SMITH"),
    ("8859/1", "latin_1", "Müller"),
    ("ISO IR100", "latin_1", "Ørsted"),
    ("8859/2", "iso8859_2", "Dvořák"),
    ("8859/3", "iso8859_3", "Ħabib"),
    ("8859/4", "iso8859_4", "Ørsted"),
    ("8859/5", "iso8859_5", "Иванов"),
    ("8859/6", "iso8859_6", "محمد"),
    ("8859/7", "iso8859_7", "Παπαδόπουλος"),
    ("8859/8", "iso8859_8", "כהן"),
    ("8859/9", "iso8859_9", "Öztürk Şahin"),
    ("8859/15", "iso8859_15", "Œuvre"),
    ("UNICODE UTF-8", "utf_8", "Müller 山田 김"),
    ("ISO IR87", "iso2022_jp", "山田太郎"),
    ("GB 18030-2000", "gb18030", "张伟"),
    ("KS X 1001", "euc_kr", "김민준"),
    ("BIG-5", "big5", "陳大文"),
]


@pytest.mark.parametrize(("msh18", "codec", "name"), ROUND_TRIPS)
async def test_round_trip(msh18: str, codec: str, name: str) -> None:
    raw = make_message(version="2.5", charset=msh18, patient_name=f"{name}^X", codec=codec)
    seen: list[InboundMessage] = []

    async def handler(message: InboundMessage) -> None:
        seen.append(message)
        raise HL7Error(f"no bed for {name}", code=206)

    outcome = await respond(raw, peer=PEER, handler=handler, config=HL7Config(), now=NOW)
    (message,) = seen
    assert message.charset.codec == codec
    assert f"|{name}^X|" in message.text
    assert str(message.parsed.segment("PID")[5][0][0]) == name
    # The ACK is in the same charset and says so in MSH-18.
    assert outcome.reply is not None
    assert outcome.reply.startswith(ack_msh("2.5", "", charset=msh18).split("||ACK")[0].encode())
    assert f"|{msh18}\r".encode() in outcome.reply
    assert f"no bed for {name}".encode(codec) in outcome.reply
    with pytest.raises(ApplicationError) as info:
        parse_reply(outcome.reply, "MSG00001")
    assert info.value.reply.errors[0].message == f"no bed for {name}"
    assert info.value.reply.errors[0].code == "206"


async def test_japanese_code_extension_repetition() -> None:
    raw = make_message(charset="~ISO IR87", patient_name="山田^太郎", codec="iso2022_jp")

    async def handler(message: InboundMessage) -> None:
        assert "山田^太郎" in message.text

    outcome = await respond(
        raw, peer=PEER, handler=handler, config=HL7Config(), now=NOW, new_id=ids("A1")
    )
    assert outcome.code == "AA"
    assert outcome.reply is not None
    assert outcome.reply.endswith(b"|~ISO IR87\rMSA|AA|MSG00001\r")


async def _ok(message: InboundMessage) -> None:
    return None


@pytest.mark.parametrize(
    ("msh18", "raw_name", "code", "snippet"),
    [
        ("KLINGON", b"DOE", "103", "unknown character set 'KLINGON'"),
        ("UNICODE UTF-16", b"DOE", "103", "UTF-16 and UTF-32 cannot travel in MLLP"),
        ("UNICODE UTF-8", b"M\xfcller", "102", "bytes invalid in character set"),
        ("", b"M\xfcller", "102", "bytes invalid in character set 'UNICODE UTF-8'"),
        ("ASCII", b"M\xc3\xbcller", "102", "invalid in character set 'ASCII'"),
    ],
)
async def test_charset_errors_answer_ae(
    msh18: str, raw_name: bytes, code: str, snippet: str
) -> None:
    raw = make_message(charset=msh18).replace(b"DOE", raw_name)
    outcome = await respond(raw, peer=PEER, handler=_ok, config=HL7Config(), now=NOW)
    assert outcome.code == "AE"
    assert not outcome.accepted
    assert outcome.error is not None
    assert str(outcome.error.code) == code
    assert outcome.reply is not None
    assert f"|{code}^".encode() in outcome.reply
    assert snippet.encode() in outcome.reply
    # The name bytes are not echoed: only MSH fields and our text are.
    assert raw_name not in outcome.reply


async def test_default_charset_is_configurable() -> None:
    raw = make_message(patient_name="Müller", codec="latin_1")
    got: list[str] = []

    async def handler(message: InboundMessage) -> None:
        got.append(message.text)

    outcome = await respond(
        raw, peer=PEER, handler=handler, config=HL7Config(default_charset="8859/1")
    )
    assert outcome.code == "AA"
    assert "Müller" in got[0]


async def test_override_ignores_msh18() -> None:
    raw = make_message(charset="UNICODE UTF-8", patient_name="Müller", codec="latin_1")
    got: list[InboundMessage] = []

    async def handler(message: InboundMessage) -> None:
        got.append(message)

    config = HL7Config(charset_override="8859/1")
    outcome = await respond(raw, peer=PEER, handler=handler, config=config)
    assert outcome.code == "AA"
    assert got[0].charset == Charset("8859/1", "latin_1")
    assert "Müller" in got[0].text


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("unicode utf8", "utf_8"),
        ("UTF-8", "utf_8"),
        ("UNICODE", "utf_8"),
        ("ISO-8859-1", "latin_1"),
        ("ISO_8859-15", "iso8859_15"),
        ("iso ir 100", "latin_1"),
        ("EUC-KR", "euc_kr"),
        ("Big5", "big5"),
        ("windows-1252", "cp1252"),
        (" 8859/9 ", "iso8859_9"),
    ],
)
def test_aliases(name: str, codec: str) -> None:
    assert codec_for(name) == codec


@pytest.mark.parametrize("name", ["UTF-16", "UNICODE UTF-32", "utf-16le", "KLINGON", "ISO IR14"])
def test_refused_names(name: str) -> None:
    with pytest.raises(CharsetError) as info:
        codec_for(name)
    assert info.value.code == 103


def test_resolve_blank_uses_default_and_override_wins() -> None:
    assert resolve_charset("", default="8859/1").codec == "latin_1"
    assert resolve_charset("ASCII", default="8859/1", override="BIG-5").codec == "big5"
    assert resolve_charset("ISO IR6~ISO IR87", default="ASCII").codec == "iso2022_jp"
    assert resolve_charset("~ISO IR159", default="ASCII").codec == "iso2022_jp_1"
    with pytest.raises(CharsetError):
        resolve_charset("8859/1~ISO IR87", default="ASCII")


def test_decode_error_names_offset_not_bytes() -> None:
    with pytest.raises(CharsetError) as info:
        decode_text(b"abc\xff", Charset("ASCII", "ascii"))
    assert "offset 3" in str(info.value)
    assert "xff" not in str(info.value).lower()


def test_config_rejects_unknown_charsets() -> None:
    with pytest.raises(ValueError, match="default_charset"):
        HL7Config(default_charset="KLINGON")
    with pytest.raises(ValueError, match="charset_override"):
        HL7Config(charset_override="UTF-16")


def test_msh18_read_from_bytes_in_multibyte_message() -> None:
    raw = make_message(charset="GB 18030-2000", patient_name="张伟", codec="gb18030")
    assert read_msh(raw).charset == "GB 18030-2000"


def _header(msh18: str) -> MSHInfo:
    return read_msh(f"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5||||||{msh18}\r".encode())


def test_long_msh18_resolves_without_entering_the_cache() -> None:
    before = _charsets._resolve_cached.cache_info().currsize
    repeated = "ISO IR6" + "~ISO IR87" * 50
    assert message_charset(_header(repeated), default="ASCII").codec == "iso2022_jp"
    assert message_charset(_header("UTF-8" + " " * 100), default="ASCII").codec == "utf_8"
    # Spaces inside a name are ignored too: a long valid name, not a cache key.
    spaced = "UNICODE" + " " * 1000 + "UTF-8"
    assert message_charset(_header(spaced), default="ASCII").codec == "utf_8"
    assert _charsets._resolve_cached.cache_info().currsize == before


def test_short_values_are_cached_once() -> None:
    _charsets._resolve_cached.cache_clear()
    _charsets._blank_charsets.clear()
    for _ in range(3):
        assert message_charset(_header("8859/1"), default="ASCII").codec == "latin_1"
        assert message_charset(_header(""), default="8859/2").codec == "iso8859_2"
        # With an override, MSH-18 plays no part: every value shares one entry.
        for msh18 in ("KLINGON", "8859/2" + " " * 100):
            assert message_charset(_header(msh18), default="ASCII", override="ASCII").codec == (
                "ascii"
            )
    info = _charsets._resolve_cached.cache_info()
    assert (info.currsize, info.hits) == (1, 2)
    # A blank MSH-18 and an override are looked up by the configured names alone.
    assert set(_charsets._blank_charsets) == {("8859/2", None), ("ASCII", "ASCII")}


@pytest.mark.parametrize(
    ("msh18", "default", "override"),
    [
        ("8859/1", "ASCII", None),
        ("", "8859/2", None),
        ("~ISO IR87", "ASCII", None),
        ("X", "ASCII", "BIG5"),
    ],
)
def test_message_charset_agrees_with_resolve_charset(
    msh18: str, default: str, override: str | None
) -> None:
    assert message_charset(_header(msh18), default=default, override=override) == resolve_charset(
        msh18, default=default, override=override
    )

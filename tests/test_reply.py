from __future__ import annotations

import pytest

from mllp_trio._errors import MLLPError
from mllp_trio._hl7 import (
    NEGATIVE_CODES,
    REJECT_CODES,
    RETRY_LATER_CODE,
    AckCode,
    ApplicationError,
    ApplicationReject,
    CommitError,
    CommitReject,
    ControlIdMismatch,
    ErrorInfo,
    InvalidReply,
    NegativeAcknowledgement,
    build_ack,
    is_negative,
    is_rejection,
    is_transient,
    parse_reply,
    read_msh,
    reply_code,
)

from .hl7_samples import ADT_A01_V23, ADT_A01_V25, ADT_A01_V251, NOW

V23 = read_msh(ADT_A01_V23)
V25 = read_msh(ADT_A01_V25)
V251 = read_msh(ADT_A01_V251)


# --- parse_reply ----------------------------------------------------------------


def _reply(
    code: str, *, version: str = "2.5", control_id: str = "MSG00001", extra: str = ""
) -> bytes:
    return (
        f"MSH|^~\\&|R|RF|S|SF|20240101||ACK^A01^ACK|K1|P|{version}\r"
        f"MSA|{code}|{control_id}\r{extra}"
    ).encode()


def test_parse_reply_accept() -> None:
    reply = parse_reply(_reply("AA"), "MSG00001")
    assert reply.code == AckCode.AA
    assert reply.accepted
    assert reply.errors == ()
    assert reply.header.control_id == "K1"


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        ("AE", ApplicationError),
        ("AR", ApplicationReject),
        ("CE", CommitError),
        ("CR", CommitReject),
    ],
)
def test_parse_reply_negative_codes_raise(
    code: str, exc_type: type[NegativeAcknowledgement]
) -> None:
    raw = _reply(code, extra="ERR|||206^Application record locked^HL70357|E||||Bed 3 Smith\r")
    with pytest.raises(exc_type) as info:
        parse_reply(raw, "MSG00001")
    assert isinstance(info.value, MLLPError)
    detail = info.value.reply.errors[0]
    assert (detail.code, detail.code_text, detail.severity) == (
        "206",
        "Application record locked",
        "E",
    )
    assert detail.message == "Bed 3 Smith"
    # Texts stay out of the exception message and reprs.
    assert "Smith" not in str(info.value)
    assert "Smith" not in repr(info.value.reply)
    # Without raising, the caller can still inspect it.
    quiet = parse_reply(raw, "MSG00001", raise_on_negative=False)
    assert quiet.code == code
    assert not quiet.accepted
    with pytest.raises(exc_type):
        quiet.raise_for_code()


def test_parse_reply_mismatched_control_id_raises() -> None:
    with pytest.raises(ControlIdMismatch) as info:
        parse_reply(_reply("AA", control_id="OTHER"), "MSG00001")
    assert (info.value.expected, info.value.received) == ("MSG00001", "OTHER")
    assert isinstance(info.value, InvalidReply)


def test_parse_reply_mismatch_checked_before_negative_code() -> None:
    with pytest.raises(ControlIdMismatch):
        parse_reply(_reply("AE", control_id="OTHER"), "MSG00001")


def test_parse_reply_unescapes_msa2() -> None:
    assert parse_reply(_reply("AA", control_id="A\\F\\1"), "A|1").control_id == "A|1"


def test_parse_reply_pre_v25_err1_and_msa3() -> None:
    raw = (
        b"MSH|^~\\&|R|RF|S|SF|20240101||ACK^A01|K1|P|2.3\n"
        b"MSA|AE|MSG00001|no such patient\n"
        b"ERR|PID^1^3^204&Unknown key identifier&HL70357\n"
    )
    reply = parse_reply(raw, "MSG00001", raise_on_negative=False)
    assert reply.text == "no such patient"
    (detail,) = reply.errors
    assert (detail.code, detail.code_text, detail.location) == (
        "204",
        "Unknown key identifier",
        "PID^1^3",
    )


def test_parse_reply_reads_our_own_acks() -> None:
    for header in (V23, V25, V251):
        ack = build_ack(header, "AR", error=ErrorInfo(code=203, text="t~x"), now=NOW)
        with pytest.raises(ApplicationReject) as info:
            parse_reply(ack, "MSG00001")
        reply = info.value.reply
        assert reply.errors[0].code == "203"
        assert "t~x" in (reply.text, reply.errors[0].message)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"MSH|^~\\&|R|RF|S|SF|20240101||ACK^A01|K1|P|2.5\r",
        b"MSH|^~\\&|R|RF|S|SF|20240101||ACK^A01|K1|P|2.5\rMSA|OK|MSG00001\r",
    ],
)
def test_parse_reply_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidReply):
        parse_reply(raw, "MSG00001")


def test_parse_reply_unknown_charset_falls_back() -> None:
    raw = (
        b"MSH|^~\\&|R|RF|S|SF|20240101||ACK^A01^ACK|K1|P|2.5||||||KLINGON\r"
        b"MSA|AE|MSG00001\rERR|||207^x^HL70357|E||||M\xfcller\r"
    )
    reply = parse_reply(raw, "MSG00001", raise_on_negative=False)
    assert reply.errors[0].message == "Müller"


def test_parse_reply_hex_escape_decodes_in_the_reply_charset() -> None:
    raw = (
        "MSH|^~\\&|R|RF|S|SF|20240101||ACK^A01^ACK|K1|P|2.5||||||UNICODE UTF-8\r"
        "MSA|AE|MSG00001\rERR|||207^x^HL70357|E||||Br\\XC3BC\\cke \u00fc\\S\\\r"
    ).encode("utf-8")
    reply = parse_reply(raw, "MSG00001", raise_on_negative=False)
    assert reply.errors[0].message == "Br\u00fccke \u00fc^"


# --- reply_code -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (_reply("AA"), "AA"),
        (_reply("CR"), "CR"),
        (b"MSH|^~\\&|A|B|C|D|1||ACK|K|P|2.5\nMSA|AE|X\n", "AE"),
        (b"MSH#^~\\&#A#B#C#D#1##ACK#K#P#2.5\rMSA#AR#X\r", "AR"),
        (b"MSH|^~\\&|A|B|C|D|1||ACK|K|P|2.5\r", ""),
        (b"MSH|^~\\&|A|B|C|D|1||ACK|K|P|2.5\rMSA|A|X\r", ""),
        (b"MSH|^~\\&|A|B|C|D|1||ACK|K|P|2.5\rMSA|AAA|X\r", ""),
        (b"MSH|^~\\&|A|B|C|D|1||ACK|K|P|2.5\rXMSA|AE|X\r", ""),
        (b"", ""),
    ],
)
def test_reply_code_reads_the_first_msa(raw: bytes, code: str) -> None:
    assert reply_code(raw) == code


# --- the policy -------------------------------------------------------------------


def test_negative_and_rejection_codes() -> None:
    assert {str(c) for c in NEGATIVE_CODES} == {"AE", "AR", "CE", "CR"}
    assert REJECT_CODES < NEGATIVE_CODES
    for code in AckCode:
        assert is_negative(code) is is_negative(code.value) is (code.value not in ("AA", "CA"))
        assert is_rejection(code) is (code.value in ("AR", "CR"))
    assert not is_negative("")  # a reply without MSA-1 is not a refusal
    assert not is_rejection("AE")


def test_every_negative_code_raises_its_own_exception() -> None:
    raised = set()
    for code in NEGATIVE_CODES:
        with pytest.raises(NegativeAcknowledgement) as info:
            parse_reply(_reply(code), "MSG00001")
        raised.add(type(info.value))
    assert raised == {ApplicationError, ApplicationReject, CommitError, CommitReject}


def test_only_code_207_is_transient() -> None:
    assert RETRY_LATER_CODE == 207
    assert is_transient(ErrorInfo(code=207, text="db down"))
    assert not is_transient(ErrorInfo(code=206))
    assert not is_transient(ErrorInfo(code=103))
    assert not is_transient(None)

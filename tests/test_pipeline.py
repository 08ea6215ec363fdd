from __future__ import annotations

import gc
import logging
import sys
import tracemalloc
from collections.abc import Iterator

import hl7
import pytest
import trio

from mllp_trio import _hl7
from mllp_trio._errors import MLLPError
from mllp_trio._hl7 import (
    TABLE_0357,
    Charset,
    Disposition,
    ErrorInfo,
    HL7Config,
    HL7Error,
    HL7Refusal,
    HL7Reject,
    InboundMessage,
    Outcome,
    PeerInfo,
    Router,
    Verdict,
    _charsets,
    _msh,
    acknowledge,
    admit,
    check_rules,
    prepare_message,
    read_msh,
    respond,
    run_handler,
)

from .hl7_samples import NOW, ack_msh, ids, make_message

PEER = PeerInfo(address="127.0.0.1:40000")
CONFIG = HL7Config()
SECRET = "Patient Jane Roe, DOB 1970-01-01"


async def ok(message: InboundMessage) -> None:
    return None


async def fails(message: InboundMessage) -> None:
    raise RuntimeError(SECRET)


async def run(raw: bytes, handler=ok, config: HL7Config = CONFIG) -> Outcome:  # type: ignore[no-untyped-def]
    return await respond(
        raw, peer=PEER, handler=handler, config=config, now=NOW, new_id=ids("ACK1", "ACK2")
    )


def expected(version: str, control_id: str, *rest: str) -> bytes:
    return ("\r".join([ack_msh(version, control_id), *rest]) + "\r").encode()


# --- original mode golden ACKs -------------------------------------------------


@pytest.mark.parametrize("version", ["2.3", "2.5", "2.5.1"])
async def test_original_mode_aa(version: str) -> None:
    outcome = await run(make_message(version=version))
    assert outcome.reply == expected(version, "ACK1", "MSA|AA|MSG00001")
    assert (outcome.accepted, outcome.code, outcome.control_id) == (True, "AA", "MSG00001")
    assert outcome.application_ack is None
    assert outcome.message is not None
    assert outcome.header is not None


async def test_original_mode_ae_v23_and_v25() -> None:
    async def handler(message: InboundMessage) -> None:
        raise HL7Error("unknown ward", code=103, location=("PV1", 1, 3))

    out23 = await run(make_message(version="2.3"), handler)
    assert out23.reply == expected(
        "2.3",
        "ACK1",
        "MSA|AE|MSG00001|unknown ward",
        "ERR|PV1^1^3^103&Table value not found&HL70357",
    )
    out25 = await run(make_message(version="2.5"), handler)
    assert out25.reply == expected(
        "2.5",
        "ACK1",
        "MSA|AE|MSG00001",
        "ERR||PV1^1^3|103^Table value not found^HL70357|E||||unknown ward",
    )
    assert not out25.accepted
    assert out25.error == ErrorInfo(code=103, text="unknown ward", location=("PV1", 1, 3))


# --- enhanced mode ---------------------------------------------------------------

CA = "MSA|CA|MSG00001"


def enhanced(accept: str, application: str, version: str = "2.5.1") -> bytes:
    return make_message(version=version, accept_ack=accept, application_ack=application)


@pytest.mark.parametrize(
    ("accept", "sends_ca"),
    [("AL", True), ("NE", False), ("ER", False), ("SU", True), ("", True)],
)
async def test_enhanced_accept_ack_on_success(accept: str, sends_ca: bool) -> None:
    outcome = await run(enhanced(accept, "NE" if accept == "" else "AL"))
    assert outcome.accepted
    assert outcome.code == "CA"
    if sends_ca:
        assert outcome.reply == expected("2.5.1", "ACK1", CA)
    else:
        assert outcome.reply is None


@pytest.mark.parametrize(
    ("accept", "sends_cr"), [("AL", True), ("NE", False), ("ER", True), ("SU", False)]
)
async def test_enhanced_accept_ack_on_reject(accept: str, sends_cr: bool) -> None:
    config = HL7Config(processing_ids=("T",))
    outcome = await run(enhanced(accept, "AL"), config=config)
    assert not outcome.accepted
    assert outcome.code == "CR"
    assert outcome.application_ack is None  # never accepted: no application ACK
    if sends_cr:
        assert outcome.reply == expected(
            "2.5.1",
            "ACK1",
            "MSA|CR|MSG00001",
            "ERR||MSH^1^11|202^Unsupported processing id^HL70357|E||||"
            "processing id 'P' is not accepted",
        )
    else:
        assert outcome.reply is None


async def test_enhanced_charset_error_is_ce() -> None:
    raw = make_message(version="2.5", accept_ack="AL", application_ack="AL", charset="KLINGON")
    outcome = await run(raw)
    assert outcome.code == "CE"
    assert outcome.reply is not None
    assert b"MSA|CE|MSG00001\r" in outcome.reply


@pytest.mark.parametrize(
    ("application", "handler_ok", "app_ack"),
    [
        ("AL", True, "MSA|AA|MSG00001"),
        ("AL", False, "MSA|AE|MSG00001"),
        ("NE", True, None),
        ("NE", False, None),
        ("ER", True, None),
        ("ER", False, "MSA|AE|MSG00001"),
        ("SU", True, "MSA|AA|MSG00001"),
        ("SU", False, None),
        ("", True, "MSA|AA|MSG00001"),
    ],
)
async def test_enhanced_application_ack(
    application: str, handler_ok: bool, app_ack: str | None
) -> None:
    outcome = await run(enhanced("AL", application), ok if handler_ok else fails)
    assert outcome.reply == expected("2.5.1", "ACK1", CA)
    assert outcome.accepted  # CA: the message was taken, whatever the application says
    assert outcome.application_code == ("AA" if handler_ok else "AE")
    if app_ack is None:
        assert outcome.application_ack is None
    elif handler_ok:
        assert outcome.application_ack == expected("2.5.1", "ACK2", app_ack)
    else:
        assert outcome.application_ack == expected(
            "2.5.1", "ACK2", app_ack, "ERR|||207^Application internal error^HL70357|E"
        )


async def test_enhanced_v23_application_error_uses_err1() -> None:
    outcome = await run(enhanced("NE", "ER", version="2.3"), fails)
    assert outcome.reply is None
    assert outcome.application_ack == (
        expected(
            "2.3",
            "ACK1",
            "MSA|AE|MSG00001|Application internal error",
            "ERR|^^^207&Application internal error&HL70357",
        )
    )


# --- rejection rules ---------------------------------------------------------------


def err(code: int, text: str, field: int) -> str:
    return f"ERR||MSH^1^{field}|{code}^{TABLE_0357[code]}^HL70357|E||||{text}"


@pytest.mark.parametrize(
    ("types", "code"),
    [(("ORU^R01",), 200), (("ADT^A08", "ORU"), 201), (("ADT^A0*",), 201)],
)
async def test_unsupported_message_type(types: tuple[str, ...], code: int) -> None:
    outcome = await run(make_message(), config=HL7Config(message_types=types))
    assert outcome.reply == expected(
        "2.5", "ACK1", "MSA|AR|MSG00001", err(code, "message type 'ADT\\S\\A01' is not accepted", 9)
    )
    assert (outcome.accepted, outcome.code) == (False, "AR")


@pytest.mark.parametrize("types", [("ADT^A01",), ("adt",), ("ORU", "ADT^*"), ("*",), "ADT^A01"])
async def test_accepted_message_types(types: tuple[str, ...] | str) -> None:
    outcome = await run(make_message(), config=HL7Config(message_types=types))
    assert outcome.code == "AA"


async def test_unsupported_processing_id() -> None:
    outcome = await run(make_message(processing_id="T"), config=HL7Config(processing_ids="P"))
    assert outcome.reply is not None
    assert outcome.reply.endswith(
        b"MSA|AR|MSG00001\r" + err(202, "processing id 'T' is not accepted", 11).encode() + b"\r"
    )


@pytest.mark.parametrize(
    ("version", "versions", "code"),
    [("2.5", ("2.3",), 203), ("3.0", None, 203), ("2.x", None, 203), ("", None, 101)],
)
async def test_unsupported_version(
    version: str, versions: tuple[str, ...] | None, code: int
) -> None:
    outcome = await run(make_message(version=version), config=HL7Config(versions=versions))
    assert outcome.code == "AR"
    assert outcome.error is not None
    assert outcome.error.code == code
    assert outcome.reply is not None
    # A non-numeric version gets the pre-2.5 ERR-1 form.
    assert f"^{code}&".encode() in outcome.reply or f"|{code}^".encode() in outcome.reply


@pytest.mark.parametrize("version", ["2.1", "2.3.1", "2.8", "2.9", "2.10", "2.5.1.7"])
async def test_any_2x_version_by_default(version: str) -> None:
    assert (await run(make_message(version=version))).code == "AA"


@pytest.mark.parametrize("version", ["2", "2.", "2.5.", "02.5", "2.x", "2..5", "3.0", "2.5a"])
def test_other_versions_are_refused_by_default(version: str) -> None:
    with pytest.raises(HL7Reject) as info:
        check_rules(read_msh(make_message(version=version)), CONFIG)
    assert info.value.error.code == 203


def test_known_versions_are_ones_the_pattern_accepts() -> None:
    # The set only spares the regex for the usual versions: it must not widen it.
    from mllp_trio._hl7._pipeline import _KNOWN_2X, _VERSION_2X

    assert all(_VERSION_2X.fullmatch(v) for v in _KNOWN_2X)


async def test_unreadable_msh_with_control_id_gets_ar() -> None:
    outcome = await run(b"MSH|^~\\&|A|B|C|D|1|||X7|P|2.5\rPID|1\r")
    assert outcome.reply == (
        b"MSH|^~\\&|C|D|A|B|20240131235959+0100||ACK^^ACK|ACK1|P|2.5\r"
        b"MSA|AR|X7\r"
        b"ERR|||101^Required field missing^HL70357|E||||MSH-9 (message type) is empty\r"
    )
    assert not outcome.accepted


async def test_unreadable_encoding_characters_get_ar_102() -> None:
    outcome = await run(b"MSH|^^^^|A|B|C|D|1||ADT^A01|X8|P|2.5|||AL|AL\r")
    assert outcome.code == "CR"
    assert outcome.reply is not None
    assert b"MSA|CR|X8\rERR|||102^Data type error^HL70357|E" in outcome.reply
    assert outcome.reply.startswith(b"MSH|^~\\&|")


@pytest.mark.parametrize(
    "raw", [b"PID|1\r", b"MSH|^~\\&|A|B|C\r", b"MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r"]
)
async def test_unanswerable_message_is_dropped_and_logged(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    called = []

    async def handler(message: InboundMessage) -> None:
        called.append(message)

    with caplog.at_level(logging.INFO, logger="mllp_trio.hl7"):
        outcome = await run(raw, handler)
    assert outcome.reply is None
    assert (outcome.accepted, outcome.code, outcome.control_id) == (False, "", None)
    assert not called
    assert f"{len(raw)}-byte message" in caplog.text


async def test_acks_are_never_acknowledged() -> None:
    called = []

    async def handler(message: InboundMessage) -> None:
        called.append(message)

    raw = b"MSH|^~\\&|A|B|C|D|1||ACK^A01^ACK|K1|P|2.5\rMSA|AE|X\r"
    outcome = await run(raw, handler, HL7Config(message_types=("ADT",)))
    assert outcome.reply is None
    assert outcome.application_ack is None
    assert (outcome.accepted, outcome.control_id) == (True, "K1")
    assert not called
    assert outcome.message is not None
    assert outcome.message.text.startswith("MSH|")


async def test_ack_with_unknown_charset_has_no_message() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|1||ACK|K1|P|2.5||||||KLINGON\rMSA|AA|X\r"
    outcome = await run(raw)
    assert outcome.reply is None
    assert outcome.message is None


# --- segment terminators -------------------------------------------------------------


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
async def test_lf_and_crlf_accepted_and_normalised(terminator: str) -> None:
    texts: list[str] = []

    async def handler(message: InboundMessage) -> None:
        texts.append(message.text)
        assert str(message.parsed.segment("PID")[5]) == "DOE^JOHN"

    raw = make_message(terminator=terminator)
    outcome = await run(raw, handler)
    assert outcome.reply == expected("2.5", "ACK1", "MSA|AA|MSG00001")
    assert "\n" not in texts[0]
    assert texts[0].count("\r") == 4
    assert outcome.message is not None
    assert outcome.message.raw == raw  # raw stays as received


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
async def test_lf_and_crlf_refused_in_strict_mode(terminator: str) -> None:
    config = HL7Config(strict_segment_terminators=True)
    outcome = await run(make_message(terminator=terminator), config=config)
    offset = make_message(terminator=terminator).index(b"\n")
    assert outcome.reply == expected(
        "2.5",
        "ACK1",
        "MSA|AE|MSG00001",
        "ERR|||100^Segment sequence error^HL70357|E||||"
        f"segments must be terminated by CR alone; LF found at offset {offset}",
    )


async def test_strict_mode_accepts_cr() -> None:
    config = HL7Config(strict_segment_terminators=True)
    assert (await run(make_message(), config=config)).code == "AA"


# --- handler contract ------------------------------------------------------------------


async def test_hl7_reject_gives_ar() -> None:
    async def handler(message: InboundMessage) -> None:
        raise HL7Reject("busy", code=206)

    outcome = await run(make_message(), handler)
    assert outcome.reply == expected(
        "2.5", "ACK1", "MSA|AR|MSG00001", "ERR|||206^Application record locked^HL70357|E||||busy"
    )
    assert not outcome.accepted


async def test_hl7_error_default_code_is_207() -> None:
    async def handler(message: InboundMessage) -> None:
        raise HL7Error()

    outcome = await run(make_message(), handler)
    assert outcome.reply == expected(
        "2.5", "ACK1", "MSA|AE|MSG00001", "ERR|||207^Application internal error^HL70357|E"
    )


def test_refusals_are_mllp_errors_and_validate_codes() -> None:
    assert issubclass(HL7Error, HL7Refusal)
    assert issubclass(HL7Reject, MLLPError)
    assert not issubclass(HL7Reject, HL7Error)
    with pytest.raises(ValueError):
        HL7Error("x", code=42)


async def test_plain_exception_is_ae_207_and_text_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        outcome = await run(make_message(), fails)
    assert outcome.reply == expected(
        "2.5", "ACK1", "MSA|AE|MSG00001", "ERR|||207^Application internal error^HL70357|E"
    )
    assert SECRET not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    assert "builtins.RuntimeError" in caplog.text
    assert "test_pipeline.py" in caplog.text  # where it was raised
    assert "in fails" in caplog.text
    assert "MSG00001" in caplog.text
    assert SECRET.encode() not in (outcome.reply or b"")


async def test_exception_text_logged_when_opted_in(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        outcome = await run(make_message(), fails, HL7Config(log_exception_text=True))
    assert outcome.code == "AE"
    assert SECRET in caplog.text


async def test_handler_bytes_are_sent_verbatim() -> None:
    canned = b"MSH|^~\\&|X|Y|Z|W|1||ACK|PRE|P|2.5\rMSA|AA|MSG00001\r"

    async def handler(message: InboundMessage) -> bytes:
        return canned

    outcome = await run(make_message(), handler)
    assert (outcome.reply, outcome.accepted, outcome.code) == (canned, True, "AA")


async def test_handler_bytes_with_negative_code_are_not_accepted() -> None:
    async def handler(message: InboundMessage) -> bytes:
        return b"MSH|^~\\&|X|Y|Z|W|1||ACK|PRE|P|2.5\rMSA|AR|MSG00001\r"

    outcome = await run(make_message(), handler)
    assert (outcome.accepted, outcome.code) == (False, "AR")


async def test_handler_bytes_in_enhanced_mode_are_the_application_ack() -> None:
    canned = b"MSH|^~\\&|X|Y|Z|W|1||ACK|PRE|P|2.5\rMSA|AA|MSG00001\r"

    async def handler(message: InboundMessage) -> bytes:
        return canned

    outcome = await run(enhanced("AL", "AL"), handler)
    assert outcome.reply == expected("2.5.1", "ACK1", CA)
    assert outcome.application_ack == canned


async def test_handler_returning_wrong_type_is_ae(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(message: InboundMessage) -> str:
        return "AA"

    outcome = await run(make_message(), handler)
    assert outcome.code == "AE"
    assert "expected None or bytes" in caplog.text


async def test_cancellation_propagates(autojump_clock: trio.abc.Clock) -> None:
    async def handler(message: InboundMessage) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(5) as scope:
        await run(make_message(), handler)
    assert scope.cancelled_caught


async def test_inbound_message_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    parses: list[str] = []
    real_parse = hl7.parse

    def counting_parse(text: str) -> hl7.Message:
        parses.append(text)
        return real_parse(text)

    monkeypatch.setattr(hl7, "parse", counting_parse)
    got: list[InboundMessage] = []

    async def handler(message: InboundMessage) -> None:
        got.append(message)

    raw = make_message(message_type="ORU^R01^ORU_R01", patient_name="SECRETNAME^X")
    await run(raw, handler)
    (m,) = got
    assert (m.control_id, m.message_type, m.message_code, m.trigger_event) == (
        "MSG00001",
        "ORU^R01",
        "ORU",
        "R01",
    )
    assert m.peer == PEER
    assert m.raw == raw
    assert "SECRETNAME" not in repr(m)
    assert parses == []  # nothing parsed until asked
    assert str(m.parsed.segment("PID")[3]) == "12345^^^HOSP^MR"
    assert m.parsed is m.parsed
    assert len(parses) == 1


def test_inbound_message_decodes_lazily() -> None:
    raw = make_message(patient_name="Müller", codec="latin_1", terminator="\n")
    m = InboundMessage(
        raw=raw, header=read_msh(raw), peer=PEER, charset=Charset("8859/1", "latin_1")
    )
    assert "Müller" in m.text
    assert "\n" not in m.text


# --- router ----------------------------------------------------------------------------


def make_router(log: list[str], *, default: bool = False) -> Router:
    router = Router()

    @router.route("ADT^A01")
    async def admission(message: InboundMessage) -> None:
        log.append("admit")

    @router.route("oru^*")
    async def results(message: InboundMessage) -> None:
        log.append("results")

    @router.route("*^Z99")
    async def z99(message: InboundMessage) -> None:
        log.append("z99")

    if default:

        @router.default
        async def other(message: InboundMessage) -> None:
            log.append("default")

    return router


@pytest.mark.parametrize(
    ("message_type", "route"),
    [
        ("ADT^A01", "admit"),
        ("ORU^R01^ORU_R01", "results"),
        ("ORU^R30", "results"),
        ("SIU^Z99", "z99"),
        ("ADT^A08", "default"),
        ("MDM^T02", "default"),
    ],
)
async def test_router_dispatch(message_type: str, route: str) -> None:
    log: list[str] = []
    outcome = await run(make_message(message_type=message_type), make_router(log, default=True))
    assert log == [route]
    assert outcome.code == "AA"


@pytest.mark.parametrize(("message_type", "code"), [("ADT^A08", 201), ("MDM^T02", 200)])
async def test_router_without_match_rejects(message_type: str, code: int) -> None:
    log: list[str] = []
    outcome = await run(make_message(message_type=message_type), make_router(log))
    assert log == []
    assert outcome.code == "AR"
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.location) == (code, ("MSH", 1, 9))


async def test_router_catch_all_route() -> None:
    router = Router()
    seen: list[str] = []

    async def anything(message: InboundMessage) -> None:
        seen.append(message.message_type)

    router.add("*", anything)
    await run(make_message(message_type="QRY^A19"), router)
    assert seen == ["QRY^A19"]


def test_router_rejects_duplicates_and_bad_patterns() -> None:
    router = Router()
    router.add("ADT^A01", ok)
    with pytest.raises(ValueError, match="already registered"):
        router.add("adt^a01", ok)
    with pytest.raises(ValueError, match="invalid message type pattern"):
        router.add("^A01", ok)
    with pytest.raises(ValueError):
        HL7Config(message_types=("",))


# --- stages ------------------------------------------------------------------------------


async def test_stages_compose_like_respond() -> None:
    raw = make_message(version="2.5.1")
    header = read_msh(raw)
    check_rules(header, CONFIG)
    message = prepare_message(raw, header, peer=PEER, config=CONFIG)
    verdict = await run_handler(ok, message, config=CONFIG)
    assert verdict == Verdict(disposition=Disposition.ACCEPT)
    staged = acknowledge(message, verdict, now=NOW, new_id=ids("ACK1"))
    assert staged.reply == (await run(raw)).reply


def test_check_rules_raises_reject() -> None:
    with pytest.raises(HL7Reject) as info:
        check_rules(read_msh(make_message(version="3.0")), CONFIG)
    assert info.value.error.code == 203


def test_prepare_message_raises_error() -> None:
    raw = make_message(charset="KLINGON")
    with pytest.raises(HL7Error) as info:
        prepare_message(raw, read_msh(raw), peer=PEER, config=CONFIG)
    assert (info.value.error.code, info.value.error.location) == (103, ("MSH", 1, 18))


def test_config_converts_and_defaults() -> None:
    config = HL7Config(message_types="ORU", processing_ids=["P", "T"], versions="2.5")
    assert config.message_types == ("ORU^*",)
    assert config.processing_ids == ("P", "T")
    assert config.versions == ("2.5",)
    assert HL7Config().default_charset == "UNICODE UTF-8"
    with pytest.raises(TypeError):
        HL7Config("ORU")  # type: ignore[call-arg]


def test_check_rules_with_several_configurations() -> None:
    # Patterns are split once per configuration: each one must keep its own.
    adt, oru = HL7Config(message_types=("ADT^A01",)), HL7Config(message_types=("ORU",))
    a01, r01 = read_msh(make_message()), read_msh(make_message(message_type="ORU^R01"))
    for _ in range(2):
        check_rules(a01, adt)
        check_rules(r01, oru)
        with pytest.raises(HL7Reject) as info:
            check_rules(r01, adt)
        assert info.value.error.code == 200
        with pytest.raises(HL7Reject):
            check_rules(a01, oru)


async def test_padded_msh18_is_read_but_not_cached() -> None:
    before = _charsets._resolve_cached.cache_info().currsize
    padded = "UNICODE UTF-8" + " " * 200
    outcome = await run(make_message(charset=padded, patient_name="M\u00fcller^X", codec="utf_8"))
    assert outcome.code == "AA"
    assert outcome.message is not None
    assert outcome.message.charset.codec == "utf_8"
    assert "M\u00fcller" in outcome.message.text
    assert _charsets._resolve_cached.cache_info().currsize == before


async def test_shared_verdicts_and_ids_across_messages() -> None:
    # The accept verdict is shared between messages; ACKs still differ by id.
    first = await respond(make_message(), peer=PEER, handler=ok, config=CONFIG, now=NOW)
    second = await respond(make_message(), peer=PEER, handler=ok, config=CONFIG, now=NOW)
    assert first.reply is not None
    assert second.reply is not None
    id1, id2 = first.reply.split(b"|")[9], second.reply.split(b"|")[9]
    assert id1 != id2
    assert len(id1) == len(id2) == 20
    assert first.reply.replace(id1, b"") == second.reply.replace(id2, b"")


def test_message_type_pattern_with_structure_is_accepted() -> None:
    assert HL7Config(message_types="ADT^A01^ADT_A01").message_types == ("ADT^A01",)


# --- the retry policy on outcomes and verdicts ----------------------------------------


async def test_outcome_is_transient_only_for_code_207() -> None:
    async def busy(message: InboundMessage) -> None:
        raise HL7Reject("busy", code=206)

    async def no_code(message: InboundMessage) -> None:
        raise HL7Error("database down")

    assert (await run(make_message(), fails)).transient  # AE 207
    assert (await run(make_message(), no_code)).transient  # HL7Error's default code
    assert not (await run(make_message(), busy)).transient  # the handler's own code
    assert not (await run(make_message())).transient  # AA
    assert not (await run(make_message(version="3.0"))).transient  # AR 203, by rule
    assert not (await run(make_message(charset="KLINGON"))).transient  # AE 103
    assert not (await run(b"PID|1\r")).transient  # unanswerable, no reason
    # Enhanced mode: taken (CA), yet the application failed for a passing reason.
    enhanced_failure = await run(enhanced("AL", "AL"), fails)
    assert (enhanced_failure.code, enhanced_failure.application_code) == ("CA", "AE")
    assert enhanced_failure.transient
    enhanced_reject = await run(enhanced("AL", "AL", version="3.0"))
    assert (enhanced_reject.code, enhanced_reject.transient) == ("CR", False)


def test_verdict_is_transient_only_for_an_error_or_reject_with_code_207() -> None:
    internal = ErrorInfo(code=207)
    assert Verdict(disposition=Disposition.ERROR, error=internal).transient
    assert Verdict(disposition=Disposition.REJECT, error=internal).transient
    assert not Verdict(disposition=Disposition.ERROR, error=ErrorInfo(code=204)).transient
    assert not Verdict(disposition=Disposition.ACCEPT).transient
    assert not Verdict(disposition=Disposition.ACCEPT, error=internal).transient


# --- bounded memory (issue 9) ----------------------------------------------------------


def _cache_sizes() -> dict[str, int]:
    """The size of every cache in the HL7 layer, found rather than listed."""
    sizes = {}
    for name, module in sys.modules.items():
        if not name.startswith(_hl7.__name__):
            continue
        for attr, value in vars(module).items():
            info = getattr(value, "cache_info", None)
            if callable(info):
                sizes[f"{name}.{attr}"] = info().currsize
    sizes["_msh._dialects"] = len(_msh._dialects)
    sizes["_msh._ack_types"] = len(_msh._ack_types)
    for key, dialect in _msh._dialects.items():
        sizes[f"dialect {key!r} types"] = len(dialect.types)
        sizes[f"dialect {key!r} versions"] = len(dialect.versions)
    return sizes


def _huge_headers(count: int, size: int) -> Iterator[bytes]:
    # Valid headers, each with a distinct huge MSH-12 and MSH-18: "2.111...1"
    # is a 2.x version, and spaces inside a charset name are ignored.
    for n in range(count):
        version = b"2." + b"1" * (size + n)
        charset = b"UNICODE" + b" " * (size + n) + b"UTF-8"
        yield (b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X%d|P|%s||||||%s\rPID|1\r" % (n, version, charset))


async def test_huge_msh12_and_msh18_values_are_never_cached() -> None:
    # A peer sending distinct huge MSH-12 / MSH-18 values used to pin them in
    # lru caches keyed by the whole text (20 x 2 MiB per round: RSS 40 -> 307
    # MiB, never released). Cached or not, every message is answered right.
    (warm_up,) = _huge_headers(1, 1)
    assert (await run(warm_up)).code == "AA"
    before = _cache_sizes()
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for raw in _huge_headers(20, 256 * 1024):
            outcome = await respond(raw, peer=PEER, handler=ok, config=CONFIG)
            assert outcome.code == "AA"
            assert outcome.message is not None
            assert outcome.message.charset.codec == "utf_8"
            admitted = admit(raw, peer=PEER, config=HL7Config(versions=None))
            assert isinstance(admitted, InboundMessage)
            del raw, outcome, admitted
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert _cache_sizes() == before
    # 20 messages of 1 MiB went through; what stays is far less than one of them.
    assert retained < 256 * 1024

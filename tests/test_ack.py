from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllp_trio._hl7 import (
    TABLE_0357,
    AckCode,
    ErrorInfo,
    build_ack,
    hl7_timestamp,
    new_control_id,
    read_msh,
)
from mllp_trio._hl7._ack import _IdSource

from .hl7_samples import ADT_A01_V23, ADT_A01_V25, ADT_A01_V251, NOW, NOW_TS, make_message

V23 = read_msh(ADT_A01_V23)
V25 = read_msh(ADT_A01_V25)
V251 = read_msh(ADT_A01_V251)


def test_golden_aa_v23() -> None:
    assert build_ack(V23, "AA", now=NOW, control_id="ACK1") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01|ACK1|P|2.3\r"
        b"MSA|AA|MSG00001\r"
    )


def test_golden_aa_v25() -> None:
    assert build_ack(V25, "AA", now=NOW, control_id="ACK1") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01^ACK|ACK1|P|2.5\r"
        b"MSA|AA|MSG00001\r"
    )


def test_golden_aa_v251() -> None:
    assert build_ack(V251, "AA", now=NOW, control_id="ACK1") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01^ACK|ACK1|P|2.5.1\r"
        b"MSA|AA|MSG00001\r"
    )


def test_golden_ae_v23_uses_err1_and_msa3() -> None:
    error = ErrorInfo(code=101, text="PID-3 missing", location=("PID", 1, 3))
    assert build_ack(V23, "AE", error=error, now=NOW, control_id="ACK1") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01|ACK1|P|2.3\r"
        b"MSA|AE|MSG00001|PID-3 missing\r"
        b"ERR|PID^1^3^101&Required field missing&HL70357\r"
    )


def test_golden_ar_v23_without_text_or_location() -> None:
    assert build_ack(V23, "AR", error=ErrorInfo(code=207), now=NOW, control_id="A") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01|A|P|2.3\r"
        b"MSA|AR|MSG00001|Application internal error\r"
        b"ERR|^^^207&Application internal error&HL70357\r"
    )


def test_golden_ae_v25_uses_err3_err4_err8() -> None:
    error = ErrorInfo(code=207, text="db|down^now")
    assert build_ack(V25, "AE", error=error, now=NOW, control_id="ACK1") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01^ACK|ACK1|P|2.5\r"
        b"MSA|AE|MSG00001\r"
        b"ERR|||207^Application internal error^HL70357|E||||db\\F\\down\\S\\now\r"
    )


def test_golden_ar_v251_with_location() -> None:
    error = ErrorInfo(code=200, location=("MSH", 1, 9))
    assert build_ack(V251, "AR", error=error, now=NOW, control_id="ACK1") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01^ACK|ACK1|P|2.5.1\r"
        b"MSA|AR|MSG00001\r"
        b"ERR||MSH^1^9|200^Unsupported message type^HL70357|E\r"
    )


def test_golden_commit_codes_and_charset_echo() -> None:
    header = read_msh(
        make_message(version="2.5.1", accept_ack="AL", application_ack="NE", charset="8859/1")
    )
    assert build_ack(header, "CA", now=NOW, control_id="C1") == (
        b"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|20240131235959+0100||ACK^A01^ACK|C1|P|2.5.1"
        b"||||||8859/1\r"
        b"MSA|CA|MSG00001\r"
    )


def test_custom_separators_are_kept() -> None:
    header = read_msh(b"MSH#$~!@#APP$X#FAC#RAPP#RFAC#20240101##ORU$R01$ORU_R01#ID!F!9#P#2.5\r")
    error = ErrorInfo(code=102, text="a#b$c", location=("OBX", 2, 5))
    assert build_ack(header, "AE", error=error, now=NOW, control_id="Z") == (
        b"MSH#$~!@#RAPP#RFAC#APP$X#FAC#20240131235959+0100##ACK$R01$ACK#Z#P#2.5\r"
        b"MSA#AE#ID!F!9\r"
        b"ERR##OBX$2$5#102$Data type error$HL70357#E####a!F!b!S!c\r"
    )


def test_hl7_library_reads_our_acks_back() -> None:
    error = ErrorInfo(code=207, text="x|y")
    for header, modern in ((V23, False), (V25, True), (V251, True)):
        ack = build_ack(header, "AE", error=error, now=NOW, control_id="ACK9")
        msg = hl7.parse(ack.decode("ascii"))
        msh = msg.segment("MSH")
        assert str(msh[3]) == "EHR"
        assert str(msh[5]) == "LAB^1.2.3^ISO"
        assert str(msh[7]) == NOW_TS
        assert str(msh[9]) == ("ACK^A01^ACK" if modern else "ACK^A01")
        assert str(msh[10]) == "ACK9"
        assert str(msh[12]) == header.version_id
        assert str(msg.segment("MSA")[1]) == "AE"
        assert str(msg.segment("MSA")[2]) == "MSG00001"
        err = msg.segment("ERR")
        if modern:
            assert str(err[3]) == "207^Application internal error^HL70357"
            assert str(err[4]) == "E"
            assert msg.unescape(str(err[8])) == "x|y"
        else:
            assert msg.unescape(str(msg.segment("MSA")[3])) == "x|y"
            assert str(err[1][0][3]) == "207&Application internal error&HL70357"


def test_message_without_trigger_event() -> None:
    header = read_msh(b"MSH|^~\\&|A|B|C|D|1||QRY|Q1|P|2.5\r")
    ack = build_ack(header, "AA", now=NOW, control_id="K")
    assert b"|ACK^^ACK|K|" in ack


def test_unknown_version_uses_err1_form() -> None:
    header = read_msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|V2\r")
    ack = build_ack(header, "AR", error=ErrorInfo(code=203), now=NOW, control_id="K")
    assert ack.endswith(
        b"MSA|AR|X|Unsupported version id\rERR|^^^203&Unsupported version id&HL70357\r"
    )


def test_error_info_requires_table_0357_code() -> None:
    with pytest.raises(ValueError, match="table 0357"):
        ErrorInfo(code=999)
    with pytest.raises(ValueError):
        ErrorInfo(code=0)
    assert TABLE_0357[206] == "Application record locked"
    assert "secret" not in repr(ErrorInfo(code=207, text="secret"))


def test_invalid_ack_code() -> None:
    with pytest.raises(ValueError):
        build_ack(V25, "OK", now=NOW, control_id="K")


# --- timestamps and ids ---------------------------------------------------------


def test_timestamp_formats() -> None:
    assert hl7_timestamp(NOW) == NOW_TS
    west = datetime(2024, 7, 1, 8, 5, 3, tzinfo=timezone(-timedelta(hours=5, minutes=30)))
    assert hl7_timestamp(west) == "20240701080503-0530"
    assert re.fullmatch(r"\d{14}[+-]\d{4}", hl7_timestamp())
    assert re.fullmatch(r"\d{14}[+-]\d{4}", hl7_timestamp(datetime(2024, 1, 1, 12)))


def test_control_ids_are_short_and_unique() -> None:
    produced = [new_control_id() for _ in range(5000)]
    assert len(set(produced)) == len(produced)
    assert all(len(v) == 20 and re.fullmatch("[0-9A-Z]+", v) for v in produced)
    # A second source (another process or a restart) uses another prefix.
    assert _IdSource().next()[:14] != produced[0][:14]


def test_control_id_counter_wrap_draws_a_new_prefix() -> None:
    source = _IdSource()
    first = source.next()
    source._counter = iter([36**6])
    wrapped = source.next()
    assert wrapped[:14] != first[:14]
    assert wrapped.endswith("000000")


# --- control ids and codes ------------------------------------------------------------------


@given(n=st.integers(min_value=0, max_value=36**6 - 1))
def test_control_id_counter_is_base36(n: int) -> None:
    source = _IdSource()
    prefix = source.next()[:14]
    source._counter = iter([n])
    produced = source.next()
    assert produced[:14] == prefix
    assert re.fullmatch("[0-9A-Z]{6}", produced[14:])
    assert int(produced[14:], 36) == n


def test_control_id_with_delimiters_is_escaped() -> None:
    ack = build_ack(V25, "AA", now=NOW, control_id="K|1^2")
    assert b"|ACK^A01^ACK|K\\F\\1\\S\\2|P|2.5\r" in ack
    latin = build_ack(V25, "AA", codec="latin_1", now=NOW, control_id="\u00c41")
    assert b"|ACK^A01^ACK|\xc41|P|2.5\r" in latin


def test_code_as_member_or_text_builds_the_same_ack() -> None:
    for code in AckCode:
        by_text = build_ack(V251, code.value, now=NOW, control_id="K")
        assert build_ack(V251, code, now=NOW, control_id="K") == by_text
        assert by_text.endswith(f"MSA|{code.value}|MSG00001\r".encode())


def test_current_time_stamp_in_built_ack() -> None:
    before = hl7_timestamp()
    msh7 = build_ack(V25, "AA", control_id="K").split(b"|")[6].decode()
    after = hl7_timestamp()
    assert msh7 in (before, after)
    assert re.fullmatch(r"\d{14}[+-]\d{4}", msh7)


def test_a_cached_ack_template_serves_only_its_own_sender() -> None:
    # The second ACK for a sender comes from its cached template: it must
    # carry that message's MSA-2, MSH-7 and MSH-10, and a sender differing
    # in any echoed field (here MSH-3, MSH-12, the separators) gets its own.
    first = build_ack(V25, "AA", now=NOW, control_id="ACK1")
    other_id = read_msh(ADT_A01_V25.replace(b"|MSG00001|", b"|MSG00002|"))
    assert build_ack(other_id, "AA", now=NOW, control_id="ACK2") == first.replace(
        b"|ACK1|", b"|ACK2|"
    ).replace(b"MSA|AA|MSG00001", b"MSA|AA|MSG00002")
    later = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert b"|20250601120000-0500||" in build_ack(V25, "AA", now=later, control_id="ACK3")
    renamed = read_msh(ADT_A01_V25.replace(b"|EHR|", b"|OTHER|"))
    assert b"|OTHER|" in build_ack(renamed, "AA", now=NOW, control_id="ACK4")
    assert build_ack(V23, "AA", now=NOW, control_id="ACK1").split(b"\r")[0].endswith(b"|2.3")
    assert build_ack(V25, "AE", now=NOW, control_id="ACK1").endswith(b"MSA|AE|MSG00001\r")
    plus = read_msh(ADT_A01_V25.replace(b"|", b"+"))
    # '+' is the field separator: MSH-7 drops its zone rather than split the field.
    assert b"+20240131235959++ACK^A01^ACK+" in build_ack(plus, "AA", now=NOW, control_id="X")

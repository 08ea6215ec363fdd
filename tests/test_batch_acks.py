"""Acknowledgement batches: the answer file in three modes, and matching it back by MSA-2."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from mllp_trio._batch import (
    AckBatchWriter,
    AckMode,
    BatchHeader,
    BatchTrailer,
    FileHeader,
    FileTrailer,
    HeaderFields,
    Message,
    answer_header,
    iter_events,
    match_acks,
    read_messages,
)
from mllp_trio._hl7 import ErrorInfo, build_ack, read_msh

NOW = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
ORIGINAL_FHS = HeaderFields(
    sending_application="LAB",
    sending_facility="NORTH^1",
    receiving_application="EHR",
    receiving_facility="SOUTH",
    name="nightly",
    control_id="FILE42",
)
ORIGINAL_BHS = HeaderFields(
    sending_application="LAB",
    sending_facility="NORTH^1",
    receiving_application="EHR",
    receiving_facility="SOUTH",
    control_id="BATCH7",
)


def message(n: int) -> bytes:
    return b"MSH|^~\\&|LAB|NORTH^1|EHR|SOUTH|20240131||ORU^R01|M%d|P|2.5.1\rPID|1||%d\r" % (n, n)


def ack_for(raw: bytes, code: str) -> bytes:
    error = None if code in ("AA", "CA") else ErrorInfo(code=207, text="try later")
    return build_ack(read_msh(raw), code, error=error, now=NOW)


MESSAGES = [message(n) for n in range(6)]
CODES = ["AA", "AE", "AA", "AR", "AA", "AA"]
ACKS = [ack_for(m, c) for m, c in zip(MESSAGES, CODES, strict=True)]
IDS = [read_msh(m).control_id_raw for m in MESSAGES]


def answer(mode: AckMode, acks: list[bytes] = ACKS) -> tuple[bytes, AckBatchWriter]:
    writer = AckBatchWriter(mode=mode, now=NOW)
    out = writer.file_header(ORIGINAL_FHS) + writer.batch_header(ORIGINAL_BHS)
    for ack in acks:
        out += writer.ack(ack)
    return out + writer.close(), writer


def test_answer_header_swaps_parties_and_refers_to_the_original() -> None:
    header = answer_header(ORIGINAL_FHS, now=NOW, control_id="ANS1")
    assert header.sending_application == b"EHR"
    assert header.sending_facility == b"SOUTH"
    assert header.receiving_application == b"LAB"
    assert header.receiving_facility == b"NORTH^1"  # whole fields, components too
    assert header.reference_control_id == b"FILE42"
    assert header.control_id == b"ANS1"
    assert header.date_time == b"20240131120000+0000"
    assert header.name == b"nightly"
    # The same swap as a message ACK's MSH-3..6 for the same parties.
    ack = read_msh(ACKS[0])
    assert (ack.sending_application, ack.sending_facility) == (b"EHR", b"SOUTH")
    assert (ack.receiving_application, ack.receiving_facility) == (b"LAB", b"NORTH^1")
    fresh = answer_header(None, now=NOW)
    assert fresh.reference_control_id == b"" and len(fresh.control_id) == 20


@pytest.mark.parametrize(
    ("mode", "written"),
    [(AckMode.ALL, [0, 1, 2, 3, 4, 5]), (AckMode.ERRORS, [1, 3]), (AckMode.NONE, [1, 3])],
)
def test_three_modes_with_mixed_results(mode: AckMode, written: list[int]) -> None:
    data, writer = answer(mode)
    assert (writer.acks, writer.negatives, writer.written) == (6, 2, len(written))
    events = list(iter_events_bytes(data))
    fhs, bhs = events[0], events[1]
    assert isinstance(fhs, FileHeader) and isinstance(bhs, BatchHeader)
    assert fhs.header.reference_control_id == b"FILE42"  # FHS-12 = original FHS-11
    assert bhs.header.reference_control_id == b"BATCH7"  # BHS-12 = original BHS-11
    assert bhs.header.sending_application == b"EHR"
    assert bhs.header.receiving_facility == b"NORTH^1"
    acks = [e.raw for e in events if isinstance(e, Message)]
    assert acks == [ACKS[i] for i in written]
    trailer = next(e for e in events if isinstance(e, BatchTrailer))
    assert trailer.count == len(written)
    assert next(e for e in events if isinstance(e, FileTrailer)).count == 1
    # Matched back message by message: a missing ACK means accepted.
    matched, stray = match_acks(acks, IDS)
    assert not stray
    assert [m.control_id for m in matched] == IDS
    assert [m.accepted for m in matched] == [c == "AA" for c in CODES]
    expected = [CODES[i] if i in written else "" for i in range(6)]
    assert [m.code for m in matched] == expected


def iter_events_bytes(data: bytes) -> list[object]:
    return list(iter_events(io.BytesIO(data)))


def test_none_mode_all_accepted_is_bts_zero() -> None:
    accepted = [ack_for(m, "AA") for m in MESSAGES]
    data, writer = answer(AckMode.NONE, accepted)
    assert writer.written == 0
    assert data.endswith(b"\rBTS|0\rFTS|1\r")
    assert data.count(b"\r") == 4  # FHS, BHS, BTS, FTS
    matched, _ = match_acks(read_messages_bytes(data), IDS)
    assert all(m.accepted and m.ack is None for m in matched)


def read_messages_bytes(data: bytes) -> list[bytes]:
    return list(read_messages(io.BytesIO(data)))


def test_a_batch_without_headers_still_gets_an_answering_batch() -> None:
    writer = AckBatchWriter(mode=AckMode.ERRORS, now=NOW)
    out = writer.close()
    assert out.startswith(b"BHS|^~\\&|||||20240131120000+0000||||")
    assert out.endswith(b"\rBTS|0\r")
    writer = AckBatchWriter(mode=AckMode.ALL, now=NOW)
    out = writer.ack(ACKS[0]) + writer.close()
    assert out.startswith(b"BHS|") and out.endswith(ACKS[0] + b"BTS|1\r")


def test_several_original_batches_get_one_answer_each() -> None:
    writer = AckBatchWriter(mode=AckMode.ALL, now=NOW)
    out = writer.file_header(ORIGINAL_FHS)
    for n in range(3):
        out += writer.batch_header(HeaderFields(control_id=f"B{n}"))
        out += writer.ack(ACKS[n])
    out += writer.close()
    events = iter_events_bytes(out)
    refs = [e.header.reference_control_id for e in events if isinstance(e, BatchHeader)]
    assert refs == [b"B0", b"B1", b"B2"]
    assert [e.count for e in events if isinstance(e, BatchTrailer)] == [1, 1, 1]
    assert [e.count for e in events if isinstance(e, FileTrailer)] == [3]


def test_match_acks_reports_strays() -> None:
    foreign = ack_for(message(99), "AA")
    no_msa = b"MSH|^~\\&|A|B|C|D|||ACK|X|P|2.5\r"
    matched, stray = match_acks([ACKS[1], foreign, ACKS[1], no_msa, ACKS[0]], IDS[:3])
    assert [m.code for m in matched] == ["AA", "AE", ""]
    assert stray == [ACKS[1], no_msa, foreign]
    assert "PID" not in repr(matched[0]) and "M0" in repr(matched[0])

"""HLLP blocks: SPEC.md section 3."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllp_trio.proto import (
    BadBlock,
    HLLPConnection,
    HLLPNak,
    LocalProtocolError,
    Message,
    NakReason,
    oracle_checksum,
    sum_checksum,
    xor_checksum,
)

from .framing_helpers import ADT, drive, drive_all_ways

EOS = ("EndOfStream",)


def test_self_check_vector() -> None:
    conn = HLLPConnection(protocol_id="21")
    expected = bytes.fromhex("0B 44 32 31 0D 41 0D") + b"00007013" + bytes.fromhex("1C 0D")
    assert conn.send(Message(b"A\r")) == expected
    assert drive_all_ways(HLLPConnection, expected) == [("message", b"A\r"), EOS]


def test_checksum_functions() -> None:
    block = bytes.fromhex("0B 44 32 31 0D 41 0D")
    assert xor_checksum(block, b"00007") == 13
    assert oracle_checksum(block, b"00007") == 13 ^ 0x30 ^ 0x30 ^ 0x30 ^ 0x30 ^ 0x37
    assert sum_checksum(block, b"00007") == sum(block) % 256
    big = bytes(range(256)) * 300 + b"\x01"
    expected = 0
    for byte in big:
        expected ^= byte
    assert xor_checksum(big, b"") == expected


@pytest.mark.parametrize("checksum", [xor_checksum, oracle_checksum, sum_checksum])
@pytest.mark.parametrize("vv", ["21", "23"])
def test_round_trip_every_variant(checksum: object, vv: str) -> None:
    def make() -> HLLPConnection:
        return HLLPConnection(protocol_id=vv, checksum=checksum)  # type: ignore[arg-type]

    data = make().send(Message(ADT)) + make().send(HLLPNak("X"))
    assert drive_all_ways(make, data) == [("message", ADT), ("nak", "X"), EOS]


def test_variants_disagree_so_checksum_matters() -> None:
    block = HLLPConnection(checksum=oracle_checksum).send(Message(ADT))
    assert drive(HLLPConnection, [block])[0][0] == ("bad", "X")


def test_any_two_digit_protocol_id_accepted_and_999_means_no_checksum() -> None:
    block = HLLPConnection(protocol_id="99", send_checksum=False).send(Message(ADT))
    assert block.endswith(b"999\x1c\r")
    assert drive(HLLPConnection, [block])[0][0] == ("message", ADT)


def corrupt(block: bytes, index: int, value: bytes) -> bytes:
    return block[:index] + value + block[index + 1 :]


def good_block() -> bytes:
    return HLLPConnection().send(Message(ADT))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        # Block size digit changed: C.
        (lambda b: corrupt(b, len(b) - 9, b"9"), "C"),
        # A data byte changed: checksum mismatch X.
        (lambda b: corrupt(b, 10, b"Z"), "X"),
        # Checksum digit changed: X.
        (lambda b: corrupt(b, len(b) - 3, b"9"), "X"),
        # Unknown block type: G.
        (lambda b: corrupt(b, 1, b"Q"), "G"),
        # Protocol id not digits: G.
        (lambda b: corrupt(b, 2, b"x"), "G"),
        # Size field not decimal: G.
        (lambda b: corrupt(b, len(b) - 8, b"x"), "G"),
        # Too short to be a block: G.
        (lambda b: b"\x0bD23\r\x1c\r", "G"),
    ],
)
def test_each_nak_reason(damage: object, reason: str) -> None:
    bad = damage(good_block())  # type: ignore[operator]
    events = drive_all_ways(HLLPConnection, bad + good_block())
    assert events == [("bad", reason), ("message", ADT), EOS]


def test_too_long_block_is_skipped_with_nak_b() -> None:
    def make() -> HLLPConnection:
        return HLLPConnection(max_message_size=len(ADT) - 1)

    long_block = HLLPConnection().send(Message(ADT))
    short = HLLPConnection().send(Message(b"MSH|^~\\&|A\r"))
    assert drive_all_ways(make, long_block + short) == [
        ("bad", "B"),
        ("message", b"MSH|^~\\&|A\r"),
        EOS,
    ]


def test_bad_block_tells_which_nak_to_send() -> None:
    event = BadBlock("C", "count")
    assert event.nak == HLLPNak(NakReason.BYTE_COUNT)
    conn = HLLPConnection(protocol_id="21")
    nak = conn.send(event.nak)
    assert nak.startswith(b"\x0bN21\rC")
    assert drive(HLLPConnection, [nak])[0][0] == ("nak", "C")


def test_refusals() -> None:
    with pytest.raises(ValueError, match="two digits"):
        HLLPConnection(protocol_id="2x")
    with pytest.raises(ValueError):
        HLLPConnection(max_message_size=0)
    conn = HLLPConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(Message(b"x" * 99995))
    with pytest.raises(LocalProtocolError):
        conn.send(Message(b"MSH|\x1c|"))


def test_a_nak_block_failing_its_checksum_is_never_answered() -> None:
    # Regression: two peers with different checksums NAKed each other's NAK
    # blocks for ever. A NAK block that fails verification gets no NAK.
    oracle_nak = HLLPConnection(checksum=oracle_checksum).send(HLLPNak(NakReason.CHECKSUM))
    receiver = HLLPConnection()
    receiver.receive_data(oracle_nak)
    event = receiver.next_event()
    assert isinstance(event, BadBlock)
    assert event.answer is False
    # A data block failing the same way is still answered.
    receiver.receive_data(HLLPConnection(checksum=oracle_checksum).send(Message(ADT)))
    data_event = receiver.next_event()
    assert isinstance(data_event, BadBlock) and data_event.answer is True


# The built-in checksums take a fast path (computed over the data alone and
# corrected for the bytes around it); a wrapper around the same function
# takes the generic path. Both must agree on every block, good or damaged.
_VARIANTS = [xor_checksum, oracle_checksum, sum_checksum]


@given(data=st.binary(max_size=5000))
def test_checksum_functions_match_byte_loops(data: bytes) -> None:
    xor = 0
    for byte in data:
        xor ^= byte
    assert xor_checksum(data, b"") == xor
    assert oracle_checksum(data, b"00123") == xor ^ 0x30 ^ 0x30 ^ 0x31 ^ 0x32 ^ 0x33
    assert sum_checksum(data, b"") == sum(data) % 256


@pytest.mark.parametrize("checksum", _VARIANTS)
@given(
    data=st.binary(max_size=3000).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")),
    damage=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
)
def test_fast_path_agrees_with_generic_path(
    checksum: Any, data: bytes, damage: int, value: int
) -> None:
    def generic(block: bytes, count: bytes) -> int:
        return int(checksum(block, count))

    fast, slow = HLLPConnection(checksum=checksum), HLLPConnection(checksum=generic)
    for event in (Message(data), HLLPNak("X")) if data else (HLLPNak("C"),):
        block = fast.send(event)
        assert block == slow.send(event)
        # One byte changed anywhere between SB and EB (framing bytes aside).
        index = 1 + damage % (len(block) - 3)
        hit = bytes((value,)) if value not in (0x0B, 0x1C) else b"A"
        bad = block[:index] + hit + block[index + 1 :]
        seen_fast = drive(lambda: HLLPConnection(checksum=checksum), [bad])[0]
        assert seen_fast == drive(lambda: HLLPConnection(checksum=generic), [bad])[0]
        assert drive(lambda: HLLPConnection(checksum=checksum), [block])[0][0][0] != "bad"

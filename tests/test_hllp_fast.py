"""HLLP decode fast path and XOR fold (issue 14): the same verdicts as plain references."""

from __future__ import annotations

import functools
import operator
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mllp_trio.proto import (
    NEED_DATA,
    BadBlock,
    EndOfStream,
    HLLPConnection,
    HLLPNak,
    Message,
    sum_checksum,
    xor_checksum,
)
from mllp_trio.proto._hllp import _xor

from .test_framing_properties import split

# Any length up to past the largest block (the fold plan changes at every
# power of two and at the two-halves threshold), any bytes.
_long_data = st.builds(
    lambda n, seed: random.Random(seed).randbytes(n),
    st.integers(min_value=0, max_value=70000),
    st.integers(min_value=0),
)


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=600), _long_data))
def test_xor_and_sum_match_plain_references(data: bytes) -> None:
    expected_xor = functools.reduce(operator.xor, data, 0)
    assert _xor(data) == expected_xor
    assert _xor(bytearray(data)) == _xor(memoryview(data)) == expected_xor
    assert xor_checksum(data, b"") == expected_xor
    assert sum_checksum(data, b"") == sum(data) % 256


def test_xor_at_every_fold_boundary() -> None:
    rng = random.Random(14)
    for k in range(18):
        for n in (1 << k) - 1, 1 << k, (1 << k) + 1:
            data = rng.randbytes(n)
            assert _xor(data) == functools.reduce(operator.xor, data, 0), n
    assert _xor(b"\xff" * 300001) == 0xFF


def _decode(chunks: list[bytes]) -> list[tuple[str, object]]:
    conn = HLLPConnection()
    out: list[tuple[str, object]] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, EndOfStream):
                return out
            if isinstance(event, Message):
                out.append(("message", event.data))
            elif isinstance(event, HLLPNak):
                out.append(("nak", event.reason.value))
            else:
                assert isinstance(event, BadBlock)
                out.append(("bad", event.reason.value))
    raise AssertionError("no EndOfStream")


_bodies = st.binary(min_size=1, max_size=2000).map(
    lambda b: b.replace(b"\x0b", b"v").replace(b"\x1c", b"f") or b"x"
)
# A data block with the standard checksum or 999, with any protocol id, or a NAK block.
_blocks = st.one_of(
    st.tuples(_bodies, st.integers(0, 99), st.booleans()).map(
        lambda t: (
            ("message", t[0]),
            HLLPConnection(protocol_id=f"{t[1]:02d}", send_checksum=t[2]).send(Message(t[0])),
        )
    ),
    st.sampled_from("CXBG").map(lambda r: (("nak", r), HLLPConnection().send(HLLPNak(r)))),
)


@given(st.lists(_blocks, max_size=12), st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_of_a_valid_stream_yields_the_same_events(
    blocks: list[tuple[tuple[str, object], bytes]], cuts: list[int]
) -> None:
    wire = b"".join(block for _, block in blocks)
    expected = [event for event, _ in blocks]
    assert _decode([wire]) == expected
    assert _decode(split(wire, cuts)) == expected
    assert _decode([wire[i : i + 1] for i in range(len(wire))]) == expected


def _block(content: bytes) -> bytes:
    return b"\x0b" + content + b"\x1c\r"


def test_blocks_the_fast_path_must_refuse() -> None:
    good = HLLPConnection().send(Message(b"MSH|^~\\&|A\r"))
    content = good[1:-2]
    count, check = content[-8:-3], content[-3:]
    cases = [
        # The size guard: no data, yet header and trailer well formed.
        (_block(b"D21\r00005999"), "G"),
        (_block(b"D21\r" + b"x" + b"00006999"), None),  # one data byte, 999: fine
        (_block(b"D2x\r" + content[4:]), "G"),  # protocol id not digits
        (_block(b"D21\n" + content[4:]), "G"),  # header not ended by CR
        (_block(content[:-8] + b"0000+" + check), "G"),  # count field not decimal
        (_block(content[:-8] + count + b"25 "), "G"),  # checksum field not decimal
        (_block(content[:-8] + b"%05d" % (int(count) + 1) + check), "C"),
        (_block(content[:-8] + count + b"998"), "X"),  # out of range, never computed
        (_block(content[:-8] + count + b"%03d" % ((int(check) + 1) % 256)), "X"),
    ]
    for block, reason in cases:
        events = _decode([block])
        assert events == ([("bad", reason)] if reason else [("message", b"x")]), block


def test_reader_refusals_mixed_with_blocks_in_one_read() -> None:
    sender = HLLPConnection()
    first, second = sender.send(Message(b"A\r")), sender.send(Message(b"B\r"))
    too_long = _block(b"D21\r" + b"x" * 100_000 + b"00000000")
    wire = first + b"\x0b\x1c\r" + second + too_long + first + b"\x0bD21\r"
    assert _decode([wire]) == [
        ("message", b"A\r"),
        ("bad", "G"),  # empty frame
        ("message", b"B\r"),
        ("bad", "B"),  # over the size limit
        ("message", b"A\r"),
        ("bad", "G"),  # cut short by the end of the stream
    ]

"""Hypothesis properties of the framing core."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from mllp_trio.proto import (
    NEED_DATA,
    EndOfStream,
    HLLPConnection,
    Message,
    MLLPConnection,
    RemoteProtocolError,
)

# Message bodies: any bytes without the framing bytes, never empty.
bodies = st.binary(min_size=1, max_size=300).map(
    lambda b: b.replace(b"\x0b", b"v").replace(b"\x1c", b"f") or b"x"
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def decode(conn: MLLPConnection | HLLPConnection, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, EndOfStream):
                return out
            assert isinstance(event, Message)
            out.append(event.data)
    raise AssertionError("no EndOfStream")


@given(st.lists(bodies, max_size=20), st.lists(st.integers(min_value=0), max_size=30))
def test_mllp_round_trip_any_split(messages: list[bytes], cuts: list[int]) -> None:
    sender = MLLPConnection()
    wire = b"".join(sender.send(Message(m)) for m in messages)
    assert decode(MLLPConnection(), split(wire, cuts)) == messages
    assert decode(MLLPConnection(strict=True), split(wire, cuts)) == messages


@given(st.lists(bodies, max_size=10), st.lists(st.integers(min_value=0), max_size=20))
def test_hllp_round_trip_any_split(messages: list[bytes], cuts: list[int]) -> None:
    sender = HLLPConnection()
    wire = b"".join(sender.send(Message(m)) for m in messages)
    assert decode(HLLPConnection(), split(wire, cuts)) == messages


framing_heavy = st.lists(
    st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\n", b"MSH|", b"\x06", b"x" * 40]),
    max_size=60,
).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=400), framing_heavy)


@settings(max_examples=300)
@given(
    st.lists(any_bytes, max_size=8),
    st.booleans(),
    st.booleans(),
    st.integers(min_value=1, max_value=64),
)
def test_arbitrary_bytes_only_remote_errors_and_bounded_buffer(
    chunks: list[bytes], strict: bool, mllp2: bool, limit: int
) -> None:
    conn = MLLPConnection(strict=strict, mllp2=mllp2, max_message_size=limit)
    for chunk in [*chunks, b""]:
        try:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, EndOfStream):
                    return
        except RemoteProtocolError:
            return
        # The buffer never holds more than the limit (plus framing) and one read.
        assert conn.buffered <= limit + 2 + len(chunk)


@settings(max_examples=300)
@given(st.lists(any_bytes, max_size=8), st.integers(min_value=1, max_value=64))
def test_hllp_arbitrary_bytes_only_remote_errors(chunks: list[bytes], limit: int) -> None:
    conn = HLLPConnection(max_message_size=limit)
    for chunk in [*chunks, b""]:
        try:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, EndOfStream):
                    return
        except RemoteProtocolError:
            return

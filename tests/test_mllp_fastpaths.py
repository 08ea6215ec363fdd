"""The release 1 fast paths (receive_frame, send_bytes) agree with the general API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllp_trio.proto import (
    NEED_DATA,
    EndOfStream,
    LocalProtocolError,
    Message,
    MLLPConnection,
)

from .test_framing_properties import split

# Reads built from framing bytes and text: clean frames, junk, halves, restarts.
pieces = st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\n", b"MSH|", b"A" * 30, b"\x0bMSH|x\x1c\r"])
reads = st.lists(st.lists(pieces, max_size=8).map(b"".join), max_size=12)


def events(conn: MLLPConnection) -> list[object]:
    out: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event.data if isinstance(event, Message) else type(event).__name__)
        if isinstance(event, EndOfStream):
            break
    return out


@given(reads, st.booleans())
def test_receive_frame_delivers_what_receive_data_would(chunks: list[bytes], strict: bool) -> None:
    general, fast = MLLPConnection(strict=strict), MLLPConnection(strict=strict)
    for chunk in [*chunks, b""]:
        try:
            general.receive_data(chunk)
            expected = events(general)
        except Exception as exc:  # a strict fault: both must raise it
            expected = [type(exc).__name__]
        try:
            content = fast.receive_frame(chunk)
            got = [content] if content is not None else events(fast)
        except Exception as exc:
            got = [type(exc).__name__]
        assert got == expected
        if expected and expected[-1] in ("RemoteProtocolError", "LocalProtocolError"):
            return
    assert fast.stats == general.stats


def test_receive_frame_takes_a_lone_frame_without_queueing() -> None:
    conn = MLLPConnection()
    assert conn.receive_frame(b"\x0bMSH|1\x1c\r") == b"MSH|1"
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 0


def test_receive_frame_keeps_order_behind_a_partial_frame() -> None:
    conn = MLLPConnection()
    assert conn.receive_frame(b"\x0bMSH|1") is None
    assert conn.receive_frame(b"\x1c\r") is None  # completes the open frame: an event
    assert events(conn) == [b"MSH|1"]


def test_receive_frame_is_release_1_only() -> None:
    conn = MLLPConnection(mllp2=True)
    assert conn.receive_frame(b"\x0bMSH|1\x1c\r") is None
    assert events(conn) == [b"MSH|1"]


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=5))
def test_send_bytes_equals_send_of_a_message(data: bytes, cuts: list[int]) -> None:
    conn = MLLPConnection()
    try:
        expected: object = conn.send(Message(data))
    except LocalProtocolError as exc:
        expected = type(exc)
    try:
        got: object = conn.send_bytes(data)
    except LocalProtocolError as exc:
        got = type(exc)
    assert got == expected
    if isinstance(got, bytes):
        receiver = MLLPConnection()
        for chunk in split(got, cuts):
            receiver.receive_data(chunk)
        assert events(receiver) == [data]


def test_send_bytes_refuses_what_send_refuses() -> None:
    conn = MLLPConnection(max_message_size=4)
    for bad in (b"", b"a\x0bb", b"a\x1cb", b"12345"):
        with pytest.raises(LocalProtocolError):
            conn.send_bytes(bad)
    with pytest.raises(LocalProtocolError):
        conn.send_bytes(bytearray(b"ab"))  # type: ignore[arg-type]


def test_send_bytes_keeps_the_release_2_rules() -> None:
    conn = MLLPConnection(mllp2=True)
    assert conn.send_bytes(b"MSH|1") == b"\x0bMSH|1\x1c\r"
    with pytest.raises(LocalProtocolError, match="commit"):
        conn.send_bytes(b"MSH|2")  # the first still awaits its commit

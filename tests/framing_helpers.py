"""Drive a sans-IO connection with the same input split in different ways."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import mllp_trio

SB, EB, CR = b"\x0b", b"\x1c", b"\r"

ADT = (
    b"MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20240101120000||ADT^A01|MSG00001|P|2.5\r"
    b"EVN|A01|20240101120000\r"
    b"PID|1||12345^^^HOSP^MR||DOE^JOHN||19700101|M\r"
)


def frame(data: bytes) -> bytes:
    return SB + data + EB + CR


def describe(event: Any) -> tuple[Any, ...]:
    """A comparable summary of an event (or of an error)."""
    if isinstance(event, mllp_trio.proto.Message):
        return ("message", event.data)
    if isinstance(event, mllp_trio.proto.InvalidFrame):
        return ("invalid", event.reason)
    if isinstance(event, mllp_trio.proto.BadBlock):
        return ("bad", event.reason.value)
    if isinstance(event, mllp_trio.proto.HLLPNak):
        return ("nak", event.reason.value)
    return (type(event).__name__,)


def drive(
    make: Callable[[], Any], chunks: list[bytes], *, eof: bool = True
) -> tuple[list[tuple[Any, ...]], Any]:
    """Feed ``chunks`` (then EOF) and collect events until EndOfStream or an error.

    Returns the event summaries and the connection.
    """
    conn = make()
    out: list[tuple[Any, ...]] = []
    for chunk in [*chunks, b""] if eof else chunks:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except mllp_trio.proto.RemoteProtocolError:
                out.append(("error",))
                return out, conn
            if event is mllp_trio.proto.NEED_DATA:
                break
            out.append(describe(event))
            if isinstance(event, mllp_trio.proto.EndOfStream):
                return out, conn
    return out, conn


def splittings(data: bytes) -> Iterator[list[bytes]]:
    """Whole, one byte at a time, and split in two at every position."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def drive_all_ways(make: Callable[[], Any], data: bytes) -> list[tuple[Any, ...]]:
    """Drive every splitting; assert they agree; return the common result."""
    results = {tuple(drive(make, chunks)[0]) for chunks in splittings(data)}
    assert len(results) == 1, f"splittings disagree: {results}"
    return list(results.pop())

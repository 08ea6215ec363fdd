"""The framing outcome depends on the bytes only, never on how TCP split them.

A differential test feeds the same framing-heavy input whole, one byte at a
time and at random split points, with and without the size limit in play, and
requires the same events, the same statistics and the same error at the same
point. The named defects of issue 9 are regression tests below it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mllp_trio.proto import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HLLP_MAX_DATA,
    NEED_DATA,
    EndOfStream,
    FramingStats,
    HLLPConnection,
    HLLPNak,
    InvalidFrame,
    LocalProtocolError,
    Message,
    MLLPConnection,
    RemoteProtocolError,
)

from .framing_helpers import CR, EB, SB, drive_all_ways, frame

LF = b"\n"
EOS = ("EndOfStream",)
# HLLP counts "t vv CR" and "ccccc xxx" inside the frame on top of the data.
HLLP_OVERHEAD = 12

Connection = MLLPConnection | HLLPConnection


@attrs.frozen
class Config:
    """One receiver setup: how to build it and how large a frame its reader buffers."""

    make: Callable[[int | None], Connection]
    frame_limit: Callable[[int | None], int]
    # Release 2 faults come from the state machine, which reads frames the
    # reader split out earlier: the reader may already have counted bytes
    # beyond the fault, depending on how much had arrived.
    stats_at_error: bool = True


def _mllp(**kwargs: Any) -> Config:
    def make(limit: int | None) -> Connection:
        return MLLPConnection(max_message_size=limit or DEFAULT_MAX_MESSAGE_SIZE, **kwargs)

    return Config(make, lambda limit: limit or DEFAULT_MAX_MESSAGE_SIZE)


def _mllp2_sender(**kwargs: Any) -> Config:
    def make(limit: int | None) -> Connection:
        conn = MLLPConnection(mllp2=True, max_message_size=limit or DEFAULT_MAX_MESSAGE_SIZE)
        conn.send(Message(b"q"))  # now a commit ACK/NAK is awaited
        return conn

    return Config(make, lambda limit: limit or DEFAULT_MAX_MESSAGE_SIZE, stats_at_error=False)


def _hllp(**kwargs: Any) -> Config:
    def make(limit: int | None) -> Connection:
        return HLLPConnection(max_message_size=limit or HLLP_MAX_DATA, **kwargs)

    return Config(make, lambda limit: (limit or HLLP_MAX_DATA) + HLLP_OVERHEAD)


CONFIGS = {
    "r1-lenient": _mllp(),
    "r1-strict": _mllp(strict=True),
    "r1-missing-trailer": _mllp(accept_missing_trailer=True),
    "r1-strict-missing-trailer": _mllp(strict=True, accept_missing_trailer=True),
    "r2-receiver": attrs.evolve(_mllp(mllp2=True), stats_at_error=False),
    "r2-strict-receiver": attrs.evolve(_mllp(mllp2=True, strict=True), stats_at_error=False),
    "r2-sender": _mllp2_sender(),
    "hllp-lenient": _hllp(),
    "hllp-strict": _hllp(strict=True),
    "hllp-missing-trailer": _hllp(accept_missing_trailer=True),
}


@attrs.frozen
class Outcome:
    events: list[Any]
    error: tuple[str, str] | None
    stats: FramingStats | None


def summary(event: Any) -> Any:
    # Message hides its content in repr; compare (and show) the bytes.
    return ("Message", event.data) if isinstance(event, Message) else event


def run(config: Config, limit: int | None, chunks: list[bytes]) -> Outcome:
    """Feed ``chunks`` then EOF; collect events until EndOfStream or an error."""
    conn = config.make(limit)
    bound = config.frame_limit(limit) + 1  # the open frame and its start byte
    events: list[Any] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                # Counts in the text (bytes outside a frame) may come in
                # pieces; the fault itself must be the same.
                error = (type(exc).__name__, re.sub(r"\d+", "#", str(exc)))
                return Outcome(events, error, conn.stats if config.stats_at_error else None)
            if event is NEED_DATA:
                break
            events.append(summary(event))
            if isinstance(event, EndOfStream):
                return Outcome(events, None, conn.stats)
        # Memory stays bounded: never more than the limit plus one read.
        assert conn.buffered <= bound + len(chunk)
    raise AssertionError("no EndOfStream after the end of stream was fed")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


_hllp_sender = HLLPConnection()
BLOCKS = [
    _hllp_sender.send(Message(b"MSH|ok\r")),
    _hllp_sender.send(Message(b"x" * 30)),
    _hllp_sender.send(HLLPNak("B")),
    HLLPConnection(send_checksum=False).send(Message(b"A\r")),
    SB + b"\x06" + EB + CR,  # release 2 commit ACK
    SB + b"\x15" + EB + CR,  # release 2 commit NAK
]
framing_bytes = st.sampled_from(
    [SB, SB, SB, EB, EB, EB, CR, CR, LF, b"a", b"7", b"D", b"N", b"\x06", b"\x15", b"23"]
)
bodies = st.binary(min_size=1, max_size=40).map(
    lambda b: b.replace(SB, b"v").replace(EB, b"f") or b"x"
)
# Whole blocks and blocks cut short before their end (or trailer) byte.
blocks = st.sampled_from(BLOCKS + [b[:-1] for b in BLOCKS] + [b[:-2] for b in BLOCKS])
runs = st.integers(min_value=1, max_value=60).map(lambda k: b"x" * k)
tokens = st.one_of(framing_bytes, framing_bytes, blocks, blocks, bodies.map(frame), runs)
framing_heavy = st.lists(tokens, max_size=40).map(b"".join)
limits = st.one_of(st.none(), st.integers(min_value=1, max_value=40))


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=150, deadline=None)
@given(
    data=framing_heavy,
    limit=limits,
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=12),
)
def test_outcome_is_the_same_however_the_bytes_are_split(
    name: str, data: bytes, limit: int | None, cuts: list[int]
) -> None:
    config = CONFIGS[name]
    whole = run(config, limit, [data])
    assert run(config, limit, [data[i : i + 1] for i in range(len(data))]) == whole
    assert run(config, limit, split(data, cuts)) == whole


def model(data: bytes, strict: bool, limit: int) -> Outcome:
    """The release 1 receiver rules applied byte by byte, the whole input at hand."""
    sb, eb, cr = SB[0], EB[0], CR[0]
    events: list[Any] = []
    counts = {"out_of_frame_bytes": 0, "dropped_partials": 0, "rejected_frames": 0}
    # Errors as (type, a pattern of the reader's text).
    strict_error = ("RemoteProtocolError", "start-of-block byte inside|outside a frame")
    i, start, inside = 0, 0, False
    while i < len(data):
        byte = data[i]
        if not inside:
            if byte == sb:
                inside, start = True, i + 1
            elif strict:
                return Outcome(events, strict_error, FramingStats(**counts))
            else:
                counts["out_of_frame_bytes"] += 1
            i += 1
        elif byte == sb:
            if strict:
                return Outcome(events, strict_error, FramingStats(**counts))
            counts["dropped_partials"] += 1
            start = i = i + 1
        elif byte == eb:
            after = data[i + 1] if i + 1 < len(data) else None
            size, inside = i - start, False
            if after != cr:
                counts["rejected_frames"] += 1
                events.append(
                    InvalidFrame("end-of-block byte not followed by the trailer byte", size)
                )
                i += 2 if after is not None and after != sb else 1
                continue
            if size > limit:
                counts["rejected_frames"] += 1
                return Outcome(
                    events, ("RemoteProtocolError", "exceeds the maximum"), FramingStats(**counts)
                )
            if size == 0:
                counts["rejected_frames"] += 1
                events.append(InvalidFrame("empty frame", 0))
            else:
                events.append(("Message", data[start:i]))
            i += 2
        else:
            i += 1
    if inside:
        counts["dropped_partials"] += 1
        events.append(InvalidFrame("end of stream inside a frame", len(data) - start))
    events.append(EndOfStream())
    return Outcome(events, None, FramingStats(**counts))


@settings(max_examples=300, deadline=None)
@given(data=framing_heavy, strict=st.booleans(), limit=st.integers(min_value=1, max_value=40))
def test_release1_follows_the_documented_rules(data: bytes, strict: bool, limit: int) -> None:
    outcome = run(_mllp(strict=strict), limit, [data])
    expected = model(data, strict, limit)
    if outcome.error is not None and expected.error is not None:
        assert outcome.error[0] == expected.error[0]
        assert re.search(expected.error[1], outcome.error[1])
        outcome = attrs.evolve(outcome, error=expected.error)
    assert outcome == expected


# ---------------------------------------------------------------- regressions


def test_mllp_frame_after_an_unended_oversize_partial_does_not_depend_on_the_split() -> None:
    def make() -> MLLPConnection:
        return MLLPConnection(max_message_size=16)

    data = SB + b"x" * 20 + SB + b"MSH|ok" + EB + CR
    # Used to be a RemoteProtocolError when the first read ended at byte 21.
    assert drive_all_ways(make, data) == [("message", b"MSH|ok"), EOS]
    assert run(_mllp(), 16, [data[:21], data[21:]]).stats == FramingStats(
        out_of_frame_bytes=0, dropped_partials=1, rejected_frames=0
    )


def test_mllp_strict_oversize_partial_then_start_byte_is_the_strict_error() -> None:
    def make() -> MLLPConnection:
        return MLLPConnection(strict=True, max_message_size=16)

    data = SB + b"x" * 20 + SB + b"MSH|ok" + EB + CR
    assert drive_all_ways(make, data) == [("error",)]
    outcome = run(_mllp(strict=True), 16, [data[:21], data[21:]])
    assert outcome.error is not None
    assert "start-of-block byte inside an open frame" in outcome.error[1]


def test_mllp_unended_oversize_frame_is_a_dropped_partial_at_eof() -> None:
    data = SB + b"x" * 40
    expected = [("invalid", "end of stream inside a frame"), EOS]
    assert drive_all_ways(lambda: MLLPConnection(max_message_size=16), data) == expected
    outcome = run(_mllp(), 16, [data[:20], data[20:]])
    assert outcome.events[0].size == 40


def test_mllp_oversize_frame_without_trailer_is_rejected_like_any_such_frame() -> None:
    def make() -> MLLPConnection:
        return MLLPConnection(max_message_size=16)

    # The trailer rule comes first, as for a frame buffered whole.
    data = SB + b"x" * 20 + EB + LF + frame(b"MSH|ok")
    assert drive_all_ways(make, data) == [
        ("invalid", "end-of-block byte not followed by the trailer byte"),
        ("message", b"MSH|ok"),
        EOS,
    ]


@pytest.mark.parametrize("limit", [None, 3])
def test_start_byte_in_a_frame_cut_by_eof_restarts_it(limit: int | None) -> None:
    data = SB + b"abcd" + SB + b"e"
    lenient = run(_mllp(), limit, [data])
    assert lenient.events == [InvalidFrame("end of stream inside a frame", 1), EndOfStream()]
    assert lenient.stats == FramingStats(
        out_of_frame_bytes=0, dropped_partials=2, rejected_frames=0
    )
    strict = run(_mllp(strict=True), limit, [data])
    assert strict.error is not None
    assert "start-of-block byte inside an open frame" in strict.error[1]


def hllp_block(data: bytes) -> bytes:
    return HLLPConnection().send(Message(data))


def test_hllp_block_after_an_unended_oversize_block_is_received_whatever_the_split() -> None:
    def make() -> HLLPConnection:
        return HLLPConnection(max_message_size=10)

    good = hllp_block(b"MSH|ok\r")
    data = hllp_block(b"x" * 40)[:-2] + good  # the long block never ends
    # Used to be swallowed, or NAKed B or G, depending on the read split.
    assert drive_all_ways(make, data) == [("message", b"MSH|ok\r"), EOS]
    stats = run(_hllp(), 10, [data[:30], data[30:]]).stats
    assert stats is not None
    assert stats.dropped_partials == 1


def test_hllp_strict_start_byte_while_skipping_is_the_strict_error() -> None:
    def make() -> HLLPConnection:
        return HLLPConnection(strict=True, max_message_size=10)

    data = hllp_block(b"x" * 40)[:-2] + hllp_block(b"MSH|ok\r")
    # Start bytes used to be ignored while an oversize block was skipped.
    assert drive_all_ways(make, data) == [("error",)]


def test_hllp_complete_oversize_block_is_nak_b_whatever_the_split() -> None:
    def make() -> HLLPConnection:
        return HLLPConnection(max_message_size=10)

    data = hllp_block(b"x" * 40) + hllp_block(b"MSH|ok\r")
    assert drive_all_ways(make, data) == [("bad", "B"), ("message", b"MSH|ok\r"), EOS]


@pytest.mark.parametrize("limit", [1, 10, 1000, HLLP_MAX_DATA])
def test_hllp_send_accepts_exactly_what_a_receiver_with_the_same_limit_accepts(
    limit: int,
) -> None:
    conn = HLLPConnection(max_message_size=limit)
    receiver = HLLPConnection(max_message_size=limit)
    receiver.receive_data(conn.send(Message(b"x" * limit)))
    assert receiver.next_event() == Message(b"x" * limit)
    # Used to accept up to 12 bytes more, which the receiver NAKs with B.
    with pytest.raises(LocalProtocolError, match="exceeds max_message_size"):
        conn.send(Message(b"x" * (limit + 1)))

"""Fuzz the sans-IO decoders (MLLP release 1 and 2, HLLP) through mllp_trio.proto.

The invariants live in ``fuzz/targets.py`` (shared with the atheris runner):
only ``RemoteProtocolError`` escapes, the buffer stays within the limit plus
one read, the result does not depend on how the bytes were split, and in
lenient mode a valid frame after any garbage is still decoded.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.strategies import FUZZ, cuts, framing_garbage, kinds, max_sizes
from fuzz.targets import SAMPLE, TARGETS, Kind, check_framing, check_resync


@FUZZ
@given(
    kind=kinds,
    wire=framing_garbage,
    strict=st.booleans(),
    max_size=max_sizes,
    missing_trailer=st.booleans(),
    cuts=cuts,
    answers=st.integers(0, 0xFFFF),
)
def test_decoders_keep_their_invariants_on_any_bytes(
    kind: Kind,
    wire: bytes,
    strict: bool,
    max_size: int,
    missing_trailer: bool,
    cuts: list[int],
    answers: int,
) -> None:
    check_framing(
        kind,
        wire,
        strict=strict,
        max_size=max_size,
        missing_trailer=missing_trailer,
        cuts=cuts,
        answers=answers,
    )


@FUZZ
@given(
    kind=kinds,
    garbage=framing_garbage,
    body=st.sampled_from([SAMPLE, b"A\r"]) | st.binary(min_size=1, max_size=200),
    max_size=max_sizes,
    missing_trailer=st.booleans(),
    answers=st.integers(0, 0xFFFF),
)
# An open oversize frame, then the valid one: the start byte restarts it.
@example("mllp", b"\x0b" + b"x" * 300, SAMPLE, 64, False, 0)
# A lone end byte (no trailer) right before the valid frame's start byte.
@example("mllp2", b"\x0bab\x1c", SAMPLE, 1024, False, 1)
@example("hllp", b"\x0bD23\r\x1c", SAMPLE, 1024, True, 0)
def test_valid_frame_after_any_garbage_is_decoded(
    kind: Kind, garbage: bytes, body: bytes, max_size: int, missing_trailer: bool, answers: int
) -> None:
    check_resync(
        kind, garbage, body, max_size=max_size, missing_trailer=missing_trailer, answers=answers
    )


@pytest.mark.parametrize("kind", ["mllp", "mllp2", "hllp"])
@FUZZ
@given(data=st.binary(max_size=800))
def test_byte_target(kind: str, data: bytes) -> None:
    # The exact function atheris drives, on unstructured bytes.
    TARGETS[kind](data)

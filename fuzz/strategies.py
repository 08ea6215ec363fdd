"""Hypothesis strategies and settings for the fuzz tests (``tests/test_fuzz_*.py``).

The number of examples per test comes from ``MLLP_TRIO_FUZZ_EXAMPLES``
(default 100, a few seconds for all the fuzz tests in CI); raise it for a
longer local campaign, e.g. ``MLLP_TRIO_FUZZ_EXAMPLES=20000``.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fuzz.targets import DELIMITERS, KINDS, SAMPLE, valid_frame

__all__ = [
    "FUZZ",
    "cuts",
    "delimiter_sets",
    "framing_garbage",
    "kinds",
    "max_sizes",
    "msh_segments",
]

EXAMPLES: Final = int(os.environ.get("MLLP_TRIO_FUZZ_EXAMPLES", "100"))

#: Settings of every fuzz test: no deadline (CI machines are shared and slow).
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

kinds = st.sampled_from(KINDS)
max_sizes = st.sampled_from([1, 2, 5, 16, 64, 200, 1024]) | st.integers(1, 4096)
cuts = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12)

_PIECES: Final = [
    b"\x0b",
    b"\x1c",
    b"\r",
    b"\n",
    b"\x1c\r",
    b"\x06",
    b"\x15",
    b"\x0b\x06\x1c\r",
    b"\x0b\x15\x1c\r",
    b"D23\r",
    b"N21\rX",
    b"00007",
    b"999",
    b"MSH|^~\\&|",
    SAMPLE,
    valid_frame("mllp", SAMPLE),
    valid_frame("hllp", SAMPLE),
    valid_frame("hllp", b"A\r"),
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
]

#: Bytes rich in framing bytes, frames, HLLP fields and junk.
framing_garbage = st.lists(
    st.sampled_from(_PIECES) | st.binary(max_size=40) | st.integers(1, 300).map(b"x".__mul__),
    max_size=30,
).map(b"".join)


@st.composite
def delimiter_sets(draw: st.DrawFn, *, exclude: bytes = b"") -> tuple[str, str]:
    """A field separator and 2 to 5 distinct encoding characters, none in ``exclude``."""
    pool = [chr(b) for b in DELIMITERS if b not in exclude]
    fs = draw(st.sampled_from(pool))
    rest = [c for c in pool if c != fs]
    enc = draw(st.lists(st.sampled_from(rest), min_size=2, max_size=5, unique=True))
    return fs, "".join(enc)


_FIELD = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=12,
)


@st.composite
def msh_segments(draw: st.DrawFn) -> bytes:
    """MSH segments with random delimiters and field values, then maybe more segments."""
    if draw(st.booleans()):
        fs, enc = "|", "^~\\&"
    else:
        fs, enc = draw(delimiter_sets())
    fields = ["MSH", enc, *draw(st.lists(_FIELD, min_size=0, max_size=18))]
    if len(fields) > 9 and draw(st.booleans()):
        fields[8] = draw(st.sampled_from(["ADT^A01", "ACK^A01", "ORU^R01^ORU_R01", "", "ACK"]))
        fields[8] = fields[8].replace("^", enc[0])
    if len(fields) > 11 and draw(st.booleans()):
        fields[11] = draw(st.sampled_from(["2.3", "2.5", "2.5.1", "2.8", "x", ""]))
    if len(fields) > 17 and draw(st.booleans()):
        fields[17] = draw(st.sampled_from(["UNICODE UTF-8", "8859/1", "ASCII", "UTF-16", "??"]))
    text = fs.join(fields)
    terminator = draw(st.sampled_from(["\r", "\n", "\r\n", ""]))
    tail = draw(st.sampled_from(["", "PID|1||123^^^H^MR||DOE^JOHN\r", "MSA|AA|X\r"]))
    return (text + terminator + tail).encode("latin-1")

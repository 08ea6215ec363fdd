"""What ``send`` reads (issue 12): the forgiving filter and the input walk, without sockets."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mllp_trio._cli._inputs import Inputs, Item, Problem, _Forgiving, expand

from .hl7_samples import make_message

TOKENS = st.sampled_from(
    [b"\xef\xbb\xbf", b" ", b"\t", b"\r", b"\n", b"\x0b", b"\x1c", b"MSH|", b"PID", b"x", b"\xef"]
)


def _clean(chunks: list[bytes]) -> bytes:
    forgiving = _Forgiving()
    return b"".join(forgiving.clean(c) for c in chunks if c) + forgiving.clean(b"")


@given(st.lists(TOKENS, max_size=40), st.data())
def test_cleaning_does_not_depend_on_where_the_reads_split(
    tokens: list[bytes], data: st.DataObject
) -> None:
    blob = b"".join(tokens)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=6)))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
    assert _clean(chunks) == _clean([blob])


@given(st.lists(TOKENS, max_size=40))
def test_cleaning_removes_framing_bytes_and_indentation(tokens: list[bytes]) -> None:
    out = _clean([b"".join(tokens)])
    assert b"\x0b" not in out and b"\x1c" not in out
    for line in out.replace(b"\n", b"\r").split(b"\r"):
        assert not line.startswith((b" ", b"\t"))


def test_a_lone_partial_bom_is_kept_at_the_end() -> None:
    assert _clean([b"\xef"]) == b"\xef"
    assert _clean([b"\xef\xbb"]) == b"\xef\xbb"


def test_items_in_order_with_problems_where_they_are(tmp_path: Path) -> None:
    first = make_message(control_id="A1")
    (tmp_path / "a.hl7").write_bytes(b"junk line\r" + first + make_message(control_id="A2"))
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbf  \r\n")
    sources = expand([str(tmp_path / "a.hl7"), str(tmp_path / "b.txt")])
    inputs = Inputs(sources, max_message_size=1 << 20)
    assert inputs.count() == 2
    entries = list(inputs.items())
    assert isinstance(entries[0], Problem)
    assert entries[0].line == 1 and entries[0].skipped
    assert "not an HL7 message" in entries[0].text
    items = [e for e in entries if isinstance(e, Item)]
    assert [i.line for i in items] == [2, 2 + first.count(b"\r")]
    assert len(entries) == 3  # the blank b.txt holds nothing and is no problem

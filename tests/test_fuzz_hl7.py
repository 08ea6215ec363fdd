"""Fuzz the sans-IO HL7 layer: the MSH reader, charsets, ACK building and reply parsing.

The invariants live in ``fuzz/targets.py`` (shared with the atheris runner).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.strategies import FUZZ, delimiter_sets, msh_segments
from fuzz.targets import (
    OPEN_FINDING_DELIMITERS,
    TARGETS,
    check_ack_round_trip,
    check_charset,
    check_msh,
    check_pipeline,
)
from mllp_trio._hl7 import (
    TABLE_0357,
    AckCode,
    ErrorInfo,
    build_ack,
    parse_reply,
    read_msh,
)

texts = st.text(max_size=40) | st.text(
    st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=40
)


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    # Unreadable messages log a warning each: thousands of them are noise.
    caplog.set_level(logging.CRITICAL)


@FUZZ
@given(raw=msh_segments() | st.binary(max_size=300), text=texts)
@example(raw=b"MSH^^~\\&^^^^^20240101120000^^ADT^A01^CID1\r", text="a^b|c\\d")
def test_msh_reader_and_escaping(raw: bytes, text: str) -> None:
    check_msh(raw, text)


_CHARSET_NAMES = [
    "",
    "ASCII",
    "8859/1",
    "8859/15",
    "UNICODE UTF-8",
    "ISO IR6",
    "ISO IR100",
    "ISO IR87",
    "GB 18030-2000",
    "KS X 1001",
    "BIG-5",
    "UNICODE",
    "UTF-16",
    "UNICODE UTF-32",
    "utf8",
    "latin-1",
    "idna",
    "rot13",
    "base64",
    "zlib",
    "undefined",
]


@FUZZ
@given(
    msh18=st.lists(st.sampled_from(_CHARSET_NAMES) | st.text(max_size=12), max_size=3).map(
        lambda names: "~".join(names).encode("utf-8", "replace")
    )
    | st.binary(max_size=40),
    body=st.binary(max_size=200),
    override=st.none() | st.sampled_from(["8859/1", "UNICODE UTF-8"]),
)
def test_charset_resolution(msh18: bytes, body: bytes, override: str | None) -> None:
    check_charset(msh18, body, override=override)


@FUZZ
@given(
    delimiters=delimiter_sets(exclude=OPEN_FINDING_DELIMITERS),
    control_id=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
    code=st.sampled_from(list(AckCode)),
    version=st.sampled_from(["2.3", "2.4", "2.5", "2.5.1", "2.8", ""]),
    error_code=st.none() | st.sampled_from([c for c in TABLE_0357 if c]),
    error_text=texts,
    charset=st.sampled_from(["", "8859/1", "UNICODE UTF-8"]),
)
@example(("|", "^~\\&"), "CID1", AckCode.AE, "2.5", 207, "boom \x0b\x1c end", "")
@example(("|", "^~\\&"), "CID1", AckCode.AE, "2.3", 207, "a|b^c~d\\e&f\r\ng", "")
def test_build_ack_then_parse_reply(
    delimiters: tuple[str, str],
    control_id: str,
    code: AckCode,
    version: str,
    error_code: int | None,
    error_text: str,
    charset: str,
) -> None:
    fs, enc = delimiters
    check_ack_round_trip(
        field_separator=fs,
        encoding=enc,
        control_id=control_id,
        code=code,
        version=version,
        error_code=error_code,
        error_text=error_text,
        charset=charset,
    )


@FUZZ
@given(
    raw=msh_segments() | st.binary(max_size=300),
    disposition=st.integers(0, 2),
    error_text=texts,
)
@example(raw=b"MSH^^~\\&^^^^^20240101120000^^ADT^A01^CID1\r", disposition=0, error_text="")
@example(raw=b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|C1|P|2.3\r", disposition=1, error_text="\x0b\x1c")
def test_pipeline_replies_are_frameable_and_parseable(
    raw: bytes, disposition: int, error_text: str
) -> None:
    check_pipeline(raw, disposition=disposition, error_text=error_text)


@pytest.mark.parametrize("name", ["msh", "charset", "ack", "pipeline"])
@FUZZ
@given(data=st.binary(max_size=400))
def test_byte_target(name: str, data: bytes) -> None:
    # The exact function atheris drives, on unstructured bytes.
    TARGETS[name](data)


# --- regressions: findings of the fuzz targets, fixed ---------------------------


def test_ack_to_a_plus_field_separator_parses() -> None:
    header = read_msh(b"MSH+^~\\&+A+B+C+D+2024++ADT^A01+C1+P+2.5\r")
    east = datetime(2024, 1, 31, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    parse_reply(build_ack(header, "AA", now=east), "C1")


def test_unencodable_text_with_question_mark_delimiter_round_trips() -> None:
    header = read_msh(b"MSH?^~\\&?A?B?C?D?2024??ADT^A01?C1?P?2.3\r")
    ack = build_ack(header, "AE", error=ErrorInfo(code=207, text="caf\xe9"), codec="ascii")
    reply = parse_reply(ack, "C1", raise_on_negative=False)
    assert reply.text == "caf?"

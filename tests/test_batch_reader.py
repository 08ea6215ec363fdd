"""The sans-IO batch reader and writer: shapes, separators, every rule, bounded memory."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mllp_trio._batch import (
    NEED_DATA,
    BatchError,
    BatchHeader,
    BatchReader,
    BatchTrailer,
    BatchWriter,
    EndOfFile,
    Event,
    FileHeader,
    FileTrailer,
    HeaderFields,
    Message,
    NeedData,
    iter_events,
    read_messages,
    write_batch,
)
from mllp_trio._errors import LocalProtocolError, MLLPError


def msg(n: int, *extra: bytes) -> bytes:
    segments = [
        b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|CTRL%d|P|2.5.1" % n,
        b"PID|1||%d" % n,
        *extra,
    ]
    return b"\r".join(segments) + b"\r"


def read_all(
    data: bytes | Iterable[bytes], *, lenient: bool = False, max_message_size: int = 1 << 20
) -> tuple[list[Event], BatchReader]:
    reader = BatchReader(lenient=lenient, max_message_size=max_message_size)
    # b"" would mean the end: a test's empty chunks are left out.
    chunks: Iterator[bytes] = iter([c for c in ([data] if isinstance(data, bytes) else data) if c])
    events: list[Event] = []
    while True:
        event = reader.next_event()
        if isinstance(event, NeedData):
            reader.receive_data(next(chunks, b""))
            continue
        events.append(event)
        if isinstance(event, EndOfFile):
            return events, reader


def messages_of(events: list[Event]) -> list[bytes]:
    return [e.raw for e in events if isinstance(e, Message)]


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def error_of(data: bytes) -> BatchError:
    with pytest.raises(BatchError) as info:
        read_all(data)
    return info.value


FHS = HeaderFields(sending_application="LAB", control_id="F1", name="night")
BHS = HeaderFields(sending_application="LAB", control_id="B1")


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("with_fhs", [False, True])
@pytest.mark.parametrize("with_bhs", [False, True])
def test_round_trip_with_and_without_each_header(with_fhs: bool, with_bhs: bool) -> None:
    messages = [msg(i) for i in range(3)]
    data = b"".join(
        write_batch(
            messages,
            file_header=FHS if with_fhs else None,
            batch_header=BHS if with_bhs else None,
        )
    )
    events, reader = read_all(data)
    assert messages_of(events) == messages
    expected = (
        (["FileHeader"] if with_fhs else [])
        + (["BatchHeader"] if with_bhs else [])
        + ["Message"] * 3
        + (["BatchTrailer"] if with_bhs else [])
        + (["FileTrailer"] if with_fhs else [])
        + ["EndOfFile"]
    )
    assert kinds(events) == expected
    if with_fhs:
        header = events[0]
        assert isinstance(header, FileHeader)
        assert header.header == FHS
        trailer = events[-2]
        assert isinstance(trailer, FileTrailer) and trailer.count == 1
    if with_bhs:
        trailer = next(e for e in events if isinstance(e, BatchTrailer))
        assert trailer.count == 3
    assert [e.line for e in events if isinstance(e, Message)] == [
        1 + with_fhs + with_bhs + 2 * i for i in range(3)
    ]
    assert reader.warning_count == 0


def test_several_batches_per_file_and_their_counts() -> None:
    writer = BatchWriter()
    data = writer.file_header(FHS)
    for b in range(3):
        data += writer.batch_header(HeaderFields(control_id=f"B{b}"))
        for i in range(b + 1):
            data += writer.message(msg(10 * b + i))
        data += writer.batch_trailer()
    data += writer.file_trailer()
    assert data.count(b"\r") == 1 + 3 * 2 + 6 * 2 + 1
    assert b"BTS|3\rFTS|3\r" in data
    events, _ = read_all(data)
    assert [e.count for e in events if isinstance(e, BatchTrailer)] == [1, 2, 3]
    assert [e.header.control_id for e in events if isinstance(e, BatchHeader)] == [
        b"B0",
        b"B1",
        b"B2",
    ]
    assert len(messages_of(events)) == 6


def test_concatenated_messages_without_headers() -> None:
    data = msg(1) + msg(2, b"OBX|1|TX|||hello") + msg(3)
    events, _ = read_all(data)
    assert kinds(events) == ["Message"] * 3 + ["EndOfFile"]
    assert messages_of(events) == [msg(1), msg(2, b"OBX|1|TX|||hello"), msg(3)]
    assert [e.number for e in events if isinstance(e, Message)] == [1, 2, 3]


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b"\r"])
def test_lf_crlf_and_cr_files_give_cr_messages(terminator: bytes) -> None:
    text = b"FHS|^~\\&\rBHS|^~\\&\r" + msg(1) + msg(2) + b"BTS|2\rFTS|1\r"
    data = text.replace(b"\r", terminator)
    # Every split point, so that a CRLF cut between two chunks is seen too.
    for cut in range(len(data) + 1):
        events, _ = read_all([data[:cut], data[cut:]])
        assert messages_of(events) == [msg(1), msg(2)]
        assert [e.line for e in events if isinstance(e, Message)] == [3, 5]
        assert events[-1] == EndOfFile(messages=2, lines=8)


def test_byte_at_a_time_with_mixed_terminators() -> None:
    data = (
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.3\r\nPID|1\nPV1|1\rMSH|^~\\&|A|B|C|D|||ADT^A01|2|P|2.3"
    )
    events, _ = read_all([data[i : i + 1] for i in range(len(data))])
    assert messages_of(events) == [
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.3\rPID|1\rPV1|1\r",
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|2|P|2.3\r",  # the last line had no terminator
    ]
    assert [e.line for e in events if isinstance(e, Message)] == [1, 4]


def test_bom_and_leading_blank_lines_are_skipped() -> None:
    data = b"\xef\xbb\xbf\r\n\r\n  \r\nFHS|^~\\&\r\n" + msg(1) + b"FTS|1\r\n"
    for cut in range(5):  # the byte order mark split too
        events, _ = read_all([data[:cut], data[cut:]])
        assert kinds(events) == ["FileHeader", "Message", "FileTrailer", "EndOfFile"]
        assert events[0].line == 4  # type: ignore[union-attr]
        assert messages_of(events) == [msg(1)]


def test_blank_lines_inside_and_between_messages_are_left_out() -> None:
    data = (
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.3\n\nPID|1\n\n\nMSH|^~\\&|A|B|C|D|||ADT^A01|2|P|2.3\n\n"
    )
    events, _ = read_all(data)
    assert messages_of(events) == [
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.3\rPID|1\r",
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|2|P|2.3\r",
    ]
    assert [e.line for e in events if isinstance(e, Message)] == [1, 6]


def test_messages_keep_their_own_bytes_whatever_the_charset() -> None:
    latin = b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5|||||8859/1\rPID|1||||M\xfcller\r"
    utf8 = b"MSH|^~\\&|A|B|C|D|||ADT^A01|2|P|2.5|||||UNICODE UTF-8\rPID|1||||M\xc3\xbcller\r"
    events, _ = read_all(b"BHS|^~\\&\r" + latin + utf8 + b"BTS|2\r")
    assert messages_of(events) == [latin, utf8]


def test_trailer_fields_and_empty_counts() -> None:
    data = b"FHS|^~\\&\rBHS|^~\\&\r" + msg(1) + b"BTS||comment|12~3\rFTS\r"
    events, _ = read_all(data)
    bts = events[3]
    assert isinstance(bts, BatchTrailer)
    assert bts.count is None  # an empty count is not checked
    assert bts.fields == (b"BTS", b"", b"comment", b"12~3")
    fts = events[4]
    assert isinstance(fts, FileTrailer) and fts.count is None


def test_a_bts_is_optional_before_the_next_bhs_or_fts() -> None:
    data = b"FHS|^~\\&\rBHS|^~\\&\r" + msg(1) + b"BHS|^~\\&\r" + msg(2) + msg(3) + b"FTS|2\r"
    events, reader = read_all(data)
    assert len(messages_of(events)) == 3
    assert reader.warning_count == 0


def test_messages_without_bhs_count_as_one_batch_in_fts() -> None:
    events, _ = read_all(b"FHS|^~\\&\r" + msg(1) + msg(2) + b"FTS|1\r")
    assert len(messages_of(events)) == 2
    assert "FTS-1 says 2 batches" in str(error_of(b"FHS|^~\\&\r" + msg(1) + msg(2) + b"FTS|2\r"))


def test_an_empty_file_and_an_empty_batch() -> None:
    assert kinds(read_all(b"")[0]) == ["EndOfFile"]
    assert kinds(read_all(b"\xef\xbb\xbf\n\n")[0]) == ["EndOfFile"]
    events, _ = read_all(b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r")
    assert kinds(events) == [
        "FileHeader",
        "BatchHeader",
        "BatchTrailer",
        "FileTrailer",
        "EndOfFile",
    ]


def test_bare_headers_without_separator() -> None:
    events, _ = read_all(b"FHS\rBHS\r" + msg(1) + b"BTS\rFTS\r")
    header = events[0]
    assert isinstance(header, FileHeader) and header.header == HeaderFields()


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    ("data", "line", "segment", "words"),
    [
        # count errors
        (b"BHS|^~\\&\r" + msg(1) + msg(2) + b"BTS|3\r", 6, "BTS", "BTS-1 says 3 messages"),
        (b"BHS|^~\\&\r" + msg(1) + b"BTS|0\r", 4, "BTS", "batch opened at line 1 holds 1"),
        (b"BHS|^~\\&\r" + msg(1) + b"BTS|two\r", 4, "BTS", "not a whole number"),
        (
            b"FHS|^~\\&\rBHS|^~\\&\r" + msg(1) + b"BTS|1\rFTS|2\r",
            6,
            "FTS",
            "FTS-1 says 2 batches",
        ),
        (b"FHS|^~\\&\rFTS|x\r", 2, "FTS", "not a whole number"),
        # a message outside a batch
        (
            b"FHS|^~\\&\rBHS|^~\\&\r" + msg(1) + b"BTS|1\r" + msg(2) + b"FTS|1\r",
            6,
            "MSH",
            "outside a batch",
        ),
        (b"FHS|^~\\&\rFTS|0\r" + msg(1), 3, "MSH", "after FTS"),
        (b"FHS|^~\\&\rFTS|0\rBHS|^~\\&\r", 3, "BHS", "after FTS"),
        # trailers without their header
        (msg(1) + b"BTS|1\r", 3, "BTS", "BTS without BHS"),
        (msg(1) + b"FTS|1\r", 3, "FTS", "FTS without FHS"),
        # truncated files
        (b"FHS|^~\\&\rBHS|^~\\&\r" + msg(1) + b"BTS|1\r", 5, "FHS", "truncated"),
        (b"FHS|^~\\&\r" + msg(1) + b"FHS|^~\\&\r" + msg(2) + b"FTS|1\r", 4, "FHS", "truncated"),
        # junk
        (b"PID|1\r" + msg(1), 1, "PID", "outside any message"),
        (b"\x00\xffjunk\r" + msg(1), 1, "?", "outside any message"),
    ],
)
def test_every_rule_names_line_and_segment(
    data: bytes, line: int, segment: str, words: str
) -> None:
    error = error_of(data)
    assert isinstance(error, MLLPError)
    assert (error.line, error.segment) == (line, segment)
    assert words in error.reason
    assert str(error).startswith(f"line {line}: {segment}: ")
    # Lenient: the same problem is reported and reading goes on to the end.
    events, reader = read_all(data, lenient=True)
    assert isinstance(events[-1], EndOfFile)
    assert [(w.line, w.segment, w.reason) for w in reader.warnings] == [
        (error.line, error.segment, error.reason)
    ]
    assert len(messages_of(events)) == data.count(b"MSH|")


def test_the_failed_reader_keeps_failing() -> None:
    reader = BatchReader()
    reader.receive_data(msg(1) + b"BTS|1\r")
    assert isinstance(reader.next_event(), Message)
    with pytest.raises(BatchError) as first:
        reader.next_event()
    with pytest.raises(BatchError) as second:
        reader.next_event()
    assert first.value is second.value


def test_lenient_errors_never_show_content() -> None:
    secret = b"DOE^JOHN"
    _, reader = read_all(b"PID|1||" + secret + b"\r" + secret + b"\r" + msg(1), lenient=True)
    assert reader.warning_count == 2
    assert all("DOE" not in str(w) for w in reader.warnings)
    assert [w.segment for w in reader.warnings] == ["PID", "?"]


def test_oversized_message_strict_and_lenient() -> None:
    big = msg(2, b"OBX|1|TX|||" + b"x" * 5000)
    data = msg(1) + big + msg(3)
    with pytest.raises(BatchError) as info:
        read_all(data, max_message_size=1000)
    assert (info.value.line, info.value.segment) == (3, "MSH")
    assert "larger than 1000 bytes" in info.value.reason
    # Lenient: the big one is dropped, its neighbours come through; fed in
    # small chunks, so the over-long line is also seen before its end.
    chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
    events, reader = read_all(chunks, lenient=True, max_message_size=1000)
    assert messages_of(events) == [msg(1), msg(3)]
    assert reader.warning_count == 1
    assert reader.peak_buffer <= 1000 + 100 + 100


def test_over_long_line_outside_a_message() -> None:
    data = b"Z" * 3000 + b"\r" + msg(1)
    chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
    with pytest.raises(BatchError, match="longer than 1000 bytes"):
        read_all(chunks, max_message_size=1000)
    events, reader = read_all(chunks, lenient=True, max_message_size=1000)
    assert messages_of(events) == [msg(1)]
    assert reader.warning_count == 1
    assert reader.peak_buffer <= 1200


def test_data_after_the_end_is_refused() -> None:
    reader = BatchReader()
    reader.receive_data(b"")
    reader.receive_data(b"")  # harmless
    with pytest.raises(ValueError, match="after the end"):
        reader.receive_data(b"MSH")
    with pytest.raises(ValueError):
        BatchReader(max_message_size=0)


# ---------------------------------------------------------------- the writer


def test_writer_refuses_parts_out_of_order() -> None:
    writer = BatchWriter()
    writer.message(msg(1))
    with pytest.raises(LocalProtocolError, match="first"):
        writer.file_header(FHS)
    with pytest.raises(LocalProtocolError):
        writer.batch_trailer()
    with pytest.raises(LocalProtocolError):
        writer.file_trailer()
    with pytest.raises(LocalProtocolError, match="MSH"):
        writer.message(b"PID|1\r")
    writer = BatchWriter()
    writer.file_header(FHS)
    writer.file_trailer()
    with pytest.raises(LocalProtocolError):
        writer.message(msg(1))
    with pytest.raises(LocalProtocolError):
        writer.batch_header(BHS)


def test_writer_normalises_messages_and_closes_what_is_open() -> None:
    writer = BatchWriter()
    out = writer.file_header(HeaderFields(field_separator="#", encoding_characters="^~\\&"))
    out += writer.batch_header(HeaderFields(field_separator="#"))
    out += writer.message(msg(1).replace(b"\r", b"\r\n"))
    out += writer.batch_header(HeaderFields(field_separator="#"))  # closes the first batch
    out += writer.close()
    assert out == b"FHS#^~\\&\rBHS#^~\\&\r" + msg(1) + b"BTS#1\rBHS#^~\\&\rBTS#0\rFTS#2\r"
    assert b"\n" not in out
    assert writer.messages == 1


def test_header_fields_round_trip_and_repr_hides_parties() -> None:
    header = HeaderFields(
        sending_application="LAB^1",
        sending_facility="HOSP",
        receiving_application="EHR",
        receiving_facility="DOE CLINIC",
        date_time="20240101",
        name="night",
        control_id="F1",
        reference_control_id="F0",
        extra=(b"x",),
    )
    assert HeaderFields.from_segment(header.to_segment(b"FHS")) == header
    assert "DOE" not in repr(header) and "F1" in repr(header)
    with pytest.raises(ValueError):
        HeaderFields(field_separator="ab")


# ---------------------------------------------------------------- files


def test_read_messages_from_a_path_and_a_file(tmp_path: Path) -> None:
    path = tmp_path / "in.hl7"
    data = b"FHS|^~\\&\n" + msg(1).replace(b"\r", b"\n") + msg(2) + b"FTS|1\n"
    path.write_bytes(data)
    assert list(read_messages(path)) == [msg(1), msg(2)]
    assert list(read_messages(str(path))) == [msg(1), msg(2)]
    with path.open("rb") as file:
        assert list(read_messages(file)) == [msg(1), msg(2)]
    warnings: list[BatchError] = []
    path.write_bytes(msg(1) + b"BTS|5\r" + msg(2))
    assert list(read_messages(path, lenient=True, on_warning=warnings.append)) == [msg(1), msg(2)]
    assert [(w.line, w.segment) for w in warnings] == [(3, "BTS"), (4, "MSH")]
    with pytest.raises(BatchError):
        list(read_messages(path))


def test_iter_events_small_chunks() -> None:
    data = b"".join(write_batch([msg(i) for i in range(20)], file_header=FHS, batch_header=BHS))
    events = list(iter_events(io.BytesIO(data), chunk_size=7))
    assert len(messages_of(events)) == 20
    assert isinstance(events[-1], EndOfFile) and events[-1].lines == 44


# ---------------------------------------------------------------- properties

_field = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_segment = st.builds(
    lambda sid, fields: sid + b"|" + b"|".join(fields),
    st.sampled_from([b"PID", b"PV1", b"OBX", b"NTE", b"ZZ1"]),
    st.lists(_field, max_size=4),
)
_message = st.builds(
    lambda n, segs: b"\r".join([b"MSH|^~\\&|A|B|C|D|||ADT^A01|%d|P|2.5" % n, *segs]) + b"\r",
    st.integers(0, 10**6),
    st.lists(_segment, max_size=4),
)


@settings(max_examples=80, deadline=None)
@given(
    batches=st.lists(st.lists(_message, max_size=4), min_size=1, max_size=3),
    with_fhs=st.booleans(),
    with_bhs=st.booleans(),
    terminator=st.sampled_from([b"\r", b"\n", b"\r\n"]),
    bom=st.booleans(),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_hypothesis_round_trip(
    batches: list[list[bytes]],
    with_fhs: bool,
    with_bhs: bool,
    terminator: bytes,
    bom: bool,
    cuts: list[int],
) -> None:
    if not with_bhs:
        batches = [[m for b in batches for m in b]]  # without BHS there is one batch
    writer = BatchWriter()
    data = writer.file_header(FHS) if with_fhs else b""
    for batch in batches:
        if with_bhs:
            data += writer.batch_header(BHS)
        for message in batch:
            data += writer.message(message)
    data += writer.close()
    data = (b"\xef\xbb\xbf" if bom else b"") + data.replace(b"\r", terminator)
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    events, reader = read_all(chunks)
    assert messages_of(events) == [m for b in batches for m in b]
    assert reader.warning_count == 0
    if with_bhs:
        counts = [e.count for e in events if isinstance(e, BatchTrailer)]
        assert counts == [len(b) for b in batches]


_token = st.sampled_from(
    [
        b"FHS|^~\\&",
        b"BHS|^~\\&",
        b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5",
        b"PID|1",
        b"BTS|1",
        b"BTS|0",
        b"BTS|x",
        b"FTS|1",
        b"FTS",
        b"BTS",
        b"FHS",
        b"\xef\xbb\xbf",
        b"",
        b"  ",
        b"\x00\xff",
    ]
)
_junk = st.lists(
    st.tuples(
        st.one_of(_token, st.binary(max_size=8)), st.sampled_from([b"\r", b"\n", b"\r\n", b""])
    ),
    max_size=25,
).map(lambda parts: b"".join(a + b for a, b in parts))


@settings(max_examples=150, deadline=None)
@given(data=_junk, cuts=st.lists(st.integers(0, 400), max_size=5), lenient=st.booleans())
def test_hypothesis_only_documented_errors_escape(
    data: bytes, cuts: list[int], lenient: bool
) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    try:
        events, reader = read_all(chunks, lenient=lenient, max_message_size=64)
    except BatchError as exc:
        assert not lenient
        assert exc.line >= 1
        return
    for message in messages_of(events):
        assert message.startswith(b"MSH") and message.endswith(b"\r")
        assert b"\n" not in message and b"\r\r" not in message
        assert len(message) <= 64 + 1
    assert reader.peak_buffer <= 64 + 400 + 2


# ---------------------------------------------------------------- bounded memory


def test_a_gigabyte_stream_in_bounded_memory() -> None:
    # 1 GiB of batch file, made lazily from one prebuilt chunk (so the test
    # costs the reader's work, not the generator's): FHS, BHS, then 4096
    # messages of 256 KiB, each with one long OBX line, BTS, FTS.
    message = msg(0, b"OBX|1|ED|||" + b"A" * (256 * 1024 - 80))
    chunk = message * 4  # 1 MiB or so
    count = 1024 * 1024 * 1024 // len(chunk)

    def stream() -> Iterator[bytes]:
        yield b"FHS|^~\\&\rBHS|^~\\&\r"
        for _ in range(count):
            yield chunk
        yield b"BTS|%d\rFTS|1\r" % (4 * count)

    reader = BatchReader(max_message_size=1024 * 1024)
    chunks = stream()
    seen = total = 0
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            reader.receive_data(next(chunks, b""))
        elif isinstance(event, Message):
            seen += 1
            total += len(event.raw)
        elif isinstance(event, EndOfFile):
            break
    assert seen == 4 * count
    assert total >= 1024 * 1024 * 1024 - len(chunk)
    # At most one message held while the next chunk comes in.
    assert reader.peak_buffer <= 2 * len(chunk) + len(message)


def test_size_verdict_does_not_depend_on_where_reads_end() -> None:
    # The unread start of the next message is not counted towards the
    # current one: two 50-byte messages pass a 60-byte limit, however split.
    one = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|ID1|P|2.5\rPID|1||X\r"
    data = one + one.replace(b"ID1", b"ID2")
    assert len(one) == 50
    for cut in range(len(data) + 1):
        events, reader = read_all([data[:cut], data[cut:]], max_message_size=60)
        assert len(messages_of(events)) == 2, cut
        assert reader.peak_buffer <= len(data)
    # A first line of the next message over the limit ends the current
    # message (delivered) before the error.
    long_next = one + b"MSH|" + b"x" * 100 + b"\r"
    reader = BatchReader(max_message_size=60)
    reader.receive_data(long_next[:120])
    assert isinstance(reader.next_event(), Message)
    with pytest.raises(BatchError, match="longer than 60"):
        reader.next_event()


def test_blank_lines_after_a_message_do_not_count_towards_its_size() -> None:
    # A message of exactly the limit, then blank and whitespace-only lines
    # (left out of the message), whatever the split.
    one = msg(1)
    data = one + b"\r  \r\x1a\r\r" + one + b"\n\n \n"
    for cut in range(len(data) + 1):
        events, reader = read_all([data[:cut], data[cut:]], max_message_size=len(one))
        assert messages_of(events) == [one, one], cut
        assert reader.warning_count == 0
    # Blank lines inside a message are left out too, and counted as lines.
    inside = one[:-1] + b"\r \r\rOBX|1\r"
    events, _ = read_all(inside + one)
    assert messages_of(events) == [one + b"OBX|1\r", one]
    assert [e.line for e in events if isinstance(e, Message)] == [1, 6]

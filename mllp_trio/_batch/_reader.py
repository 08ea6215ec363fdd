"""The streaming batch file reader: bytes in, events out, in bounded memory.

:class:`BatchReader` reads ``[FHS] {[BHS] {MSH...} [BTS]} [FTS]`` the way
``proto`` reads frames: feed it bytes with :meth:`~BatchReader.receive_data`
(``b""`` at the end of the file), take events with
:meth:`~BatchReader.next_event` until it returns :data:`NEED_DATA`. Every
header and trailer is optional, so a plain file of concatenated messages
(the commonest shape in the wild) reads as messages alone.

Segments may end with CR, LF or CRLF (one line each); a message comes out
with CR only. A UTF-8 byte order mark and blank lines are skipped. The file
is never decoded: each message is handed over as bytes, and its charset is
its own MSH-18's business. The reader holds at most one message and one
unread chunk (:attr:`BatchReader.peak_buffer` tells how much it held), and
refuses a message larger than ``max_message_size``.

The structural rules, each a :class:`BatchError` naming the line and the
segment (in lenient mode a warning, and reading goes on):

* BTS-1 (messages in the batch) or FTS-1 (batches in the file) disagrees
  with the content; an empty count is not checked;
* a message after BTS closed a batch (or after FTS closed the file) while
  no new BHS (or FHS) opened one: a message outside a batch;
* BTS without BHS, FTS without FHS: a trailer without its header;
* a second FHS before the first one's FTS, or the end of the data with an
  FHS open: a truncated file;
* a segment before any MSH, a message or line over the size limit.

A batch without BHS counts as one batch for FTS-1: a file of messages with
FHS and FTS only has ``FTS|1``.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Final

import attrs

from mllp_trio._batch._segments import (
    BHS,
    BTS,
    FHS,
    FTS,
    MSH,
    BatchError,
    HeaderFields,
    parse_trailer_count,
    split_trailer,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "NEED_DATA",
    "BatchHeader",
    "BatchReader",
    "BatchTrailer",
    "EndOfFile",
    "Event",
    "FileHeader",
    "FileTrailer",
    "Message",
    "NeedData",
    "iter_events",
    "read_messages",
]

#: Default largest message, in bytes: the framing layer's default (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
#: How many warnings a lenient reader keeps (it counts them all).
MAX_WARNINGS: Final = 1000
_BOM: Final = b"\xef\xbb\xbf"
_BLANK: Final = b" \t\x1a"  # what a blank line may hold (0x1A: DOS end of file)
_ENVELOPE: Final = frozenset({FHS, BHS, BTS, FTS, MSH})
# The CR that ends the line before an envelope segment (CR-normalised data).
_NEXT_ENVELOPE: Final = re.compile(rb"\r(?=(?:FHS|BHS|MSH|BTS|FTS)(?![0-9A-Za-z]))")
# What makes a line not blank.
_NON_BLANK: Final = re.compile(rb"[^ \t\x1a]")
# An empty or blank line inside a message, found from the CR before it.
_BLANK_LINE: Final = re.compile(rb"\r[ \t\x1a]*\r")


@attrs.frozen
class FileHeader:
    """An FHS segment.

    Attributes:
        header: Its fields.
        line: Its line number.
    """

    header: HeaderFields
    line: int


@attrs.frozen
class BatchHeader:
    """A BHS segment.

    Attributes:
        header: Its fields.
        line: Its line number.
    """

    header: HeaderFields
    line: int


@attrs.frozen
class Message:
    """One HL7 message of the file.

    Attributes:
        raw: The message bytes, segments ended by CR (the last one too),
            blank lines left out. Not shown in the repr.
        line: The line number of its MSH segment.
        number: Its 1-based position among the messages of the data.
    """

    raw: bytes = attrs.field(repr=False)
    line: int
    number: int


@attrs.frozen
class BatchTrailer:
    """A BTS segment.

    Attributes:
        count: BTS-1, the number of messages in the batch (``None`` if empty).
        line: Its line number.
        fields: The raw fields; ``fields[n]`` is BTS-n (``fields[0]`` is ``b"BTS"``).
    """

    count: int | None
    line: int
    fields: tuple[bytes, ...] = attrs.field(repr=False)


@attrs.frozen
class FileTrailer:
    """An FTS segment.

    Attributes:
        count: FTS-1, the number of batches in the file (``None`` if empty).
        line: Its line number.
        fields: The raw fields; ``fields[n]`` is FTS-n (``fields[0]`` is ``b"FTS"``).
    """

    count: int | None
    line: int
    fields: tuple[bytes, ...] = attrs.field(repr=False)


@attrs.frozen
class EndOfFile:
    """The end of the data: nothing follows.

    Attributes:
        messages: How many messages were read.
        lines: How many lines the data had.
    """

    messages: int
    lines: int


class NeedData:
    """The type of :data:`NEED_DATA`."""

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`BatchReader.next_event` when it needs more bytes.
NEED_DATA: Final = NeedData()

Event = FileHeader | BatchHeader | Message | BatchTrailer | FileTrailer | EndOfFile


def _may_open(head: bytes) -> bool:
    """Whether a line whose first bytes (up to 4) are ``head`` may be an FHS/BHS/MSH/BTS/FTS."""
    seg = head[:3]
    if len(seg) < 3:
        return any(envelope.startswith(seg) for envelope in _ENVELOPE)
    return seg in _ENVELOPE and (len(head) == 3 or not head[3:4].isalnum())


def _segment_name(head: bytes, fs: bytes) -> str:
    # Only what looks like a real segment id (three upper-case letters or
    # digits, then the field separator) is shown: junk may hold patient data.
    seg = head[:3]
    looks_like_id = len(seg) == 3 and seg.isascii() and seg.isalnum() and seg.isupper()
    if looks_like_id and seg[:1].isalpha() and head[3:4] in (b"", fs):
        return seg.decode("ascii")
    return "?"


class BatchReader:
    """Reads a batch file (or a file of concatenated messages) incrementally.

    Args:
        lenient: Report rule violations as warnings (:attr:`warnings`) and go
            on, instead of raising :class:`BatchError`.
        max_message_size: Largest message, and longest line, in bytes.

    Raises:
        ValueError: ``max_message_size`` is not positive.
    """

    def __init__(
        self, *, lenient: bool = False, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self.lenient = lenient
        self.max_message_size = max_message_size
        self._warnings: list[BatchError] = []
        self._warning_count = 0
        self._failed: BatchError | None = None
        # Bytes, CR-normalised; self._pos is where the next unread line starts.
        self._buf = bytearray()
        self._pos = 0
        self._line = 1  # number of the line at self._pos
        self._eof = False
        self._done = False
        self._started = False  # the byte order mark question is settled
        self._head = b""
        self._pending_cr = False  # the last byte received was CR: an LF next is its CRLF
        self._peak = 0
        self._fs = b"|"  # the last field separator seen, to tell a segment id in errors
        self._events: deque[Event] = deque()
        # The message being read: buffer offsets of its start and of the end
        # of its last non-blank line (after the CR); -1 when none.
        self._msg_start = -1
        self._msg_end = 0
        self._msg_line = 0
        self._msg_gap = False  # a blank line inside: rebuild without it
        self._skipping = False  # lenient: dropping the rest of an oversized message
        self._discard = False  # lenient: dropping an over-long line up to its end
        self._messages = 0
        # Structure.
        self._file_line = 0  # line of the open FHS, 0 if none
        self._file_closed = False  # FTS seen and no FHS since
        self._file_batches = 0
        self._batch_line = 0  # line of the open BHS, 0 if none
        self._implicit = False  # messages outside any BHS form a batch of their own
        self._batch_messages = 0
        self._after_bts = False  # BTS closed a batch and no BHS opened one

    # ---------------------------------------------------------------- public

    @property
    def warnings(self) -> list[BatchError]:
        """The rule violations met in lenient mode (the first :data:`MAX_WARNINGS`)."""
        return list(self._warnings)

    @property
    def warning_count(self) -> int:
        """How many rule violations were met in lenient mode, all counted."""
        return self._warning_count

    @property
    def peak_buffer(self) -> int:
        """The most bytes the reader held at once (unread data plus the current message)."""
        return self._peak

    @property
    def messages(self) -> int:
        """How many messages were read so far."""
        return self._messages

    @property
    def line(self) -> int:
        """The number of the next line to read."""
        return self._line

    def receive_data(self, data: bytes) -> None:
        """Feed bytes of the file; ``b""`` means the end of the file.

        Args:
            data: The next bytes, split anywhere.

        Raises:
            ValueError: Data after the end of the file.
        """
        if self._eof:
            if data:
                raise ValueError("data after the end of the file")
            return
        if not data:
            self._eof = True
            if not self._started:
                self._started = True
                self._append(self._head)
            return
        if not self._started:
            data = self._head + data
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._head = data  # maybe a byte order mark, split: wait for more
                return
            self._started = True
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        self._append(data)

    def _append(self, data: bytes) -> None:
        if self._pending_cr and data[:1] == b"\n":
            data = data[1:]  # the LF of a CRLF split between two chunks
        if not data:
            self._pending_cr = False
            return
        self._pending_cr = data[-1] == 0x0D
        if b"\n" in data:
            data = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        self._buf += data
        self._peak = max(self._peak, len(self._buf))

    def next_event(self) -> Event | NeedData:
        """The next event, or :data:`NEED_DATA` when more bytes are needed.

        After :class:`EndOfFile` it returns :class:`EndOfFile` again.

        Raises:
            BatchError: A rule was broken (strict mode); the reader then
                raises the same error on every call.
        """
        if self._events:
            return self._events.popleft()
        if self._failed is not None:
            raise self._failed
        try:
            return self._next_event()
        except BatchError as exc:
            self._failed = exc
            # The events read before the problem (the message a bad BTS ends) go first.
            if self._events:
                return self._events.popleft()
            raise

    # ---------------------------------------------------------------- the loop

    def _next_event(self) -> Event | NeedData:
        buf = self._buf
        while not self._events:
            if self._done:
                return EndOfFile(self._messages, self._line - 1)
            pos = self._pos
            end = buf.find(b"\r", pos)
            if self._discard:
                if end < 0:
                    del buf[pos:]
                    if self._eof:
                        self._discard = False
                        continue
                    return NEED_DATA
                self._discard = False
                self._pos, self._line = end + 1, self._line + 1
                continue
            if end >= 0 and self._msg_start >= 0 and not self._skipping and self._skim(pos):
                continue
            if end < 0:
                if not self._eof:
                    self._need_data()
                    return self._events.popleft() if self._events else NEED_DATA
                if pos >= len(buf):
                    self._finish()
                    continue
                end = len(buf)  # the last line, without a terminator
            self._read_line(pos, end)
        return self._events.popleft()

    def _skim(self, pos: int) -> bool:
        """Take the complete segments of the current message up to the next header in one go.

        The line-by-line path costs a few microseconds a segment; this one
        finds the next FHS/BHS/MSH/BTS/FTS with one search and counts the
        lines between. Returns whether it consumed anything.
        """
        buf = self._buf
        found = _NEXT_ENVELOPE.search(buf, pos - 1)  # pos - 1: the CR ending the MSH line at least
        end = found.start() + 1 if found is not None else buf.rfind(b"\r", pos) + 1
        if end <= pos:
            return False  # an envelope segment next, or no complete line: one at a time
        # Blank lines before the next header are not the message's.
        last = end
        while last > pos:
            start = buf.rfind(b"\r", pos - 1, last - 1) + 1
            if buf[start : last - 1].strip(_BLANK):
                break
            last = start
        if last > pos:
            if self._msg_end != pos or _BLANK_LINE.search(buf, pos - 1, last) is not None:
                self._msg_gap = True
            self._msg_end = last
        self._line += buf.count(b"\r", pos, end)
        self._pos = end
        if self._msg_end - self._msg_start > self.max_message_size:
            self._oversize()
        return True

    def _need_data(self) -> None:
        buf = self._buf
        limit = self.max_message_size
        tail = len(buf) - self._pos  # the line being read, its end not seen yet
        if self._msg_start >= 0:
            opens = _may_open(bytes(buf[self._pos : self._pos + 4]))
            if not opens and _NON_BLANK.search(buf, self._pos) is not None:
                # A segment of the current message: it counts towards its size.
                if len(buf) - self._msg_start > limit:
                    self._oversize()
            elif tail > limit:
                if opens:
                    # The next message's first line (or a header) is too long
                    # already: the current message is complete, and ends here.
                    self._end_message()
                else:
                    self._oversize()  # a blank line longer than any message
        if self._msg_start < 0 and tail > limit:
            if not self._skipping:
                self._problem(
                    f"a line longer than {limit} bytes (the maximum message size)",
                    self._line,
                    bytes(buf[self._pos : self._pos + 4]),
                )
            # Lenient: drop the line up to its end, and what follows up to the next header.
            self._skipping = self._discard = True
            del buf[self._pos :]
        # Keep only the current message and the unread bytes.
        keep = self._msg_start if self._msg_start >= 0 else self._pos
        if keep:
            del buf[:keep]
            self._pos -= keep
            if self._msg_start >= 0:
                self._msg_start -= keep
                self._msg_end -= keep

    def _read_line(self, pos: int, end: int) -> None:
        buf = self._buf
        line_no = self._line
        self._pos, self._line = end + 1, line_no + 1
        if end == pos:
            return  # blank
        head = bytes(buf[pos : pos + 4])
        if head[0] in _BLANK and not bytes(buf[pos:end]).strip(_BLANK):
            return  # blank
        seg = head[:3]
        if seg in _ENVELOPE and (len(head) == 3 or not head[3:4].isalnum()):
            if len(head) == 4 and seg != BTS and seg != FTS:
                self._fs = head[3:4]
            self._envelope(seg, pos, end, line_no)
            return
        # A segment of the current message.
        if self._msg_start >= 0:
            if pos != self._msg_end:
                self._msg_gap = True
            self._msg_end = end + 1
            if self._msg_end - self._msg_start > self.max_message_size:
                self._oversize()
        elif not self._skipping:
            self._problem("a segment outside any message (no MSH before it)", line_no, head)

    def _oversize(self) -> None:
        self._problem(
            f"the message is larger than {self.max_message_size} bytes (the maximum size)",
            self._msg_line,
            "MSH",
        )
        self._msg_start = -1  # lenient: drop it
        self._skipping = True

    def _envelope(self, seg: bytes, pos: int, end: int, line_no: int) -> None:
        self._end_message()
        self._skipping = False
        if seg == MSH:
            self._start_message(pos, end, line_no)
        elif seg == FHS:
            self._file_header(HeaderFields.from_segment(self._header_line(pos, end)), line_no)
        elif seg == BHS:
            self._batch_header(HeaderFields.from_segment(self._header_line(pos, end)), line_no)
        elif seg == BTS:
            self._batch_trailer(split_trailer(bytes(self._buf[pos:end])), line_no)
        else:
            self._file_trailer(split_trailer(bytes(self._buf[pos:end])), line_no)

    def _header_line(self, pos: int, end: int) -> bytes:
        line = bytes(self._buf[pos:end])
        return line if len(line) > 3 else line + b"|"

    # ---------------------------------------------------------------- the rules

    def _problem(self, reason: str, line: int, segment: str | bytes) -> None:
        name = segment if isinstance(segment, str) else _segment_name(segment, self._fs)
        error = BatchError(reason, line=line, segment=name)
        if not self.lenient:
            raise error
        self._warning_count += 1
        if len(self._warnings) < MAX_WARNINGS:
            self._warnings.append(error)

    def _start_message(self, pos: int, end: int, line_no: int) -> None:
        outside = self._file_closed or self._after_bts
        if self._file_closed:
            self._problem(
                "a message after FTS closed the file (no FHS opened another)", line_no, MSH
            )
        elif self._after_bts:
            self._problem(
                "a message outside a batch: BTS closed the batch and no BHS opened another",
                line_no,
                MSH,
            )
        # Lenient: a message outside a batch is passed on but counts in no batch.
        if not self._batch_line and not self._implicit and not outside:
            self._implicit = True
            self._file_batches += 1
            self._batch_messages = 0
        self._batch_messages += 1
        self._msg_start, self._msg_end, self._msg_line = pos, end + 1, line_no
        self._msg_gap = False
        if end + 1 - pos > self.max_message_size:
            self._oversize()

    def _end_message(self) -> None:
        start = self._msg_start
        if start < 0:
            return
        self._msg_start = -1
        raw = bytes(self._buf[start : self._msg_end])
        if self._msg_gap:
            raw = b"\r".join(s for s in raw.split(b"\r") if s.strip(_BLANK)) + b"\r"
        elif raw[-1:] != b"\r":
            raw += b"\r"  # the last line of the data had no terminator
        self._messages += 1
        self._events.append(Message(raw, self._msg_line, self._messages))

    def _close_batch(self) -> None:
        self._batch_line = 0
        self._implicit = False
        self._batch_messages = 0

    def _file_header(self, header: HeaderFields, line_no: int) -> None:
        if self._file_line:
            self._problem(
                f"FHS while the file opened at line {self._file_line} is still open "
                "(truncated: no FTS)",
                line_no,
                FHS,
            )
        self._close_batch()
        self._file_line, self._file_closed, self._file_batches = line_no, False, 0
        self._after_bts = False
        self._events.append(FileHeader(header, line_no))

    def _batch_header(self, header: HeaderFields, line_no: int) -> None:
        if self._file_closed:
            self._problem("BHS after FTS closed the file (no FHS opened another)", line_no, BHS)
        # A BHS without the previous batch's BTS is allowed: BTS is optional.
        self._close_batch()
        self._batch_line, self._after_bts = line_no, False
        self._file_batches += 1
        self._events.append(BatchHeader(header, line_no))

    def _batch_trailer(self, fields: tuple[bytes, ...], line_no: int) -> None:
        try:
            count = parse_trailer_count(fields)
        except ValueError:
            self._problem("BTS-1 (the message count) is not a whole number", line_no, BTS)
            count = None
        if not self._batch_line:
            self._problem("BTS without BHS (a trailer without its header)", line_no, BTS)
        elif count is not None and count != self._batch_messages:
            self._problem(
                f"BTS-1 says {count} messages, but the batch opened at line "
                f"{self._batch_line} holds {self._batch_messages}",
                line_no,
                BTS,
            )
        self._close_batch()
        self._after_bts = True
        self._events.append(BatchTrailer(count, line_no, fields))

    def _file_trailer(self, fields: tuple[bytes, ...], line_no: int) -> None:
        try:
            count = parse_trailer_count(fields)
        except ValueError:
            self._problem("FTS-1 (the batch count) is not a whole number", line_no, FTS)
            count = None
        if not self._file_line:
            self._problem("FTS without FHS (a trailer without its header)", line_no, FTS)
        elif count is not None and count != self._file_batches:
            self._problem(
                f"FTS-1 says {count} batches, but the file opened at line "
                f"{self._file_line} holds {self._file_batches}",
                line_no,
                FTS,
            )
        self._close_batch()
        self._file_line, self._file_closed, self._after_bts = 0, True, False
        self._file_batches = 0
        self._events.append(FileTrailer(count, line_no, fields))

    def _finish(self) -> None:
        self._end_message()
        self._done = True
        if self._file_line:
            self._problem(
                f"the data ends inside the file opened at line {self._file_line} "
                "(truncated: no FTS)",
                self._line - 1,
                FHS,
            )


# ---------------------------------------------------------------- over a file

Source = str | os.PathLike[str] | IO[bytes]


def iter_events(
    source: Source,
    *,
    lenient: bool = False,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    on_warning: Callable[[BatchError], None] | None = None,
    chunk_size: int = 1 << 16,
) -> Iterator[Event]:
    """Every event of a batch file, read in chunks (blocking file I/O).

    Args:
        source: A path, or a file opened in binary mode (not closed here).
        lenient: Report rule violations to ``on_warning`` and go on.
        max_message_size: Largest message, in bytes.
        on_warning: Called with each violation in lenient mode.
        chunk_size: Bytes read at a time.

    Yields:
        The events, :class:`EndOfFile` last.

    Raises:
        BatchError: A rule was broken (strict mode).
        OSError: The file could not be read.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            yield from iter_events(
                file,
                lenient=lenient,
                max_message_size=max_message_size,
                on_warning=on_warning,
                chunk_size=chunk_size,
            )
        return
    reader = BatchReader(lenient=lenient, max_message_size=max_message_size)
    seen = 0
    while True:
        event = reader.next_event()
        if reader.warning_count > seen and on_warning is not None:
            for warning in reader.warnings[seen:]:
                on_warning(warning)
        seen = reader.warning_count
        if isinstance(event, NeedData):
            reader.receive_data(source.read(chunk_size))
            continue
        yield event
        if isinstance(event, EndOfFile):
            return


def read_messages(
    source: Source,
    *,
    lenient: bool = False,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    on_warning: Callable[[BatchError], None] | None = None,
) -> Iterator[bytes]:
    """The messages of a batch file, or of a file of concatenated messages.

    Headers and trailers are checked and left out: each item is one message,
    segments ended by CR.

    Args:
        source: A path, or a file opened in binary mode (not closed here).
        lenient: Report rule violations to ``on_warning`` and go on.
        max_message_size: Largest message, in bytes.
        on_warning: Called with each violation in lenient mode.

    Yields:
        The raw bytes of each message, in file order.

    Raises:
        BatchError: A rule was broken (strict mode).
        OSError: The file could not be read.
    """
    for event in iter_events(
        source, lenient=lenient, max_message_size=max_message_size, on_warning=on_warning
    ):
        if isinstance(event, Message):
            yield event.raw

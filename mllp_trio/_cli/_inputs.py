"""What ``send`` reads: files, folders and stdin, as HL7 messages.

Each input goes through the batch reader (``mllp_trio._batch``), which
takes plain messages, concatenated messages and batch files
(FHS/BHS/BTS/FTS: only the messages are sent), segments ended by CR, LF or
CRLF. Before it, a small filter forgives what editors and other tools leave
in files: a UTF-8 byte order mark, spaces or tabs at the start of a line,
and MLLP framing bytes (a file saved from a capture, already wrapped in
VT ... FS CR). Nothing is decoded: messages stay bytes.

Memory stays bounded for files (streamed in chunks, read twice: once to
count for the progress bar, once to send); stdin is read whole, once.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final

import attrs
import click

from mllp_trio._batch import BatchError, BatchReader, EndOfFile, Event, Message, NeedData

STDIN: Final = "-"
_BOM: Final = b"\xef\xbb\xbf"
_MLLP_BYTES: Final = b"\x0b\x1c"  # VT starts a frame, FS ends it: never HL7 content
_INDENT: Final = re.compile(rb"([\r\n])[ \t]+")
_CHUNK: Final = 1 << 16
#: Warnings printed per input before they are only counted.
MAX_WARNINGS_SHOWN: Final = 5


@attrs.frozen
class Source:
    """One input: a file, or stdin.

    Attributes:
        name: As shown to the user: the path, or ``stdin``.
        path: The file, or ``None`` for stdin.
    """

    name: str
    path: Path | None


@attrs.frozen
class Item:
    """One message to send.

    Attributes:
        source: The input's name.
        line: The line of its MSH segment in the input.
        data: The message, segments ended by CR. Never printed.
    """

    source: str
    line: int
    data: bytes = attrs.field(repr=False)

    @property
    def where(self) -> str:
        """``file:line`` of the message."""
        return f"{self.source}:{self.line}"


@attrs.frozen
class Problem:
    """Something in an input that is not sent, or is suspicious.

    Attributes:
        source: The input's name.
        line: Where.
        text: What, for the user (never message content).
        skipped: Whether data was left out (a line that belongs to no message).
    """

    source: str
    line: int
    text: str
    skipped: bool


def expand(arguments: Sequence[str]) -> list[Source]:
    """The inputs named on the command line: files, folders (their files, sorted), ``-``.

    No argument means stdin. Hidden files (a name starting with a dot) inside
    a folder are left out.

    Raises:
        click.BadParameter: A path does not exist, or ``-`` appears twice.
    """
    if not arguments:
        return [Source("stdin", None)]
    sources: list[Source] = []
    stdin_seen = False
    for argument in arguments:
        if argument == STDIN:
            if stdin_seen:
                raise click.BadParameter("'-' (stdin) given twice", param_hint="FILE")
            stdin_seen = True
            sources.append(Source("stdin", None))
            continue
        path = Path(argument)
        if path.is_dir():
            files = sorted(
                f
                for f in path.rglob("*")
                if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
            )
            sources.extend(Source(str(f), f) for f in files)
        elif path.exists():
            sources.append(Source(argument, path))
        else:
            raise click.BadParameter(f"{argument}: no such file or folder", param_hint="FILE")
    return sources


class _Forgiving:
    """Cleans chunks of one input: drops a BOM, line indentation and MLLP framing bytes."""

    def __init__(self) -> None:
        self._head = b""  # the first bytes, while they may be a split BOM
        self._started = False
        self._line_start = True

    def clean(self, chunk: bytes) -> bytes:
        """The chunk, cleaned; ``b""`` at the end flushes what was held back."""
        if not self._started:
            at_end = not chunk
            chunk = self._head + chunk
            if not at_end and len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return b""
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        chunk = chunk.translate(None, _MLLP_BYTES)
        if self._line_start:
            chunk = chunk.lstrip(b" \t")
        chunk = _INDENT.sub(rb"\1", chunk)
        if chunk:
            self._line_start = chunk[-1:] in (b"\r", b"\n")
        return chunk


class Inputs:
    """The messages of every source, read lazily; problems are collected per source.

    Args:
        sources: From :func:`expand`.
        max_message_size: The largest message, in bytes.
    """

    def __init__(self, sources: Sequence[Source], *, max_message_size: int) -> None:
        self.sources = list(sources)
        self.max_message_size = max_message_size
        self._stdin: bytes | None = None

    def _open(self, source: Source) -> IO[bytes]:
        if source.path is not None:
            return open(source.path, "rb")
        if self._stdin is None:
            self._stdin = sys.stdin.buffer.read()
        return io.BytesIO(self._stdin)

    def count(self) -> int:
        """How many messages the inputs hold (reads them once, sends nothing)."""
        total = 0
        for source in self.sources:
            for event in self._events(source, lambda _: None):
                if isinstance(event, Message):
                    total += 1
        return total

    def items(self) -> Iterator[Item | Problem]:
        """Each message, in input order, with the problems found where they are."""
        for source in self.sources:
            problems: list[Problem] = []

            def note(
                error: BatchError, source: Source = source, problems: list[Problem] = problems
            ) -> None:
                problems.append(_problem(source.name, error))

            for event in self._events(source, note):
                yield from problems
                problems.clear()
                if isinstance(event, Message):
                    yield Item(source.name, event.line, event.raw)
            yield from problems

    def _events(self, source: Source, on_warning: Callable[[BatchError], None]) -> Iterator[Event]:
        reader = BatchReader(lenient=True, max_message_size=self.max_message_size)
        forgiving = _Forgiving()
        seen = 0
        try:
            with self._open(source) as file:
                while True:
                    event = reader.next_event()
                    for warning in reader.warnings[seen:]:
                        on_warning(warning)
                    seen = len(reader.warnings)
                    if isinstance(event, NeedData):
                        chunk = file.read(_CHUNK)
                        cleaned = forgiving.clean(chunk)
                        if cleaned or not chunk:
                            reader.receive_data(cleaned)
                        continue
                    yield event
                    if isinstance(event, EndOfFile):
                        return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            on_warning(BatchError(f"cannot read it: {reason}", line=0, segment="file"))


def _problem(source: str, error: BatchError) -> Problem:
    # The reader's reasons for data it drops (lenient mode).
    skipped = any(k in error.reason for k in ("outside any message", "larger than", "longer than"))
    if "outside any message" in error.reason:
        text = "skipped: not an HL7 message (no MSH segment before this line)"
    elif skipped:
        text = f"skipped: {error.reason}"
    elif error.segment == "file":
        text = error.reason
    else:
        text = f"{error.segment}: {error.reason}"
    return Problem(source, error.line, text, skipped)

"""The batch file writer: headers optional, trailer counts written for you, CR only.

:class:`BatchWriter` returns the bytes of each part and keeps the counts, so
BTS-1 and FTS-1 always agree with what was written. :func:`write_batch` is
the one-call form for a list (or a stream) of messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mllp_trio._batch._segments import BHS, BTS, FHS, FTS, HeaderFields
from mllp_trio._errors import LocalProtocolError
from mllp_trio._hl7 import normalise_segments

__all__ = ["BatchWriter", "write_batch"]


class BatchWriter:
    """Writes a batch file part by part, as bytes.

    Trailers are written only for headers that were written: an FHS gets an
    FTS, a BHS a BTS. Messages written outside any BHS count as one batch
    for FTS-1 (as the reader counts them).

    Raises:
        LocalProtocolError: A part out of order (a BHS after FTS, a trailer
            for a header that was not written, a message after FTS).
    """

    def __init__(self) -> None:
        self._file_open = False
        self._file_done = False
        self._separator = b"|"
        self._batch_open = False
        self._implicit = False
        self._batches = 0
        self._batch_messages = 0
        self.messages = 0
        """How many messages were written."""

    def file_header(self, header: HeaderFields) -> bytes:
        """The FHS segment; must come first."""
        if self._file_open or self._file_done or self.messages or self._batches:
            raise LocalProtocolError("FHS must be the first segment of the file")
        self._file_open, self._separator = True, header.field_separator
        return header.to_segment(FHS) + b"\r"

    def batch_header(self, header: HeaderFields) -> bytes:
        """A BHS segment, opening a batch (closing the open one with its BTS first)."""
        if self._file_done:
            raise LocalProtocolError("BHS after FTS")
        out = self.batch_trailer() if self._batch_open else b""
        self._implicit = False
        self._batch_open, self._batch_messages = True, 0
        self._batches += 1
        return out + header.to_segment(BHS) + b"\r"

    def message(self, raw: bytes) -> bytes:
        """One message, its segments ended by CR (LF and CRLF are converted)."""
        if self._file_done:
            raise LocalProtocolError("a message after FTS")
        raw = normalise_segments(raw.strip(b"\r\n"))
        if not raw.startswith(b"MSH"):
            raise LocalProtocolError("a message must start with MSH")
        if not self._batch_open and not self._implicit:
            self._implicit = True
            self._batches += 1
        self._batch_messages += 1
        self.messages += 1
        return raw + b"\r"

    def batch_trailer(self, *, comment: bytes = b"", totals: bytes = b"") -> bytes:
        """The BTS closing the open batch, BTS-1 its message count.

        Args:
            comment: BTS-2.
            totals: BTS-3 (its repetitions already joined).
        """
        if not self._batch_open:
            raise LocalProtocolError("BTS without an open BHS")
        self._batch_open = False
        fs = self._separator
        fields = [BTS, b"%d" % self._batch_messages, comment, totals]
        while not fields[-1]:
            fields.pop()
        return fs.join(fields) + b"\r"

    def file_trailer(self, *, comment: bytes = b"") -> bytes:
        """The FTS closing the file (and the BTS of an open batch first), FTS-1 its batch count."""
        if not self._file_open:
            raise LocalProtocolError("FTS without FHS")
        out = self.batch_trailer() if self._batch_open else b""
        self._file_open, self._file_done = False, True
        fields = [FTS, b"%d" % self._batches, comment]
        if not comment:
            fields.pop()
        return out + self._separator.join(fields) + b"\r"

    def close(self) -> bytes:
        """The trailers of whatever is open (BTS, FTS), or ``b""``."""
        if self._file_open:
            return self.file_trailer()
        return self.batch_trailer() if self._batch_open else b""


def write_batch(
    messages: Iterable[bytes],
    *,
    file_header: HeaderFields | None = None,
    batch_header: HeaderFields | None = None,
) -> Iterator[bytes]:
    """The parts of a batch file holding ``messages``, lazily.

    Args:
        messages: The messages, in order.
        file_header: The FHS, or ``None`` for none (then no FTS either).
        batch_header: The BHS, or ``None`` for none (then no BTS either).

    Yields:
        Bytes to write, in order: FHS, BHS, each message, BTS, FTS.
    """
    writer = BatchWriter()
    if file_header is not None:
        yield writer.file_header(file_header)
    if batch_header is not None:
        yield writer.batch_header(batch_header)
    for raw in messages:
        yield writer.message(raw)
    tail = writer.close()
    if tail:
        yield tail

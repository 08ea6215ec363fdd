"""Finding ``SB ... EB CR`` frames in a byte stream, shared by MLLP and HLLP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs

from mllp_trio._errors import LocalProtocolError, RemoteProtocolError
from mllp_trio.proto._events import (
    InvalidFrame,
    Message,
    _new_object,
    _set_message_data,
    trusted_message,
)

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "FrameReader", "FramingStats", "Oversize"]

#: 16 MiB: large enough for embedded PDFs and images in OBX, small enough
#: that one peer cannot exhaust the server's memory.
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024

#: Content shorter than this is framed by concatenation (two copies, but
#: faster than a join for short data); longer content by one join.
CONCAT_MAX: Final = 4096


#: Reads up to this size are copied into the buffer at once: holding them
#: saves little copying and costs more per read than it saves (byte-at-a-time
#: feeding ran at half speed when every read was held; 64 KB frames in 4 KiB
#: reads at about 0.7x).

_HOLD_MIN: Final = 16384


@attrs.frozen
class Oversize:
    """A frame larger than the limit was skipped (HLLP answers it with NAK ``B``)."""

    size: int


@attrs.frozen(kw_only=True)
class FramingStats:
    """Counters of what a receiver dropped instead of delivering.

    Attributes:
        out_of_frame_bytes: Bytes seen outside any frame (before a start
            byte or between frames) and discarded.
        dropped_partials: Partial frames dropped: restarted by a start byte
            inside a frame, or cut short by the end of the stream.
        rejected_frames: Complete frames refused (empty, bad trailer, oversize).
    """

    out_of_frame_bytes: int
    dropped_partials: int
    rejected_frames: int


#: What ``FrameReader.extract`` produces: frame content, a rejected frame, or
#: a skipped oversize frame.
Item = Any  # the wrapped frame content, InvalidFrame or Oversize


def _byte(name: str, value: int) -> int:
    if not 0 <= value <= 255:
        raise ValueError(f"{name} must be a byte value 0-255, got {value!r}")
    return value


class FrameReader:
    """The receive buffer and frame finder of one connection.

    The buffer is a ``bytearray`` with a consumed offset; each search resumes
    where the previous one stopped, so a stream fed one byte at a time costs
    O(n) in total. It looks for the single end byte (``memchr`` speed) and
    then checks the byte after it. Clean frames that follow each other with
    nothing between them take a fast path (:meth:`_clean_frames`); anything
    unusual is left to the careful path, which applies the same rules.

    A fed ``bytes`` read of more than 16 KiB is held as it is until
    :meth:`extract` (one read at most: a second feed first appends the held
    one to the buffer). Its clean
    frames are sliced straight out of it; only what follows them (a partial
    frame, anything unusual) is copied into the buffer. When a frame is open
    in the buffer, the careful path is handed the read up to its first end
    byte and trailer, which closes that frame, and the rest of the read goes
    the same way.

    Release 1 receiver rules (SPEC.md section 1): bytes outside frames are
    discarded and counted (strict: error); a start byte inside an open frame
    restarts it (strict: error); an end byte not followed by the trailer
    rejects the frame unless ``accept_missing_trailer``; an empty frame is
    rejected; a frame cut short by the end of the stream is dropped and
    reported; a frame over ``max_size`` is a fatal error
    (``oversize="error"``) or is reported and skipped (``oversize="skip"``,
    for HLLP, whose NAK ``B`` says exactly that).

    The outcome (events, counters, the point of a fatal error) depends only
    on the bytes, never on how they were split into reads. The size limit
    therefore bounds memory without judging early: an open frame that grows
    past ``max_size`` keeps its place but its content is discarded (only its
    length is counted), so at most ``max_size`` plus one read is buffered.
    It is judged where a fully buffered frame would be: at the next start
    byte (a restart, counted as a dropped partial; strict: error), at its
    end byte (the trailer rule first, then the size rule: an oversize
    frame), or at the end of the stream (a dropped partial). A start byte
    inside an open frame is looked for lazily, when the frame is judged or
    its content discarded, which gives the same verdict as looking at once.
    """

    def __init__(
        self,
        *,
        start_byte: int,
        end_byte: int,
        trailer_byte: int,
        strict: bool,
        accept_missing_trailer: bool,
        max_size: int,
        oversize: str = "error",
        wrap: Callable[[bytes], Any] = bytes,
    ) -> None:
        self._sb = _byte("start_byte", start_byte)
        self._eb = _byte("end_byte", end_byte)
        self._cr = _byte("trailer_byte", trailer_byte)
        if len({self._sb, self._eb, self._cr}) != 3:
            raise ValueError("start, end and trailer bytes must all differ")
        if max_size < 1:
            raise ValueError(f"max_message_size must be positive, got {max_size}")
        self._strict = strict
        self._accept_missing_trailer = accept_missing_trailer
        self._max = max_size
        self._skip_oversize = oversize == "skip"
        self._wrap = wrap  # turns frame content into the caller's event
        self._prefix = bytes((self._sb,))
        self._suffix = bytes((self._eb, self._cr))

        self._buf = bytearray()
        self._held: bytes | None = None  # a fed read not yet copied into _buf
        self._pos = 0  # first byte not yet consumed
        self._in_frame = False
        self._frame_start = 0  # first content byte of the open frame
        self._scan = 0  # where the end-byte search resumes
        self._sb_scan = 0  # where the start-byte (restart) search resumes
        self._discarded = 0  # content bytes of the open frame dropped for the size limit
        self._swallow_trailer = False  # frame ended on a lone end byte at the buffer's end
        self.eof = False
        self._error: RemoteProtocolError | None = None

        self.out_of_frame_bytes = 0
        self.dropped_partials = 0
        self.rejected_frames = 0

    @property
    def buffered(self) -> int:
        """Bytes held in the receive buffer."""
        held = self._held
        return len(self._buf) - self._pos + (len(held) if held is not None else 0)

    @property
    def stats(self) -> FramingStats:
        """A snapshot of the drop counters."""
        return FramingStats(
            out_of_frame_bytes=self.out_of_frame_bytes,
            dropped_partials=self.dropped_partials,
            rejected_frames=self.rejected_frames,
        )

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; ``b""`` marks the end of the stream."""
        if self.eof:
            raise LocalProtocolError("receive_data() called after the end of stream (b'')")
        held = self._held
        if held is None and type(data) is bytes and len(data) > _HOLD_MIN:
            self._held = data  # immutable: kept until extract() without a copy
            return
        if held is not None:
            self._held = None
            self._buf += held
        if data:
            self._buf += data
        else:
            self.eof = True

    def take_lone_frame(self, data: bytes) -> bytes | None:
        """Return the content of ``data`` if it is one clean frame met between frames.

        The request/response case without a buffer: nothing is held, no frame
        is open, and ``data`` (``bytes``) is exactly ``SB content EB CR``
        with no other start or end byte and within the size limit. Anything
        else returns None and changes nothing (feed it as usual); a frame
        taken here is one :meth:`extract` would have returned on its own.
        """
        n = len(data)
        if (
            self._buf
            or self._held is not None
            or self._in_frame
            or self._swallow_trailer
            or self.eof
            or self._error is not None
            or type(data) is not bytes
            or not 3 < n <= self._max + 3
            or data[0] != self._sb
            or data[n - 1] != self._cr
            or data.find(self._eb, 1) != n - 2
            or data.find(self._sb, 1) >= 0
        ):
            return None
        return data[1:-2]

    def extract(self) -> list[Item]:
        """Consume every complete frame in the buffer and return them in order.

        Frames completed before a fatal fault are returned first; the fault
        is raised by the next call.

        Raises:
            RemoteProtocolError: On a fatal framing fault.
        """
        if self._error is not None:
            raise self._error
        held = self._held
        if held is not None:
            self._held = None
            return self._extract_held(held)
        buf = self._buf
        if not self._in_frame and not self._swallow_trailer:
            # Between frames nothing is consumed but not yet dropped (the
            # buffer starts at offset 0). The request/response case, one
            # read holding one clean frame or nothing, is settled here.
            n = len(buf)
            if not n:
                return []
            sb, eb = self._sb, self._eb
            if (
                buf[0] == sb
                and buf[n - 1] == self._cr
                and buf.find(eb, 1) == n - 2
                and buf.find(sb, 1) < 0
                and 3 < n <= self._max + 3
            ):
                item = self._wrap(bytes(buf)[1:-2])
                buf.clear()
                return [item]
        out: list[Item] = []
        try:
            self._run(out)
        except RemoteProtocolError as exc:
            self._error = exc
            if not out:
                raise
        self._drop_consumed()
        return out

    def _extract_held(self, data: bytes) -> list[Item]:
        """:meth:`extract` for a held read: its clean frames are sliced out of it."""
        out: list[Item] = []
        buf = self._buf
        n = len(data)
        p = 0  # data[:p] is consumed or in the buffer
        try:
            if buf or self._in_frame or self._swallow_trailer:
                # Something is open: the careful path gets the read up to its
                # first end byte and the byte after it, which settles it. When
                # that is most of the read, it gets all of it (splitting the
                # read measured slower for 64 KB frames in 64 KiB reads).
                p = data.find(self._eb) + 2
                if not 1 < p <= n >> 1:
                    p = n
                with memoryview(data) as view:
                    buf += view[:p]
                self._run(out)
                if p < n and (self._pos < len(buf) or self._in_frame or self._swallow_trailer):
                    with memoryview(data) as view:
                        buf += view[p:]
                    p = n
                    self._run(out)
                # Otherwise all of the buffer is consumed (dropped at the end).
            if p < n:
                last = data.rfind(self._eb, p + 1)
                if last + 1 == n:  # the read ended between end byte and trailer
                    last = data.rfind(self._eb, p + 1, last)
                if last > p:
                    p = self._clean_frames(out, data, p, last)
                if p < n:
                    with memoryview(data) as view:
                        buf += view[p:]
                    p = n
                    self._run(out)
        except RemoteProtocolError as exc:
            self._error = exc
            if p < n:  # kept, as the copying path keeps it (``buffered``)
                with memoryview(data) as view:
                    buf += view[p:]
            if not out:
                raise
        self._drop_consumed()
        return out

    def _drop_consumed(self) -> None:
        if self._pos:
            # CPython deletes from a bytearray's front in O(1) (it moves the
            # start pointer), so consumed bytes are dropped without copying.
            shift = self._pos
            del self._buf[:shift]
            self._pos = 0
            self._frame_start -= shift
            self._scan -= shift
            self._sb_scan -= shift

    def _run(self, out: list[Item]) -> None:
        buf = self._buf
        fast = True  # after one refusal the careful path takes the rest of this call
        while True:
            n = len(buf)
            if not self._in_frame:
                if self._swallow_trailer:
                    if self._pos >= n:
                        break
                    if buf[self._pos] == self._cr:
                        self._pos += 1
                    self._swallow_trailer = False
                start = buf.find(self._sb, self._pos)
                if start < 0:
                    self._out_of_frame(n - self._pos)
                    self._pos = n
                    break
                if start > self._pos:
                    self._out_of_frame(start - self._pos)
                self._pos = start
                if fast:
                    if self._fast_run(out, n):
                        continue
                    fast = False
                self._in_frame = True
                self._frame_start = self._scan = self._sb_scan = start + 1
            if not self._finish_frame(out, n):
                break
        if self.eof and self._in_frame:
            n = len(buf)
            self._restarts(n)
            size = self._discarded + n - self._frame_start
            self._in_frame = False
            self._discarded = 0
            self._pos = n
            self.dropped_partials += 1
            out.append(InvalidFrame("end of stream inside a frame", size))

    def _out_of_frame(self, count: int) -> None:
        if not count:
            return
        if self._strict:
            raise RemoteProtocolError(
                f"{count} byte(s) outside a frame (strict mode accepts nothing "
                f"between frames); the peer is not speaking MLLP framing"
            )
        self.out_of_frame_bytes += count

    def _fast_run(self, out: list[Item], n: int) -> bool:
        """Fast path: take the clean frames that start at the current position.

        The complete part of the buffer is copied to ``bytes`` once, then
        :meth:`_clean_frames` takes the frames. Anything unusual stops the
        loop and leaves the rest to the careful path. Returns True if it
        consumed a frame.
        """
        buf = self._buf
        pos = self._pos
        last = buf.rfind(self._eb, pos + 1)
        if last + 1 == n:  # the read ended between end byte and trailer
            last = buf.rfind(self._eb, pos + 1, last)
        if last < 0:
            return False
        with memoryview(buf) as view:
            data = bytes(view[pos : last + 2])
        p = self._clean_frames(out, data, 0, last - pos)
        self._pos = pos + p
        return p > 0

    def _clean_frames(self, out: list[Item], data: bytes, p: int, last: int) -> int:
        """Append the clean frames of ``data`` that follow each other from ``p``.

        ``data[last]`` is an end byte with a byte after it, so every frame
        started before ``last`` has an end byte within ``data`` and the byte
        after it exists. Stops at the first frame that is not
        clean (no start byte at ``p``, a trailer other than CR, a start byte
        inside, empty or over the limit) and returns where it stopped.
        """
        sb, eb, cr, wrap = self._sb, self._eb, self._cr, self._wrap
        room = self._max + 1  # end byte minus start byte: content length + 1
        find, append = data.find, out.append
        if wrap is trusted_message:
            # trusted_message inline: a function call is a fifth of a 1 KB frame here.
            new, set_data = _new_object, _set_message_data
            while p < last and data[p] == sb:
                e = find(eb, p + 1)
                content = data[p + 1 : e]
                # ``sb in content``: an int needle is one memchr, no argument parsing.
                if data[e + 1] != cr or sb in content or not content or e - p > room:
                    break
                message = new(Message)
                set_data(message, content)
                append(message)
                p = e + 2
        else:
            while p < last and data[p] == sb:
                e = find(eb, p + 1)
                content = data[p + 1 : e]
                if data[e + 1] != cr or sb in content or not content or e - p > room:
                    break
                append(wrap(content))
                p = e + 2
        return p

    def _finish_frame(self, out: list[Item], n: int) -> bool:
        """Careful path for the open frame. Returns False when it needs more data."""
        buf = self._buf
        eb = buf.find(self._eb, self._scan)
        if eb < 0:
            self._scan = n
            if n - self._frame_start > self._max:
                self._discard_open_frame(n)
            return False
        if eb + 1 >= n and not self._accept_missing_trailer and not self.eof:
            self._scan = eb  # the trailer byte has not arrived yet
            return False
        if buf.find(self._sb, self._sb_scan, eb) >= 0:
            self._restarts(eb)
        start = self._frame_start
        size = self._discarded + eb - start
        self._in_frame = False
        self._discarded = 0
        if eb + 1 < n and buf[eb + 1] == self._cr:
            self._pos = eb + 2
        elif self._accept_missing_trailer:
            self._pos = eb + 1
            self._swallow_trailer = eb + 1 >= n
        else:
            # The byte in the trailer's place (LF, say) goes with the rejected
            # frame, unless it starts the next one.
            self._pos = eb + 2 if eb + 1 < n and buf[eb + 1] != self._sb else eb + 1
            self.rejected_frames += 1
            out.append(InvalidFrame("end-of-block byte not followed by the trailer byte", size))
            return True
        if size > self._max:
            self._oversize_complete(out, size)
        elif size == 0:
            self.rejected_frames += 1
            out.append(InvalidFrame("empty frame", 0))
        else:
            out.append(self._wrap(bytes(buf[start:eb])))
        return True

    def _restarts(self, end: int) -> None:
        """Apply the start bytes of the open frame found before ``end``.

        Lenient: the frame restarts after the last one, and each counts as a
        dropped partial. Strict: a start byte inside a frame is fatal. Only
        bytes not searched before are searched.
        """
        buf = self._buf
        begin = self._sb_scan  # never before the frame's start
        self._sb_scan = end
        restart = buf.rfind(self._sb, begin, end)
        if restart < 0:
            return
        if self._strict:
            raise RemoteProtocolError(
                "start-of-block byte inside an open frame (strict mode); "
                "the previous frame was never ended"
            )
        self.dropped_partials += buf.count(self._sb, begin, restart + 1)
        self._discarded = 0
        self._frame_start = restart + 1
        self._pos = restart

    def _discard_open_frame(self, n: int) -> None:
        """Drop the content of an open frame that outgrew the limit.

        The frame stays open: only its length is kept, and it is judged
        when its end byte, a start byte or the end of the stream comes.
        """
        self._restarts(n)
        if n - self._frame_start <= self._max:
            return  # a restart left a partial within the limit
        self._discarded += n - self._frame_start
        self._frame_start = self._scan = self._sb_scan = self._pos = n

    def _oversize_complete(self, out: list[Item], size: int) -> None:
        self.rejected_frames += 1
        if not self._skip_oversize:
            raise RemoteProtocolError(
                f"frame of {size} bytes exceeds the maximum message size of {self._max} bytes"
            )
        out.append(Oversize(size))

    def check_outgoing(self, data: bytes) -> None:
        """Refuse content that the peer could not frame back correctly."""
        if self._sb in data or self._eb in data:
            raise LocalProtocolError(
                "message data contains the start-of-block or end-of-block byte; it cannot be framed"
            )
        if len(data) > self._max:
            raise LocalProtocolError(
                f"message of {len(data)} bytes exceeds max_message_size ({self._max})"
            )

    def frame(self, data: bytes) -> bytes:
        """Wrap content in start byte, end byte and trailer."""
        if len(data) < CONCAT_MAX:
            return self._prefix + data + self._suffix  # faster than join for short data
        return b"".join((self._prefix, data, self._suffix))  # one copy, not two

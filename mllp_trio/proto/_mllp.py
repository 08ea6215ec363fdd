"""The sans-IO MLLP connection: release 1 framing and release 2 commit acknowledgements."""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from mllp_trio._errors import LocalProtocolError, RemoteProtocolError
from mllp_trio.proto._events import (
    NEED_DATA,
    CommitAck,
    CommitNak,
    EndOfStream,
    InvalidFrame,
    Message,
    NeedData,
    trusted_message,
)
from mllp_trio.proto._framing import (
    CONCAT_MAX,
    DEFAULT_MAX_MESSAGE_SIZE,
    FrameReader,
    FramingStats,
    Item,
)

__all__ = ["MLLPConnection"]

_COMMIT_ACK: Final = b"\x06"
_COMMIT_NAK: Final = b"\x15"

#: What ``MLLPConnection.next_event()`` can return.
MLLPEvent = Message | CommitAck | CommitNak | InvalidFrame | EndOfStream


class MLLPConnection:
    """One end of an MLLP connection, as a sans-IO state machine.

    Feed received bytes to :meth:`receive_data`, take events from
    :meth:`next_event` until it returns :data:`NEED_DATA`, and write what
    :meth:`send` returns. No I/O happens here.

    Release 1 (the default) delivers each frame as a :class:`Message`;
    frames the receiver rejects come out as :class:`InvalidFrame` and the
    connection goes on. With ``mllp2=True`` (release 2), the exact blocks
    ``SB 0x06 EB CR`` and ``SB 0x15 EB CR`` are :class:`CommitAck` and
    :class:`CommitNak`, and the state machine enforces the exchange: every
    content block is answered by exactly one commit acknowledgement before
    the same side sends another content block.

    Bad constructor arguments raise ``ValueError``.

    Args:
        mllp2: Speak MLLP release 2 (commit ACK/NAK).
        strict: Treat bytes outside frames and a start byte inside an open
            frame as fatal protocol errors instead of discarding and counting.
        max_message_size: Largest content accepted, in bytes (default 16 MiB).
            The buffer never grows past it: an open frame that exceeds it is
            discarded as it arrives and judged at its end (a fatal error at
            its end byte; in lenient mode a start byte restarts it; the end
            of the stream drops it).
        start_byte: Start-of-block byte (default ``0x0B``).
        end_byte: End-of-block byte (default ``0x1C``).
        trailer_byte: Byte after the end byte (default ``0x0D``).
        accept_missing_trailer: Accept a frame that ends with the end byte
            alone (a following trailer byte is then swallowed). Off by
            default: a frame whose end byte is followed by anything else is
            rejected.
    """

    def __init__(
        self,
        *,
        mllp2: bool = False,
        strict: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        start_byte: int = 0x0B,
        end_byte: int = 0x1C,
        trailer_byte: int = 0x0D,
        accept_missing_trailer: bool = False,
    ) -> None:
        self._reader = FrameReader(
            start_byte=start_byte,
            end_byte=end_byte,
            trailer_byte=trailer_byte,
            strict=strict,
            accept_missing_trailer=accept_missing_trailer,
            max_size=max_message_size,
            # Release 1 frames become Message events while being split out;
            # release 2 needs the state machine, so it converts one by one.
            wrap=bytes if mllp2 else trusted_message,
        )
        self._mllp2 = mllp2
        self._events: deque[Any] = deque()  # release 1: ready events
        self._frames: deque[Item] = deque()  # release 2: raw frames
        self._error: RemoteProtocolError | None = None
        self._awaiting_commit = False
        self._owed_commits = 0
        self._late_commits = 0  # acknowledgements of timed-out copies still to come
        reader = self._reader
        # The reader's framing bytes, kept here for send_bytes (one attribute
        # load each instead of two on the per-message path).
        self._sb, self._eb, self._max = reader._sb, reader._eb, reader._max
        self._prefix, self._suffix = reader._prefix, reader._suffix
        self._commit_ack_frame = self._reader.frame(_COMMIT_ACK)
        self._commit_nak_frame = self._reader.frame(_COMMIT_NAK)

    @property
    def mllp2(self) -> bool:
        """Whether this connection speaks MLLP release 2."""
        return self._mllp2

    @property
    def stats(self) -> FramingStats:
        """What the receiver has discarded so far (out-of-frame bytes, partials, rejects)."""
        return self._reader.stats

    @property
    def awaiting_commit(self) -> bool:
        """Release 2: we sent a content block and no commit ACK/NAK has come yet."""
        return self._awaiting_commit

    @property
    def owed_commits(self) -> int:
        """Release 2: content blocks received that we have not yet answered."""
        return self._owed_commits

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as events."""
        reader = self._reader  # FrameReader.buffered, inline: read twice per message
        held = reader._held
        return len(reader._buf) - reader._pos + (len(held) if held is not None else 0)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed.

        Raises:
            LocalProtocolError: After the end of stream or a protocol error.
        """
        self._check_usable()
        self._reader.feed(data)

    def receive_frame(self, data: bytes) -> bytes | None:
        """Release 1: feed ``data``, returning its content at once when it is a lone clean frame.

        The fast path of a request/response peer: when nothing is buffered
        or waiting and ``data`` holds exactly one clean frame, its content
        comes back here and no event is queued (the same content
        :meth:`next_event` would have returned). Otherwise the bytes are fed
        as by :meth:`receive_data` and None is returned: take the events
        from :meth:`next_event` as usual.

        Raises:
            LocalProtocolError: After the end of stream or a protocol error.
        """
        if not self._mllp2 and not self._events:
            content = self._reader.take_lone_frame(data)
            if content is not None:
                return content
        self.receive_data(data)
        return None

    def next_event(self) -> MLLPEvent | NeedData:
        """Return the next event, or :data:`NEED_DATA` if more bytes are needed.

        After the end of stream has been fed and every frame returned, it
        returns :class:`EndOfStream` (again on each call).

        Raises:
            RemoteProtocolError: The peer broke the framing; the connection
                is unusable afterwards.
        """
        events = self._events
        if events:  # the hot path: frames already split out
            return events.popleft()  # type: ignore[no-any-return]
        if self._error is not None:
            self._check_usable()
        if not self._mllp2:
            # Release 1: the frames of this call go out as they are; only
            # what one call cannot return waits in the queue.
            try:
                items = self._reader.extract()
            except RemoteProtocolError as exc:
                self._error = exc
                raise
            if not items:
                return EndOfStream() if self._reader.eof else NEED_DATA
            if len(items) > 1:
                events.extend(items)
                return events.popleft()  # type: ignore[no-any-return]
            return items[0]  # type: ignore[no-any-return]
        # Release 2 keeps raw frames in their own queue: they become events
        # one at a time through the state machine.
        queue = self._frames
        if not queue:
            try:
                queue.extend(self._reader.extract())
            except RemoteProtocolError as exc:
                self._error = exc
                raise
            if not queue:
                return EndOfStream() if self._reader.eof else NEED_DATA
        event = self._release2_event(queue.popleft())
        return self.next_event() if event is None else event

    def _release2_event(self, item: Item) -> MLLPEvent | None:
        # Release 2 events leave the queue one at a time through here, so a
        # sequencing fault is raised after the events that preceded it.
        if type(item) is not bytes:
            self._owed_commits += 1  # the peer waits for a commit NAK
            return item  # type: ignore[no-any-return]
        data: bytes = item
        if data in (_COMMIT_ACK, _COMMIT_NAK):
            if not self._awaiting_commit:
                if self._late_commits:
                    # The answer to a copy we already resent: the first
                    # acknowledgement after the resend settled the block.
                    self._late_commits -= 1
                    return None
                self._fail("commit acknowledgement received but no content block was awaiting one")
            self._awaiting_commit = False
            return CommitAck() if data == _COMMIT_ACK else CommitNak()
        if self._awaiting_commit:
            self._fail(
                "invalid acknowledgement: a content block arrived where a commit ACK/NAK "
                "was expected"
            )
        self._owed_commits += 1
        return trusted_message(data)

    def send(self, event: Message | CommitAck | CommitNak) -> bytes:
        """Return the bytes that put ``event`` on the wire.

        Raises:
            LocalProtocolError: The event cannot be sent now or on this
                connection (release 2 ordering, content containing framing
                bytes, a commit acknowledgement on release 1). The connection
                state is unchanged by a refused send.
        """
        if self._error is not None:
            self._check_usable()
        if type(event) is Message:
            data = event.data
            # int needles: memchr; check_outgoing (a call) raises the error.
            if self._sb in data or self._eb in data or len(data) > self._max:
                self._reader.check_outgoing(data)
            if self._mllp2:
                if data in (_COMMIT_ACK, _COMMIT_NAK):
                    raise LocalProtocolError(
                        "release 2: content of a single 0x06 or 0x15 byte would be read as "
                        "a commit acknowledgement; it cannot be sent as a message"
                    )
                if self._awaiting_commit:
                    raise LocalProtocolError(
                        "release 2: wait for the commit ACK/NAK of the previous block first"
                    )
                if self._owed_commits:
                    raise LocalProtocolError(
                        "release 2: answer the received content block with a commit ACK/NAK first"
                    )
                self._awaiting_commit = True
            if len(data) < CONCAT_MAX:
                return self._prefix + data + self._suffix
            return b"".join((self._prefix, data, self._suffix))  # one copy, not two
        if isinstance(event, CommitAck | CommitNak):
            if not self._mllp2:
                raise LocalProtocolError(
                    "commit acknowledgements exist only in MLLP release 2 (mllp2=True)"
                )
            if not self._owed_commits:
                raise LocalProtocolError(
                    "no received content block is waiting for a commit ACK/NAK"
                )
            self._owed_commits -= 1
            return self._commit_ack_frame if type(event) is CommitAck else self._commit_nak_frame
        raise LocalProtocolError(f"MLLPConnection cannot send {type(event).__name__}")

    def send_bytes(self, data: bytes) -> bytes:
        """Return the bytes that put ``data`` on the wire as one message.

        The same as ``send(Message(data))``, with the same checks, without
        building the event: the way to frame replies and messages in a loop.

        Raises:
            LocalProtocolError: As for :meth:`send`, and for data that is
                not non-empty ``bytes``.
        """
        if (
            type(data) is not bytes
            or self._sb in data  # an int: memchr, several times faster than a bytes needle
            or self._eb in data
            or not 0 < len(data) <= self._max
            or self._mllp2
            or self._error is not None
        ):
            return self.send(Message(data))  # the same checks, with their errors
        if len(data) < CONCAT_MAX:
            return self._prefix + data + self._suffix
        return b"".join((self._prefix, data, self._suffix))  # one copy, not two

    def resend(self, event: Message) -> bytes:
        """Release 2: send a block again because its commit acknowledgement did not come in time.

        The block still awaits one commit ACK/NAK; the first that arrives
        settles it, and one more (the answer to the earlier copy, if it was
        only late) is dropped instead of being taken for a protocol fault.

        Raises:
            LocalProtocolError: Not release 2, or no block is awaiting a commit
                acknowledgement.
        """
        self._check_usable()
        if not self._mllp2 or not self._awaiting_commit:
            raise LocalProtocolError("resend() is for a release 2 block still awaiting its commit")
        self._reader.check_outgoing(event.data)
        self._late_commits += 1
        return self._reader.frame(event.data)

    def _fail(self, text: str) -> None:
        self._error = RemoteProtocolError(text)
        raise self._error

    def _check_usable(self) -> None:
        if self._error is not None:
            raise LocalProtocolError(
                f"connection unusable after an earlier protocol error: {self._error}"
            )

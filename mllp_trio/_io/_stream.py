"""Running a sans-IO exchange over any Trio stream, under a connection's watchdog."""

from __future__ import annotations

import logging
import math
from typing import Literal, overload

import attrs
import trio

from mllp_trio._errors import ConnectionClosedError, DeliveryFailed, RemoteProtocolError
from mllp_trio._io._budget import MemoryBudget
from mllp_trio._io._watchdog import Expiry, Watchdog
from mllp_trio.proto._events import NEED_DATA, EndOfStream
from mllp_trio.proto._exchange import (
    Delivered,
    DeliveryFailure,
    Exchange,
    ExchangeEvent,
    Resend,
)

__all__ = ["Junk", "MLLPStream", "gave_up"]

log = logging.getLogger("mllp_trio.io")


def gave_up(failure: DeliveryFailure, what: str) -> DeliveryFailed:
    """The error for a block the peer refused, or left uncommitted, on every attempt."""
    if "NAK" in failure.reason:
        text = f"peer NAKed our {what} {failure.attempts} times"
    else:
        text = f"peer did not commit our {what} after {failure.attempts} attempts"
    return DeliveryFailed(f"{text} ({failure.reason})")


@attrs.frozen
class Junk:
    """A whole read fell outside any frame: nothing in it was delivered.

    Returned by :meth:`MLLPStream.receive_event` when asked to (lenient
    framing discards such bytes; strict framing fails instead).

    Attributes:
        head: The first bytes of the read (up to 8), to recognise another
            protocol; never log them (they may be message content).
        size: Bytes in the read.
        blank: Only whitespace (a CR LF between frames, say).
        first: Nothing had been received on the connection before.
    """

    head: bytes = attrs.field(repr=False)
    size: int
    blank: bool
    first: bool


class MLLPStream:
    """An MLLP or HLLP exchange over a ``trio.abc.Stream``.

    One task at a time may receive and one may send (a second raises
    ``trio.BusyResourceError``). No background task is started: bytes are
    read only while :meth:`receive_event` runs. Every wait is bounded through
    the connection's :class:`Watchdog`: when a deadline passes, the
    watchdog cancels its scope; nothing here raises a timeout itself.

    Args:
        transport: TCP stream, TLS stream, memory stream...
        exchange: The sans-IO exchange (framing plus delivery rules); the
            stream owns it from now on.
        watchdog: Keeps the deadlines of this connection.
        receive_size: Bytes asked of the transport per read.
        budget: The listener's memory budget: the receive buffer is
            charged to it, and reads wait while it is exhausted.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        exchange: Exchange,
        watchdog: Watchdog,
        *,
        receive_size: int = 65536,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.transport = transport
        self.exchange = exchange
        self.watchdog = watchdog
        self._receive_size = receive_size
        self._budget = budget
        self._received = False  # any byte yet
        self._junk = 0  # out-of-frame bytes already reported
        # One task at a time on each side (checked inline: the receive
        # runs twice per message).
        self._receiving_now = False
        self._charged = 0  # what the budget was last told this stream holds
        self._sending_now = False
        self._broken: str | None = None

    @property
    def broken(self) -> bool:
        """Whether an interrupted write left the stream out of step."""
        return self._broken is not None

    @overload
    async def receive_event(
        self,
        *,
        deadline: float = ...,
        reason: Expiry = ...,
        read_timeout: float | None = ...,
        scope: trio.CancelScope | None = ...,
        report_junk: Literal[False] = ...,
        fed: bytes = ...,
    ) -> ExchangeEvent: ...

    @overload
    async def receive_event(
        self,
        *,
        deadline: float = ...,
        reason: Expiry = ...,
        read_timeout: float | None = ...,
        scope: trio.CancelScope | None = ...,
        report_junk: bool,
        fed: bytes = ...,
    ) -> ExchangeEvent | Junk: ...

    async def receive_event(
        self,
        *,
        deadline: float = math.inf,
        reason: Expiry = Expiry.IDLE,
        read_timeout: float | None = None,
        scope: trio.CancelScope | None = None,
        report_junk: bool = False,
        fed: bytes = b"",
    ) -> ExchangeEvent | Junk:
        """Return the next event, reading from the transport as needed.

        Args:
            deadline: Trio time by which the next frame must have started
                (``reason`` says which timeout that is); while a frame is
                arriving it still applies unless ``read_timeout`` is given.
            reason: What the deadline is, for the watchdog's report.
            read_timeout: Seconds a frame has, from its first byte, to
                arrive completely; replaces ``deadline`` while a frame is open.
            scope: What ``deadline`` cancels (default: the watchdog's scope,
                the connection); a frame deadline always cancels the connection.
            report_junk: Return :class:`Junk` for a read that held nothing
                but bytes outside frames, instead of reading on.
            fed: Bytes the caller has just read from the transport, after the
                first read, and already given to the exchange (a listener's
                fast path): they count as this call's read, for junk.

        Raises:
            RemoteProtocolError: The peer broke the framing or the exchange rules.
            ConnectionClosedError: An earlier write was interrupted.
            trio.BrokenResourceError: The transport failed.
        """
        if self._broken is not None:
            raise ConnectionClosedError(f"connection unusable: {self._broken}")
        exchange = self.exchange
        connection = exchange.connection  # its buffered is one property less than the exchange's
        watchdog = self.watchdog
        budget = self._budget
        frame_deadline = math.inf
        data: bytes | bytearray = fed
        first = False
        if self._receiving_now:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        self._receiving_now = True
        try:
            while True:
                event = exchange.next_event()
                buffered = connection.buffered
                if budget is not None and buffered != self._charged:
                    self._charged = buffered
                    budget.charge(self, buffered)
                if event is not NEED_DATA:
                    return event
                if data and report_junk and not buffered:
                    # The read just fed gave no event and left no open frame:
                    # junk, if bytes outside frames were counted (not, say, a
                    # late release 2 commit ACK that the exchange dropped).
                    junk = connection.stats.out_of_frame_bytes
                    if junk != self._junk:
                        self._junk = junk
                        return Junk(bytes(data[:8]), len(data), not data.strip(), first)
                if buffered and read_timeout is not None:
                    # Within a frame: the frame's own deadline, from its first byte.
                    if frame_deadline == math.inf:
                        frame_deadline = trio.current_time() + read_timeout
                    watchdog.arm_at(frame_deadline, Expiry.FRAME)
                else:
                    frame_deadline = math.inf
                    watchdog.arm_at(deadline, reason, scope)
                if budget is not None and budget.limit is not None and budget.used >= budget.limit:
                    await budget.wait_for_room()
                data = await self.transport.receive_some(self._receive_size)
                first, self._received = not self._received, True
                watchdog.disarm()
                if first and report_junk and data[:2] == b"\x16\x03":
                    # A TLS record header first: the random bytes of a
                    # ClientHello may hold a start-of-block byte, which would
                    # open a "frame" that never ends.
                    return Junk(bytes(data[:8]), len(data), False, True)
                exchange.receive_data(data)
        finally:
            self._receiving_now = False

    async def await_commit(
        self,
        what: str,
        *,
        ack_timeout: float,
        write_timeout: float | None,
        read_timeout: float | None = None,
    ) -> None:
        """Release 2: wait until the peer commits our block; resend it on a NAK or timeout.

        The one commit wait of listener (for its reply) and client (for its
        message): each wait gets ``ack_timeout``; the :class:`Exchange`
        decides between resending and giving up.

        Args:
            what: What the block is ("reply", "message"), for errors and logs.
            ack_timeout: Seconds the peer has to commit each copy.
            write_timeout: Seconds a resend has to be written.
            read_timeout: Seconds a frame has once started (default: the ACK deadline).

        Raises:
            DeliveryFailed: NAKed or unanswered on every attempt.
            ConnectionClosedError: The peer closed the connection first.
            RemoteProtocolError: Something other than a commit ACK/NAK came.
        """
        exchange = self.exchange
        while True:
            with trio.CancelScope() as wait:
                event = await self.receive_event(
                    deadline=trio.current_time() + ack_timeout,
                    reason=Expiry.ACK,
                    read_timeout=read_timeout,
                    scope=wait,
                )
            if wait.cancelled_caught:
                event = exchange.timeout()
            if type(event) is Delivered:
                return
            if type(event) is Resend:
                log.info("%s not committed (%s); resending", what, event.reason)
                await self.send_all(event.data, timeout=write_timeout)
            elif type(event) is DeliveryFailure:
                raise gave_up(event, what)
            elif isinstance(event, EndOfStream):
                raise ConnectionClosedError(
                    f"peer closed the connection before committing our {what}"
                )
            else:
                raise RemoteProtocolError(
                    f"expected a commit ACK/NAK for our {what}, got {type(event).__name__}"
                )

    async def send_all(
        self, data: bytes, *, timeout: float | None = None, deadline: float | None = None
    ) -> None:
        """Write bytes the exchange produced, within ``timeout`` seconds (or by ``deadline``).

        An interrupted write leaves the peer with part of a frame: the stream
        is then unusable.

        Args:
            data: The bytes.
            timeout: Seconds the write may take.
            deadline: Trio time by which it must be done, instead of
                ``timeout`` (saves reading the clock when the caller has).
        """
        if self._broken is not None:
            raise ConnectionClosedError(f"connection unusable: {self._broken}")
        if not data:
            return
        if self._sending_now:
            raise trio.BusyResourceError("another task is already sending on this connection")
        self._sending_now = True
        try:
            if deadline is not None:
                self.watchdog.arm_at(deadline, Expiry.WRITE)
            elif timeout is not None:
                self.watchdog.arm_at(trio.current_time() + timeout, Expiry.WRITE)
            await self.transport.send_all(data)
            self.watchdog.disarm()
        except BaseException as exc:
            self._broken = f"write interrupted by {type(exc).__name__}"
            raise
        finally:
            self._sending_now = False

    async def aclose(self) -> None:
        """Close the transport."""
        self._broken = self._broken or "closed"
        await self.transport.aclose()

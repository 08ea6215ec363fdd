"""Running a sans-IO framing connection over any Trio stream."""

from __future__ import annotations

import math

import trio

from mllp_trio._errors import ConnectionClosedError, LocalProtocolError, MLLPTimeoutError
from mllp_trio.proto._events import (
    NEED_DATA,
    BadBlock,
    CommitAck,
    CommitNak,
    EndOfStream,
    HLLPNak,
    InvalidFrame,
    Message,
)
from mllp_trio.proto._hllp import HLLPConnection
from mllp_trio.proto._mllp import MLLPConnection

__all__ = ["MLLPStream", "Watchdog"]

_WAIT_FRAME = "timed out waiting for the frame to complete"
_WAIT_MESSAGE = "timed out waiting for the next message"
_WAIT_WRITE = "timed out writing to the peer"

StreamEvent = Message | CommitAck | CommitNak | HLLPNak | BadBlock | InvalidFrame | EndOfStream


class Watchdog:
    """Deadlines for one connection, kept by one sleeping task.

    A cancel scope per read or write costs several microseconds; a
    connection answering thousands of messages a second instead moves one
    number (:meth:`arm`), and this task cancels ``scope`` when the number is
    passed. Run :meth:`run` in the connection's nursery.

    Args:
        scope: Cancelled when a deadline passes.
        poll: Longest sleep between looks at the deadline; must not exceed
            the shortest timeout armed, so no deadline is noticed late.
    """

    def __init__(self, scope: trio.CancelScope, *, poll: float) -> None:
        self.scope = scope
        self.poll = poll
        self.deadline = math.inf
        self.what = ""
        #: What timed out, once the watchdog fired.
        self.expired: str | None = None

    def arm(self, timeout: float | None, what: str) -> None:
        """Start a deadline ``timeout`` seconds from now (``None``: none)."""
        self.deadline = math.inf if timeout is None else trio.current_time() + timeout
        self.what = what

    def arm_at(self, deadline: float, what: str) -> None:
        """Start an absolute deadline."""
        self.deadline = deadline
        self.what = what

    def disarm(self) -> None:
        """No deadline until the next :meth:`arm`."""
        self.deadline = math.inf

    async def run(self) -> None:
        """Sleep until a deadline passes, then cancel ``scope``."""
        while True:
            now = trio.current_time()
            if now >= self.deadline:
                self.expired = self.what
                self.scope.cancel()
                return
            await trio.sleep_until(min(self.deadline, now + self.poll))


class _Lock:
    """A FIFO lock that costs nothing when nobody else holds it.

    ``trio.Lock`` yields to the scheduler on every acquisition; on the usual
    uncontended path this one only checks for cancellation.
    """

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._held:
            await self._lot.park()  # ownership is handed over by __aexit__
        else:
            self._held = True

    async def __aexit__(self, *exc: object) -> None:
        if self._lot:
            self._lot.unpark()
        else:
            self._held = False


class MLLPStream:
    """An MLLP or HLLP connection over a ``trio.abc.Stream``.

    One task at a time may receive; sends are serialised by a lock, so a
    reply and a commit acknowledgement never interleave. No background task
    is started: bytes are read only while :meth:`receive_event` runs.

    Args:
        transport: TCP stream, ``trio.SSLStream``, memory stream...
        connection: The sans-IO state machine (:class:`MLLPConnection` or
            :class:`HLLPConnection`); the stream owns it from now on.
        receive_size: Bytes asked of the transport per read.
        watchdog: Enforce the timeouts with this :class:`Watchdog` (the
            listener's way: no cancel scope per operation) instead of a
            cancel scope per call. A timeout then cancels the watchdog's
            scope rather than raising :class:`MLLPTimeoutError` here.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        connection: MLLPConnection | HLLPConnection,
        *,
        receive_size: int = 65536,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.transport = transport
        self.connection = connection
        self.watchdog = watchdog
        self._receive_size = receive_size
        self._send_lock = _Lock()
        self._receiving = False
        self._broken: str | None = None

    @property
    def broken(self) -> bool:
        """Whether an interrupted send or receive left the stream out of step."""
        return self._broken is not None

    def _check(self) -> None:
        if self._broken is not None:
            raise ConnectionClosedError(f"connection unusable: {self._broken}")

    async def receive_event(
        self,
        *,
        idle_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> StreamEvent:
        """Return the next event, reading from the transport as needed.

        Args:
            idle_timeout: Seconds to wait for the first byte of a frame
                (``None``: no limit).
            read_timeout: Seconds a frame has, from its first byte, to arrive
                completely (``None``: no limit).

        Raises:
            MLLPTimeoutError: A timeout expired; the stream is then unusable.
            RemoteProtocolError: The peer broke the framing.
            trio.BrokenResourceError: The transport failed.
        """
        self._check()
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        self._receiving = True
        try:
            return await self._receive_event(idle_timeout, read_timeout)
        except BaseException as exc:
            # A frame may be half read: nothing on this stream can be trusted.
            if not isinstance(exc, LocalProtocolError):
                self._broken = self._broken or f"receive interrupted by {type(exc).__name__}"
            raise
        finally:
            self._receiving = False

    async def _receive_event(
        self, idle_timeout: float | None, read_timeout: float | None
    ) -> StreamEvent:
        connection = self.connection
        frame_deadline = math.inf
        while True:
            event = connection.next_event()
            if event is not NEED_DATA:
                return event
            if connection.buffered:
                if frame_deadline == math.inf and read_timeout is not None:
                    frame_deadline = trio.current_time() + read_timeout
                deadline = frame_deadline
            else:
                frame_deadline = math.inf
                deadline = math.inf if idle_timeout is None else trio.current_time() + idle_timeout
            if self.watchdog is not None:
                # Constant texts: nothing is formatted per message on the hot path.
                self.watchdog.arm_at(
                    deadline, _WAIT_FRAME if connection.buffered else _WAIT_MESSAGE
                )
                data = await self.transport.receive_some(self._receive_size)
                self.watchdog.disarm()
            elif deadline == math.inf:
                data = await self.transport.receive_some(self._receive_size)
            else:
                with trio.move_on_at(deadline):
                    data = await self.transport.receive_some(self._receive_size)
                    deadline = math.inf
                if deadline != math.inf:
                    what = "frame to complete" if connection.buffered else "next message"
                    raise MLLPTimeoutError(f"timed out waiting for the {what}")
            connection.receive_data(data)

    async def send_event(
        self,
        event: Message | CommitAck | CommitNak | HLLPNak,
        *,
        timeout: float | None = None,
    ) -> bytes:
        """Encode ``event`` and write it; return the bytes written.

        Raises:
            LocalProtocolError: The event cannot be sent now (nothing written).
            MLLPTimeoutError: The write did not finish in time; the stream is
                then unusable.
        """
        self._check()
        async with self._send_lock:
            data = self.connection.send(event)  # type: ignore[arg-type]
            await self._write(data, timeout)
        return data

    async def send_bytes(self, data: bytes, *, timeout: float | None = None) -> None:
        """Write already-encoded frame bytes again (a resend), under the send lock."""
        self._check()
        async with self._send_lock:
            await self._write(data, timeout)

    async def _write(self, data: bytes, timeout: float | None) -> None:
        try:
            if self.watchdog is not None:
                self.watchdog.arm(timeout, _WAIT_WRITE)
                await self.transport.send_all(data)
                self.watchdog.disarm()
                return
            if timeout is None:
                await self.transport.send_all(data)
                return
            with trio.move_on_after(timeout) as scope:
                await self.transport.send_all(data)
            if scope.cancelled_caught:
                raise MLLPTimeoutError(f"timed out writing {len(data)} bytes")
        except BaseException as exc:
            self._broken = self._broken or f"send interrupted by {type(exc).__name__}"
            raise

    async def aclose(self) -> None:
        """Close the transport."""
        self._broken = self._broken or "closed"
        await self.transport.aclose()

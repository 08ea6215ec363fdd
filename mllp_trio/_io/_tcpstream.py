"""A plain TCP stream for trio that drives the socket directly, with fewer scheduler trips."""

from __future__ import annotations

import errno
import operator
import socket as stdlib_socket
from typing import Any, Final

import trio

__all__ = ["LeanTCPStream"]

_DEFAULT_RECEIVE_SIZE: Final = 65536
#: Calls completed without waiting before one full scheduling checkpoint,
#: so a connection that is always ready cannot starve the others.
_FAIRNESS_INTERVAL: Final = 16


class LeanTCPStream(trio.abc.HalfCloseableStream):
    """A TCP connection driven straight from trio's I/O waits.

    ``trio.SocketStream`` yields to the scheduler on every call even when
    the socket was ready (two extra round trips per request/response). This
    stream calls ``recv``/``send`` first and waits with
    ``trio.lowlevel.wait_readable``/``wait_writable`` only when the kernel
    says so.

    Checkpoints: :meth:`receive_some` and :meth:`send_all` are always cancel
    points, but a call that did not have to wait is a schedule point only
    every sixteenth time (the fairness yield, so that a connection that is
    always ready cannot starve the others). This is the one way the stream
    departs from the ``trio.abc.Stream`` contract, which asks every call to
    be a full checkpoint. The other methods are full checkpoints.

    It takes over the socket of the ``trio.SocketStream`` it is made from
    (which is unusable afterwards) and closes it in :meth:`aclose`.

    Args:
        transport_stream: A connected TCP stream.
    """

    def __init__(self, transport_stream: trio.SocketStream) -> None:
        trio_sock = transport_stream.socket
        family, type_, proto = trio_sock.family, trio_sock.type, trio_sock.proto
        sock = stdlib_socket.socket(family, type_, proto, fileno=trio_sock.detach())
        sock.setblocking(False)
        self.socket = sock
        self._closed = False
        self._eof_sent = False
        self._broken: str | None = None
        self._receiving = False
        self._sending = False
        self._unyielded = 0
        self._drained = False  # the last read returned less than it asked for

    def getpeername(self) -> Any:
        """The peer's address."""
        return self.socket.getpeername()

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(self._broken)

    def _check_send(self) -> None:
        self._check()
        if self._eof_sent:
            raise trio.ClosedResourceError("the sending side was shut down with send_eof")

    def _claim_send(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive at least one byte, or ``b""`` at end of stream."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            if self._closed or self._broken is not None:
                self._check()
            size = _DEFAULT_RECEIVE_SIZE if max_bytes is None else operator.index(max_bytes)
            if size < 1:
                raise ValueError("max_bytes must be >= 1")
            sock = self.socket
            if self._drained:
                # The last read emptied the socket. A request/response peer
                # has sent nothing since (it waits for our answer), so a recv
                # now would fail with EAGAIN, an exception, before the wait:
                # wait first (a full checkpoint).
                await trio.lowlevel.wait_readable(sock)
                if self._closed or self._broken is not None:
                    self._check()
                self._unyielded = 0
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            recv = sock.recv
            while True:
                try:
                    data = recv(size)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    self._check()
                    self._unyielded = 0
                    continue
                except OSError as exc:
                    self._check()
                    self._broken = f"receive failed: {exc}"
                    raise trio.BrokenResourceError(self._broken) from exc
                self._drained = len(data) < size
                # The fairness yield, inline (a coroutine call per read otherwise).
                self._unyielded += 1
                if self._unyielded >= _FAIRNESS_INTERVAL:
                    self._unyielded = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``; a cancelled send leaves the stream broken."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed or self._broken is not None or self._eof_sent:
                self._check_send()
            await trio.lowlevel.checkpoint_if_cancelled()
            send = self.socket.send
            # bytes go to send() as they are (most answers leave in one call);
            # a partial send switches to a memoryview, which slices without copying.
            view: bytes | memoryview = data if type(data) is bytes else memoryview(data).cast("B")
            total = len(view)
            sent = 0
            while True:
                try:
                    sent += send(view[sent:] if sent else view)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    self._check()
                    self._broken = f"send failed: {exc}"
                    raise trio.BrokenResourceError(self._broken) from exc
                if sent >= total:
                    break
                if type(view) is bytes:
                    view = memoryview(view)
                try:
                    await trio.lowlevel.wait_writable(self.socket)
                except BaseException:
                    self._broken = (
                        self._broken or "an interrupted send left part of the data unsent"
                    )
                    raise
                self._check()
                self._unyielded = 0
            self._unyielded += 1  # the fairness yield, as in receive_some
            if self._unyielded >= _FAIRNESS_INTERVAL:
                self._unyielded = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket has room to send."""
        self._claim_send()
        try:
            self._check()
            await trio.lowlevel.wait_writable(self.socket)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Shut down the sending side (TCP FIN); later calls do nothing.

        Raises:
            trio.BusyResourceError: Another task is sending.
            trio.ClosedResourceError: The stream was closed.
        """
        self._claim_send()
        try:
            self._check()
            # Cancel point before the effect, schedule point after it: a
            # cancelled call leaves the stream as it was.
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self._eof_sent:
                self._eof_sent = True
                try:
                    self.socket.shutdown(stdlib_socket.SHUT_WR)
                except OSError as exc:
                    if exc.errno != errno.ENOTCONN:
                        raise trio.BrokenResourceError(f"send_eof failed: {exc}") from exc
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Close the socket (a full checkpoint, which still closes when cancelled)."""
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()

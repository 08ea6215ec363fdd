"""Connections of the load generator: a socket read with ``recv_into`` into a reused buffer.

A reply costs one readiness wait and one ``recv_into`` into the caller's
buffer: no per-read allocation (a large ``recv`` allocates a fresh bytes
object each time, which for 64 KiB and more means an mmap/munmap per
reply), no stream layers. TLS goes through a non-blocking ``ssl.SSLSocket``
so that record processing stays in C; ``tls_stream="trio"`` uses
``trio.SSLStream`` instead, through :class:`StreamTransport`.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Literal, Protocol

import trio

__all__ = [
    "Connector",
    "SocketTransport",
    "StreamTransport",
    "TLSHandshakeFailed",
    "Transport",
    "tcp_connector",
]


class Transport(Protocol):
    """What a load connection needs from its byte stream."""

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``."""

    async def receive_into(self, buffer: memoryview) -> int:
        """Read into ``buffer``; return the byte count, 0 when the peer closed."""

    async def aclose(self) -> None:
        """Close the connection."""


#: An async callable that opens one connection.
Connector = Callable[[], Awaitable[Transport]]


class TLSHandshakeFailed(OSError):
    """The TLS handshake did not complete (the cause says why)."""


class SocketTransport:
    """A connected non-blocking socket (plain, or an ``ssl.SSLSocket`` after its handshake)."""

    __slots__ = ("_sock", "_tls")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``, waiting for room only when the kernel buffer is full."""
        sock = self._sock
        try:
            sent = sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(data):
            await trio.lowlevel.wait_writable(sock)
            try:
                sent += sock.send(view[sent:])
            except (BlockingIOError, ssl.SSLWantWriteError):
                continue
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(sock)

    async def receive_into(self, buffer: memoryview) -> int:
        """Wait until readable, then ``recv_into`` (a reply never arrives before the wait)."""
        sock = self._sock
        while True:
            # Decrypted bytes may already wait inside OpenSSL: no readiness then.
            if not (self._tls and sock.pending()):  # type: ignore[attr-defined]
                await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv_into(buffer)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(sock)

    async def aclose(self) -> None:
        """Close the socket at once (no TLS close_notify: a load run does not need it)."""
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        await trio.lowlevel.checkpoint()


class StreamTransport:
    """Any ``trio.abc.Stream`` (``trio.SSLStream``, a memory stream in tests)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``."""
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(errno.ECONNRESET, "connection lost") from exc

    async def receive_into(self, buffer: memoryview) -> int:
        """Read at most ``len(buffer)`` bytes into ``buffer``."""
        try:
            data = await self._stream.receive_some(len(buffer))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(errno.ECONNRESET, "connection lost") from exc
        buffer[: len(data)] = data
        return len(data)

    async def aclose(self) -> None:
        """Close the stream."""
        await trio.aclose_forcefully(self._stream)


async def _connect_socket(host: str, port: int) -> socket.socket:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                await trio.lowlevel.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"cannot connect to {host}:{port}: {os.strerror(code)}")
        except BaseException as exc:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            if not isinstance(exc, OSError):
                raise
            last = exc
            continue
        return sock
    raise last or OSError(errno.EHOSTUNREACH, f"cannot connect to {host}:{port}: no address")


async def _tls_handshake(sock: ssl.SSLSocket) -> None:
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await trio.lowlevel.wait_readable(sock)
        except ssl.SSLWantWriteError:
            await trio.lowlevel.wait_writable(sock)


_SILENT = "TLS handshake timed out: the peer said nothing (a plain listener?)"


def _handshake_deadline(seconds: float | None) -> AbstractContextManager[object]:
    return trio.fail_after(seconds) if seconds is not None else nullcontext()


def tcp_connector(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    tls_stream: Literal["ssl_socket", "trio"] = "ssl_socket",
    handshake_timeout: float | None = None,
) -> Connector:
    """A :data:`Connector` for ``host:port``, plain or over TLS.

    Args:
        host: Name or address of the peer.
        port: Its TCP port.
        ssl_context: A client context for TLS (mutual TLS when it holds a
            certificate); ``None`` for plain TCP.
        server_hostname: The name the server certificate must carry
            (default ``host``).
        tls_stream: ``"ssl_socket"`` (a non-blocking ``ssl.SSLSocket``,
            the default) or ``"trio"`` (``trio.SSLStream``).
        handshake_timeout: Seconds for the TLS handshake once connected; when
            they pass, :class:`TLSHandshakeFailed` says so (default: no limit
            of its own).
    """
    name = server_hostname or host

    async def connect() -> Transport:
        sock = await _connect_socket(host, port)
        if ssl_context is None:
            return SocketTransport(sock)
        if tls_stream == "trio":
            stream = trio.SSLStream(
                trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
                ssl_context,
                server_hostname=name,
            )
            try:
                with _handshake_deadline(handshake_timeout):
                    await stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as exc:
                await trio.aclose_forcefully(stream)
                raise TLSHandshakeFailed(errno.EPROTO, f"TLS handshake failed: {exc}") from exc
            except trio.TooSlowError:
                await trio.aclose_forcefully(stream)
                raise TLSHandshakeFailed(errno.ETIMEDOUT, _SILENT) from None
            return StreamTransport(stream)
        try:
            tls = ssl_context.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
        except BaseException:
            sock.close()
            raise
        try:
            with _handshake_deadline(handshake_timeout):
                await _tls_handshake(tls)
        except BaseException as exc:
            trio.lowlevel.notify_closing(tls)
            tls.close()
            if isinstance(exc, trio.TooSlowError):
                raise TLSHandshakeFailed(errno.ETIMEDOUT, _SILENT) from None
            if isinstance(exc, OSError):
                raise TLSHandshakeFailed(errno.EPROTO, f"TLS handshake failed: {exc}") from exc
            raise
        return SocketTransport(tls)

    return connect

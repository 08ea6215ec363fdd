"""Choosing how a TCP stream is wrapped in TLS: trio.SSLStream or the SSLSocket stream."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable
from typing import Any, Protocol

import trio

from mllp_trio._io._sslsocket import SSLSocketStream

__all__ = [
    "TLSStreamFactory",
    "close_with_notify",
    "linger_after_alert",
    "send_pending_alert",
    "ssl_socket_stream",
    "trio_ssl_stream",
]

#: Seconds a refused peer gets to take our alert before the connection closes.
_ALERT_TIMEOUT = 1.0


class TLSStreamFactory(Protocol):
    """Wraps a stream in TLS: :func:`trio_ssl_stream` or :func:`ssl_socket_stream`."""

    def __call__(
        self,
        stream: trio.abc.Stream,
        context: ssl.SSLContext,
        server_hostname: str | None = None,
        *,
        server_side: bool = True,
    ) -> Awaitable[Any]: ...


async def trio_ssl_stream(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    server_hostname: str | None = None,
    *,
    server_side: bool = True,
) -> trio.SSLStream[Any]:
    """Wrap with ``trio.SSLStream`` (works over any stream, memory streams included)."""
    return trio.SSLStream(stream, context, server_side=server_side, server_hostname=server_hostname)


async def ssl_socket_stream(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    server_hostname: str | None = None,
    *,
    server_side: bool = True,
) -> trio.abc.Stream:
    """Wrap with :class:`SSLSocketStream`: TLS records handled by OpenSSL in C.

    Streams that are not TCP sockets (memory streams in tests) fall back to
    ``trio.SSLStream``.
    """
    if isinstance(stream, trio.SocketStream):
        return SSLSocketStream(
            stream, context, server_side=server_side, server_hostname=server_hostname
        )
    return await trio_ssl_stream(stream, context, server_hostname, server_side=server_side)


async def send_pending_alert(stream: trio.abc.Stream) -> None:
    """Send the TLS alert a failed handshake left unsent, so the peer learns why.

    ``trio.SSLStream`` marks itself broken when OpenSSL refuses the peer and
    leaves the alert OpenSSL wrote (unknown CA, certificate required...) in
    its outgoing buffer; :class:`SSLSocketStream` has already sent it, since
    OpenSSL writes to the socket itself. Best effort, bounded by a second.
    """
    if not isinstance(stream, trio.SSLStream):
        return
    # trio keeps the outgoing BIO private; without it there is nothing to send.
    outgoing = getattr(stream, "_outgoing", None)
    if not isinstance(outgoing, ssl.MemoryBIO):
        return
    alert = outgoing.read()
    if not alert:
        return
    with (
        trio.move_on_after(_ALERT_TIMEOUT),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.transport_stream.send_all(alert)


async def linger_after_alert(stream: trio.abc.Stream) -> None:
    """Half-close a refused TLS connection and read until the peer closes.

    Under TLS 1.3 a client's handshake is over before the server has checked
    its certificate, so the client may already be sending a message when the
    alert leaves. Closing with those bytes unread makes the kernel send a
    reset, which can reach the client first and discard the alert unread.
    Best effort, bounded by a second; the caller closes the stream after.
    """
    with (
        trio.move_on_after(_ALERT_TIMEOUT),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        # (SSLSocketStream lingers itself, before it closes its socket.)
        if isinstance(stream, trio.SSLStream) and isinstance(
            stream.transport_stream, trio.SocketStream
        ):
            transport = stream.transport_stream
            await transport.send_eof()
            while await transport.receive_some(65536):
                pass


async def close_with_notify(stream: trio.abc.Stream) -> None:
    """Close a TLS stream whose handshake succeeded, sending ``close_notify`` first.

    A refused client (not on the allow list) then sees a clean end of the
    TLS session rather than a truncated one, whichever stream is in use.
    Bounded by a second; the transport is closed in any case.
    """
    with trio.move_on_after(_ALERT_TIMEOUT):
        await stream.aclose()
    await trio.aclose_forcefully(stream)

"""Choosing how a TCP stream is wrapped in TLS: trio.SSLStream or the SSLSocket stream."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable
from typing import Any, Protocol

import trio

from mllp_trio._io._sslsocket import SSLSocketStream

__all__ = ["TLSStreamFactory", "ssl_socket_stream", "trio_ssl_stream"]


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

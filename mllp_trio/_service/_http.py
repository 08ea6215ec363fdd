"""A small HTTP/1.1 server on Trio for /metrics, /healthz and /readyz.

Why h11 on Trio rather than prometheus_client's own server: that server
runs in a thread of its own, outside the listener's nursery and cancellation,
and would need its own shutdown; here the endpoint is one more task of the
listener, stops with it, and /readyz can await the journal's checks. h11
does the HTTP parsing (the well-kept sans-IO parser Trio's own HTTP projects
use); this module only reads one bounded request per connection, answers it,
and closes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import h11
import trio

__all__ = ["EndpointBindError", "HTTPResponse", "RequestHandler", "serve_http"]

log = logging.getLogger("mllp_trio.service")

#: Requests are one line and a few headers: anything larger is refused.
_MAX_REQUEST = 8192
#: A scraper sends its request at once; a slow client does not hold a slot.
_REQUEST_TIMEOUT = 10.0
#: Probes and scrapers are few; past this many at once, new ones wait.
_MAX_CONCURRENT = 8


@attrs.frozen
class HTTPResponse:
    """One answer: status, content type, body."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


#: ``async def handle(method, path) -> HTTPResponse``; path excludes the query.
RequestHandler = Callable[[str, str], Awaitable[HTTPResponse]]


class EndpointBindError(OSError):
    """The metrics and health endpoint cannot listen on its address (which the error names)."""

    def __init__(self, code: int | None, reason: str, host: str, port: int) -> None:
        super().__init__(code, reason)
        self.host = host
        self.port = port


async def serve_http(
    handler: RequestHandler,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer HTTP GET and HEAD requests on ``host:port`` until cancelled.

    Args:
        handler: Builds the response for a method and path.
        port: TCP port; 0 picks a free one (read it from the listeners).
        host: Address to bind (default loopback: metrics are not for everyone).
        task_status: Receives the listeners once listening.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise EndpointBindError(exc.errno, exc.strerror or str(exc), host, port) from exc
    limiter = trio.CapacityLimiter(_MAX_CONCURRENT)

    async def serve_one(stream: trio.SocketStream) -> None:
        async with limiter:
            await _serve_connection(stream, handler)

    async with trio.open_nursery() as nursery:
        task_status.started(listeners)
        for listener in listeners:
            nursery.start_soon(trio.serve_listeners, serve_one, [listener])


async def _serve_connection(stream: trio.SocketStream, handler: RequestHandler) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
    try:
        with trio.move_on_after(_REQUEST_TIMEOUT):
            request = await _read_request(stream, conn)
            if request is None:
                return
            method = request.method.decode("ascii", "replace")
            path = request.target.decode("ascii", "replace").partition("?")[0]
            if method not in ("GET", "HEAD"):
                response = HTTPResponse(405, b"only GET and HEAD\n")
            else:
                try:
                    response = await handler(method, path)
                except Exception:
                    log.exception("the HTTP endpoint failed on %s", path)
                    response = HTTPResponse(500, b"internal error\n")
            await _send(stream, conn, response, head=method == "HEAD")
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError):
        pass  # the client went away or spoke something else: nothing to do
    finally:
        await trio.aclose_forcefully(stream)


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            await _send(stream, conn, HTTPResponse(400, b"bad request\n"), head=False)
            return None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            conn.receive_data(data)  # b"" tells h11 the client closed
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed before a request


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, response: HTTPResponse, *, head: bool
) -> None:
    if conn.our_state is not h11.IDLE and conn.our_state is not h11.SEND_RESPONSE:
        return
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Connection", "close"),
        ("Cache-Control", "no-store"),
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if not head:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)

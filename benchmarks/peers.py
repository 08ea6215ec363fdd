"""Adapters that run the peers' own framing, servers and client the way their users do.

python-hl7 (``hl7.mllp``) and hl7apy (``hl7apy.mllp``) are the public Python
MLLP implementations mllp_trio is compared with. Everything here calls their
real code; where a socket is needed only to reach that code, a fake stands in.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from .messages import build_ack

__all__ = [
    "connect_per_message_roundtrip",
    "hl7_readblock_decode",
    "hl7_writeblock_encode",
    "hl7apy_handler_decode",
    "run_hl7_server",
    "run_hl7apy_server",
]

# Big enough for the 64 KB messages: python-hl7's default limit (64 KiB)
# refuses a message that size, so its users raise it the same way.
HL7_STREAM_LIMIT = 1 << 20

_loop: asyncio.AbstractEventLoop | None = None


def _event_loop() -> asyncio.AbstractEventLoop:
    # One loop for the whole process: creating one per sample would add
    # milliseconds that are not python-hl7's cost.
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop


# ---------------------------------------------------------------- python-hl7


async def _hl7_feed_and_read(chunks: Sequence[bytes], expected: int) -> int:
    from hl7.mllp import HL7StreamReader

    reader = HL7StreamReader(limit=HL7_STREAM_LIMIT)

    async def consume() -> int:
        count = 0
        while count < expected:
            await reader.readblock()
            count += 1
        return count

    task = asyncio.ensure_future(consume())
    for chunk in chunks:
        # What the protocol's data_received does for each socket read; the
        # yield lets the reading task run, as the event loop would.
        reader.feed_data(chunk)
        await asyncio.sleep(0)
    reader.feed_eof()
    return await task


def hl7_readblock_decode(chunks: Sequence[bytes], expected: int) -> int:
    """Decode with python-hl7's ``HL7StreamReader.readblock`` as its server uses it.

    A producer feeds each chunk with ``feed_data`` and yields to the event
    loop; a reader task calls ``readblock()`` in a loop, exactly like a
    ``start_hl7_server`` callback. Returns the number of blocks read.
    """
    return _event_loop().run_until_complete(_hl7_feed_and_read(chunks, expected))


class _CountingTransport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def hl7_writeblock_encode(messages: Sequence[bytes]) -> int:
    """Frame each message with python-hl7's ``MLLPStreamWriter.writeblock``.

    The writer's transport only counts bytes. Returns the bytes written.
    """
    from hl7.mllp.streams import MLLPStreamWriter

    transport = _CountingTransport()
    writer = MLLPStreamWriter(transport, None, None, _event_loop())
    write = writer.writeblock
    for data in messages:
        write(data)
    return transport.written


# -------------------------------------------------------------------- hl7apy


class _ChunkedRaw(io.RawIOBase):
    """A raw stream that returns at most one of the given chunks per read, like recv()."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._current:
            self._current = memoryview(next(self._chunks, b""))
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


class _FakeRequest:
    """Just enough of a socket for ``StreamRequestHandler.setup`` and ``recv``."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.rfile = io.BufferedReader(_ChunkedRaw(chunks))

    def settimeout(self, _timeout: float | None) -> None:
        pass

    def makefile(self, mode: str, _bufsize: int = -1) -> io.IOBase:
        return self.rfile if "r" in mode else io.BytesIO()

    def recv(self, n: int) -> bytes:
        # The real server reads its first 3 bytes with recv(); here they come
        # from the same buffered stream so that one stream can carry many frames.
        return self.rfile.read(n)


class _FakeServer:
    handlers: dict[str, Any] = {}
    timeout = None


def hl7apy_handler_decode(chunks: Sequence[bytes], expected: int) -> int:
    """Split frames the way hl7apy's ``MLLPRequestHandler.handle`` does.

    The handler is hl7apy's own class, set up by its own ``setup()`` over a
    fake socket. The loop is its ``handle()`` up to the routing: ``recv(3)``,
    then ``rfile.read(1)`` until the buffer ends with ``0x1C 0x0D``, then its
    real ``_extract_hl7_message`` (decode and regex check). hl7apy serves one
    message per connection; here the frames follow each other in one stream.
    """
    from hl7apy.mllp import MLLPRequestHandler

    handler = MLLPRequestHandler.__new__(MLLPRequestHandler)
    request = _FakeRequest(chunks)
    handler.request = request
    handler.client_address = ("127.0.0.1", 0)
    handler.server = _FakeServer()
    handler.setup()
    end_seq = handler.eb + handler.cr
    read = handler.rfile.read
    count = 0
    while count < expected:
        line = request.recv(3)
        if line[:1] != handler.sb:
            break
        while line[-2:] != end_seq:
            char = read(1)
            if not char:
                break
            line += char
        if handler._extract_hl7_message(line.decode(handler.encoding)) is not None:
            count += 1
    return count


# ------------------------------------------------------------------- servers


async def _serve_hl7_async(
    kind: str, host: str, ssl_context: ssl.SSLContext | None, on_port: Callable[[int], None]
) -> None:
    from hl7.mllp import start_hl7_server

    async def raw(reader: Any, writer: Any) -> None:
        # A hand-written server: frame with readblock, ACK by splitting MSH.
        try:
            while not writer.is_closing():
                block = await reader.readblock()
                writer.writeblock(build_ack(block))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def documented(reader: Any, writer: Any) -> None:
        # python-hl7's documented way: readmessage (hl7.parse), create_ack().
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    callback = {"raw": raw, "parse": documented}[kind]
    server = await start_hl7_server(
        callback, host, 0, ssl=ssl_context, limit=HL7_STREAM_LIMIT, backlog=512
    )
    on_port(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def run_hl7_server(
    kind: str, host: str, ssl_context: ssl.SSLContext | None, on_port: Callable[[int], None]
) -> None:
    """Run a python-hl7 asyncio server forever; ``kind`` is ``"raw"`` or ``"parse"``.

    ``raw`` acknowledges with :func:`build_ack`; ``parse`` follows python-hl7's
    documentation (``readmessage`` then ``message.create_ack()``).
    """
    asyncio.run(_serve_hl7_async(kind, host, ssl_context, on_port))


def run_hl7apy_server(
    host: str, message_types: Sequence[str], on_port: Callable[[int], None]
) -> None:
    """Run hl7apy's threading ``MLLPServer`` forever, acknowledging with :func:`build_ack`.

    hl7apy routes on the whole MSH-9, so every type sent must be listed. Its
    handlers return the framed reply; it closes the connection after one
    message, so clients connect once per message.
    """
    from hl7apy.mllp import AbstractHandler, MLLPServer

    class AckHandler(AbstractHandler):  # type: ignore[misc]
        def reply(self) -> str:
            data = self.incoming_message.encode("utf-8")
            return "\x0b" + build_ack(data).decode("utf-8") + "\x1c\r"

    server = MLLPServer(host, 0, {t: (AckHandler,) for t in message_types})
    on_port(server.server_address[1])
    server.serve_forever()


# -------------------------------------------------------------------- client


async def connect_per_message_roundtrip(
    host: str, port: int, message: bytes, ssl_context: ssl.SSLContext | None = None
) -> bytes:
    """Send one message on a new python-hl7 connection and return the reply block.

    This is how a client must talk to hl7apy's server, which closes every
    connection after answering one message.
    """
    from hl7.mllp import open_hl7_connection

    reader, writer = await open_hl7_connection(host, port, ssl=ssl_context, limit=HL7_STREAM_LIMIT)
    try:
        writer.writeblock(message)
        await writer.drain()
        reply: bytes = await reader.readblock()
        return reply
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()

"""Faults on the wire: connections cut (FIN or RST) at chosen byte offsets, then a retry.

Used by ``tests/test_faults_wire.py`` (small, every offset of a small frame)
and by the robustness report (more offsets, TLS). A *cut* opens a
connection to a listener, writes the first ``offset`` bytes of what a
client would write, then either closes its sending side and reads what the
listener still says (``reset=False``), or resets the connection
(``reset=True``: SO_LINGER 0, the kernel sends RST). The *retry* then sends
the whole message with the real client, as a sender would.

Over TLS the offsets count bytes of the TLS stream the client writes
(ClientHello, its second flight, then the records of the frame), so a cut
can fall in the handshake or in the frame.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Sequence

import attrs
import trio

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ClientConfig
from mllp_trio.proto import FramingConfig, HLLPConnection, Message, MLLPConnection
from mllp_trio.store import SQLiteStore

__all__ = [
    "CutResult",
    "JournalCheck",
    "TLSFlights",
    "acknowledged",
    "check_journal",
    "cut_plain",
    "cut_tls",
    "frame_for",
    "retry",
    "tls_flights",
]

#: Release 2 commit ACK block.
COMMIT_ACK = b"\x0b\x06\x1c\r"


def frame_for(framing: str, message: bytes) -> bytes:
    """The bytes a client of ``framing`` writes for ``message``."""
    if framing == "hllp":
        return HLLPConnection().send(Message(message))
    return MLLPConnection(mllp2=framing == "mllp2").send(Message(message))


def acknowledged(received: bytes) -> bool:
    """Whether the listener's bytes hold a positive answer (an AA/CA or a commit ACK)."""
    return COMMIT_ACK in received or b"MSA|AA|" in received or b"MSA|CA|" in received


@attrs.define
class CutResult:
    """One cut connection: where it was cut, how, and what the listener sent back."""

    offset: int
    reset: bool
    received: bytes = b""


def _reset_on_close(sock: socket.socket | trio.socket.SocketType) -> None:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _read_to_end(stream: trio.SocketStream, limit: float = 10.0) -> bytes:
    # A safety bound only: the listener closes after EOF (or its timeouts).
    received = b""
    with trio.move_on_after(limit):
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
    return received


async def cut_plain(port: int, wire: bytes, offset: int, *, reset: bool) -> CutResult:
    """Write ``wire[:offset]`` on a new TCP connection, then close it or reset it."""
    result = CutResult(offset, reset)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        if offset:
            await stream.send_all(wire[:offset])
        if reset:
            _reset_on_close(stream.socket)
        else:
            await stream.send_eof()
            result.received = await _read_to_end(stream)
    except trio.BrokenResourceError:
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return result


@attrs.define
class TLSFlights:
    """Byte counts of an uncut TLS client: its flights, then the frame's records."""

    hello: int
    handshake: int
    total: int

    def offsets(self, inside_frame: int = 4) -> list[int]:
        """Cut points: the handshake's edges and middles, and ``inside_frame`` in the frame."""
        h, s, t = self.hello, self.handshake, self.total
        points = {0, 1, h // 2, h - 1, h, h + 1, (h + s) // 2, s - 1, s, t}
        points.update(s + (t - s) * i // (inside_frame + 1) for i in range(1, inside_frame + 1))
        return sorted(p for p in points if 0 <= p <= t)


class _Cut(Exception):
    pass


class _TLSClient:
    """A TLS client over memory BIOs that stops writing after ``limit`` bytes."""

    def __init__(self, stream: trio.SocketStream, context: ssl.SSLContext, limit: int) -> None:
        self.stream = stream
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.limit = limit
        self.sent = 0
        self.flights: list[int] = []

    async def flush(self) -> None:
        data = self.outgoing.read()
        if not data:
            return
        room = self.limit - self.sent
        if len(data) >= room:
            await self.stream.send_all(data[:room])
            self.sent += room
            raise _Cut
        await self.stream.send_all(data)
        self.sent += len(data)
        self.flights.append(self.sent)

    async def fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            return False
        self.incoming.write(chunk)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self.fill():
                    raise trio.BrokenResourceError("closed in the handshake") from None
            else:
                await self.flush()
                return

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self.flush()

    def plaintext(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLError):
                return out
            if not chunk:
                return out
            out += chunk


async def tls_flights(port: int, context: ssl.SSLContext, wire: bytes) -> TLSFlights:
    """Measure an uncut TLS client writing ``wire`` (its flights and total)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        client = _TLSClient(stream, context, limit=1 << 30)
        await client.handshake()
        handshake = client.sent
        await client.send(wire)
        return TLSFlights(hello=client.flights[0], handshake=handshake, total=client.sent)
    finally:
        await trio.aclose_forcefully(stream)


async def cut_tls(
    port: int, context: ssl.SSLContext, wire: bytes, offset: int, *, reset: bool
) -> CutResult:
    """Write the TLS stream of ``wire`` up to byte ``offset``, then close or reset.

    After a close, what the listener sends back is decrypted as far as it
    can be and returned.
    """
    result = CutResult(offset, reset)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = _TLSClient(stream, context, limit=offset)
    try:
        try:
            if offset == 0:
                raise _Cut
            await client.handshake()
            await client.send(wire)
        except _Cut:
            pass
        if reset:
            _reset_on_close(stream.socket)
            return result
        await stream.send_eof()
        raw = await _read_to_end(stream)
        client.incoming.write(raw)
        result.received = client.plaintext()
    except (trio.BrokenResourceError, ssl.SSLError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return result


async def retry(
    port: int,
    framing: str,
    message: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Send ``message`` with the real client, as the sender's retry; return MSA-1."""
    config = ClientConfig(framing=FramingConfig(framing=framing))  # type: ignore[arg-type]
    async with open_mllp_client(
        "127.0.0.1", port, ssl_context=ssl_context, server_hostname="localhost", config=config
    ) as client:
        reply = await client.send(message, raise_on_negative=False)
    return str(reply.code)


@attrs.define
class JournalCheck:
    """What the journal holds for the messages of a run."""

    entries: int
    missing: list[str]
    doubled: list[str]
    altered: list[str]

    @property
    def ok(self) -> bool:
        """Every message once, byte for byte, and nothing else."""
        return not (self.missing or self.doubled or self.altered)


async def check_journal(store: SQLiteStore, messages: dict[str, bytes]) -> JournalCheck:
    """Compare the journal with ``messages`` (control id -> bytes sent)."""
    infos = await store.list_messages(limit=len(messages) + 1000)
    seen: dict[str, list[int]] = {}
    for info in infos:
        seen.setdefault(info.control_id, []).append(info.message_id)
    altered = []
    for control_id, ids in seen.items():
        expected = messages.get(control_id)
        for message_id in ids:
            if expected is None or await store.export_message(message_id) != expected:
                altered.append(control_id)
    return JournalCheck(
        entries=len(infos),
        missing=sorted(set(messages) - set(seen)),
        doubled=sorted(c for c, ids in seen.items() if len(ids) > 1),
        altered=sorted(set(altered)),
    )


def offsets_of(wire: bytes, every: int = 1) -> Sequence[int]:
    """Every ``every``-th offset of ``wire``, from 0 to its full length."""
    return sorted({*range(0, len(wire) + 1, every), len(wire)})

"""The Trio listener over loopback TCP and memory streams: messages, limits, timeouts, shutdown."""

from __future__ import annotations

import functools
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ClientConfig, Framing, FramingConfig, ServerConfig
from mllp_trio._errors import ConnectionClosedError, DeliveryFailed
from mllp_trio._hl7 import AckCode, ApplicationError, HL7Error, InboundMessage, parse_reply
from mllp_trio._server import MLLPServer, serve_mllp
from mllp_trio.proto._events import CommitAck, CommitNak, EndOfStream, HLLPNak, Message, NakReason
from mllp_trio.proto._hllp import HLLPConnection
from mllp_trio.proto._mllp import MLLPConnection

from .conftest import StartServer, assert_no_content, log_text
from .framing_helpers import CR, EB, SB, frame
from .hl7_samples import make_message
from .raw_peer import RawPeer

FRAMINGS: list[Framing] = ["mllp", "mllp2", "hllp"]

#: Appears in every test message; must never reach a log record.
SECRET = "SECRETSURNAME^JANE"


def hl7(control_id: str) -> bytes:
    return make_message(control_id=control_id, patient_name=SECRET)


def server_config(framing: Framing = "mllp", **kwargs: Any) -> ServerConfig:
    return ServerConfig(framing=FramingConfig(framing=framing), **kwargs)


def client_config(framing: Framing = "mllp", **kwargs: Any) -> ClientConfig:
    return ClientConfig(framing=FramingConfig(framing=framing), **kwargs)


@pytest.fixture(autouse=True)
def _capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mllp_trio")


class RecordingStream(trio.abc.Stream):
    """A stream that forwards to another and records the size of each read."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.reads: list[int] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.reads.append(len(data))
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class OneByteWrites(RecordingStream):
    """Writes everything one byte at a time."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        for i in range(len(data)):
            await self.inner.send_all(bytes(data[i : i + 1]))


class Peer:
    """The sending side written by hand: an RawPeer driven event by event."""

    def __init__(self, transport: trio.abc.Stream, framing: Framing = "mllp") -> None:
        self.framing = framing
        self.stream = RawPeer(transport, FramingConfig(framing=framing).new_connection())

    async def send(self, data: bytes) -> None:
        await self.stream.send_event(Message(data))

    async def receive(self) -> object:
        return await self.stream.receive_event()

    async def exchange(self, data: bytes) -> bytes:
        """Send one message and return the reply, doing the release 2 handshake."""
        await self.send(data)
        if self.framing == "mllp2":
            assert isinstance(await self.receive(), CommitAck)
        reply = await self.receive()
        assert isinstance(reply, Message), reply
        if self.framing == "mllp2":
            await self.stream.send_event(CommitAck())
        return reply.data


async def tcp_peer(port: int, framing: Framing = "mllp") -> Peer:
    return Peer(await trio.open_tcp_stream("127.0.0.1", port), framing)


async def receive_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the peer sends until it closes (a reset counts as a close)."""
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def reset(stream: trio.SocketStream) -> None:
    """Make the next close send a TCP RST instead of a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# ---------------------------------------------------------------- messages


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_many_messages_on_one_connection(
    start_server: StartServer, framing: Framing, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def handler(message: InboundMessage) -> None:
        seen.append(message.control_id)
        assert message.peer.address.startswith("127.0.0.1:")

    server = MLLPServer(handler, config=server_config(framing))
    port = await start_server(server)
    ids = [f"MSG{i:04d}" for i in range(25)]
    async with open_mllp_client("127.0.0.1", port, config=client_config(framing)) as client:
        for control_id in ids:
            reply = await client.send(hl7(control_id))
            assert (reply.code, reply.control_id) == (AckCode.AA, control_id)
    assert seen == ids
    assert server.stats.accepted == 1
    assert server.stats.messages == server.stats.accepted_messages == 25
    assert_no_content(caplog, [SECRET])


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_many_messages_over_memory_streams(framing: Framing, nursery: trio.Nursery) -> None:
    server = MLLPServer(config=server_config(framing))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, framing)
    for i in range(10):
        reply = parse_reply(await peer.exchange(hl7(f"M{i}")), f"M{i}")
        assert reply.code == AckCode.AA
    await client_side.send_stream.aclose()
    assert isinstance(await peer.receive(), EndOfStream)
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats.messages == 10
    assert server.stats.active == 0


async def test_serve_mllp_reports_its_listeners(nursery: trio.Nursery) -> None:
    seen: list[str] = []

    async def handler(message: InboundMessage) -> None:
        seen.append(message.control_id)

    listeners = await nursery.start(
        functools.partial(serve_mllp, handler, 0, host="127.0.0.1", config=server_config("hllp"))
    )
    port = listeners[0].socket.getsockname()[1]
    async with open_mllp_client("127.0.0.1", port, config=client_config("hllp")) as client:
        assert (await client.send(hl7("SM1"))).code == AckCode.AA
    assert seen == ["SM1"]


async def test_many_connections_at_once(start_server: StartServer) -> None:
    peers_seen: set[str] = set()
    in_handler = 0
    most_in_handler = 0

    async def handler(message: InboundMessage) -> None:
        nonlocal in_handler, most_in_handler
        peers_seen.add(message.peer.address)
        in_handler += 1
        most_in_handler = max(most_in_handler, in_handler)
        await trio.sleep(0.01)
        in_handler -= 1

    server = MLLPServer(handler)
    port = await start_server(server)
    replies: list[str] = []

    async def one_client(n: int) -> None:
        async with open_mllp_client("127.0.0.1", port) as client:
            for i in range(3):
                replies.append((await client.send(hl7(f"C{n}M{i}"))).control_id)

    async with trio.open_nursery() as clients:
        for n in range(20):
            clients.start_soon(one_client, n)
    assert sorted(replies) == sorted(f"C{n}M{i}" for n in range(20) for i in range(3))
    assert len(peers_seen) == 20
    assert most_in_handler > 1  # connections really were served side by side
    assert server.stats.accepted == 20
    assert server.stats.messages == 60


async def test_messages_split_across_reads_over_loopback(start_server: StartServer) -> None:
    server = MLLPServer()
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ids = ["S1", "S2", "S3"]
    wire = b"".join(frame(hl7(i)) for i in ids)
    for i in range(len(wire)):
        await stream.send_all(wire[i : i + 1])
        await trio.sleep(0)
    await stream.send_eof()
    received = await receive_until_eof(stream)
    conn = MLLPConnection()
    conn.receive_data(received)
    conn.receive_data(b"")
    replies: list[str] = []
    while not isinstance(event := conn.next_event(), EndOfStream):
        assert isinstance(event, Message)
        replies.append(parse_reply(event.data, ids[len(replies)]).control_id)
    assert replies == ids
    await stream.aclose()


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_messages_split_into_single_byte_reads(
    framing: Framing, nursery: trio.Nursery
) -> None:
    # Lockstep streams hand the server each write on its own: one byte per read.
    client_side, server_side = trio.testing.lockstep_stream_pair()
    recording = RecordingStream(server_side)
    server = MLLPServer(config=server_config(framing))
    nursery.start_soon(server.handle_stream, recording)
    peer = Peer(OneByteWrites(client_side), framing)
    for control_id in ("B1", "B2", "B3"):
        assert parse_reply(await peer.exchange(hl7(control_id)), control_id).code == AckCode.AA
    assert server.stats.messages == 3
    assert max(recording.reads) == 1
    assert len(recording.reads) > 3 * len(hl7("B1"))


# ---------------------------------------------------------------- bad peers


async def test_handler_exception_answers_ae_and_the_server_keeps_serving(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(message: InboundMessage) -> None:
        if message.control_id == "BOOM":
            raise RuntimeError(f"cannot file {message.text}")

    server = MLLPServer(handler)
    port = await start_server(server)
    async with open_mllp_client("127.0.0.1", port) as client:
        with pytest.raises(ApplicationError) as info:
            await client.send(hl7("BOOM"))
        assert [e.code for e in info.value.reply.errors] == ["207"]
        assert (await client.send(hl7("AFTER"))).code == AckCode.AA
    async with open_mllp_client("127.0.0.1", port) as client:
        assert (await client.send(hl7("NEXT"))).code == AckCode.AA
    assert "builtins.RuntimeError" in log_text(caplog)
    assert server.stats.messages == 3
    assert server.stats.accepted_messages == 2
    assert_no_content(caplog, [SECRET, "cannot file"])


async def test_peer_reset_mid_frame(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, autojump_clock: object
) -> None:
    server = MLLPServer()
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(SB + hl7("CUT")[:40])
    await trio.sleep(1)  # the server reads the partial frame
    reset(stream)
    await stream.aclose()
    async with open_mllp_client("127.0.0.1", port) as client:
        assert (await client.send(hl7("NEXT"))).code == AckCode.AA
    await trio.sleep(1)
    assert server.stats.accepted == 2
    assert server.stats.active == 0
    assert server.stats.messages == 1
    text = log_text(caplog)
    assert "lost: BrokenResourceError" in text
    assert "unexpected error" not in text
    assert_no_content(caplog, [SECRET])


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_garbage_peer_then_the_next_client_is_served(
    start_server: StartServer,
    framing: Framing,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: object,
) -> None:
    server = MLLPServer(config=server_config(framing))
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    garbage = b"GET / HTTP/1.1\r\n\r\n\x00\xff" + SB + b"not hl7 " + SECRET.encode() + EB + b"x"
    await stream.send_all(garbage + SB + b"\x01\x02\x03" + EB + CR + SB + b"unfinished")
    await stream.send_eof()
    answer = await receive_until_eof(stream)
    await stream.aclose()
    async with open_mllp_client("127.0.0.1", port, config=client_config(framing)) as client:
        assert (await client.send(hl7("NEXT"))).code == AckCode.AA
    await trio.sleep(1)
    assert server.stats.invalid_frames >= 1
    assert server.stats.active == 0
    if framing == "mllp":
        # A frame without a readable MSH gets no reply at all.
        assert answer == b""
    text = log_text(caplog)
    assert "rejected" in text or "refused" in text
    assert "unexpected error" not in text
    assert_no_content(caplog, [SECRET, "not hl7", "\x01\x02\x03"])


async def test_strict_mode_closes_on_garbage(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig(framing=FramingConfig(strict=True))
    server = MLLPServer(config=config)
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"garbage " + SECRET.encode() + frame(hl7("X")))
    assert await receive_until_eof(stream) == b""
    await stream.aclose()
    async with open_mllp_client("127.0.0.1", port) as client:
        assert (await client.send(hl7("NEXT"))).code == AckCode.AA
    assert server.stats.protocol_errors == 1
    assert "protocol error" in log_text(caplog)
    assert_no_content(caplog, [SECRET, "garbage"])


async def test_unreadable_message_gets_no_reply_and_the_connection_goes_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = MLLPServer()
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side)
    await peer.send(b"hello " + SECRET.encode())
    assert parse_reply(await peer.exchange(hl7("OK")), "OK").code == AckCode.AA
    assert server.stats.messages == 2
    assert "without a readable MSH" in log_text(caplog)
    assert_no_content(caplog, [SECRET, "hello"])


# ---------------------------------------------------------------- timeouts


async def test_idle_timeout_between_messages(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, autojump_clock: object
) -> None:
    server = MLLPServer(config=ServerConfig(idle_timeout=60))
    port = await start_server(server)
    peer = await tcp_peer(port)
    start = trio.current_time()
    for i in range(3):  # a message every 50 s keeps the connection open past 60 s
        await trio.sleep(50)
        assert parse_reply(await peer.exchange(hl7(f"I{i}")), f"I{i}").code == AckCode.AA
    last = trio.current_time()
    assert isinstance(await peer.receive(), EndOfStream)
    assert trio.current_time() - last == pytest.approx(60)
    assert last - start >= 150
    await peer.stream.aclose()
    await trio.sleep(1)
    assert server.stats.timeouts == 1
    assert "timed out waiting for the next message" in log_text(caplog)


async def test_read_timeout_cuts_a_slowloris(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, autojump_clock: object
) -> None:
    server = MLLPServer(config=ServerConfig(idle_timeout=None, read_timeout=10))
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    start = trio.current_time()
    wire = frame(hl7("SLOW"))
    with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
        with trio.fail_after(100):
            # One byte a second: always progressing, never finishing in time.
            for i in range(len(wire) - 1):
                await stream.send_all(wire[i : i + 1])
                await trio.sleep(1)
    assert 10 <= trio.current_time() - start <= 12
    await stream.aclose()
    assert server.stats.timeouts == 1
    assert server.stats.messages == 0
    assert "timed out waiting for the frame to complete" in log_text(caplog)


async def test_read_timeout_on_a_silent_started_frame(
    start_server: StartServer, autojump_clock: object
) -> None:
    server = MLLPServer(config=ServerConfig(idle_timeout=None, read_timeout=10))
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    start = trio.current_time()
    await stream.send_all(SB + b"MSH|")
    assert await receive_until_eof(stream) == b""
    assert trio.current_time() - start == pytest.approx(10)
    await stream.aclose()
    assert server.stats.timeouts == 1


async def test_write_timeout_when_the_peer_never_reads(
    caplog: pytest.LogCaptureFixture, autojump_clock: object
) -> None:
    server = MLLPServer(config=ServerConfig(write_timeout=5))
    # Lockstep streams: a write blocks until the other end reads it.
    client_side, server_side = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_side)
        start = trio.current_time()
        await client_side.send_all(frame(hl7("W")))
        while server.stats.active:
            await trio.sleep(1)
    assert 5 <= trio.current_time() - start <= 6
    assert server.stats.timeouts == 1
    assert "timed out writing" in log_text(caplog)
    await client_side.aclose()


# ---------------------------------------------------------------- limits


async def test_oversized_message_closes_the_connection(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig(framing=FramingConfig(max_message_size=200))
    server = MLLPServer(config=config)
    port = await start_server(server)
    big = hl7("BIG") + b"NTE|1||" + b"x" * 300 + b"\r"
    async with open_mllp_client("127.0.0.1", port, config=ClientConfig(retries=0)) as client:
        with pytest.raises(ConnectionClosedError):
            await client.send(big)
        assert (await client.send(hl7("SMALL"))).code == AckCode.AA  # a new connection
    assert server.stats.protocol_errors == 1
    assert server.stats.messages == 1
    assert "protocol error" in log_text(caplog)
    assert_no_content(caplog, [SECRET, "xxxx"])


async def test_hllp_oversized_block_is_nakked(nursery: trio.Nursery) -> None:
    server = MLLPServer(config=server_config("hllp"))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, "hllp")
    big = hl7("BIG") + b"NTE|1||" + b"x" * 100_000 + b"\r"
    # Our encoder refuses it too; write the block by hand.
    data = b"D23\r" + big
    await client_side.send_all(SB + data + b"%05d999" % 99999 + EB + CR)
    assert await peer.receive() == HLLPNak(NakReason.TOO_LONG)
    assert parse_reply(await peer.exchange(hl7("OK")), "OK").code == AckCode.AA


async def wait_for(condition: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not condition():
            await trio.sleep(0.001)


async def test_max_connections_refuses_the_excess_at_once(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = MLLPServer(config=ServerConfig(max_connections=2))
    port = await start_server(server)
    first, second = await tcp_peer(port), await tcp_peer(port)
    for n, peer in enumerate((first, second)):
        assert parse_reply(await peer.exchange(hl7(f"P{n}")), f"P{n}").code == AckCode.AA
    excess = await trio.open_tcp_stream("127.0.0.1", port)
    assert await receive_until_eof(excess) == b""  # closed, not queued
    await excess.aclose()
    assert server.stats.refused_limit == 1
    assert "connection limit reached" in log_text(caplog)
    assert parse_reply(await first.exchange(hl7("P3")), "P3").code == AckCode.AA
    await second.stream.aclose()
    await wait_for(lambda: server.stats.active == 1)
    third = await tcp_peer(port)
    assert parse_reply(await third.exchange(hl7("P4")), "P4").code == AckCode.AA
    assert server.stats.refused_limit == 1
    assert server.stats.accepted == 3
    for peer in (first, third):
        await peer.stream.aclose()


async def test_max_connections_per_peer(start_server: StartServer) -> None:
    server = MLLPServer(config=ServerConfig(max_connections_per_peer=1))
    port = await start_server(server)
    first = await tcp_peer(port)
    assert parse_reply(await first.exchange(hl7("A")), "A").code == AckCode.AA
    excess = await trio.open_tcp_stream("127.0.0.1", port)
    assert await receive_until_eof(excess) == b""
    await excess.aclose()
    # Another loopback address is another peer.
    other = Peer(await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2"))
    assert parse_reply(await other.exchange(hl7("B")), "B").code == AckCode.AA
    assert server.stats.refused_limit == 1
    assert server.stats.accepted == 2
    for peer in (first, other):
        await peer.stream.aclose()


# ---------------------------------------------------------------- graceful shutdown


async def serve_until_stopped(nursery: trio.Nursery, server: MLLPServer) -> tuple[int, trio.Event]:
    """Start ``server`` on a free port; the event is set when ``serve`` returns."""
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
        await server.serve(0, host="127.0.0.1", task_status=task_status)
        stopped.set()

    listeners = await nursery.start(serve)
    port: int = listeners[0].socket.getsockname()[1]
    return port, stopped


async def test_shutdown_finishes_in_flight_messages_and_closes_idle_ones(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, autojump_clock: object
) -> None:
    events: list[str] = []
    started = trio.Event()

    async def handler(message: InboundMessage) -> None:
        if message.control_id == "SLOW":
            started.set()
            await trio.sleep(5)
            events.append("handler done")

    server = MLLPServer(handler, config=ServerConfig(shutdown_grace=30))
    port, stopped = await serve_until_stopped(nursery, server)
    busy, idle = await tcp_peer(port), await tcp_peer(port)
    assert parse_reply(await idle.exchange(hl7("IDLE")), "IDLE").code == AckCode.AA
    replies: list[bytes] = []

    async def send_slow() -> None:
        replies.append(await busy.exchange(hl7("SLOW")))
        assert isinstance(await busy.receive(), EndOfStream)
        events.append("busy closed")

    nursery.start_soon(send_slow)
    await started.wait()
    server.shutdown()
    assert isinstance(await idle.receive(), EndOfStream)
    events.append("idle closed")
    await stopped.wait()
    assert events == ["idle closed", "handler done", "busy closed"]
    assert parse_reply(replies[0], "SLOW").code == AckCode.AA
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    assert server.stats.active == 0
    for peer in (busy, idle):
        await peer.stream.aclose()


async def test_shutdown_lets_a_half_received_message_finish(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    server = MLLPServer(config=ServerConfig(shutdown_grace=30))
    port, stopped = await serve_until_stopped(nursery, server)
    peer = await tcp_peer(port)
    wire = frame(hl7("HALF"))
    await peer.stream.transport.send_all(wire[:50])
    await trio.sleep(1)  # the server has the first half
    server.shutdown()
    await trio.sleep(1)
    await peer.stream.transport.send_all(wire[50:])
    reply = await peer.receive()
    assert isinstance(reply, Message)
    assert parse_reply(reply.data, "HALF").code == AckCode.AA
    assert isinstance(await peer.receive(), EndOfStream)
    await stopped.wait()
    await peer.stream.aclose()


async def test_shutdown_cancels_a_stuck_handler_after_the_grace_period(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    started = trio.Event()
    cancelled: list[bool] = []

    async def handler(message: InboundMessage) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    server = MLLPServer(handler, config=ServerConfig(shutdown_grace=10))
    port, stopped = await serve_until_stopped(nursery, server)
    peer = await tcp_peer(port)
    await peer.send(hl7("STUCK"))
    await started.wait()
    start = trio.current_time()
    server.shutdown()
    assert isinstance(await peer.receive(), EndOfStream)  # no reply: it was cancelled
    await stopped.wait()
    assert trio.current_time() - start == pytest.approx(10)
    assert cancelled == [True]
    await peer.stream.aclose()


# ---------------------------------------------------------------- MLLP release 2


async def test_release2_commit_ack_then_reply_then_waits_for_our_commit(
    nursery: trio.Nursery,
) -> None:
    server = MLLPServer(config=server_config("mllp2"))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, "mllp2")
    await peer.send(hl7("R1"))
    assert isinstance(await peer.receive(), CommitAck)
    reply = await peer.receive()
    assert isinstance(reply, Message)
    assert parse_reply(reply.data, "R1").code == AckCode.AA
    # We refuse to commit the reply: the server must send it again.
    await peer.stream.send_event(CommitNak())
    again = await peer.receive()
    assert again == reply
    await peer.stream.send_event(CommitAck())
    assert parse_reply(await peer.exchange(hl7("R2")), "R2").code == AckCode.AA
    assert server.stats.messages == 2
    assert server.stats.protocol_errors == 0


async def test_release2_server_gives_up_after_the_reply_is_nakked_retries_times(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = MLLPServer(config=server_config("mllp2", retries=2))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, "mllp2")
    await peer.send(hl7("R1"))
    assert isinstance(await peer.receive(), CommitAck)
    for _ in range(3):  # the reply and two resends
        assert isinstance(await peer.receive(), Message)
        await peer.stream.send_event(CommitNak())
    assert isinstance(await peer.receive(), EndOfStream)
    assert "NAKed our reply 3 times" in log_text(caplog)


async def test_release2_handler_failure_is_a_commit_nak(nursery: trio.Nursery) -> None:
    async def handler(message: InboundMessage) -> None:
        raise RuntimeError("database down")

    server = MLLPServer(handler, config=server_config("mllp2"))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, "mllp2")
    await peer.send(hl7("F1"))
    assert isinstance(await peer.receive(), CommitNak)
    # No HL7 ACK follows a commit NAK: the next block is the next answer.
    await peer.send(hl7("F1"))
    assert isinstance(await peer.receive(), CommitNak)
    assert server.stats.messages == 2
    assert server.stats.accepted_messages == 0


async def test_release2_invalid_frame_is_a_commit_nak(nursery: trio.Nursery) -> None:
    server = MLLPServer(config=server_config("mllp2"))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, "mllp2")
    await client_side.send_all(SB + hl7("BAD") + EB + b"x")
    assert await client_side.receive_some() == SB + b"\x15" + EB + CR
    assert parse_reply(await peer.exchange(hl7("OK")), "OK").code == AckCode.AA
    assert server.stats.invalid_frames == 1


async def test_release2_client_resends_on_commit_nak_end_to_end(start_server: StartServer) -> None:
    calls = 0

    async def handler(message: InboundMessage) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("transient")

    server = MLLPServer(handler, config=server_config("mllp2"))
    port = await start_server(server)
    config = client_config("mllp2", retries=2)
    async with open_mllp_client("127.0.0.1", port, config=config) as client:
        assert (await client.send(hl7("E1"))).code == AckCode.AA
        assert calls == 3
        assert (await client.send(hl7("E2"))).code == AckCode.AA
    assert server.stats.accepted == 1  # every resend went on the same connection


async def test_release2_client_raises_delivery_failed_after_retries(
    start_server: StartServer,
) -> None:
    calls = 0

    async def handler(message: InboundMessage) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("always")

    server = MLLPServer(handler, config=server_config("mllp2"))
    port = await start_server(server)
    config = client_config("mllp2", retries=3)
    async with open_mllp_client("127.0.0.1", port, config=config) as client:
        with pytest.raises(DeliveryFailed):
            await client.send(hl7("E1"))
        assert calls == 4
        calls = 0
        with pytest.raises(DeliveryFailed):  # the connection is still in step
            await client.send(hl7("E2"))
        assert calls == 4


async def test_release2_final_hl7_error_is_committed_not_resent(start_server: StartServer) -> None:
    calls = 0

    async def handler(message: InboundMessage) -> None:
        nonlocal calls
        calls += 1
        raise HL7Error("unknown patient", code=204)

    server = MLLPServer(handler, config=server_config("mllp2"))
    port = await start_server(server)
    async with open_mllp_client("127.0.0.1", port, config=client_config("mllp2")) as client:
        with pytest.raises(ApplicationError) as info:
            await client.send(hl7("E1"))
        assert [e.code for e in info.value.reply.errors] == ["204"]
    assert calls == 1


# ---------------------------------------------------------------- HLLP


def hllp_block(data: bytes) -> bytes:
    return HLLPConnection().send(Message(data))


async def test_hllp_corrupted_block_gets_nak_and_the_resend_is_answered(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = MLLPServer(config=server_config("hllp"))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, "hllp")
    good = hllp_block(hl7("H1"))
    checksum = int(good[-5:-2])
    bad_checksum = good[:-5] + b"%03d" % ((checksum + 1) % 256) + good[-2:]
    await client_side.send_all(bad_checksum)
    assert await peer.receive() == HLLPNak(NakReason.CHECKSUM)
    bad_count = good[:-10] + b"%05d" % (int(good[-10:-5]) + 1) + good[-5:]
    await client_side.send_all(bad_count)
    assert await peer.receive() == HLLPNak(NakReason.BYTE_COUNT)
    await client_side.send_all(good)
    reply = await peer.receive()
    assert isinstance(reply, Message)
    assert parse_reply(reply.data, "H1").code == AckCode.AA
    assert server.stats.invalid_frames == 2
    assert server.stats.messages == 1
    assert "NAK X" in log_text(caplog)
    assert_no_content(caplog, [SECRET])


async def test_hllp_server_resends_its_reply_when_nakked(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = MLLPServer(config=server_config("hllp", retries=2))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    peer = Peer(client_side, "hllp")
    await peer.send(hl7("H1"))
    reply = await peer.receive()
    assert isinstance(reply, Message)
    for _ in range(2):
        await peer.stream.send_event(HLLPNak(NakReason.CHECKSUM))
        assert await peer.receive() == reply
    # A further NAK is one too many: the server gives up on the connection.
    await peer.stream.send_event(HLLPNak(NakReason.CHECKSUM))
    assert isinstance(await peer.receive(), EndOfStream)
    assert "NAKed our reply" in log_text(caplog)
    assert server.stats.messages == 1


class CorruptingProxy:
    """A TCP proxy that damages the first HLLP block in each direction (one checksum digit)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.corrupted = {"up": False, "down": False}

    async def serve(self, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, downstream: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with downstream, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self.pump, downstream, upstream, "up", nursery.cancel_scope)
            nursery.start_soon(self.pump, upstream, downstream, "down", nursery.cancel_scope)

    async def pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        direction: str,
        scope: trio.CancelScope,
    ) -> None:
        buffer = b""
        while chunk := await source.receive_some():
            buffer += chunk
            while (end := buffer.find(EB + CR)) >= 0:
                block, buffer = buffer[: end + 2], buffer[end + 2 :]
                if not self.corrupted[direction] and block[1:2] == b"D":
                    self.corrupted[direction] = True
                    digit = block[-3:-2]
                    block = block[:-3] + (b"1" if digit != b"1" else b"2") + block[-2:]
                await sink.send_all(block)
        scope.cancel()


async def test_hllp_retries_end_to_end_in_both_directions(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server = MLLPServer(config=server_config("hllp"))
    port = await start_server(server)
    proxy = CorruptingProxy(port)
    proxy_port = await nursery.start(proxy.serve)
    async with open_mllp_client("127.0.0.1", proxy_port, config=client_config("hllp")) as client:
        assert (await client.send(hl7("E2E"))).code == AckCode.AA
        assert (await client.send(hl7("E2E2"))).code == AckCode.AA
    assert proxy.corrupted == {"up": True, "down": True}
    assert server.stats.messages == 2  # the damaged first block was never delivered
    assert server.stats.invalid_frames == 1

"""The Trio client against listeners written by hand: split replies, timeouts, NAKs, retries."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from mllp_trio._client import MLLPClient, open_mllp_client
from mllp_trio._config import ClientConfig, Framing, FramingConfig
from mllp_trio._errors import (
    ConnectError,
    ConnectionClosedError,
    DeliveryFailed,
    MLLPTimeoutError,
)
from mllp_trio._hl7 import AckCode, ApplicationError, ControlIdMismatch, read_msh
from mllp_trio.proto._events import CommitAck, CommitNak, EndOfStream, HLLPNak, Message, NakReason
from mllp_trio.proto._hllp import HLLPConnection

from .hl7_samples import make_message
from .raw_peer import RawPeer

FRAMINGS: list[Framing] = ["mllp", "mllp2", "hllp"]


def hl7(control_id: str) -> bytes:
    return make_message(control_id=control_id)


def ack(control_id: str, code: str = "AA") -> bytes:
    return b"MSH|^~\\&|EHR|CLINIC|LAB|HOSP|20240101120000||ACK^A01^ACK|R%s|P|2.5\rMSA|%s|%s\r" % (
        control_id.encode(),
        code.encode(),
        control_id.encode(),
    )


def config(framing: Framing = "mllp", **kwargs: Any) -> ClientConfig:
    return ClientConfig(framing=FramingConfig(framing=framing), **kwargs)


#: One accepted connection, already wrapped for framing, and its number (from 0).
Behaviour = Callable[[RawPeer, int], Awaitable[None]]


@attrs.define
class RawServer:
    """A listener written by hand: every connection runs ``behaviour``."""

    framing: Framing
    behaviour: Behaviour
    connections: int = 0
    received: list[bytes] = attrs.field(factory=list)

    async def serve(self, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, transport: trio.SocketStream) -> None:
        number, self.connections = self.connections, self.connections + 1
        stream = RawPeer(transport, FramingConfig(framing=self.framing).new_connection())
        async with transport:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.behaviour(stream, number)

    async def message(self, stream: RawPeer) -> bytes:
        """The next message the client sends (EOF fails the test)."""
        event = await stream.receive_event()
        assert isinstance(event, Message), event
        self.received.append(event.data)
        return event.data


async def start(
    nursery: trio.Nursery, framing: Framing, behaviour: Behaviour
) -> tuple[RawServer, int]:
    server = RawServer(framing, behaviour)
    port: int = await nursery.start(server.serve)
    return server, port


def encode(stream: RawPeer, event: Message | CommitAck) -> bytes:
    """The bytes of ``event`` on this connection, without writing them."""
    connection = stream.connection
    if isinstance(connection, HLLPConnection):
        assert isinstance(event, Message)
        return connection.send(event)
    return connection.send(event)


async def dribble(stream: RawPeer, data: bytes) -> None:
    """Write ``data`` a few bytes at a time, letting the reader run in between."""
    for i in range(0, len(data), 3):
        await stream.transport.send_all(data[i : i + 3])
        await trio.sleep(0)


def control_id(message: bytes) -> str:
    return read_msh(message).control_id


# ---------------------------------------------------------------- replies split across reads


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_reply_split_across_reads(framing: Framing, nursery: trio.Nursery) -> None:
    commits: list[object] = []

    async def behaviour(stream: RawPeer, number: int) -> None:
        for _ in range(3):
            message = await server.message(stream)
            if framing == "mllp2":
                await dribble(stream, encode(stream, CommitAck()))
            await dribble(stream, encode(stream, Message(ack(control_id(message)))))
            if framing == "mllp2":
                commits.append(await stream.receive_event())

    server, port = await start(nursery, framing, behaviour)
    async with open_mllp_client("127.0.0.1", port, config=config(framing)) as client:
        for i in range(3):
            reply = await client.send(hl7(f"SPLIT{i}"))
            assert (reply.code, reply.control_id) == (AckCode.AA, f"SPLIT{i}")
            assert reply.raw == ack(f"SPLIT{i}")
    assert server.connections == 1
    if framing == "mllp2":
        # The server task reads the last commit ACK after the client is gone.
        await trio.testing.wait_all_tasks_blocked()
        assert commits == [CommitAck()] * 3


async def test_release2_commit_ack_and_reply_in_one_write(nursery: trio.Nursery) -> None:
    async def behaviour(stream: RawPeer, number: int) -> None:
        message = await server.message(stream)
        wire = encode(stream, CommitAck()) + encode(stream, Message(ack(control_id(message))))
        await stream.transport.send_all(wire)
        assert await stream.receive_event() == CommitAck()

    server, port = await start(nursery, "mllp2", behaviour)
    async with open_mllp_client("127.0.0.1", port, config=config("mllp2")) as client:
        assert (await client.send(hl7("ONE"))).code == AckCode.AA


# ---------------------------------------------------------------- timeouts and lost connections


async def test_ack_timeout_retries_on_new_connections_then_raises(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    async def silent(stream: RawPeer, number: int) -> None:
        await server.message(stream)
        await trio.sleep_forever()

    server, port = await start(nursery, "mllp", silent)
    client_config = config(ack_timeout=5, retries=2)
    async with open_mllp_client("127.0.0.1", port, config=client_config) as client:
        start_time = trio.current_time()
        with pytest.raises(MLLPTimeoutError):
            await client.send(hl7("T1"))
        assert trio.current_time() - start_time == pytest.approx(15)
    assert server.connections == 3
    assert server.received == [hl7("T1")] * 3


async def test_ack_timeout_then_success_on_a_new_connection(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    async def behaviour(stream: RawPeer, number: int) -> None:
        message = await server.message(stream)
        if number == 0:
            await trio.sleep(100)  # far past the client's patience
        await stream.send_event(Message(ack(control_id(message))))
        await stream.receive_event()

    server, port = await start(nursery, "mllp", behaviour)
    async with open_mllp_client("127.0.0.1", port, config=config(ack_timeout=5)) as client:
        assert (await client.send(hl7("T2"))).control_id == "T2"
    assert server.connections == 2


async def test_cancelled_exchange_never_reuses_the_connection(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    async def behaviour(stream: RawPeer, number: int) -> None:
        while True:
            message = await server.message(stream)
            if number == 0:
                await trio.sleep(10)  # the reply comes after the caller gave up
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_event(Message(ack(control_id(message))))
                return
            await stream.send_event(Message(ack(control_id(message))))

    server, port = await start(nursery, "mllp", behaviour)
    async with open_mllp_client("127.0.0.1", port) as client:
        with trio.move_on_after(1):
            await client.send(hl7("GAVE-UP"))
        await trio.sleep(20)  # the stale reply is on the old connection by now
        assert (await client.send(hl7("NEXT"))).control_id == "NEXT"
    assert server.connections == 2


async def test_peer_closing_every_time_raises_connection_closed(nursery: trio.Nursery) -> None:
    async def hang_up(stream: RawPeer, number: int) -> None:
        await server.message(stream)

    server, port = await start(nursery, "mllp", hang_up)
    async with open_mllp_client("127.0.0.1", port, config=config(retries=1)) as client:
        with pytest.raises(ConnectionClosedError):
            await client.send(hl7("C1"))
    assert server.connections == 2


async def test_connection_refused() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    # A transport failure comes as our own error type, not a bare OSError.
    with pytest.raises(ConnectError, match=r"cannot connect to 127\.0\.0\.1:\d+: .*refused") as e:
        async with open_mllp_client("127.0.0.1", port):
            pass  # pragma: no cover
    # Said once, for people: no Python exception name, no address repeated.
    assert str(e.value) == f"cannot connect to 127.0.0.1:{port}: Connection refused"


# ---------------------------------------------------------------- NAKs and resends


async def test_release2_resends_on_commit_nak_then_raises_delivery_failed(
    nursery: trio.Nursery,
) -> None:
    async def refuse(stream: RawPeer, number: int) -> None:
        while True:
            await server.message(stream)
            await stream.send_event(CommitNak())

    server, port = await start(nursery, "mllp2", refuse)
    async with open_mllp_client("127.0.0.1", port, config=config("mllp2", retries=3)) as client:
        with pytest.raises(DeliveryFailed):
            await client.send(hl7("N1"))
    assert server.received == [hl7("N1")] * 4
    assert server.connections == 1  # a NAK resends on the same connection


async def test_release2_resend_after_commit_nak_succeeds(nursery: trio.Nursery) -> None:
    async def behaviour(stream: RawPeer, number: int) -> None:
        await server.message(stream)
        await stream.send_event(CommitNak())
        message = await server.message(stream)
        await stream.send_event(CommitAck())
        await stream.send_event(Message(ack(control_id(message))))
        assert await stream.receive_event() == CommitAck()

    server, port = await start(nursery, "mllp2", behaviour)
    async with open_mllp_client("127.0.0.1", port, config=config("mllp2")) as client:
        assert (await client.send(hl7("N2"))).code == AckCode.AA
    assert server.received == [hl7("N2")] * 2


@pytest.mark.parametrize("fail", [1, 2])
async def test_hllp_resends_on_nak_block(nursery: trio.Nursery, fail: int) -> None:
    async def behaviour(stream: RawPeer, number: int) -> None:
        for _ in range(fail):
            await server.message(stream)
            await stream.send_event(HLLPNak(NakReason.CHECKSUM))
        message = await server.message(stream)
        await stream.send_event(Message(ack(control_id(message))))

    server, port = await start(nursery, "hllp", behaviour)
    async with open_mllp_client("127.0.0.1", port, config=config("hllp", retries=2)) as client:
        assert (await client.send(hl7("H1"))).code == AckCode.AA
    assert server.received == [hl7("H1")] * (fail + 1)


async def test_hllp_raises_delivery_failed_after_retries(nursery: trio.Nursery) -> None:
    async def refuse(stream: RawPeer, number: int) -> None:
        while True:
            await server.message(stream)
            await stream.send_event(HLLPNak(NakReason.OTHER))

    server, port = await start(nursery, "hllp", refuse)
    async with open_mllp_client("127.0.0.1", port, config=config("hllp", retries=2)) as client:
        with pytest.raises(DeliveryFailed):
            await client.send(hl7("H2"))
    assert server.received == [hl7("H2")] * 3


async def test_hllp_client_naks_a_damaged_reply(nursery: trio.Nursery) -> None:
    naks: list[object] = []

    async def behaviour(stream: RawPeer, number: int) -> None:
        message = await server.message(stream)
        good = encode(stream, Message(ack(control_id(message))))
        damaged = good[:-5] + b"%03d" % ((int(good[-5:-2]) + 1) % 256) + good[-2:]
        await stream.transport.send_all(damaged)
        naks.append(await stream.receive_event())
        await stream.transport.send_all(good)

    server, port = await start(nursery, "hllp", behaviour)
    async with open_mllp_client("127.0.0.1", port, config=config("hllp")) as client:
        assert (await client.send(hl7("H3"))).control_id == "H3"
    assert naks == [HLLPNak(NakReason.CHECKSUM)]


# ---------------------------------------------------------------- the reply's content


async def test_negative_and_mismatched_replies(nursery: trio.Nursery) -> None:
    async def behaviour(stream: RawPeer, number: int) -> None:
        while not isinstance(event := await stream.receive_event(), EndOfStream):
            assert isinstance(event, Message)
            cid = control_id(event.data)
            reply = ack("SOMETHING-ELSE") if cid == "WRONG" else ack(cid, "AE")
            await stream.send_event(Message(reply))

    server, port = await start(nursery, "mllp", behaviour)
    async with open_mllp_client("127.0.0.1", port) as client:
        with pytest.raises(ApplicationError):
            await client.send(hl7("NEG"))
        reply = await client.send(hl7("NEG2"), raise_on_negative=False)
        assert reply.code == AckCode.AE
        with pytest.raises(ControlIdMismatch):
            await client.send(hl7("WRONG"))
        # A reply for no message of ours: that connection is not reused.
        raw = await client.send_raw(hl7("RAW"))
        assert raw == ack("RAW", "AE")
    assert server.connections == 2


async def test_text_message_is_sent_with_cr_terminators(nursery: trio.Nursery) -> None:
    async def behaviour(stream: RawPeer, number: int) -> None:
        message = await server.message(stream)
        await stream.send_event(Message(ack(control_id(message))))
        await stream.receive_event()

    server, port = await start(nursery, "mllp", behaviour)
    text = hl7("TXT").decode().replace("\r", "\n")
    client = MLLPClient("127.0.0.1", port)
    try:
        assert (await client.send(text)).control_id == "TXT"
    finally:
        await client.aclose()
    assert server.received == [hl7("TXT")]


async def test_concurrent_sends_take_turns(nursery: trio.Nursery) -> None:
    in_flight = 0
    most = 0

    async def behaviour(stream: RawPeer, number: int) -> None:
        nonlocal in_flight, most
        while True:
            event = await stream.receive_event()
            if isinstance(event, EndOfStream):
                return
            assert isinstance(event, Message)
            in_flight += 1
            most = max(most, in_flight)
            await trio.sleep(0.001)
            in_flight -= 1
            await stream.send_event(Message(ack(control_id(event.data))))

    server, port = await start(nursery, "mllp", behaviour)
    results: list[str] = []
    async with open_mllp_client("127.0.0.1", port) as client, trio.open_nursery() as senders:
        for i in range(5):
            senders.start_soon(functools.partial(_send_and_record, client, f"CC{i}", results))
    assert sorted(results) == [f"CC{i}" for i in range(5)]
    assert most == 1
    assert server.connections == 1


async def _send_and_record(client: MLLPClient, cid: str, results: list[str]) -> None:
    results.append((await client.send(hl7(cid))).control_id)


async def test_release2_ack_timeout_runs_for_the_commit_and_again_for_the_reply(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    async def slow(stream: RawPeer, number: int) -> None:
        message = await server.message(stream)
        await trio.sleep(4)
        await stream.send_event(CommitAck())
        await trio.sleep(4)  # 8 s in all: over one ack_timeout, under two
        await stream.send_event(Message(ack(control_id(message))))
        assert await stream.receive_event() == CommitAck()

    server, port = await start(nursery, "mllp2", slow)
    client_config = config("mllp2", ack_timeout=5, retries=0)
    async with open_mllp_client("127.0.0.1", port, config=client_config) as client:
        assert (await client.send(hl7("SLOW2"))).code == AckCode.AA
    assert server.connections == 1

"""Issue 13: the listener-wide memory budget sheds the largest partial frames first."""

from __future__ import annotations

import contextlib
import logging

import pytest
import trio
import trio.testing

from mllp_trio._config import FramingConfig, ServerConfig
from mllp_trio._hl7 import AckCode, parse_reply
from mllp_trio._io._budget import MemoryBudget
from mllp_trio._server import MLLPServer

from .conftest import StartServer
from .hl7_samples import make_message

BUDGET = 1_000_000
CONFIG = ServerConfig(
    framing=FramingConfig(max_message_size=512 * 1024), memory_budget=BUDGET, max_strikes=None
)


def big_message(control_id: str, size: int) -> bytes:
    head = make_message(control_id=control_id)
    return head + b"NTE|1||" + b"x" * (size - len(head) - 8) + b"\r"


async def wait_until(predicate: object) -> None:
    assert callable(predicate)
    with trio.fail_after(20):  # a guard against hanging, not a timing assertion
        while not predicate():
            await trio.sleep(0.002)


async def read_reply(stream: trio.SocketStream) -> bytes:
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data[1:-2]


async def test_budget_sheds_the_largest_partial_frame_and_the_good_client_is_answered(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mllp_trio")
    server = MLLPServer(config=CONFIG)
    port = await start_server(server)
    largest = big_message("LARGE", 500_000)
    others = [big_message(f"M{i}", 80_000) for i in range(8)]

    big = await trio.open_tcp_stream("127.0.0.1", port)
    await big.send_all(b"\x0b" + largest)  # the frame stays open
    await wait_until(lambda: server.buffered_bytes >= 500_000)
    # Many connections with open frames push the total over the budget.
    streams = []
    for message in others:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        streams.append(stream)
        before = server.buffered_bytes
        await stream.send_all(b"\x0b" + message)
        await wait_until(
            lambda before=before: server.stats.shed_connections or server.buffered_bytes > before
        )
    await wait_until(lambda: server.stats.shed_connections == 1)
    # Only the largest went: the others fit once it is gone.
    await wait_until(lambda: server.stats.active == len(others))
    assert server.buffered_bytes < BUDGET
    with pytest.raises((EOFError, trio.BrokenResourceError)):
        await big.send_all(b"\x1c\r")
        await read_reply(big)
    # The survivors finish their messages and are answered.
    for i, stream in enumerate(streams):
        await stream.send_all(b"\x1c\r")
        reply = parse_reply(await read_reply(stream), f"M{i}")
        assert reply.code == AckCode.AA
    # A well-behaved client meanwhile is answered as usual.
    good = await trio.open_tcp_stream("127.0.0.1", port)
    await good.send_all(b"\x0b" + make_message(control_id="GOOD") + b"\x1c\r")
    assert parse_reply(await read_reply(good), "GOOD").code == AckCode.AA
    assert "memory budget of 1000000 bytes reached" in caplog.text
    for stream in [big, good, *streams]:
        await stream.aclose()
    await wait_until(lambda: server.buffered_bytes == 0)


async def test_good_client_keeps_its_answers_while_giant_frames_arrive(
    start_server: StartServer,
) -> None:
    # Attackers keep opening frames as large as allowed; each is shed in turn.
    server = MLLPServer(config=CONFIG)
    port = await start_server(server)
    attack = b"\x0b" + big_message("ATTACK", 500_000)
    answered = 0

    async def attacker() -> None:
        while True:
            # Open a giant frame and hold it until the listener sheds it.
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(attack)
                    while await stream.receive_some(65536):
                        pass

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(attacker)
        good = await trio.open_tcp_stream("127.0.0.1", port)
        for i in range(20):
            await good.send_all(b"\x0b" + make_message(control_id=f"G{i}") + b"\x1c\r")
            assert parse_reply(await read_reply(good), f"G{i}").code == AckCode.AA
            answered += 1
        await wait_until(lambda: server.stats.shed_connections >= 1)
        await good.aclose()
        nursery.cancel_scope.cancel()
    assert answered == 20


async def test_reads_wait_for_room_and_shedding_picks_the_largest() -> None:
    budget = MemoryBudget(100)
    shed: list[str] = []
    for name in "abc":
        budget.register(name, lambda name=name: shed.append(name))
    budget.charge("a", 30)
    budget.charge("b", 50)
    assert shed == []
    budget.charge("c", 40)  # 120: "b" (50) is the largest; 70 remain
    assert shed == ["b"]
    assert budget.is_shed("b")
    waited = False

    async def reader() -> None:
        nonlocal waited
        await budget.wait_for_room()
        waited = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not waited  # over the budget until "b" is gone
        budget.release("b")
        await trio.testing.wait_all_tasks_blocked()
        assert waited
    assert budget.used == 70
    assert budget.shed_count == 1


def test_budget_below_the_largest_message_is_refused() -> None:
    with pytest.raises(ValueError, match="memory_budget"):
        ServerConfig(memory_budget=1024)
    assert ServerConfig().memory_budget == 128 * 1024 * 1024
    assert ServerConfig(memory_budget=None).memory_budget is None

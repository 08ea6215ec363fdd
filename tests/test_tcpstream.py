"""LeanTCPStream over real loopback TCP: half-close, conflicts, and fairness."""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from mllp_trio._io import _tcpstream
from mllp_trio._io._tcpstream import LeanTCPStream

from .test_streams_conformance import clog, fill_raw, tcp_pair


async def lean_pair() -> tuple[LeanTCPStream, LeanTCPStream]:
    client, server = await tcp_pair()
    return LeanTCPStream(client), LeanTCPStream(server)


async def test_send_after_send_eof_is_closed_not_broken() -> None:
    ours, peer = await lean_pair()
    async with ours, peer:
        await ours.send_all(b"last")
        await ours.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await ours.send_all(b"more")
        with pytest.raises(trio.ClosedResourceError):
            await ours.send_all(b"")
        # send_eof again is a harmless checkpoint.
        with trio.testing.assert_checkpoints():
            await ours.send_eof()
        assert await peer.receive_some() == b"last"
        assert await peer.receive_some() == b""
        # The other direction still works.
        await peer.send_all(b"reply")
        assert await ours.receive_some() == b"reply"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="clog() reads Linux TCP_INFO")
async def test_send_eof_while_a_send_is_blocked_is_busy() -> None:
    ours, peer = await lean_pair()
    async with ours, peer:
        await clog(ours.socket, lambda: fill_raw(ours.socket))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.send_all, b"x")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await ours.send_eof()
            with pytest.raises(trio.BusyResourceError):
                await ours.wait_send_all_might_not_block()
            nursery.cancel_scope.cancel()


async def test_cancelled_aclose_still_closes() -> None:
    ours, peer = await lean_pair()
    async with peer:
        with trio.CancelScope() as scope:
            scope.cancel()
            await ours.aclose()
        assert scope.cancelled_caught
        assert ours.socket.fileno() == -1
        assert await peer.receive_some() == b""


@pytest.mark.parametrize("operation", ["send", "receive"])
async def test_an_always_ready_stream_lets_other_tasks_run(operation: str) -> None:
    # Nothing ever makes these calls wait, so only the fairness yield (a
    # schedule point every _FAIRNESS_INTERVAL calls) lets the other task run.
    ours, peer = await lean_pair()
    calls = 20 * _tcpstream._FAIRNESS_INTERVAL
    if operation == "receive":
        await peer.send_all(b"x" * calls)
    other_steps = 0
    steps_seen_by_busy_task: list[int] = []

    async def other_task() -> None:
        nonlocal other_steps
        while True:
            other_steps += 1
            await trio.lowlevel.checkpoint()

    async def busy_task() -> None:
        for _ in range(calls):
            if operation == "send":
                await ours.send_all(b"x")
            else:
                assert await ours.receive_some(1) == b"x"
        steps_seen_by_busy_task.append(other_steps)

    async with ours, peer, trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        nursery.start_soon(busy_task)
        while not steps_seen_by_busy_task:
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    # Without the yield the other task gets a step or two around the start
    # at most; with it, about one step per yield (the scheduler's batching
    # allows some slack).
    assert steps_seen_by_busy_task[0] >= calls // _tcpstream._FAIRNESS_INTERVAL // 2


async def test_a_large_bytes_send_arrives_whole_across_partial_sends() -> None:
    # bytes go to send() unsliced; after a partial send the rest must go
    # from the right offset (a memoryview), never resent or skipped.
    ours, peer = await lean_pair()
    payload = bytes(range(256)) * 40_000  # ~10 MB: far more than the socket buffers
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            chunk = await peer.receive_some(7919)  # small reads, so the sender waits
            assert chunk
            received.extend(chunk)

    async with ours, peer, trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await ours.send_all(payload)
    assert received == payload


async def test_a_drained_read_then_data_already_waiting_is_received() -> None:
    # After a read that emptied the socket, the next receive waits for
    # readability first: data that arrived in between must still be seen
    # at once, and in order.
    ours, peer = await lean_pair()
    async with ours, peer:
        await peer.send_all(b"one")
        assert await ours.receive_some(100) == b"one"  # drained: less than asked
        await peer.send_all(b"two")
        await peer.send_all(b"three")
        await trio.sleep(0.05)  # both are in the socket before we ask
        got = b""
        while len(got) < len(b"twothree"):
            got += await ours.receive_some(100)
        assert got == b"twothree"
        await peer.send_eof()
        assert await ours.receive_some(100) == b""

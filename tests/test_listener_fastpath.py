"""The listener's release 1 fast path hands every unusual read to the careful path.

The fast path only runs once a first message was answered, so each case
here sends a good message first and then the unusual input: the rules must
be those a first read gets (frame deadline, junk, strikes, memory budget,
several frames per read, frames split across reads).
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from mllp_trio._config import FramingConfig, ServerConfig
from mllp_trio._hl7 import AckCode, parse_reply
from mllp_trio._server import MLLPServer

from .conftest import StartServer
from .hl7_samples import make_message

SB, EB, CR = b"\x0b", b"\x1c", b"\r"


def frame(control_id: str) -> bytes:
    return SB + make_message(control_id=control_id) + EB + CR


async def read_reply(stream: trio.abc.ReceiveStream, pending: bytearray) -> bytes:
    """One reply frame's content; what follows it stays in ``pending``."""
    while (end := pending.find(EB + CR)) < 0:
        with trio.fail_after(20):  # a guard against hanging, not a timing assertion
            chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError("connection closed")
        pending += chunk
    reply = bytes(pending[1:end])
    del pending[: end + 2]
    return reply


async def answered(stream: trio.abc.Stream, pending: bytearray, *control_ids: str) -> None:
    for control_id in control_ids:
        assert parse_reply(await read_reply(stream, pending), control_id).code == AckCode.AA


async def test_a_started_frame_after_a_message_gets_the_frame_deadline(
    start_server: StartServer, autojump_clock: object
) -> None:
    server = MLLPServer(config=ServerConfig(idle_timeout=None, read_timeout=10))
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    pending = bytearray()
    await stream.send_all(frame("FIRST"))
    await answered(stream, pending, "FIRST")
    start = trio.current_time()
    await stream.send_all(SB + b"MSH|")  # never finished
    with pytest.raises(EOFError):
        await read_reply(stream, pending)
    assert trio.current_time() - start == pytest.approx(10)
    assert server.stats.timeouts_by_kind["frame"] == 1
    await stream.aclose()


async def test_junk_after_a_message_is_a_strike_and_the_next_message_is_answered(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mllp_trio")
    server = MLLPServer(config=ServerConfig(max_strikes=2))
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    pending = bytearray()
    await stream.send_all(frame("FIRST"))
    await answered(stream, pending, "FIRST")
    await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(10):  # a guard against hanging, not a timing assertion
        while "outside any frame" not in caplog.text:
            await trio.sleep(0.01)
    await stream.send_all(frame("SECOND"))
    await answered(stream, pending, "SECOND")  # a good message clears the strike
    for _ in range(2):
        await stream.send_all(b"junk junk junk")
        await trio.sleep(0.05)
    with pytest.raises(EOFError):
        await read_reply(stream, pending)  # two strikes in a row: closed
    assert server.stats.struck_out == 1
    await stream.aclose()


async def test_several_frames_in_one_read_then_single_frames_again(
    start_server: StartServer,
) -> None:
    server = MLLPServer()
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    pending = bytearray()
    await stream.send_all(frame("A1"))
    await answered(stream, pending, "A1")
    await stream.send_all(frame("B1") + frame("B2") + frame("B3"))
    await answered(stream, pending, "B1", "B2", "B3")
    whole = frame("C1")
    await stream.send_all(whole[:10])  # a frame split across reads
    await trio.sleep(0.05)
    await stream.send_all(whole[10:] + frame("C2")[:5])
    await answered(stream, pending, "C1")
    await stream.send_all(frame("C2")[5:])
    await answered(stream, pending, "C2")
    for i in range(20):
        await stream.send_all(frame(f"D{i}"))
        await answered(stream, pending, f"D{i}")
    assert server.stats.messages == 26
    await stream.aclose()


async def test_a_partial_frame_after_a_message_is_charged_to_the_memory_budget(
    start_server: StartServer,
) -> None:
    server = MLLPServer(
        config=ServerConfig(
            framing=FramingConfig(max_message_size=512 * 1024), memory_budget=1_000_000
        )
    )
    port = await start_server(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    pending = bytearray()
    await stream.send_all(frame("FIRST"))
    await answered(stream, pending, "FIRST")
    big = make_message(control_id="BIG") + b"NTE|1||" + b"x" * 300_000 + b"\r"
    await stream.send_all(SB + big)
    with trio.fail_after(20):  # a guard against hanging, not a timing assertion
        while server.buffered_bytes < 300_000:
            await trio.sleep(0.01)
    await stream.send_all(EB + CR)
    await answered(stream, pending, "BIG")
    with trio.fail_after(20):
        while server.buffered_bytes:
            await trio.sleep(0.01)
    await stream.aclose()

"""Interoperability with other HL7 stacks: python-hl7's asyncio MLLP and hl7apy's MLLPServer.

The peers run in worker threads with their own event loop (asyncio) or
socketserver, and talk to our Trio listener and client over loopback TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial

import hl7
import hl7.mllp
import pytest
import trio
from hl7apy.mllp import AbstractHandler, MLLPServer

from mllp_trio import (
    AckReply,
    ControlIdMismatch,
    Handler,
    HL7Reject,
    InboundMessage,
    Router,
    open_mllp_client,
    serve_mllp,
)

from .hl7_samples import make_message

# Upper bound for any single read by a foreign peer: a hang fails the test
# instead of blocking the worker thread forever. Not a speed assertion.
PEER_TIMEOUT = 10.0

ORU = (
    b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20240131120000||ORU^R01|ORU0001|P|2.5\r"
    b"PID|1||999^^^HOSP^MR\r"
    b"OBR|1|||GLU\r"
)


def without_pid3(message: bytes) -> bytes:
    """The sample ADT with PID-3 (patient identifier list) emptied."""
    out = message.replace(b"PID|1||12345^^^HOSP^MR||", b"PID|1||||")
    assert out != message
    return out


def pid3_router() -> Router:
    """A Router that accepts ADT^A01 only with PID-3 present; other types get AR 200."""
    router = Router()

    @router.route("ADT^A01")
    async def admit(message: InboundMessage) -> None:
        try:
            pid3 = str(message.parsed.segment("PID")(3)).strip()
        except (KeyError, IndexError):
            pid3 = ""
        if not pid3:
            raise HL7Reject("PID-3 is required", code=101, location=("PID", 1, 3))

    return router


@asynccontextmanager
async def trio_listener(handler: Handler | None) -> AsyncIterator[int]:
    """Our plain-TCP listener on 127.0.0.1; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_mllp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def fields(data: bytes) -> dict[str, str]:
    """MSH-3..6, 9, 10, 12 (and MSA-1, MSA-2 when present), as python-hl7 parses them."""
    parsed = hl7.parse(data.decode("ascii"))
    msh = parsed.segment("MSH")
    out = {f"MSH-{n}": str(msh(n)) for n in (3, 4, 5, 6, 9, 10, 12)}
    if any(str(segment[0]) == "MSA" for segment in parsed):
        msa = parsed.segment("MSA")
        out["MSA-1"] = str(msa(1))
        out["MSA-2"] = str(msa(2))
    return out


async def exchange_with_python_hl7(port: int, messages: list[bytes]) -> list[bytes]:
    """Send ``messages`` on one connection with python-hl7's asyncio client; return replies."""

    async def client() -> list[bytes]:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
        try:
            replies = []
            for message in messages:
                writer.writeblock(message)
                await writer.drain()
                replies.append(await asyncio.wait_for(reader.readblock(), PEER_TIMEOUT))
            return replies
        finally:
            writer.close()
            await writer.wait_closed()

    return await trio.to_thread.run_sync(lambda: asyncio.run(client()))


# --- our listener, python-hl7's client -------------------------------------------------


async def test_python_hl7_client_gets_aa_from_default_handler() -> None:
    messages = [make_message(control_id=f"PY{i:04d}") for i in range(3)] + [ORU]
    async with trio_listener(None) as port:
        replies = await exchange_with_python_hl7(port, messages)

    assert len(replies) == len(messages)
    for message, reply in zip(messages, replies, strict=True):
        sent = fields(message)
        got = fields(reply)
        assert got["MSA-1"] == "AA"
        assert got["MSA-2"] == sent["MSH-10"]
        assert (got["MSH-3"], got["MSH-4"]) == (sent["MSH-5"], sent["MSH-6"])
        assert (got["MSH-5"], got["MSH-6"]) == (sent["MSH-3"], sent["MSH-4"])
        assert got["MSH-9"].startswith("ACK^")
        assert got["MSH-12"] == sent["MSH-12"]
        assert got["MSH-10"] != sent["MSH-10"]


async def test_python_hl7_client_with_router_rejections() -> None:
    good = make_message(control_id="RT0001")
    no_pid3 = without_pid3(make_message(control_id="RT0002"))
    good_again = make_message(control_id="RT0003")
    async with trio_listener(pid3_router()) as port:
        replies = await exchange_with_python_hl7(port, [good, no_pid3, ORU, good_again])

    codes = [(fields(r)["MSA-1"], fields(r)["MSA-2"]) for r in replies]
    assert codes == [("AA", "RT0001"), ("AR", "RT0002"), ("AR", "ORU0001"), ("AA", "RT0003")]
    # The refusals say why, in a segment python-hl7 can read.
    rejected = hl7.parse(replies[1].decode("ascii"))
    assert "ERR" in [str(segment[0]) for segment in rejected]
    # From the same listener: the sender/receiver swap holds for refusals too.
    got = fields(replies[1])
    assert (got["MSH-3"], got["MSH-4"]) == ("EHR", "CLINIC^WARD")
    assert (got["MSH-5"], got["MSH-6"]) == ("LAB^1.2.3^ISO", "HOSP")


# --- our client, python-hl7's server -----------------------------------------------------


AckFactory = Callable[[hl7.Message], hl7.Message]


async def _serve_connection(
    make_ack: AckFactory, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter
) -> None:
    try:
        while True:
            try:
                message = await reader.readmessage()
            except asyncio.IncompleteReadError:
                return  # the client closed the connection
            writer.writemessage(make_ack(message))
            await writer.drain()
    finally:
        writer.close()
        # The client may have closed first: nothing is left to flush then.
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextmanager
def python_hl7_server(make_ack: AckFactory) -> Iterator[int]:
    """python-hl7's asyncio MLLP server in a thread with its own loop; yields its port."""
    ready: queue.Queue[int | BaseException] = queue.Queue()
    loop_box: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []

    async def main() -> None:
        stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def on_connect(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(
                _serve_connection(make_ack, reader, writer)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await hl7.mllp.start_hl7_server(on_connect, host="127.0.0.1", port=0)
        async with server:
            loop_box.append(asyncio.get_running_loop())
            stop_box.append(stop)
            ready.put(server.sockets[0].getsockname()[1])
            await stop.wait()
        # Our client has closed its connections by now: let their tasks end.
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks), PEER_TIMEOUT)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            ready.put(exc)
            raise

    thread = threading.Thread(target=run, name="python-hl7-server", daemon=True)
    thread.start()
    try:
        started = ready.get(timeout=PEER_TIMEOUT)
        if isinstance(started, BaseException):
            raise started
        yield started
    finally:
        if loop_box:
            loop_box[0].call_soon_threadsafe(stop_box[0].set)
        thread.join(PEER_TIMEOUT)
        assert not thread.is_alive(), "the python-hl7 server thread did not stop"


async def send_all(port: int, messages: list[bytes]) -> list[AckReply]:
    async with open_mllp_client("127.0.0.1", port) as conn:
        return [await conn.send(message) for message in messages]


def documented_ack(message: hl7.Message) -> hl7.Message:
    """python-hl7's documented way to answer: ``message.create_ack()``."""
    return message.create_ack()


def ack_for_someone_else(message: hl7.Message) -> hl7.Message:
    """A well-formed AA that acknowledges a different control id."""
    message["MSH.F10"] = "NOT-YOURS"
    return message.create_ack()


# python-hl7 stamps MSH-7 with datetime.utcnow(), deprecated from Python 3.12.
@pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")
async def test_our_client_against_python_hl7_server() -> None:
    messages = [make_message(control_id=f"CL{i:04d}") for i in range(3)] + [ORU]
    with python_hl7_server(documented_ack) as port:
        replies = await send_all(port, messages)

    assert [(r.code, r.control_id) for r in replies] == [
        ("AA", "CL0000"),
        ("AA", "CL0001"),
        ("AA", "CL0002"),
        ("AA", "ORU0001"),
    ]
    assert all(r.accepted for r in replies)
    first = replies[0].header
    assert (first.sending_application, first.receiving_application) == (b"EHR", b"LAB^1.2.3^ISO")


@pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")
async def test_our_client_detects_wrong_msa2_from_python_hl7_server() -> None:
    with python_hl7_server(ack_for_someone_else) as port:
        async with open_mllp_client("127.0.0.1", port) as conn:
            with pytest.raises(ControlIdMismatch) as caught:
                await conn.send(make_message(control_id="MINE0001"))

    assert caught.value.expected == "MINE0001"
    assert caught.value.received == "NOT-YOURS"


# --- our client, hl7apy's server ----------------------------------------------------------


class _HL7apyAck(AbstractHandler):  # type: ignore[misc]
    """Answers AA to ADT^A01; hl7apy expects the reply already MLLP-framed."""

    def reply(self) -> str:
        msh = self.incoming_message.split("\r", 1)[0].split("|")
        ack = (
            f"MSH|^~\\&|{msh[4]}|{msh[5]}|{msh[2]}|{msh[3]}|20240131120000||ACK^A01^ACK|"
            f"APY{msh[9]}|P|{msh[11]}\rMSA|AA|{msh[9]}\r"
        )
        return f"\x0b{ack}\x1c\r"


@contextmanager
def hl7apy_server() -> Iterator[int]:
    """hl7apy's threading MLLPServer on 127.0.0.1; yields its port."""
    server = MLLPServer("127.0.0.1", 0, {"ADT^A01^ADT_A01": (_HL7apyAck,)}, timeout=PEER_TIMEOUT)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()  # joins the request threads
        thread.join(PEER_TIMEOUT)
        assert not thread.is_alive()


async def test_our_client_against_hl7apy_server() -> None:
    # hl7apy answers one message per connection, then closes it.
    with hl7apy_server() as port:
        replies = await send_all(port, [make_message(control_id="APY0001")])

    assert [(r.code, r.control_id) for r in replies] == [("AA", "APY0001")]
    assert replies[0].header.control_id == "APYAPY0001"

"""Listener regressions of the layered reshaping: exchange rules, idle deadline, API shape."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import mllp_trio
from mllp_trio._config import FramingConfig, ServerConfig
from mllp_trio._hl7 import HL7Config
from mllp_trio._server import MLLPServer
from mllp_trio.proto import CommitAck, CommitNak, EndOfStream, Message
from mllp_trio.store import JournalProcessor, open_sqlite_store

from .hl7_samples import make_message
from .raw_peer import RawPeer

MLLP2 = FramingConfig(framing="mllp2")


def peer_and_server(
    nursery: trio.Nursery, server: MLLPServer, framing: FramingConfig = MLLP2
) -> RawPeer:
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    return RawPeer(client_side, framing.new_connection())


async def test_release2_listener_resends_an_uncommitted_reply_after_ack_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Regression: the listener ignored ack_timeout and never resent its reply
    # when the peer did not commit it (SPEC.md section 2).
    server = MLLPServer(config=ServerConfig(framing=MLLP2, ack_timeout=5, retries=1))
    peer = peer_and_server(nursery, server)
    await peer.send_event(Message(make_message(control_id="R1")))
    assert isinstance(await peer.receive_event(), CommitAck)
    start = trio.current_time()
    first = await peer.receive_event()
    assert isinstance(first, Message)
    # We never commit the reply: after ack_timeout it comes again, once (retries=1).
    peer.connection = FramingConfig(framing="mllp").new_connection()  # read raw frames now
    second = await peer.receive_event()
    assert isinstance(second, Message)
    assert second.data == first.data
    assert trio.current_time() - start == pytest.approx(5, abs=0.5)
    # Then the listener gives up and closes the connection.
    assert isinstance(await peer.receive_event(), EndOfStream)
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats.active == 0


async def test_release2_listener_late_commit_after_resend_keeps_the_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = MLLPServer(config=ServerConfig(framing=MLLP2, ack_timeout=5, retries=2))
    peer = peer_and_server(nursery, server)
    await peer.send_event(Message(make_message(control_id="L1")))
    assert isinstance(await peer.receive_event(), CommitAck)
    reply = await peer.receive_event()
    assert isinstance(reply, Message)
    await trio.sleep(6)  # past the ACK timeout: the reply was resent
    # Both copies get committed now; the listener must take both in stride.
    await peer.send_bytes(b"\x0b\x06\x1c\r\x0b\x06\x1c\r")
    await peer.send_bytes(b"\x0b" + make_message(control_id="L2") + b"\x1c\r")
    # Read raw frames from here on (a commit block is then a 1-byte Message).
    peer.connection = FramingConfig().new_connection()
    events = [await peer.receive_event() for _ in range(3)]
    # The resent copy of L1's reply, then L2's commit ACK and reply: the late
    # second commit ACK did not cost the connection.
    assert isinstance(events[0], Message) and events[0].data == reply.data
    assert events[1] == Message(b"\x06")
    assert isinstance(events[2], Message) and b"MSA|AA|L2" in events[2].data


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"this frame has no MSH segment\r", "no MSH"),
        (make_message(control_id="AR1", message_type="ORU^R01"), "refused by the rules (AR)"),
    ],
)
async def test_release2_listener_commits_only_committed_content(
    nursery: trio.Nursery, data: bytes, why: str
) -> None:
    # Regression: the listener sent a commit ACK (and an AR) for content it
    # neither stored nor answered; a commit ACK must mean "committed".
    config = ServerConfig(framing=MLLP2, hl7=HL7Config(message_types=("ADT^A01",)))
    server = MLLPServer(config=config)
    peer = peer_and_server(nursery, server)
    await peer.send_event(Message(data))
    assert isinstance(await peer.receive_event(), CommitNak), why
    # Nothing else follows: the next message is answered normally.
    await peer.send_event(Message(make_message(control_id="OK1")))
    assert isinstance(await peer.receive_event(), CommitAck)
    reply = await peer.receive_event()
    assert isinstance(reply, Message)
    assert b"MSA|AA|OK1" in reply.data


async def test_release2_journal_commit_ack_only_after_the_message_is_stored(
    nursery: trio.Nursery, tmp_path: object
) -> None:
    async with open_sqlite_store(str(tmp_path) + "/journal") as store:
        server = MLLPServer(processor=JournalProcessor(store), config=ServerConfig(framing=MLLP2))
        peer = peer_and_server(nursery, server)
        await peer.send_event(Message(make_message(control_id="J1")))
        assert isinstance(await peer.receive_event(), CommitAck)
        assert await store.count() == 1
        await peer.aclose()


@pytest.mark.parametrize(
    "noise",
    [b"\r\n", b"\x0b\x1c\r"],  # junk between frames; an empty (rejected) frame
    ids=["junk", "rejected frame"],
)
async def test_bytes_that_deliver_nothing_do_not_restart_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, noise: bytes
) -> None:
    # Regression: the idle deadline restarted whenever the receive buffer
    # emptied, so a trickle of junk held a connection slot for ever.
    server = MLLPServer(config=ServerConfig(idle_timeout=10, max_strikes=None))
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    start = trio.current_time()
    with trio.move_on_after(60):
        try:
            while True:
                await client_side.send_all(noise)
                await trio.sleep(3)
        except trio.BrokenResourceError:
            pass
    assert server.stats.active == 0
    assert server.stats.timeouts == 1
    # Closed by the idle deadline (10 s, noticed within one poll), not later.
    assert trio.current_time() - start <= 13


async def test_a_delivered_message_restarts_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = MLLPServer(config=ServerConfig(idle_timeout=10, max_strikes=None))
    peer = peer_and_server(nursery, server, FramingConfig())
    for i in range(4):  # 32 s in all, each gap under the idle timeout
        await peer.send_event(Message(make_message(control_id=f"I{i}")))
        assert isinstance(await peer.receive_event(), Message)
        await trio.sleep(8)
    assert server.stats.active == 1
    assert server.stats.timeouts == 0


def test_processor_and_handler_together_are_refused() -> None:
    # Regression: passing both processor= and store= silently ignored store.
    async def handler(message: mllp_trio.InboundMessage) -> None:
        return None

    with pytest.raises(ValueError, match="pass the handler to the processor"):
        MLLPServer(handler, processor=mllp_trio.HL7Processor(handler))


def test_public_api_is_small_and_shows_the_public_module() -> None:
    names = [n for n in mllp_trio.__all__ if not n.startswith("_")]
    assert len(names) <= 60
    for name in names:
        obj = getattr(mllp_trio, name)
        module = getattr(obj, "__module__", None)
        if isinstance(obj, type) or callable(obj):
            assert module is None or not module.startswith("mllp_trio._"), (name, module)
    for leaked in ("SSLSocketStream", "MLLPStream", "backoff_delay", "write_dev_certs"):
        assert not hasattr(mllp_trio, leaked)
    assert mllp_trio.MLLPServer.__module__ == "mllp_trio"
    assert mllp_trio.proto.MLLPConnection.__module__ == "mllp_trio.proto"
    assert mllp_trio.store.JournalProcessor.__module__ == "mllp_trio.store"


def test_every_error_is_an_mllp_error() -> None:
    for name in (
        "ConnectError",
        "TLSHandshakeError",
        "ConnectionClosedError",
        "MLLPTimeoutError",
        "DeliveryFailed",
        "ProtocolError",
    ):
        assert issubclass(getattr(mllp_trio, name), mllp_trio.MLLPError), name
    assert issubclass(mllp_trio.proto.RemoteProtocolError, mllp_trio.ProtocolError)
    assert issubclass(mllp_trio.MLLPTimeoutError, TimeoutError)

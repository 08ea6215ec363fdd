"""Issue 13 regressions: unframeable ACK texts, MSH-1 among ``^~\\&``, bad input, log floods.

Each bad-input test is one row of docs/bad-input.md. The listener runs over
memory streams under the mock clock: a connection the listener forgot to
close would end only at its idle timeout, which ``stats.timeouts`` shows.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import attrs
import hl7
import pytest
import trio
import trio.testing

from mllp_trio._config import FramingConfig, ServerConfig
from mllp_trio._hl7 import (
    AckCode,
    ErrorInfo,
    HL7Config,
    HL7Error,
    InboundMessage,
    PeerInfo,
    build_ack,
    parse_reply,
    read_msh,
    respond,
)
from mllp_trio._server import MLLPServer
from mllp_trio.proto import CommitAck, CommitNak, EndOfStream, HLLPNak, Message
from mllp_trio.store import JournalProcessor, open_sqlite_store

from .hl7_samples import make_message
from .raw_peer import RawPeer

MLLP1 = FramingConfig(framing="mllp")
MLLP2 = FramingConfig(framing="mllp2")
HLLP = FramingConfig(framing="hllp")

GOOD = make_message(control_id="GOOD")
UNREADABLE = b"THIS IS NOT HL7\r"
INBOUND_ACK = b"MSH|^~\\&|A|B|C|D|20240101120000||ACK^A01^ACK|ACK1|P|2.5\rMSA|AA|X\r"
EMPTY_FRAME = b"\x0b\x1c\r"
BAD_TRAILER = b"\x0b" + make_message(control_id="T") + b"\x1c\n"
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
# The first bytes of a TLS 1.2/1.3 ClientHello record.
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)
# One whose random bytes hold a start-of-block byte (about one ClientHello in three).
CLIENT_HELLO_SB = CLIENT_HELLO[:11] + b"\x0b" + bytes(31)


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mllp_trio")


def start(nursery: trio.Nursery, server: MLLPServer, framing: FramingConfig = MLLP1) -> RawPeer:
    """Serve one memory stream; the peer reads release 2 commit blocks as raw frames."""
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    reader = MLLP1 if framing == MLLP2 else framing
    return RawPeer(client_side, reader.new_connection())


def framed(framing: FramingConfig, data: bytes) -> bytes:
    connection = framing.new_connection()
    return connection.send(Message(data))


async def probe(peer: RawPeer, framing: FramingConfig) -> list[str]:
    """Send a good message last; return what came back, up to its answer or the close."""
    with contextlib.suppress(trio.BrokenResourceError):
        await peer.send_bytes(framed(framing, GOOD))
    out: list[str] = []
    while True:
        event = await peer.receive_event()
        if isinstance(event, EndOfStream):
            out.append("closed")
            return out
        if isinstance(event, Message):
            if event.data in (b"\x06", b"\x15"):
                out.append("commit ACK" if event.data == b"\x06" else "commit NAK")
                continue
            out.append(msa(event.data)[1])
            if msa(event.data)[2] == "GOOD":
                return out
        elif isinstance(event, CommitAck):
            out.append("commit ACK")
        elif isinstance(event, CommitNak):
            out.append("commit NAK")
        elif isinstance(event, HLLPNak):
            out.append("NAK block")
        else:
            out.append(type(event).__name__)


def msa(reply: bytes) -> list[str]:
    """The MSA segment of a reply, split into fields."""
    (segment,) = [s for s in reply.split(b"\r") if s.startswith(b"MSA")]
    return segment.decode("latin-1").split("|")


def msa2_ack(control_id: str) -> bytes:
    return build_ack(read_msh(make_message(control_id=control_id)), AckCode.AA)


# ----------------------------------------------------------------- bad input table


@attrs.frozen
class Row:
    framing: FramingConfig
    inputs: tuple[bytes, ...]  # raw bytes on the wire, in order
    expected: list[str]  # what the peer sees, the probe's answer last ("closed": the close)
    struck_out: int


def r1(*inputs: bytes) -> tuple[bytes, ...]:
    return tuple(framed(MLLP1, i) if i.startswith(b"MSH") or i == UNREADABLE else i for i in inputs)


ROWS = {
    # Release 1: no way to answer without a control id; three strikes close.
    "r1 empty frames": Row(MLLP1, (EMPTY_FRAME,) * 3, ["closed"], 1),
    "r1 bad trailer": Row(MLLP1, (BAD_TRAILER,) * 3, ["closed"], 1),
    "r1 unreadable": Row(MLLP1, r1(UNREADABLE, UNREADABLE, UNREADABLE), ["closed"], 1),
    "r1 junk after a frame": Row(
        MLLP1, (framed(MLLP1, msa2_ack("X")), b"junk", b"more junk", b"junk again"), ["closed"], 1
    ),
    "r1 two strikes then a good message": Row(MLLP1, (EMPTY_FRAME, EMPTY_FRAME), ["AA"], 0),
    "r1 blank between frames": Row(MLLP1, (b"\r\n",) * 5, ["AA"], 0),
    # An ACK is never acknowledged, and is no fault (enhanced-mode replies come this way).
    "r1 inbound ACKs": Row(
        MLLP1, r1(INBOUND_ACK, INBOUND_ACK, INBOUND_ACK, INBOUND_ACK), ["AA"], 0
    ),
    # Another protocol on the port: closed at once.
    "r1 HTTP request": Row(MLLP1, (HTTP_REQUEST,), ["closed"], 1),
    "r1 TLS ClientHello": Row(MLLP1, (CLIENT_HELLO,), ["closed"], 1),
    "r1 TLS ClientHello holding 0x0B": Row(MLLP1, (CLIENT_HELLO_SB,), ["closed"], 1),
    # Release 2: every block gets a commit ACK or NAK; NAKs are answers.
    "r2 empty frames": Row(MLLP2, (EMPTY_FRAME,) * 4, ["commit NAK"] * 4 + ["commit ACK", "AA"], 0),
    "r2 unreadable": Row(
        MLLP2,
        (framed(MLLP1, UNREADABLE),) * 4,
        ["commit NAK"] * 4 + ["commit ACK", "AA"],
        0,
    ),
    "r2 inbound ACK": Row(
        MLLP2, (framed(MLLP1, INBOUND_ACK),), ["commit ACK", "commit ACK", "AA"], 0
    ),
    "r2 junk after nothing": Row(MLLP2, (HTTP_REQUEST,), ["closed"], 1),
    # HLLP: a block that fails its check gets a NAK block; content without a
    # control id cannot be answered.
    "hllp bad blocks": Row(HLLP, (EMPTY_FRAME,) * 4, ["NAK block"] * 4 + ["AA"], 0),
    "hllp unreadable": Row(HLLP, (framed(HLLP, UNREADABLE),) * 3, ["closed"], 1),
}


@pytest.mark.parametrize("case", list(ROWS))
async def test_bad_input_is_answered_or_closes_the_connection(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    row = ROWS[case]
    server = MLLPServer(config=ServerConfig(framing=row.framing))
    peer = start(nursery, server, row.framing)
    for data in row.inputs:
        await peer.send_bytes(data)
        await trio.testing.wait_all_tasks_blocked()
    seen = await probe(peer, row.framing)
    if "closed" in row.expected and seen[-1:] == ["AA"]:
        pytest.fail(f"{case}: the connection stayed open: {seen}")
    assert seen[: len(row.expected)] == row.expected
    await trio.testing.wait_all_tasks_blocked()
    assert server.stats.struck_out == row.struck_out
    # Closed by the bad-input rule, never left to the idle timeout.
    assert server.stats.timeouts == 0
    if row.struck_out:
        assert "closing connection from memory" in caplog.text
        assert server.stats.active == 0
    if case.startswith("r1 TLS ClientHello"):
        assert "a TLS client connected to a plaintext port" in caplog.text
    if case == "r1 HTTP request":
        assert "does not speak MLLP" in caplog.text


async def test_max_strikes_is_configurable(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = MLLPServer(config=ServerConfig(max_strikes=5))
    peer = start(nursery, server)
    for _ in range(4):
        await peer.send_bytes(EMPTY_FRAME)
    assert await probe(peer, MLLP1) == ["AA"]
    for _ in range(5):
        await peer.send_bytes(EMPTY_FRAME)
    assert await probe(peer, MLLP1) == ["closed"]
    assert server.stats.struck_out == 1


# ----------------------------------------------------------------- framing bytes in ACK texts


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_error_texts_never_carry_framing_bytes(version: str) -> None:
    header = read_msh(make_message(version=version, control_id="C1"))
    ack = build_ack(header, AckCode.AE, error=ErrorInfo(code=207, text="bad \x0b and \x1c\r here"))
    assert b"\x0b" not in ack and b"\x1c" not in ack
    reply = parse_reply(ack, "C1", raise_on_negative=False)
    assert reply.code == AckCode.AE
    # Escaped as HL7 hex escapes: a reader gets the text back.
    assert b"\\X0B\\" in ack and b"\\X1C\\" in ack


class FailsWithFramingBytes:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, message: InboundMessage) -> None:
        self.calls += 1
        raise HL7Error("database said \x0b\x1c\r no", code=206)


async def test_handler_error_with_framing_bytes_is_answered_and_the_connection_stays(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_sqlite_store(str(tmp_path / "journal")) as store:
        handler = FailsWithFramingBytes()
        server = MLLPServer(processor=JournalProcessor(store, handler))
        peer = start(nursery, server)
        message = make_message(control_id="F1")
        # The same message twice: the second answer is the journal's stored one.
        for _ in range(2):
            await peer.send_event(Message(message))
            reply = await peer.receive_event()
            assert isinstance(reply, Message)
            assert parse_reply(reply.data, "F1", raise_on_negative=False).code == AckCode.AE
        assert handler.calls == 1
        assert server.stats.active == 1


async def test_handler_reply_with_framing_bytes_becomes_AE_207(nursery: trio.Nursery) -> None:
    async def handler(message: InboundMessage) -> bytes:
        return msa2_ack(message.control_id) + b"NTE|1||\x1c\r"

    server = MLLPServer(handler)
    peer = start(nursery, server)
    for cid in ("B1", "B2"):
        await peer.send_event(Message(make_message(control_id=cid)))
        reply = await peer.receive_event()
        assert isinstance(reply, Message)
        parsed = parse_reply(reply.data, cid, raise_on_negative=False)
        assert parsed.code == AckCode.AE
        assert [str(e.code) for e in parsed.errors] == ["207"]


async def test_reply_the_framing_refuses_gets_AE_not_a_close(nursery: trio.Nursery) -> None:
    # The framing refuses a reply over max_message_size: answer AE rather
    # than close (a close makes the sender resend the same message for ever).
    framing = FramingConfig(max_message_size=4096)

    async def handler(message: InboundMessage) -> bytes:
        return msa2_ack(message.control_id) + b"NTE|1||" + b"x" * 5000 + b"\r"

    server = MLLPServer(handler, config=ServerConfig(framing=framing, memory_budget=1024 * 1024))
    peer = start(nursery, server, framing)
    for cid in ("Q1", "Q2"):
        await peer.send_event(Message(make_message(control_id=cid)))
        reply = await peer.receive_event()
        assert isinstance(reply, Message)
        assert parse_reply(reply.data, cid, raise_on_negative=False).code == AckCode.AE


# ----------------------------------------------------------------- MSH-1 among ^~\&


@pytest.mark.parametrize("fs", ["^", "~", "\\", "&"])
async def test_msh1_among_the_encoding_characters_gets_a_parseable_AR(fs: str) -> None:
    if fs == "^":  # as the fuzzer found it
        raw = b"MSH^^~\\&^^^^^20240101120000^^ADT^A01^CID1\r"
    else:
        fields = ["MSH", "", "APP|X", "FAC", "", "", "20240101120000", "", "ADT", "CID1"]
        raw = (fs.join(fields) + "\r").encode("latin-1")
    outcome = await respond(raw, peer=PeerInfo(address="x"), handler=_never, config=HL7Config())
    assert outcome.reply is not None
    assert outcome.reply.startswith(b"MSH|^~\\&|")
    header = read_msh(outcome.reply)
    reply = parse_reply(outcome.reply, msa(outcome.reply)[2], raise_on_negative=False)
    assert reply.code == AckCode.AR
    assert header.message_code == "ACK"
    parsed = hl7.parse(outcome.reply.decode("latin-1"))
    assert str(parsed.segment("MSA")[1]) == "AR"


async def _never(message: InboundMessage) -> None:
    raise AssertionError("the handler must not see an unreadable message")


# ----------------------------------------------------------------- log floods


async def test_a_flood_of_empty_frames_logs_a_summary_not_every_frame(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = MLLPServer(config=ServerConfig(max_strikes=None))
    peer = start(nursery, server)
    flood = EMPTY_FRAME * 20_000  # 60 kB
    await peer.send_bytes(flood)
    await peer.aclose()
    with trio.fail_after(30):
        while server.stats.active:
            await trio.sleep(0.01)
    records = [
        r for r in caplog.records if r.name == "mllp_trio.server" and r.levelno >= logging.WARNING
    ]
    assert server.stats.invalid_frames == 20_000
    assert len(records) <= 12
    assert "... and 19,990 more warnings from memory" in caplog.text


async def test_a_flood_of_unreadable_messages_under_release_2_is_summarised(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = MLLPServer(config=ServerConfig(framing=MLLP2))
    peer = start(nursery, server, MLLP2)
    await peer.send_bytes(framed(MLLP1, UNREADABLE) * 500)
    for _ in range(500):
        assert await probe_one(peer) == "commit NAK"
    await peer.aclose()
    with trio.fail_after(30):
        while server.stats.active:
            await trio.sleep(0.01)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 12
    assert "... and 490 more warnings from memory" in caplog.text


async def probe_one(peer: RawPeer) -> str:
    event = await peer.receive_event()
    assert isinstance(event, Message)
    return {b"\x06": "commit ACK", b"\x15": "commit NAK"}[event.data]

"""Issue 12, client side: replies out of step, idle closes, non-ASCII control ids, HLLP variants.

Each test here failed on the client before issue 12.
"""

from __future__ import annotations

import logging
import socket

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ClientConfig, ServerConfig
from mllp_trio._errors import (
    ConnectError,
    ConnectionClosedError,
    TLSHandshakeError,
    TLSRefusedError,
)
from mllp_trio._hl7 import AckCode, InboundMessage, acknowledged_id, parse_reply, read_msh
from mllp_trio._server import MLLPServer
from mllp_trio.proto import FramingConfig, HLLPConnection, oracle_checksum
from mllp_trio.proto._events import EndOfStream, HLLPNak, Message, NakReason

from .conftest import StartServer
from .hl7_samples import make_message
from .raw_peer import RawPeer
from .test_client import ack, config, control_id, start


def hl7(cid: str) -> bytes:
    return make_message(control_id=cid)


async def accept(message: InboundMessage) -> None:
    pass


# ------------------------------------------------------------- a server that answers twice


@pytest.mark.parametrize("late", [False, True], ids=["same-write", "while-idle"])
async def test_a_second_reply_to_one_message_never_puts_the_client_out_of_step(
    nursery: trio.Nursery, late: bool
) -> None:
    duplicated = trio.Event()

    async def twice_for_the_first(stream: RawPeer, number: int) -> None:
        first = True
        while not isinstance(event := await stream.receive_event(), EndOfStream):
            assert isinstance(event, Message)
            server.received.append(event.data)
            reply = ack(control_id(event.data))
            await stream.send_event(Message(reply))
            if first and number == 0:
                first = False
                if late:
                    await trio.sleep(0.05)  # the copy arrives while the client is idle
                await stream.send_event(Message(reply))
                duplicated.set()

    server, port = await start(nursery, "mllp", twice_for_the_first)
    codes = []
    async with open_mllp_client("127.0.0.1", port) as client:
        for i in range(6):
            reply = await client.send(hl7(f"D{i}"), raise_on_negative=False)
            codes.append((reply.control_id, reply.code))
            if i == 0:
                await duplicated.wait()
                await trio.sleep(0.01)
    assert codes == [(f"D{i}", AckCode.AA) for i in range(6)]
    # Each message went out once: a dropped copy or a fresh connection, never a retry.
    assert [control_id(m) for m in server.received] == [f"D{i}" for i in range(6)]


# ------------------------------------------------- one message per connection (hl7apy's server)


@pytest.mark.parametrize("framing", ["mllp", "mllp2", "hllp"])
async def test_a_server_that_closes_after_each_reply_costs_no_retry(
    nursery: trio.Nursery, framing: str
) -> None:
    async def one_and_close(stream: RawPeer, number: int) -> None:
        message = await server.message(stream)
        if framing == "mllp2":
            from mllp_trio.proto._events import CommitAck

            await stream.send_event(CommitAck())
        await stream.send_event(Message(ack(control_id(message))))
        if framing == "mllp2":
            await stream.receive_event()  # our commit of the reply

    server, port = await start(nursery, framing, one_and_close)  # type: ignore[arg-type]
    client_config = config(framing, retries=0)  # type: ignore[arg-type]
    async with open_mllp_client("127.0.0.1", port, config=client_config) as client:
        for i in range(20):
            assert (await client.send(hl7(f"C{i}"))).code == AckCode.AA
    assert server.connections == 20
    assert len(server.received) == 20  # nothing sent twice


# ----------------------------------------------------------- non-ASCII control ids


async def test_a_non_ascii_control_id_in_utf8_is_matched(start_server: StartServer) -> None:
    received: list[str] = []

    async def handler(message: InboundMessage) -> None:
        received.append(message.control_id)

    port = await start_server(MLLPServer(handler))
    message = make_message(control_id="MSGé1", charset="UNICODE UTF-8", codec="utf-8")
    async with open_mllp_client("127.0.0.1", port) as client:
        reply = await client.send(message)
        # Without MSH-18: the client's default charset (UTF-8) reads both the same way.
        bare = await client.send(make_message(control_id="MSGü2", codec="utf-8"))
    assert (reply.code, reply.control_id) == (AckCode.AA, "MSGé1")
    assert (bare.code, bare.control_id) == (AckCode.AA, "MSGü2")
    assert len(received) == 2


def test_parse_reply_compares_control_ids_decoded_alike() -> None:
    message = make_message(control_id="MSGé1", charset="UNICODE UTF-8", codec="utf-8")
    reply = ("MSH|^~\\&|A|B|C|D|20240101||ACK|R1|P|2.5||||||UNICODE UTF-8\rMSA|AA|MSGé1\r").encode()
    header = read_msh(message)
    assert parse_reply(reply, header.control_id_raw).control_id == "MSGé1"
    # The Latin-1 text form that read_msh gives is accepted too.
    assert parse_reply(reply, header.control_id).control_id == "MSGé1"


# ----------------------------------------------------------- HLLP variants through the configs


@pytest.mark.parametrize("protocol_id", ["21", "23"])
async def test_listener_and_client_configured_for_the_oracle_checksum(
    start_server: StartServer, protocol_id: str
) -> None:
    framing = FramingConfig(framing="hllp", hllp_checksum="oracle", hllp_protocol_id=protocol_id)
    port = await start_server(MLLPServer(accept, config=ServerConfig(framing=framing)))
    # A peer computing the Oracle checksum by hand gets a data block, not NAK X.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    peer = RawPeer(stream, HLLPConnection(checksum=oracle_checksum, protocol_id=protocol_id))
    sent = await peer.send_event(Message(hl7("O1")))
    assert sent[1:4] == b"D" + protocol_id.encode()
    answer = await peer.receive_event()
    await peer.aclose()
    assert isinstance(answer, Message), answer
    assert b"MSA|AA|O1" in answer.data
    # The client configured alike.
    async with open_mllp_client("127.0.0.1", port, config=ClientConfig(framing=framing)) as c:
        assert (await c.send(hl7("O2"))).code == AckCode.AA


async def test_default_xor_listener_naks_an_oracle_block(start_server: StartServer) -> None:
    framing = FramingConfig(framing="hllp")
    port = await start_server(MLLPServer(accept, config=ServerConfig(framing=framing)))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    peer = RawPeer(stream, HLLPConnection())
    await peer.send_bytes(HLLPConnection(checksum=oracle_checksum).send(Message(hl7("O3"))))
    answer = await peer.receive_event()
    await peer.aclose()
    assert answer == HLLPNak(NakReason.CHECKSUM)


async def test_hllp_checksum_mismatch_ends_with_a_clear_error_not_a_nak_storm(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: listener (oracle) and client (xor) NAKed each other's NAK
    # blocks for ever (about 1,300 warnings a second) until the ACK timeout.
    listener = FramingConfig(framing="hllp", hllp_checksum="oracle")
    server = MLLPServer(accept, config=ServerConfig(framing=listener))
    port = await start_server(server)
    config = ClientConfig(framing=FramingConfig(framing="hllp"), retries=0, ack_timeout=30)
    async with open_mllp_client("127.0.0.1", port, config=config) as client:
        with pytest.raises(ConnectionClosedError, match="--hllp-checksum"):
            await client.send(hl7("X1"))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) < 20
    # The listener never answers a NAK block it cannot verify with a NAK.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    peer = RawPeer(stream, HLLPConnection())
    await peer.send_bytes(HLLPConnection().send(HLLPNak(NakReason.CHECKSUM)))
    with trio.move_on_after(1) as nothing:
        await peer.receive_event()
    await peer.aclose()
    assert nothing.cancelled_caught


def test_hllp_protocol_id_is_validated() -> None:
    with pytest.raises(ValueError, match="hllp_protocol_id"):
        FramingConfig(framing="hllp", hllp_protocol_id="2x")
    with pytest.raises(ValueError, match="hllp_checksum"):
        FramingConfig(framing="hllp", hllp_checksum="crc")  # type: ignore[arg-type]


# ----------------------------------------------------------- charsets and socket options


async def test_default_charset_and_override_encode_text_messages(nursery: trio.Nursery) -> None:
    async def echo(stream: RawPeer, number: int) -> None:
        while not isinstance(event := await stream.receive_event(), EndOfStream):
            assert isinstance(event, Message)
            server.received.append(event.data)
            await stream.send_event(Message(ack(control_id(event.data))))

    server, port = await start(nursery, "mllp", echo)
    text = make_message(control_id="T1", patient_name="MÜLLER^JÖRG", codec="utf-8").decode()
    latin = ClientConfig(default_charset="8859/1")
    async with open_mllp_client("127.0.0.1", port, config=latin) as client:
        await client.send(text)
    labelled = text.replace("|2.5", "|2.5||||||UNICODE UTF-8", 1).replace("T1", "T2", 1)
    override = ClientConfig(charset_override="8859/1")
    async with open_mllp_client("127.0.0.1", port, config=override) as client:
        await client.send(labelled)
    assert "MÜLLER".encode("latin-1") in server.received[0]
    assert "MÜLLER".encode("latin-1") in server.received[1]  # MSH-18 said UTF-8: overridden
    with pytest.raises(ValueError, match="default_charset"):
        ClientConfig(default_charset="KLINGON")


async def test_local_address_and_keepalive(nursery: trio.Nursery) -> None:
    peers: list[str] = []

    async def record(stream: RawPeer, number: int) -> None:
        assert isinstance(stream.transport, trio.SocketStream)
        peers.append(stream.transport.socket.getpeername()[0])
        message = await server.message(stream)
        await stream.send_event(Message(ack(control_id(message))))
        await stream.receive_event()

    server, port = await start(nursery, "mllp", record)
    client_config = ClientConfig(local_address="127.0.0.1", keepalive=30)
    async with open_mllp_client("127.0.0.1", port, config=client_config) as client:
        await client.send(hl7("K1"))
        assert client._stream is not None
        sock = client._stream.transport.socket  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
    assert peers == ["127.0.0.1"]
    # An address this host does not have: a ConnectError that says why.
    with pytest.raises(ConnectError, match="cannot connect"):
        async with open_mllp_client(
            "127.0.0.1", port, config=ClientConfig(local_address="192.0.2.1")
        ):
            pass


# ----------------------------------------------------------- TLS to a plaintext listener


async def test_tls_to_a_listener_that_closes_at_once_says_plaintext(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    from .tls_helpers import make_tls_material

    async def close_at_once(stream: trio.SocketStream) -> None:
        await stream.receive_some(1)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, close_at_once, listeners)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as directory:
        ctx = make_tls_material(Path(directory)).client_context()
    start_time = trio.current_time()
    with pytest.raises(TLSHandshakeError, match="plaintext") as caught:
        async with open_mllp_client("127.0.0.1", port, ssl_context=ctx):
            pass
    assert not isinstance(caught.value, TLSRefusedError)  # could be transient (limits)
    assert trio.current_time() - start_time < 1  # no 10 s handshake timeout


async def test_tls_to_a_listener_answering_in_plaintext_is_refused_for_good(
    nursery: trio.Nursery, tmp_path: object
) -> None:
    from pathlib import Path

    from .tls_helpers import make_tls_material

    async def answer_plain(stream: trio.SocketStream) -> None:
        await stream.receive_some(1)
        await stream.send_all(b"\x0bMSH|^~\\&|junk\r\x1c\r" * 4)
        await trio.sleep(1)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, answer_plain, listeners)
    assert isinstance(tmp_path, Path)
    ctx = make_tls_material(tmp_path).client_context()
    with pytest.raises(TLSRefusedError, match="plaintext"):
        async with open_mllp_client("127.0.0.1", port, ssl_context=ctx):
            pass


# ----------------------------------------------------------- acknowledged_id, the quick look


@given(
    cid=st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="|^~\\&\r\n"),
        max_size=30,
    ),
    terminator=st.sampled_from([b"\r", b"\n", b"\r\n"]),
    text=st.sampled_from([b"", b"|all good", b"|ok|||extra"]),
)
def test_acknowledged_id_reads_msa2_raw(cid: str, terminator: bytes, text: bytes) -> None:
    raw = cid.encode()
    reply = terminator.join(
        [b"MSH|^~\\&|A|B|C|D|20240101||ACK|R1|P|2.5", b"MSA|AA|" + raw + text, b"ERR|||207"]
    )
    assert acknowledged_id(reply) == raw


@given(st.binary(max_size=200))
def test_acknowledged_id_never_raises(data: bytes) -> None:
    result = acknowledged_id(data)
    assert result is None or isinstance(result, bytes)

"""The listener and client over mutual TLS, under both TLS stream implementations."""

from __future__ import annotations

import logging
import ssl

import attrs
import pytest
import trio
import trio.testing
import trustme

from mllp_trio._client import MLLPClient, open_mllp_client
from mllp_trio._config import (
    ClientConfig,
    Framing,
    FramingConfig,
    ServerConfig,
    TLSStreamKind,
    tls_stream_factory,
)
from mllp_trio._errors import ConnectionClosedError, MLLPError, TLSHandshakeError
from mllp_trio._hl7 import AckCode, InboundMessage, PeerInfo
from mllp_trio._server import MLLPServer
from mllp_trio._tls import ServerTLS, TLSConfigError
from mllp_trio.proto._events import CommitAck, Message

from .conftest import StartServer, assert_no_content, log_text
from .hl7_samples import make_message
from .raw_peer import RawPeer
from .test_tls import _tls11_client_hello as tls11_client_hello
from .tls_helpers import TLSMaterial, write_leaf

SECRET = "SECRETSURNAME^JANE"
#: Fail a refused client at once instead of retrying.
NO_RETRY = ClientConfig(retries=0)


def hl7(control_id: str) -> bytes:
    return make_message(control_id=control_id, patient_name=SECRET)


@pytest.fixture(params=["trio", "ssl_socket"], ids=["trio_ssl", "ssl_socket"])
def tls_stream(request: pytest.FixtureRequest) -> TLSStreamKind:
    kind: TLSStreamKind = request.param
    return kind


def listener_config(kind: TLSStreamKind, config: ServerConfig | None = None) -> ServerConfig:
    return attrs.evolve(config or ServerConfig(), tls_stream=kind)


def sender_config(kind: TLSStreamKind, config: ClientConfig | None = None) -> ClientConfig:
    return attrs.evolve(config or ClientConfig(), tls_stream=kind)


@pytest.fixture(autouse=True)
def _capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mllp_trio")


@attrs.define
class Recorder:
    """A handler that accepts everything and remembers who sent what."""

    peers: list[PeerInfo] = attrs.field(factory=list)

    async def __call__(self, message: InboundMessage) -> None:
        self.peers.append(message.peer)


async def send_ok(
    port: int,
    context: ssl.SSLContext,
    tls_stream: TLSStreamKind,
    control_id: str = "OK",
    *,
    server_hostname: str = "localhost",
) -> None:
    async with open_mllp_client(
        "127.0.0.1",
        port,
        ssl_context=context,
        server_hostname=server_hostname,
        config=sender_config(tls_stream),
    ) as client:
        reply = await client.send(hl7(control_id))
        assert (reply.code, reply.control_id) == (AckCode.AA, control_id)


async def send_refused(
    port: int,
    context: ssl.SSLContext,
    tls_stream: TLSStreamKind,
    *,
    server_hostname: str = "localhost",
) -> BaseException:
    """Connect and send; return the error (TLS 1.3 may report a refusal only on first use).

    The client connects on the send (not at once, as ``open_mllp_client``
    does): a connection closed before its first message would otherwise be
    replaced once, as one the listener closed idle.
    """
    client = MLLPClient(
        "127.0.0.1",
        port,
        ssl_context=context,
        server_hostname=server_hostname,
        config=sender_config(tls_stream, NO_RETRY),
    )
    try:
        with pytest.raises((TLSHandshakeError, ConnectionClosedError)) as info:
            await client.send(hl7("REFUSED"))
    finally:
        await client.aclose()
    return info.value


async def settle(server: MLLPServer) -> None:
    """Wait until the server has finished with every connection."""
    with trio.fail_after(10):
        while server.stats.active:
            await trio.sleep(0.001)


# ---------------------------------------------------------------- success


async def test_mutual_tls_many_messages_and_connections(
    tls: TLSMaterial, tls_stream: TLSStreamKind, start_server: StartServer
) -> None:
    handler = Recorder()
    server = MLLPServer(
        handler, ssl_context=ServerTLS(tls.server_config()), config=listener_config(tls_stream)
    )
    port = await start_server(server)

    async def one_client(n: int) -> None:
        async with open_mllp_client(
            "127.0.0.1", port, ssl_context=tls.client_context(), config=sender_config(tls_stream)
        ) as client:
            for i in range(5):
                assert (await client.send(hl7(f"T{n}-{i}"))).control_id == f"T{n}-{i}"

    async with trio.open_nursery() as clients:
        for n in range(4):
            clients.start_soon(one_client, n)
    assert len(handler.peers) == 20
    identities = {peer.identity for peer in handler.peers}
    assert len(identities) == 1
    (identity,) = identities
    assert identity is not None
    assert identity.common_name == tls.client_name
    assert server.stats.accepted == 4
    assert server.stats.handshake_failures == 0


async def test_plain_ssl_context_reports_the_identity(
    tls: TLSMaterial, tls_stream: TLSStreamKind, start_server: StartServer
) -> None:
    handler = Recorder()
    server = MLLPServer(
        handler, ssl_context=tls.server_context(), config=listener_config(tls_stream)
    )
    port = await start_server(server)
    await send_ok(port, tls.client_context(), tls_stream)
    assert handler.peers[0].identity is not None
    assert handler.peers[0].identity.common_name == tls.client_name


@pytest.mark.parametrize("framing", ["mllp", "mllp2", "hllp"])
async def test_mutual_tls_over_memory_streams(
    tls: TLSMaterial, tls_stream: TLSStreamKind, nursery: trio.Nursery, framing: Framing
) -> None:
    handler = Recorder()
    framing_config = FramingConfig(framing=framing)
    server = MLLPServer(
        handler,
        ssl_context=ServerTLS(tls.server_config()),
        config=listener_config(tls_stream, ServerConfig(framing=framing_config)),
    )
    client_side, server_side = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_stream, server_side)
    # Memory streams have no socket: ssl_socket_stream falls back to trio.SSLStream.
    wrap = tls_stream_factory(tls_stream)
    client_tls = await wrap(client_side, tls.client_context(), "localhost", server_side=False)
    assert isinstance(client_tls, trio.SSLStream)
    stream = RawPeer(client_tls, framing_config.new_connection())
    for i in range(3):
        await stream.send_event(Message(hl7(f"M{i}")))
        if framing == "mllp2":
            await stream.receive_event()  # the commit ACK
        reply = await stream.receive_event()
        assert isinstance(reply, Message)
        assert b"MSA|AA|M%d" % i in reply.data
        if framing == "mllp2":
            await stream.send_event(CommitAck())
    assert handler.peers[0].address == "memory"
    assert handler.peers[0].identity is not None
    assert handler.peers[0].identity.common_name == tls.client_name


# ---------------------------------------------------------------- refusals


async def offer_tls_1_1(port: int) -> bytes:
    """Send a TLS 1.1 ClientHello by hand (client libraries may refuse to); return the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(tls11_client_hello())
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("case", "counter", "reason"),
    [
        ("no client certificate", "handshake_failures", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("certificate from another CA", "handshake_failures", "unable to get local issuer"),
        ("not on the allow list", "refused_clients", "matches none of the 1 allow-list"),
        ("revoked", "handshake_failures", "CERTIFICATE_VERIFY_FAILED: certificate revoked"),
        ("TLS 1.1 offered", "handshake_failures", "UNSUPPORTED_PROTOCOL"),
    ],
)
async def test_refusals_cost_one_connection_and_are_counted_and_logged(
    tls: TLSMaterial,
    tls_stream: TLSStreamKind,
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    case: str,
    counter: str,
    reason: str,
) -> None:
    client_context = tls.client_context()
    server_config = tls.server_config()
    allow_file = tls.directory / "allow.txt"
    if case == "no client certificate":
        client_context = tls.client_context(anonymous=True)
    elif case == "certificate from another CA":
        client_context = tls.client_context(cert=tls.issue_client("intruder", ca=trustme.CA()))
    elif case == "not on the allow list":
        allow_file.write_text("CN:someone-else\n")
        server_config = tls.server_config(allow_file=allow_file)
    elif case == "revoked":
        revoked = tls.issue_client("revoked-client")
        client_context = tls.client_context(cert=revoked)
        server_config = tls.server_config(crl_file=tls.write_crl([revoked]))
    handler = Recorder()
    server = MLLPServer(
        handler, ssl_context=ServerTLS(server_config), config=listener_config(tls_stream)
    )
    port = await start_server(server)
    if case == "TLS 1.1 offered":
        answer = await offer_tls_1_1(port)
        assert not answer.startswith(b"\x16")  # no ServerHello: at most an alert
    else:
        await send_refused(port, client_context, tls_stream)
    await settle(server)
    assert handler.peers == []
    assert getattr(server.stats, counter) == 1
    assert server.stats.messages == 0
    text = log_text(caplog)
    assert reason in text
    assert "TLS " in text and "127.0.0.1:" in text
    # The server goes on serving (revoked: a certificate it has not revoked).
    if case == "not on the allow list":
        allow_file.write_text(f"CN:{tls.client_name}\n")
        server.reload_tls()
    await send_ok(port, tls.client_context(), tls_stream)
    assert len(handler.peers) == 1
    assert_no_content(caplog, [SECRET])


async def test_wrong_server_hostname_is_refused_by_the_client(
    tls: TLSMaterial,
    tls_stream: TLSStreamKind,
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = MLLPServer(
        ssl_context=ServerTLS(tls.server_config()), config=listener_config(tls_stream)
    )
    port = await start_server(server)
    error = await send_refused(
        port, tls.client_context(), tls_stream, server_hostname="wrong.example"
    )
    assert isinstance(error, TLSHandshakeError)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert "wrong.example" in str(error.__cause__)
    await settle(server)
    assert server.stats.handshake_failures == 1
    assert "TLS handshake with 127.0.0.1:" in log_text(caplog)
    # Hostname checking can be turned off explicitly.
    await send_ok(
        port, tls.client_context(check_hostname=False), tls_stream, server_hostname="wrong.example"
    )


async def test_handshake_timeout(
    tls: TLSMaterial,
    tls_stream: TLSStreamKind,
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: object,
) -> None:
    config = ServerConfig(handshake_timeout=5)
    server = MLLPServer(
        ssl_context=ServerTLS(tls.server_config()), config=listener_config(tls_stream, config)
    )
    port = await start_server(server)
    with trio.fail_after(60):
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        assert await silent.receive_some() == b""  # never spoke TLS: closed
        assert trio.current_time() - start == pytest.approx(5)
        await silent.aclose()
        await settle(server)
    assert server.stats.handshake_failures == 1
    assert "timed out" in log_text(caplog)
    await send_ok(port, tls.client_context(), tls_stream)


async def test_reload_tls(
    tls: TLSMaterial, tls_stream: TLSStreamKind, start_server: StartServer
) -> None:
    server = MLLPServer(
        ssl_context=ServerTLS(tls.server_config()), config=listener_config(tls_stream)
    )
    port = await start_server(server)
    new_ca = trustme.CA()
    old_trust = tls.client_context()
    new_trust = tls.client_context(trust=new_ca)
    async with open_mllp_client(
        "127.0.0.1", port, ssl_context=old_trust, config=sender_config(tls_stream, NO_RETRY)
    ) as before:
        assert (await before.send(hl7("B1"))).code == AckCode.AA
        # A new server certificate from another CA, written over the old files.
        write_leaf(new_ca.issue_cert("localhost", "127.0.0.1"), tls.directory, "server")
        server.reload_tls()
        # New connections get the new certificate...
        await send_ok(port, new_trust, tls_stream, "NEW")
        error = await send_refused(port, old_trust, tls_stream)
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        # ...and the connection opened before the reload keeps working.
        assert (await before.send(hl7("B2"))).code == AckCode.AA


async def test_reload_tls_keeps_the_old_files_on_error(
    tls: TLSMaterial, tls_stream: TLSStreamKind, start_server: StartServer
) -> None:
    server = MLLPServer(
        ssl_context=ServerTLS(tls.server_config()), config=listener_config(tls_stream)
    )
    port = await start_server(server)
    tls.server_key_file.write_text("not a key")
    with pytest.raises(TLSConfigError):
        server.reload_tls()
    await send_ok(port, tls.client_context(), tls_stream)


async def test_reload_tls_needs_a_server_tls(tls: TLSMaterial) -> None:
    with pytest.raises(MLLPError):
        MLLPServer(ssl_context=tls.server_context()).reload_tls()
    with pytest.raises(MLLPError):
        MLLPServer().reload_tls()

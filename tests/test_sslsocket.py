"""SSLSocketStream over real loopback TCP, against itself and trio.SSLStream."""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest
import trio
import trio.testing
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mllp_trio._io._sslsocket import _CROSS_WAIT_POLL, SSLSocketStream

Kind = Literal["ours", "trio"]
AnyTLS = SSLSocketStream | trio.SSLStream[trio.SocketStream]

PAIRS: list[tuple[Kind, Kind]] = [("ours", "trio"), ("trio", "ours"), ("ours", "ours")]
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


# ---------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("lab-system.example", common_name="LAB-SYSTEM")


def server_context(
    ca: trustme.CA,
    cert: trustme.LeafCert,
    version: ssl.TLSVersion | None = None,
    *,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca.configure_trust(ctx)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def client_context(
    ca: trustme.CA,
    cert: trustme.LeafCert | None,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


@pytest.fixture
def server_ctx(ca: trustme.CA, server_cert: trustme.LeafCert) -> ssl.SSLContext:
    return server_context(ca, server_cert)


@pytest.fixture
def client_ctx(ca: trustme.CA, client_cert: trustme.LeafCert) -> ssl.SSLContext:
    return client_context(ca, client_cert)


# ---------------------------------------------------------------- connections


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected (client, server) pair of loopback TCP streams."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    try:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    finally:
        await listener.aclose()
    return client, server


def wrap(kind: Kind, stream: trio.SocketStream, ctx: ssl.SSLContext, *, server: bool) -> AnyTLS:
    hostname = None if server else "localhost"
    if kind == "ours":
        return SSLSocketStream(stream, ctx, server_side=server, server_hostname=hostname)
    return trio.SSLStream(stream, ctx, server_side=server, server_hostname=hostname)


async def handshake_both(a: AnyTLS, b: AnyTLS) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.do_handshake)
        nursery.start_soon(b.do_handshake)


async def tls_pair(
    server_kind: Kind,
    client_kind: Kind,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
) -> tuple[AnyTLS, AnyTLS]:
    """A handshaken (server, client) pair."""
    tcp_client, tcp_server = await tcp_pair()
    server = wrap(server_kind, tcp_server, server_ctx, server=True)
    client = wrap(client_kind, tcp_client, client_ctx, server=False)
    await handshake_both(server, client)
    return server, client


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = await stream.receive_some()
        assert chunk, "unexpected end of stream"
        buf += chunk
    return bytes(buf)


@pytest.fixture
async def ours_pair(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> AsyncIterator[tuple[SSLSocketStream, SSLSocketStream]]:
    server, client = await tls_pair("ours", "ours", server_ctx, client_ctx)
    assert isinstance(server, SSLSocketStream)
    assert isinstance(client, SSLSocketStream)
    yield server, client
    await server.aclose()
    await client.aclose()


def peer_cn(stream: AnyTLS) -> str | None:
    # trio.SSLStream forwards getpeercert() to its SSLObject; ours has it too.
    cert = stream.getpeercert()
    assert cert
    for rdn in cert["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


# ---------------------------------------------------------------- interop


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
@pytest.mark.parametrize(("server_kind", "client_kind"), PAIRS)
async def test_mutual_tls_echo(
    ca: trustme.CA,
    server_cert: trustme.LeafCert,
    client_cert: trustme.LeafCert,
    server_kind: Kind,
    client_kind: Kind,
    version: ssl.TLSVersion,
) -> None:
    server_ctx = server_context(ca, server_cert, version)
    client_ctx = client_context(ca, client_cert, version)
    server, client = await tls_pair(server_kind, client_kind, server_ctx, client_ctx)

    expected = "TLSv1.3" if version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
    assert server.version() == expected
    assert client.version() == expected
    # The server sees the client's certificate (mutual TLS), and vice versa.
    assert peer_cn(server) == "LAB-SYSTEM"
    assert client.getpeercert(binary_form=True)

    for _ in range(3):
        await client.send_all(b"MSH|request")
        assert await receive_exactly(server, 11) == b"MSH|request"
        await server.send_all(b"MSA|AA")
        assert await receive_exactly(client, 6) == b"MSA|AA"

    await client.aclose()
    assert await server.receive_some() == b""
    await server.aclose()


async def test_connection_info(ours_pair: tuple[SSLSocketStream, SSLSocketStream]) -> None:
    server, client = ours_pair
    assert server.server_side
    assert not client.server_side
    assert client.server_hostname == "localhost"
    assert server.getpeername() == client.getsockname()
    assert server.getsockname() == client.getpeername()
    assert server.version() == "TLSv1.3"
    cipher = server.cipher()
    assert cipher is not None
    assert cipher[1] == "TLSv1.3"
    assert server.selected_alpn_protocol() is None
    assert isinstance(server.ssl_object, ssl.SSLSocket)
    der = server.getpeercert(binary_form=True)
    assert isinstance(der, bytes)
    # The socket stays non-blocking with TCP_NODELAY from trio.SocketStream.
    assert server.ssl_object.gettimeout() == 0.0
    assert server.ssl_object.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_alpn_is_exposed(
    ca: trustme.CA, server_cert: trustme.LeafCert, client_cert: trustme.LeafCert
) -> None:
    server_ctx = server_context(ca, server_cert)
    client_ctx = client_context(ca, client_cert)
    server_ctx.set_alpn_protocols(["mllp"])
    client_ctx.set_alpn_protocols(["mllp"])
    server, client = await tls_pair("ours", "ours", server_ctx, client_ctx)
    assert isinstance(server, SSLSocketStream)
    assert server.selected_alpn_protocol() == "mllp"
    await client.aclose()
    await server.aclose()


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
@pytest.mark.parametrize(("server_kind", "client_kind"), PAIRS)
async def test_large_transfers_both_directions_at_once(
    ca: trustme.CA,
    server_cert: trustme.LeafCert,
    client_cert: trustme.LeafCert,
    server_kind: Kind,
    client_kind: Kind,
    version: ssl.TLSVersion,
) -> None:
    server_ctx = server_context(ca, server_cert, version)
    client_ctx = client_context(ca, client_cert, version)
    server, client = await tls_pair(server_kind, client_kind, server_ctx, client_ctx)
    size = 3 * 1024 * 1024
    payloads = {
        "to_server": hashlib.shake_256(b"a").digest(size),
        "to_client": hashlib.shake_256(b"b").digest(size),
    }
    received: dict[str, bytes] = {}

    async def send(stream: AnyTLS, data: bytes) -> None:
        # Mixed write sizes: one huge write plus small ones.
        await stream.send_all(data[:7])
        await stream.send_all(memoryview(data)[7 : size // 2])
        await stream.send_all(bytearray(data[size // 2 :]))

    async def receive(stream: AnyTLS, key: str) -> None:
        received[key] = await receive_exactly(stream, size)

    # Neither side reads before it has written everything unless the
    # other runs concurrently, so the kernel buffers fill up both ways.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, client, payloads["to_server"])
        nursery.start_soon(send, server, payloads["to_client"])
        nursery.start_soon(receive, server, "to_server")
        nursery.start_soon(receive, client, "to_client")
    assert received == payloads
    await client.aclose()
    await server.aclose()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    chunks=st.lists(st.binary(min_size=0, max_size=40_000), min_size=1, max_size=8),
    read_size=st.integers(min_value=1, max_value=70_000),
)
async def test_chunking_preserves_the_byte_stream(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    chunks: list[bytes],
    read_size: int,
) -> None:
    server, client = await tls_pair("ours", "ours", server_ctx, client_ctx)
    expected = b"".join(chunks)
    got = bytearray()

    async def sender() -> None:
        for chunk in chunks:
            await client.send_all(chunk)
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while chunk := await server.receive_some(read_size):
            assert len(chunk) <= read_size
            got += chunk
    assert bytes(got) == expected
    await server.aclose()


async def test_handshake_happens_implicitly(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    tcp_client, tcp_server = await tcp_pair()
    server = SSLSocketStream(tcp_server, server_ctx, server_side=True)
    client = SSLSocketStream(tcp_client, client_ctx, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"hello")
        assert await receive_exactly(server, 5) == b"hello"
    # do_handshake afterwards is a harmless no-op.
    await server.do_handshake()
    await client.aclose()
    await server.aclose()


async def test_concurrent_first_use_shares_one_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    tcp_client, tcp_server = await tcp_pair()
    server = SSLSocketStream(tcp_server, server_ctx, server_side=True)
    client = SSLSocketStream(tcp_client, client_ctx, server_hostname="localhost")
    got: list[bytes] = []

    async def server_receives() -> None:
        got.append(await receive_exactly(server, 4))

    async with trio.open_nursery() as nursery:
        # Receive, send and an explicit handshake all start before the
        # handshake and must share it.
        nursery.start_soon(server_receives)
        nursery.start_soon(server.send_all, b"pong")
        nursery.start_soon(server.do_handshake)
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(b"ping")
        assert await receive_exactly(client, 4) == b"pong"
    assert got == [b"ping"]
    await client.aclose()
    await server.aclose()


async def test_tasks_waiting_for_the_same_readiness_share_the_wakeup(
    autojump_clock: trio.testing.MockClock,
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    # Trio allows one waiter per socket and direction; the stream must let
    # a second task wait too (a send that needs to read during a TLS 1.2
    # renegotiation, next to a receive), without BusyResourceError.
    server, client = ours_pair
    woken: list[str] = []

    async def wait(name: str, cross: bool) -> None:
        await server._wait_io(0, cross=cross)
        woken.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "first", False)
        nursery.start_soon(wait, "second", False)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []
        await client.send_all(b"x")
    assert sorted(woken) == ["first", "second"]

    assert await server.receive_some() == b"x"

    # A cross-direction waiter re-polls instead of trusting one wake-up,
    # because the other task may consume the readiness it waits for.
    woken.clear()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "cross", True)
    assert woken == ["cross"]
    assert trio.current_time() - start == pytest.approx(_CROSS_WAIT_POLL)


# ---------------------------------------------------------------- end of stream


@pytest.mark.parametrize("closer", ["ours", "trio"])
async def test_clean_eof(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, closer: Kind
) -> None:
    server, client = await tls_pair("ours", closer, server_ctx, client_ctx)
    await client.send_all(b"last words")
    await client.aclose()
    assert await receive_exactly(server, 10) == b"last words"
    assert await server.receive_some() == b""
    # End of stream is sticky.
    assert await server.receive_some() == b""
    await server.aclose()


async def ragged_close_pair(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, *, suppress: bool
) -> tuple[SSLSocketStream, trio.SSLStream[trio.SocketStream]]:
    tcp_client, tcp_server = await tcp_pair()
    server = SSLSocketStream(
        tcp_server, server_ctx, server_side=True, suppress_ragged_eofs=suppress
    )
    client = trio.SSLStream(tcp_client, client_ctx, server_hostname="localhost")
    await handshake_both(server, client)
    # A round trip so that the client has read everything the server sent
    # (TLS 1.3 session tickets included): closing a socket with unread data
    # would make the kernel send a reset instead of a FIN.
    await client.send_all(b"ping")
    assert await receive_exactly(server, 4) == b"ping"
    await server.send_all(b"pong")
    assert await receive_exactly(client, 4) == b"pong"
    return server, client


async def test_tcp_fin_without_close_notify_is_eof_by_default(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server, client = await ragged_close_pair(server_ctx, client_ctx, suppress=True)
    await client.transport_stream.aclose()  # FIN, no close_notify
    assert await server.receive_some() == b""
    assert await server.receive_some() == b""
    await server.aclose()


async def test_tcp_fin_without_close_notify_is_an_error_when_strict(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server, client = await ragged_close_pair(server_ctx, client_ctx, suppress=False)
    await client.transport_stream.aclose()
    with pytest.raises(trio.BrokenResourceError, match="close_notify") as info:
        await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLEOFError)
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
    await server.aclose()


@pytest.mark.parametrize("suppress", [True, False], ids=["default", "strict"])
async def test_tcp_reset_follows_the_ragged_eof_rule(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, suppress: bool
) -> None:
    server, client = await ragged_close_pair(server_ctx, client_ctx, suppress=suppress)
    async with server:
        # SO_LINGER with a zero timeout turns close() into a reset.
        client.transport_stream.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        await client.transport_stream.aclose()
        # The ssl module reports a reset while reading as SSLEOFError before
        # Python 3.13 and as ConnectionResetError from 3.13: the stream
        # applies the ragged-EOF rule to both.
        if suppress:
            assert await server.receive_some() == b""
            assert await server.receive_some() == b""
            # Writing to the reset connection does fail.
            with pytest.raises(trio.BrokenResourceError) as info:
                await server.send_all(b"x")
            assert isinstance(info.value.__cause__, OSError)
        else:
            with pytest.raises(trio.BrokenResourceError, match="close_notify") as info:
                await server.receive_some()
            assert isinstance(info.value.__cause__, ssl.SSLEOFError | ConnectionResetError)
            with pytest.raises(trio.BrokenResourceError):
                await server.send_all(b"x")


async def test_send_to_a_reset_peer_is_broken(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server, client = await ragged_close_pair(server_ctx, client_ctx, suppress=True)
    async with server:
        client.transport_stream.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        await client.transport_stream.aclose()
        with pytest.raises(trio.BrokenResourceError):
            # The first write may still reach the kernel; the reset shows up
            # by the time a later one does.
            for _ in range(100):
                await server.send_all(b"x" * 10_000)


# ---------------------------------------------------------------- handshake failures


async def test_untrusted_server_certificate(
    ca: trustme.CA, server_cert: trustme.LeafCert, client_cert: trustme.LeafCert
) -> None:
    other_ca = trustme.CA()
    tcp_client, tcp_server = await tcp_pair()
    server = SSLSocketStream(tcp_server, server_context(ca, server_cert), server_side=True)
    client = SSLSocketStream(
        tcp_client, client_context(other_ca, client_cert), server_hostname="localhost"
    )
    errors: dict[str, BaseException] = {}

    async def attempt(name: str, stream: SSLSocketStream) -> None:
        with pytest.raises(trio.BrokenResourceError) as info:
            await stream.do_handshake()
        errors[name] = info.value

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attempt, "client", client)
        nursery.start_soon(attempt, "server", server)

    assert "TLS handshake failed" in str(errors["client"])
    assert "CERTIFICATE_VERIFY_FAILED" in str(errors["client"])
    assert isinstance(errors["client"].__cause__, ssl.SSLCertVerificationError)
    assert "TLS handshake failed" in str(errors["server"])
    assert isinstance(errors["server"].__cause__, ssl.SSLError)
    # The failure already released the sockets.
    assert client.ssl_object.fileno() == -1
    assert server.ssl_object.fileno() == -1
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")
    await server.aclose()
    await client.aclose()


async def test_client_without_certificate_is_refused(
    ca: trustme.CA, server_cert: trustme.LeafCert
) -> None:
    tcp_client, tcp_server = await tcp_pair()
    server = SSLSocketStream(tcp_server, server_context(ca, server_cert), server_side=True)
    client = SSLSocketStream(tcp_client, client_context(ca, None), server_hostname="localhost")

    async def client_side() -> None:
        # In TLS 1.3 the client finishes its half of the handshake before the
        # server checks its certificate; the refusal arrives as an alert.
        with pytest.raises(trio.BrokenResourceError):
            await client.do_handshake()
            await client.receive_some()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        with pytest.raises(trio.BrokenResourceError, match="TLS handshake failed") as info:
            await server.do_handshake()
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert server.ssl_object.fileno() == -1
    await server.aclose()
    await client.aclose()


async def test_peer_closing_during_handshake(server_ctx: ssl.SSLContext) -> None:
    tcp_client, tcp_server = await tcp_pair()
    server = SSLSocketStream(tcp_server, server_ctx, server_side=True)
    await tcp_client.aclose()
    with pytest.raises(trio.BrokenResourceError, match="TLS handshake failed") as info:
        await server.do_handshake()
    assert isinstance(info.value.__cause__, ssl.SSLError | OSError)
    assert server.ssl_object.fileno() == -1
    await server.aclose()


@pytest.mark.parametrize("server_side", [True, False], ids=["server", "client"])
async def test_handshake_timeout_with_silent_peer(
    autojump_clock: trio.testing.MockClock,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_side: bool,
) -> None:
    tcp_client, tcp_server = await tcp_pair()
    if server_side:
        ours = SSLSocketStream(tcp_server, server_ctx, server_side=True)
        silent = tcp_client
    else:
        ours = SSLSocketStream(tcp_client, client_ctx, server_hostname="localhost")
        silent = tcp_server
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(30):
            await ours.do_handshake()
    assert trio.current_time() - start == pytest.approx(30)
    assert ours.ssl_object.fileno() == -1
    with pytest.raises(trio.BrokenResourceError):
        await ours.do_handshake()
    await ours.aclose()
    await silent.aclose()


def test_constructor_rejects_other_streams(server_ctx: ssl.SSLContext) -> None:
    send, _receive = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError, match="SocketStream"):
        SSLSocketStream(send, server_ctx, server_side=True)  # type: ignore[arg-type]


async def test_constructor_error_closes_the_socket(client_ctx: ssl.SSLContext) -> None:
    tcp_client, tcp_server = await tcp_pair()
    with pytest.raises(ValueError, match="server_hostname"):
        # check_hostname without a name to check.
        SSLSocketStream(tcp_client, client_ctx)
    # The detached socket was closed: the peer sees end of stream.
    assert await tcp_server.receive_some() == b""
    await tcp_server.aclose()


# ---------------------------------------------------------------- misuse and closing


async def test_concurrent_receive_is_busy(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, client = ours_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some()
        nursery.cancel_scope.cancel()
    # Cancelling a waiting receive leaves the stream usable.
    await client.send_all(b"still here")
    assert await receive_exactly(server, 10) == b"still here"


async def fill_until_blocked(stream: SSLSocketStream, nursery: trio.Nursery) -> None:
    """Start a send that blocks because nobody reads the other end."""
    nursery.start_soon(stream.send_all, b"\0" * (32 * 1024 * 1024))
    await trio.testing.wait_all_tasks_blocked()


async def test_concurrent_send_is_busy_and_cancelled_send_breaks(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, _client = ours_pair
    async with trio.open_nursery() as nursery:
        await fill_until_blocked(server, nursery)
        with pytest.raises(trio.BusyResourceError):
            await server.send_all(b"x")
        with pytest.raises(trio.BusyResourceError):
            await server.wait_send_all_might_not_block()
        nursery.cancel_scope.cancel()
    # The cancelled send left half a record inside OpenSSL.
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()


async def test_send_and_receive_may_run_concurrently(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, client = ours_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        await server.send_all(b"reply while receiving")
        await server.wait_send_all_might_not_block()
        nursery.cancel_scope.cancel()
    assert await receive_exactly(client, 21) == b"reply while receiving"


async def test_receive_some_validates_max_bytes(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, client = ours_pair
    with pytest.raises(ValueError, match="max_bytes"):
        await server.receive_some(0)
    await client.send_all(b"abcdef")
    assert await server.receive_some(4) == b"abcd"
    assert await receive_exactly(server, 2) == b"ef"


async def test_use_after_aclose(ours_pair: tuple[SSLSocketStream, SSLSocketStream]) -> None:
    server, client = ours_pair
    await server.aclose()
    await server.aclose()  # idempotent
    assert server.ssl_object.fileno() == -1
    with pytest.raises(trio.ClosedResourceError):
        await server.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await server.do_handshake()
    with pytest.raises(trio.ClosedResourceError):
        await server.wait_send_all_might_not_block()
    # The peer got our close_notify: a clean end of stream, even in strict mode.
    assert await client.receive_some() == b""


async def test_aclose_wakes_a_blocked_receiver(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, _client = ours_pair
    errors: list[BaseException] = []

    async def receiver() -> None:
        try:
            await server.receive_some()
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await server.aclose()
    assert len(errors) == 1


async def test_aclose_with_a_blocked_sender_does_not_hang(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, client = ours_pair
    errors: list[BaseException] = []

    async def sender() -> None:
        try:
            await server.send_all(b"\0" * (32 * 1024 * 1024))
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        await server.aclose()
    assert len(errors) == 1
    # The peer's stream ends (a truncated one: no close_notify got through).
    received = 0
    while chunk := await client.receive_some():
        received += len(chunk)
    assert received < 32 * 1024 * 1024


async def test_aclose_gives_up_on_close_notify_when_the_socket_stays_full(
    autojump_clock: trio.testing.MockClock,
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, _client = ours_pair
    # Fill the socket behind the stream's back (the peer reads nothing), so
    # that the close_notify alert cannot be written.
    with pytest.raises(ssl.SSLWantWriteError):
        while True:
            server.ssl_object.write(b"\0" * 65536)
    start = trio.current_time()
    await server.aclose()
    assert trio.current_time() - start == pytest.approx(1.0)
    assert server.ssl_object.fileno() == -1


@pytest.fixture
def make_stream(server_ctx: ssl.SSLContext) -> Callable[[trio.SocketStream], SSLSocketStream]:
    return lambda s: SSLSocketStream(s, server_ctx, server_side=True)


async def test_aclose_is_a_full_checkpoint(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, client = ours_pair
    # The close_notify alert goes out without waiting, and aclose must still
    # be a cancel point and a schedule point.
    with trio.testing.assert_checkpoints():
        await server.aclose()
    with trio.testing.assert_checkpoints():
        await server.aclose()
    assert await client.receive_some() == b""


async def test_cancelled_aclose_closes_then_raises_cancelled(
    ours_pair: tuple[SSLSocketStream, SSLSocketStream],
) -> None:
    server, client = ours_pair
    with trio.CancelScope() as scope:
        scope.cancel()
        await server.aclose()
    assert scope.cancelled_caught
    assert server.ssl_object.fileno() == -1
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"x")
    assert await client.receive_some() == b""


async def test_aclose_before_handshake(
    make_stream: Callable[[trio.SocketStream], SSLSocketStream],
) -> None:
    tcp_client, tcp_server = await tcp_pair()
    stream = make_stream(tcp_server)
    await stream.aclose()
    assert stream.ssl_object.fileno() == -1
    assert await tcp_client.receive_some() == b""
    await tcp_client.aclose()

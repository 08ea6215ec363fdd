"""Issue 12: a TLS refusal that cannot succeed is a TLSRefusedError, tried once, never retried."""

from __future__ import annotations

import attrs
import pytest
import trio
import trustme

from mllp_trio._client import MLLPClient, open_mllp_client
from mllp_trio._config import ClientConfig, ServerConfig, TLSStreamKind
from mllp_trio._errors import TLSRefusedError
from mllp_trio._hl7 import InboundMessage
from mllp_trio._server import MLLPServer
from mllp_trio._tls import ServerTLS
from mllp_trio.store._queue import QueueConfig, QueuedSender
from mllp_trio.store._sqlite import open_sqlite_store

from .conftest import StartServer
from .hl7_samples import make_message
from .test_sender import MemoryQueue
from .tls_helpers import TLSMaterial

CASES = {
    "server certificate from an unknown CA": "we do not trust the server's certificate",
    "no client certificate": "client certificate",
    "client certificate from another CA": "client certificate",
    "not on the allow list": "allow list",
}


async def accept(message: InboundMessage) -> None:
    pass


@pytest.fixture(params=["trio", "ssl_socket"])
def tls_stream(request: pytest.FixtureRequest) -> TLSStreamKind:
    kind: TLSStreamKind = request.param
    return kind


async def refused_setup(
    tls: TLSMaterial, case: str, start_server: StartServer, kind: TLSStreamKind
) -> tuple[MLLPServer, int, object]:
    server_config = tls.server_config()
    client_context = tls.client_context()
    if case == "server certificate from an unknown CA":
        client_context = tls.client_context(trust=trustme.CA())
    elif case == "no client certificate":
        client_context = tls.client_context(anonymous=True)
    elif case == "client certificate from another CA":
        client_context = tls.client_context(cert=tls.issue_client("intruder", ca=trustme.CA()))
    else:
        allow_file = tls.directory / "allow.txt"
        allow_file.write_text("CN:someone-else\n")
        server_config = tls.server_config(allow_file=allow_file)
    server = MLLPServer(
        accept, ssl_context=ServerTLS(server_config), config=ServerConfig(tls_stream=kind)
    )
    return server, await start_server(server), client_context


async def settle(server: MLLPServer) -> None:
    with trio.fail_after(10):
        while server.stats.active:
            await trio.sleep(0.001)


def attempts(server: MLLPServer) -> int:
    return server.stats.handshake_failures + server.stats.refused_clients


@pytest.mark.parametrize("eager", [False, True], ids=["lazy", "open_mllp_client"])
@pytest.mark.parametrize("case", list(CASES))
async def test_client_does_not_retry_a_tls_refusal(
    tls: TLSMaterial, start_server: StartServer, tls_stream: TLSStreamKind, case: str, eager: bool
) -> None:
    server, port, context = await refused_setup(tls, case, start_server, tls_stream)
    client = MLLPClient(
        "localhost",
        port,
        ssl_context=context,  # type: ignore[arg-type]
        config=ClientConfig(retries=3, tls_stream=tls_stream),
    )
    try:
        with pytest.raises(TLSRefusedError, match=CASES[case]):
            if eager:
                await client.connect()
            await client.send(make_message(control_id="T1"))
    finally:
        await client.aclose()
    await settle(server)
    # One connection, even one opened at once: a connection that never
    # carried an exchange gets no free reconnect.
    assert attempts(server) == 1
    assert server.stats.messages == 0


@pytest.mark.parametrize("case", ["client certificate from another CA", "not on the allow list"])
async def test_queue_keeps_the_message_pending_on_a_tls_refusal(
    tls: TLSMaterial, start_server: StartServer, case: str
) -> None:
    # The real clock: the refusal is recognised by the connection closing
    # within a second of its handshake, which an autojump clock can skip
    # past while the server's alert is still on its way (seen under load).
    server, port, context = await refused_setup(tls, case, start_server, "ssl_socket")
    async with open_sqlite_store(tls.directory / "outbox") as store:
        sender = QueuedSender(
            store,
            "localhost",
            port,
            ssl_context=context,  # type: ignore[arg-type]
            client_config=ClientConfig(retries=3),
            config=attrs.evolve(QueueConfig(), backoff_base=0.01),
        )
        await sender.enqueue(make_message(control_id="Q1"))
        with pytest.raises(TLSRefusedError):
            await sender.deliver_pending()
        await sender.aclose()
        stats = await store.outbound_stats()
    await settle(server)
    assert attempts(server) == 1
    assert (stats.pending, stats.dead, stats.delivered) == (1, 0, 0)


async def test_a_connection_opened_early_and_closed_idle_is_no_refusal(
    tls: TLSMaterial, start_server: StartServer, autojump_clock: object
) -> None:
    # open_mllp_client connects at once; the listener's idle timeout closes
    # the connection before the first message: that is not a TLS refusal.
    server = MLLPServer(
        accept, ssl_context=ServerTLS(tls.server_config()), config=ServerConfig(idle_timeout=60)
    )
    port = await start_server(server)
    async with open_mllp_client(
        "127.0.0.1", port, ssl_context=tls.client_context(), config=ClientConfig(retries=0)
    ) as client:
        await trio.sleep(120)
        await settle(server)  # the listener closed it
        assert (await client.send(make_message(control_id="I1"))).accepted
    assert server.stats.messages == 1


async def test_run_waits_the_longest_backoff_after_a_tls_refusal(
    tls: TLSMaterial, start_server: StartServer, nursery: trio.Nursery, autojump_clock: object
) -> None:
    server, port, context = await refused_setup(
        tls, "client certificate from another CA", start_server, "ssl_socket"
    )
    store = MemoryQueue()  # no thread: the mock clock moves only while all wait
    sender = QueuedSender(
        store,
        "127.0.0.1",
        port,
        ssl_context=context,  # type: ignore[arg-type]
        server_hostname="localhost",
        config=QueueConfig(backoff_cap=50.0),
    )
    await nursery.start(sender.run)
    await sender.enqueue(make_message(control_id="R1"))
    start_time = trio.current_time()
    while attempts(server) < 2:
        await trio.sleep(1)
    # Not a retry storm: the second try comes after backoff_cap.
    assert trio.current_time() - start_time >= 50
    assert store.rows[1].status == "pending"
    nursery.cancel_scope.cancel()

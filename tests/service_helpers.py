"""Shared by the service tests: a journaled listener with its monitor, HTTP GET, scrape parsing."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ServerConfig
from mllp_trio._server import MLLPServer
from mllp_trio._service import ServiceConfig, ServiceMonitor
from mllp_trio._tls import ServerTLS
from mllp_trio.store._journal import JournalProcessor
from mllp_trio.store._sqlite import SQLiteStore, open_sqlite_store


@attrs.define
class Running:
    server: MLLPServer
    monitor: ServiceMonitor
    store: SQLiteStore
    port: int
    http_port: int


@asynccontextmanager
async def running_service(
    directory: Path,
    *,
    config: ServerConfig | None = None,
    service: ServiceConfig | None = None,
    tls: ServerTLS | None = None,
) -> AsyncIterator[Running]:
    """A journaled listener on loopback with its metrics endpoint, both on free ports."""
    service = service if service is not None else ServiceConfig(metrics_port=0, min_free_bytes=0)
    async with open_sqlite_store(directory) as store, trio.open_nursery() as nursery:
        server = MLLPServer(processor=JournalProcessor(store, None), config=config, ssl_context=tls)
        monitor = ServiceMonitor(service, store=store, tls=None if tls is None else tls.config)
        monitor.watch(server, "test")
        listeners = await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
        http = await nursery.start(monitor.run)
        yield Running(
            server,
            monitor,
            store,
            listeners[0].socket.getsockname()[1],
            http[0].socket.getsockname()[1],
        )
        nursery.cancel_scope.cancel()


async def send_one(port: int, data: bytes) -> bytes:
    """One message on a fresh plain connection; the raw reply."""
    async with open_mllp_client("127.0.0.1", port) as client:
        return await client.send_raw(data)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` from loopback; the status and the body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client's own parser."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return samples(body)

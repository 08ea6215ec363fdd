"""Fixtures shared by the test modules: TLS material and a running listener."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest
import trio

from mllp_trio._server import MLLPServer

from .tls_helpers import TLSMaterial, make_tls_material

#: Starts ``server`` on 127.0.0.1 port 0 in the test's nursery; returns the port.
StartServer = Callable[[MLLPServer], Awaitable[int]]


@pytest.fixture
def tls(tmp_path: Path) -> TLSMaterial:
    return make_tls_material(tmp_path / "tls")


@pytest.fixture
def start_server(nursery: trio.Nursery) -> StartServer:
    async def start(server: MLLPServer) -> int:
        listeners = await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
        port: int = listeners[0].socket.getsockname()[1]
        return port

    return start


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record, message and traceback, as one string."""
    parts: list[str] = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def assert_no_content(caplog: pytest.LogCaptureFixture, secrets: Iterable[bytes | str]) -> None:
    """No log record carries any of ``secrets`` (message content: patient data)."""
    text = log_text(caplog)
    for secret in secrets:
        needle = secret.decode("latin-1") if isinstance(secret, bytes) else secret
        assert needle not in text, f"message content {needle!r} leaked into the logs"

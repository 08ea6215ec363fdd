"""``mllp-trio check HOST:PORT``: a real exchange, and an exit code per outcome."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mllp_trio import HL7Reject, InboundMessage, MLLPServer, ServerTLS
from mllp_trio._cli import run
from mllp_trio._cli._check import check_message
from mllp_trio._hl7 import read_msh
from mllp_trio._tls import ServerTLSConfig

from .tls_helpers import TLSMaterial, make_tls_material


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The command sets up logging to this test's captured stderr: undo it after."""
    root, ours = logging.getLogger(), logging.getLogger("mllp_trio")
    saved = (root.handlers[:], root.level, ours.level)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])


@contextmanager
def in_thread(serve: Callable[..., Awaitable[Any]]) -> Iterator[int]:
    """Run ``serve`` (a task_status-reporting server) in Trio in a thread; yield its port."""
    ready = threading.Event()
    port: list[int] = []
    token: list[trio.lowlevel.TrioToken] = []
    scope = trio.CancelScope()

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        with scope:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(serve)
                port.append(listeners[0].socket.getsockname()[1])
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield port[0]
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token[0])
        thread.join(30)


async def refuse(message: InboundMessage) -> None:
    raise HL7Reject("no queries here")


def listener(handler: Any = None, tls: ServerTLS | None = None) -> Callable[..., Awaitable[Any]]:
    return functools.partial(MLLPServer(handler, ssl_context=tls).serve, 0, host="127.0.0.1")


async def silent(*, task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
    """Accepts connections and reads, never answers."""

    async def swallow(stream: trio.SocketStream) -> None:
        while await stream.receive_some(4096):
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners)
    await trio.serve_listeners(swallow, listeners)


def test_check_message_is_a_readable_query_with_a_fresh_control_id() -> None:
    header = read_msh(check_message())
    assert header.message_type == "NMQ^N01"
    assert header.control_id.startswith("CHK")


def test_positive_ack_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with in_thread(listener()) as port:
        assert run(["check", "--plaintext", f"127.0.0.1:{port}"]) == 0
    assert capsys.readouterr().out.startswith(f"OK: AA from 127.0.0.1:{port} in ")


def test_negative_ack_exits_1_unless_any_ack(capsys: pytest.CaptureFixture[str]) -> None:
    with in_thread(listener(refuse)) as port:
        assert run(["check", "--plaintext", f"127.0.0.1:{port}"]) == 1
        assert "NEGATIVE: AR from" in capsys.readouterr().err
        assert run(["check", "--plaintext", "--any-ack", "-q", f"127.0.0.1:{port}"]) == 0
    assert capsys.readouterr() == ("", "")


def test_no_listener_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()  # nobody listens there
    assert run(["check", "--plaintext", f"127.0.0.1:{port}"]) == 3
    err = capsys.readouterr().err
    # The address once, the cause, no Python names.
    assert err == f"FAIL: cannot connect to 127.0.0.1:{port}: Connection refused\n"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_no_reply_in_time_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with in_thread(silent) as port:
        code = run(
            ["check", "--plaintext", "--ack-timeout", "0.2", "--retries", "0", f"127.0.0.1:{port}"]
        )
    assert code == 4
    assert "FAIL: no acknowledgement" in capsys.readouterr().err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "--plaintext", "nowhere"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


@pytest.fixture
def material(tmp_path: Path) -> TLSMaterial:
    return make_tls_material(tmp_path / "tls")


def test_mutual_tls_with_send_options(
    material: TLSMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = ServerTLS(
        ServerTLSConfig(
            cert_file=material.server_cert_file,
            key_file=material.server_key_file,
            ca_file=material.ca_file,
        )
    )
    files = ["--ca", str(material.ca_file)]
    client = ["--cert", str(material.client_cert_file), "--key", str(material.client_key_file)]
    with in_thread(listener(tls=tls)) as port:
        assert run(["check", *files, *client, f"127.0.0.1:{port}"]) == 0
        assert capsys.readouterr().out.startswith("OK: AA")
        # Without a client certificate the listener refuses: exit 3, not a traceback.
        empty = material.directory / "none"
        empty.mkdir()
        code = run(["check", *files, "--certs-dir", str(empty), f"127.0.0.1:{port}"])
    assert code == 3
    err = capsys.readouterr().err
    # (the listener runs in this process: its own log lines are in stderr too)
    assert "FAIL: " in err and f"127.0.0.1:{port}" in err and "Traceback" not in err

"""Helpers of the command line tests (issue 12): no tests here.

``invoke`` runs ``mllp-trio`` in this process (fast: no interpreter start),
through the same ``run()`` that the console script calls, with click's test
runner swapping stdin, stdout and stderr. Set MLLP_TRIO_TEST_SUBPROCESS=1 to
run every ``invoke`` as ``python -m mllp_trio`` instead: with PYTHONPATH
pointing at an older tree, that shows which tests fail on the old code.

``serving`` runs a real mllp_trio listener on loopback in a thread of its
own (its own Trio loop), for ``send`` to talk to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from click.testing import CliRunner

import mllp_trio

STEP_TIMEOUT = float(os.environ.get("MLLP_TRIO_TEST_STEP_TIMEOUT", "20"))
SUBPROCESS = os.environ.get("MLLP_TRIO_TEST_SUBPROCESS") == "1"


@attrs.frozen
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(
    *args: str | Path,
    cwd: Path,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
) -> Result:
    """``mllp-trio ARGS`` in ``cwd``; its exit code and output."""
    argv = [str(a) for a in args]
    if SUBPROCESS:
        done = subprocess.run(
            [sys.executable, "-m", "mllp_trio", *argv],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=STEP_TIMEOUT,
            env={**os.environ, **(env or {})},
        )
        return Result(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )
    from mllp_trio._cli import run

    old = Path.cwd()
    os.chdir(cwd)
    try:
        with CliRunner().isolation(input=stdin, env=env) as (out, err, _):
            code = run(argv)
            stdout, stderr = out.getvalue(), err.getvalue()
    finally:
        os.chdir(old)
    return Result(code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))


@attrs.define
class Served:
    """A listener running in a thread: its port and what it received."""

    port: int = 0
    received: list[bytes] = attrs.field(factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def serving(
    handler: mllp_trio.Handler | None = None,
    *,
    framing: str | mllp_trio.FramingConfig = "mllp",
    port: int = 0,
    ssl_context: Any = None,
) -> Iterator[Served]:
    """A real listener on 127.0.0.1 in its own thread; stopped on exit."""
    served = Served()
    ready = threading.Event()
    stop: list[Any] = []
    failure: list[BaseException] = []

    async def record(message: mllp_trio.InboundMessage) -> None:
        served.received.append(message.raw)
        if handler is not None:
            await handler(message)

    async def main() -> None:
        frames = (
            mllp_trio.FramingConfig(framing=framing)  # type: ignore[arg-type]
            if isinstance(framing, str)
            else framing
        )
        config = mllp_trio.ServerConfig(framing=frames)
        server = mllp_trio.MLLPServer(record, ssl_context=ssl_context, config=config)
        with trio.CancelScope() as scope:
            stop.append((trio.lowlevel.current_trio_token(), scope))
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(partial(server.serve, port, host="127.0.0.1"))
                served.port = listeners[0].socket.getsockname()[1]
                ready.set()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported by the test
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    assert ready.wait(STEP_TIMEOUT), "the listener did not start"
    if failure:
        raise failure[0]
    try:
        yield served
    finally:
        token, scope = stop[0]
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(STEP_TIMEOUT)


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_process(*args: str, cwd: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``python -m mllp_trio ARGS`` started (for signals, pipes and terminals)."""
    return subprocess.Popen([sys.executable, "-m", "mllp_trio", *args], cwd=cwd, **kwargs)


def lines(text: str) -> Sequence[str]:
    return text.splitlines()

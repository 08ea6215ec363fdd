"""Subprocess entry points of the wire benchmark: one server, or one load-generating client.

``python -m benchmarks.worker server KIND SECURITY CERTDIR`` prints
``{"port": N}`` and serves until killed. ``python -m benchmarks.worker client
KIND CERTDIR`` reads one JSON command per line on stdin and answers each with
one JSON result line on stdout, until stdin closes. ``python -m
benchmarks.worker framing`` times framing cells on request (see
:func:`benchmarks.framing.serve_cells`); the harness runs it with another
commit's mllp_trio for ``--baseline``.

mllp_trio is reached through :func:`_api` and ``getattr`` fallbacks so that
this file drives both the current public API (``open_mllp_client``,
``store.JournalProcessor`` passed as ``processor=``) and the earlier one
(``open_mllp_connection``, ``serve_mllp(..., store=)``).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from inspect import signature
from pathlib import Path
from typing import Any

from . import peers
from .messages import build_ack, message_pool

__all__ = ["SERVER_KINDS", "client_context", "main", "server_context"]

HOST = "127.0.0.1"
SERVER_KINDS = (
    "mllp_trio",
    "mllp_trio-roomy",
    "mllp_trio-fixed",
    "mllp_trio-durable",
    "mllp_trio-durable-handler",
    "python-hl7-raw",
    "python-hl7-parse",
    "hl7apy",
)
CLIENT_KINDS = ("load", "mllp_trio", "python-hl7", "python-hl7-per-message")
#: A request that takes longer than this counts as an error.
REQUEST_TIMEOUT = 15.0
#: Connection limits of the ``mllp_trio-roomy`` server (the memory section).
ROOMY_CONNECTIONS = 4000
#: Open files each worker asks for (1,000 connections each side, and some).
WANTED_FILES = 8192

Roundtrip = Callable[[bytes], Awaitable[bytes]]


def server_context(security: str, certdir: Path) -> ssl.SSLContext | None:
    """Return the server TLS context for ``plain``, ``tls`` or ``mtls`` (client cert required)."""
    if security == "plain":
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certdir / "server.pem")
    if security == "mtls":
        context.load_verify_locations(certdir / "ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(security: str, certdir: Path) -> ssl.SSLContext | None:
    """Return the client TLS context: trusts the CA, presents a client cert for ``mtls``."""
    if security == "plain":
        return None
    context = ssl.create_default_context(cafile=str(certdir / "ca.pem"))
    if security == "mtls":
        context.load_cert_chain(certdir / "client.pem")
    return context


def _announce(port: int) -> None:
    print(json.dumps({"port": port}), flush=True)


# ------------------------------------------------------------------- servers


def _api(name: str, *modules: str) -> Any:
    """Return ``name`` from the first of ``modules`` (``mllp_trio`` by default) that has it."""
    for module_name in modules or ("mllp_trio",):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # mllp_trio is broken, not merely older: say so
            continue
        found = getattr(module, name, None)
        if found is not None:
            return found
    return None


def _port_of(started: Any) -> int:
    """Return the TCP port from what ``nursery.start(serve_mllp, ...)`` returned."""
    listener = started[0] if isinstance(started, list | tuple) else started
    port: int = listener.socket.getsockname()[1]
    return port


def _serve_mllp_trio(
    fixed: bool,
    ssl_context: ssl.SSLContext | None,
    *,
    durable: bool = False,
    with_handler: bool = False,
    roomy: bool = False,
) -> None:
    import trio

    serve_mllp = _api("serve_mllp")
    fixed_ack = build_ack(message_pool("1KB", count=1)[0])

    async def full(_message: object) -> bytes | None:
        return None  # the listener builds the ACK from the inbound MSH

    async def prebuilt(_message: object) -> bytes | None:
        return fixed_ack

    async def main() -> None:
        options: dict[str, Any] = {"host": HOST}
        if ssl_context is not None:
            options["ssl_context"] = ssl_context
        if roomy:
            # The memory section opens 1,000 connections from one address:
            # above the default limits (1,000 in all, 100 per peer).
            options["config"] = _api("ServerConfig")(
                max_connections=ROOMY_CONNECTIONS, max_connections_per_peer=ROOMY_CONNECTIONS
            )
        handler = prebuilt if fixed else full
        if not durable:
            async with trio.open_nursery() as nursery:
                _announce(_port_of(await nursery.start(partial(serve_mllp, handler, 0, **options))))
            return
        # A fresh journal per server process: every message is committed
        # (WAL, synchronous=FULL, group commit) before its ACK.
        # SIGTERM (how the harness stops servers) ends it cleanly, so the
        # temporary journal is removed.
        open_store = _api("open_sqlite_store", "mllp_trio.store", "mllp_trio")
        journal = _api("JournalProcessor", "mllp_trio.store")
        with (
            tempfile.TemporaryDirectory(prefix="mllp-bench-store-") as directory,
            trio.open_signal_receiver(signal.SIGTERM) as signals,
        ):
            async with (
                open_store(Path(directory) / "journal") as store,
                trio.open_nursery() as nursery,
            ):
                if journal is not None and "processor" in signature(serve_mllp).parameters:
                    # No handler is what `mllp-trio listen --store` runs: every
                    # message accepted, its ACK journaled with it.
                    processor = journal(store, handler) if with_handler else journal(store)
                    serve = partial(serve_mllp, None, 0, processor=processor)
                else:  # the API before JournalProcessor: serve_mllp(..., store=)
                    serve = partial(serve_mllp, handler, 0, store=store)
                _announce(_port_of(await nursery.start(partial(serve, **options))))
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


def run_server(kind: str, security: str, certdir: Path) -> None:
    """Serve with the given implementation until the process is killed."""
    context = server_context(security, certdir)
    if kind in (
        "mllp_trio",
        "mllp_trio-fixed",
        "mllp_trio-durable",
        "mllp_trio-durable-handler",
        "mllp_trio-roomy",
    ):
        _serve_mllp_trio(
            kind == "mllp_trio-fixed",
            context,
            durable=kind.startswith("mllp_trio-durable"),
            with_handler=kind == "mllp_trio-durable-handler",
            roomy=kind == "mllp_trio-roomy",
        )
    elif kind in ("python-hl7-raw", "python-hl7-parse"):
        peers.run_hl7_server(kind.rsplit("-", 1)[1], HOST, context, _announce)
    elif kind == "hl7apy":
        if context is not None:
            raise SystemExit("hl7apy's MLLPServer has no TLS")
        types = sorted({m.split(b"|", 9)[8].decode() for m in message_pool("1KB")})
        peers.run_hl7apy_server(HOST, types, _announce)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


# ------------------------------------------------------------------- clients


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


#: Nanoseconds of CPU per thread of each measured process, as last read.
_TASK_NS: dict[int, dict[str, int]] = {}


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds used so far by process ``pid`` (all its threads), or ``None`` if unknown.

    ``/proc/PID/task/*/schedstat`` counts nanoseconds; ``/proc/PID/stat``
    (clock ticks, 10 ms) is the fallback. ``None`` for our own process:
    :func:`time.process_time`.
    """
    if pid is None:
        return time.process_time()
    # Per thread, the last value seen: a thread that exits between two
    # readings keeps its count, so the total never goes backwards (it did,
    # and a failed read fell back to the coarser /proc/PID/stat: negative
    # CPU per message).
    seen = _TASK_NS.setdefault(pid, {})
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        tasks = []
    for task in tasks:
        try:
            seen[task.name] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    if seen:
        return sum(seen.values()) / 1e9
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class _CPU:
    """Client and server CPU seconds over the measured window."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.start: tuple[float | None, float | None] = (None, None)
        self.end: tuple[float | None, float | None] = (None, None)

    def read(self) -> tuple[float | None, float | None]:
        server = process_cpu(self.server_pid) if self.server_pid else None
        return process_cpu(None), server

    def mark(self, when: str) -> None:
        if when == "start":
            self.start = self.read()
        else:
            self.end = self.read()

    def per_message_us(self, messages: int) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for index, side in enumerate(("client_cpu_us", "server_cpu_us")):
            begin, end = self.start[index], self.end[index]
            ok = begin is not None and end is not None and messages > 0
            out[side] = (end - begin) / messages * 1e6 if ok else None  # type: ignore[operator]
        return out


def _result(load: _Load) -> dict[str, Any]:
    latencies = sorted(load.latencies)
    start, end, errors = load.start, load.end, load.errors
    elapsed = max(end - start, 1e-9)
    return {
        "messages": len(latencies),
        "elapsed": elapsed,
        "msgs_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "errors": errors,
        "first_error": load.first_error,
        **load.cpu.per_message_us(len(latencies)),
    }


def _reply_bytes(reply: Any) -> bytes:
    data = getattr(reply, "data", reply)
    return bytes(data)


class _Load:
    """Shared state of one timed run: a start barrier, the deadline and the samples."""

    def __init__(self, connections: int, duration: float, server_pid: int | None = None) -> None:
        self.cpu = _CPU(server_pid)
        self.connections = connections
        self.duration = duration
        self.ready = 0
        self.start = math.inf
        self.deadline = math.inf
        self.end = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def failed(self, exc: BaseException) -> None:
        """Count a failed connection; remember the first exception type (never its text)."""
        self.errors += 1
        self.first_error = self.first_error or type(exc).__name__

    def arrived(self) -> bool:
        """Count one connection as warmed up; True when it was the last one."""
        self.ready += 1
        if self.ready == self.connections:
            self.cpu.mark("start")
            self.start = time.perf_counter()
            self.deadline = self.start + self.duration
            return True
        return False


def _check(reply: Any) -> None:
    if b"MSA" not in _reply_bytes(reply):
        raise ValueError("reply is not an acknowledgement")


async def _asyncio_load(kind: str, command: dict[str, Any], context: ssl.SSLContext | None) -> Any:
    from hl7.mllp import open_hl7_connection

    pool = message_pool(command.get("size", "1KB"))
    load = _Load(command["connections"], command["duration"], command.get("server_pid"))
    go = asyncio.Event()
    port = command["port"]
    timeout = float(command.get("timeout", REQUEST_TIMEOUT))

    async def one(index: int) -> None:
        writer = None
        try:
            if kind == "python-hl7-per-message":

                async def roundtrip(message: bytes) -> bytes:
                    return await peers.connect_per_message_roundtrip(HOST, port, message, context)

            else:
                options: dict[str, Any] = {"limit": peers.HL7_STREAM_LIMIT}
                if context is not None:
                    options.update(ssl=context, server_hostname=HOST)
                reader, writer = await open_hl7_connection(HOST, port, **options)

                async def roundtrip(message: bytes) -> bytes:
                    writer.writeblock(message)
                    await writer.drain()
                    block: bytes = await reader.readblock()
                    return block

            _check(await asyncio.wait_for(roundtrip(pool[index % len(pool)]), timeout))
            if load.arrived():
                go.set()
            await go.wait()
            k = index
            while (sent := time.perf_counter()) < load.deadline:
                k += load.connections
                _check(await asyncio.wait_for(roundtrip(pool[k % len(pool)]), timeout))
                load.latencies.append(time.perf_counter() - sent)
        except Exception as exc:
            load.failed(exc)
            if load.arrived():
                go.set()
        finally:
            load.end = max(load.end, time.perf_counter())
            if writer is not None:
                writer.close()

    await asyncio.gather(*(one(i) for i in range(load.connections)))
    load.cpu.mark("end")
    return _result(load)


@asynccontextmanager
async def _connected(opened: Any) -> AsyncIterator[Any]:
    """Enter what the client factory returned: an async context manager, or an awaitable client."""
    if hasattr(opened, "__aenter__"):
        async with opened as client:
            yield client
        return
    client = await opened
    try:
        yield client
    finally:
        await client.aclose()


def _trio_load(command: dict[str, Any], context: ssl.SSLContext | None) -> Any:
    import trio

    # open_mllp_client replaced open_mllp_connection; both have send_raw.
    connect = _api("open_mllp_client") or _api("open_mllp_connection")
    pool = message_pool(command.get("size", "1KB"))
    load = _Load(command["connections"], command["duration"], command.get("server_pid"))
    port = command["port"]
    timeout = float(command.get("timeout", REQUEST_TIMEOUT))

    async def main() -> dict[str, Any]:
        go = trio.Event()
        options: dict[str, Any] = {}
        if context is not None:
            options.update(ssl_context=context, server_hostname=HOST)

        async def one(index: int) -> None:
            try:
                async with _connected(connect(HOST, port, **options)) as conn:
                    # send_raw returns the reply frame unparsed: the same work as
                    # python-hl7's client, and it accepts the fixed ACK, whose MSA-2
                    # cannot match (send() would raise ControlIdMismatch).
                    send = getattr(conn, "send_raw", conn.send)
                    with trio.fail_after(timeout):
                        _check(await send(pool[index % len(pool)]))
                    if load.arrived():
                        go.set()
                    await go.wait()
                    k = index
                    while (sent := time.perf_counter()) < load.deadline:
                        k += load.connections
                        with trio.fail_after(timeout):
                            _check(await send(pool[k % len(pool)]))
                        load.latencies.append(time.perf_counter() - sent)
            except Exception as exc:
                load.failed(exc)
                if load.arrived():
                    go.set()
            finally:
                load.end = max(load.end, time.perf_counter())

        async with trio.open_nursery() as nursery:
            for i in range(load.connections):
                nursery.start_soon(one, i)
        load.cpu.mark("end")
        return _result(load)

    return trio.run(main)


def _generator_load(command: dict[str, Any], context: ssl.SSLContext | None) -> dict[str, Any]:
    """Drive the server with mllp_trio's load generator (``mllp_trio._load``).

    The generator is the measuring instrument, the same for every server:
    ``recv_into`` a reused buffer, one readiness wait per reply, every ACK
    checked (MSA-2 too, except against the fixed-ACK server, whose MSA-2
    cannot match).
    """
    import trio

    from mllp_trio import _load

    cpu = _CPU(command.get("server_pid"))
    config = _load.LoadConfig(
        connections=command["connections"],
        duration=command["duration"],
        warmup=float(command.get("warmup", 0.05)),
        timeout=float(command.get("timeout", REQUEST_TIMEOUT)),
        # 64 TLS handshakes on a busy machine take seconds: the other clients
        # have no connect limit at all; the measurement starts after them anyway.
        connect_timeout=60.0,
        give_up=60.0,
        check_control_id=bool(command.get("check_control_id", True)),
    )
    templates = _load.make_templates(message_pool(command.get("size", "1KB")))
    connect = _load.tcp_connector(HOST, command["port"], ssl_context=context)
    result = trio.run(lambda: _load.run_load(connect, templates, config, on_window=cpu.mark))
    hist = result.latency
    errors = result.errors
    return {
        "messages": result.answered,
        "elapsed": result.elapsed,
        "msgs_per_s": result.rate,
        "p50_ms": hist.percentile(0.50) * 1000,
        "p99_ms": hist.percentile(0.99) * 1000,
        "errors": sum(errors.values()),
        "first_error": max(errors, key=errors.__getitem__) if errors else None,
        **cpu.per_message_us(result.sent),
    }


def raise_file_limit() -> dict[str, int]:
    """Raise the soft limit on open files towards :data:`WANTED_FILES` (up to the hard limit).

    Returns the soft and hard limits in force afterwards (``-1``: unlimited).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return {"soft": -1, "hard": -1}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_FILES if hard == resource.RLIM_INFINITY else min(WANTED_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return {"soft": int(soft), "hard": int(hard)}


def rss_kib(pid: int) -> int | None:
    """Resident set size of process ``pid`` in KiB (``VmRSS`` in ``/proc/PID/status``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _exchange(sock: socket.socket, frame: bytes) -> None:
    """Send one framed message and read until the reply's end (EB CR)."""
    sock.sendall(frame)
    reply = b""
    while not reply.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        reply += chunk


def _idle_rss(command: dict[str, Any], context: ssl.SSLContext | None) -> dict[str, Any]:
    """Open N connections, one message each, leave them idle; the server's RSS before and after.

    A few connections open and close first, so that what is allocated once
    (the first TLS handshake's tables, imports) is not counted per connection.
    """
    pid, port, wanted = (
        int(command["server_pid"]),
        int(command["port"]),
        int(command["connections"]),
    )
    limits = raise_file_limit()
    if 0 <= limits["soft"] < wanted + 100:
        return {"error": f"open-file limit {limits['soft']} < {wanted + 100} (ulimit -n)"}
    frame = b"\x0b" + message_pool("1KB", count=1)[0] + b"\x1c\r"
    timeout = float(command.get("timeout", 30.0))

    def connect() -> socket.socket:
        sock = socket.create_connection((HOST, port), timeout=timeout)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=HOST)
        _exchange(sock, frame)
        return sock

    for _ in range(int(command.get("warmup_connections", 10))):
        connect().close()
    settle = float(command.get("settle", 0.5))
    time.sleep(settle)
    before = rss_kib(pid)
    opened: list[socket.socket] = []
    started = time.perf_counter()
    try:
        for _ in range(wanted):
            opened.append(connect())
        took = time.perf_counter() - started
        time.sleep(settle)
        after = rss_kib(pid)
    finally:
        for sock in opened:
            sock.close()
    if before is None or after is None:
        return {"error": "server RSS not readable (/proc)"}
    return {
        "connections": len(opened),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "per_connection_kib": (after - before) / len(opened),
        "open_seconds": round(took, 2),
    }


def _growth(command: dict[str, Any], context: ssl.SSLContext | None) -> dict[str, Any]:
    """Run ``count`` messages with the load generator, sampling the server's RSS meanwhile."""
    import trio

    from mllp_trio import _load

    pid = int(command["server_pid"])
    interval = float(command.get("interval", 0.01))
    config = _load.LoadConfig(
        connections=int(command.get("connections", 8)),
        duration=None,
        count=int(command["count"]),
        warmup=float(command.get("warmup", 0.2)),
        timeout=float(command.get("timeout", REQUEST_TIMEOUT)),
        connect_timeout=60.0,
        give_up=60.0,
    )
    templates = _load.make_templates(message_pool("1KB"))
    connect = _load.tcp_connector(HOST, int(command["port"]), ssl_context=context)
    window: dict[str, float] = {}
    samples: list[tuple[float, int]] = []

    def mark(when: str) -> None:
        window[when] = time.perf_counter()

    async def main() -> Any:
        async def sample() -> None:
            while True:
                value = rss_kib(pid)
                if value is not None:
                    samples.append((time.perf_counter(), value))
                await trio.sleep(interval)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            result = await _load.run_load(connect, templates, config, on_window=mark)
            nursery.cancel_scope.cancel()
        return result

    result = trio.run(main)
    begin, end = window.get("start"), window.get("end")
    if begin is None or end is None:
        return {"error": "the run never started measuring"}
    inside = [kib for when, kib in samples if begin <= when <= end]
    errors = sum(result.errors.values())
    return {
        "messages": result.answered,
        "errors": errors,
        "seconds": round(end - begin, 2),
        "samples": inside,
    }


def run_client(kind: str, certdir: Path) -> None:
    """Answer load commands from stdin, one JSON line each, until stdin closes."""
    raise_file_limit()
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        context = client_context(command["security"], certdir)
        try:
            if command.get("op") == "idle":
                result = _idle_rss(command, context)
            elif command.get("op") == "growth":
                result = _growth(command, context)
            elif kind == "load":
                result = _generator_load(command, context)
            elif kind == "mllp_trio":
                result = _trio_load(command, context)
            else:
                result = asyncio.run(_asyncio_load(kind, command, context))
        except Exception as exc:
            result = {"error": type(exc).__name__}
        print(json.dumps(result), flush=True)


def main(argv: list[str]) -> None:
    """Dispatch ``server KIND SECURITY CERTDIR``, ``client KIND CERTDIR`` or ``framing``."""
    if len(argv) == 4 and argv[0] == "server":
        raise_file_limit()
        run_server(argv[1], argv[2], Path(argv[3]))
    elif len(argv) == 3 and argv[0] == "client":
        run_client(argv[1], Path(argv[2]))
    elif argv == ["framing"]:
        from .framing import serve_cells

        serve_cells(sys.stdin, sys.stdout)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

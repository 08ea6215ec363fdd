"""Wire benchmark: request/response rate and latency over loopback, in subprocesses."""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import attrs

from .framing import mllp_trio_missing

__all__ = ["WIRE_CONTENDERS", "WireContender", "WireSettings", "run_wire", "write_certificates"]

Progress = Callable[[str], None]
SECURITIES = ("plain", "tls", "mtls")
_REPO = Path(__file__).resolve().parent.parent


@attrs.frozen(kw_only=True)
class WireSettings:
    """How long and how often each wire scenario runs.

    Attributes:
        duration: Seconds of timed load per run (after connecting and warming up).
        rounds: Runs per contender and scenario, in interleaved order.
        connections: The concurrency levels to measure.
        request_timeout: Seconds after which one request counts as an error
            and its connection stops (bounds a run against a stalled server).
        startup_timeout: Seconds a server may take to print its port.
    """

    duration: float = 0.25
    rounds: int = 3
    connections: tuple[int, ...] = (1, 8, 64)
    request_timeout: float = 5.0
    startup_timeout: float = 60.0


@attrs.frozen(kw_only=True)
class WireContender:
    """A server implementation paired with the client its users would use.

    Attributes:
        key: Stable identifier used in the JSON output.
        label: Human-readable name.
        server: Server kind understood by :mod:`benchmarks.worker`.
        client: Client kind understood by :mod:`benchmarks.worker`.
        securities: Which of plain, tls, mtls it supports.
        needs_mllp_trio: Whether it needs mllp_trio's listener or client.
    """

    key: str
    label: str
    server: str
    client: str
    securities: tuple[str, ...] = SECURITIES
    needs_mllp_trio: bool = False


WIRE_CONTENDERS = (
    WireContender(
        key="mllp_trio",
        label="mllp_trio listener (full ACK) + client",
        server="mllp_trio",
        client="mllp_trio",
        needs_mllp_trio=True,
    ),
    WireContender(
        key="mllp_trio-fixed-ack",
        label="mllp_trio listener (fixed pre-built ACK) + client",
        server="mllp_trio-fixed",
        client="mllp_trio",
        needs_mllp_trio=True,
    ),
    WireContender(
        key="mllp_trio-durable",
        label="mllp_trio listener with the SQLite journal (store before ACK) + client",
        server="mllp_trio-durable",
        client="mllp_trio",
        securities=("plain",),
        needs_mllp_trio=True,
    ),
    WireContender(
        key="python-hl7-raw",
        label="python-hl7 asyncio server (split ACK) + client",
        server="python-hl7-raw",
        client="python-hl7",
    ),
    WireContender(
        key="python-hl7-parse",
        label="python-hl7 server (hl7.parse + create_ack) + client",
        server="python-hl7-parse",
        client="python-hl7",
    ),
    WireContender(
        key="hl7apy",
        label="hl7apy MLLPServer + python-hl7 client (one connection per message)",
        server="hl7apy",
        client="python-hl7-per-message",
        securities=("plain",),
    ),
)


def write_certificates(directory: Path) -> None:
    """Write a trustme CA, a server certificate for 127.0.0.1 and a client certificate."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    client = ca.issue_cert("benchmark-client@example.org", common_name="benchmark-client")
    client.private_key_and_cert_chain_pem.write_to_path(str(directory / "client.pem"))


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.worker", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=_REPO,
        env=env,
    )


def _read_line(stream: IO[str] | None, timeout: float) -> dict[str, Any]:
    assert stream is not None
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError("worker did not answer in time")
    line = stream.readline()
    if not line:
        raise EOFError("worker exited")
    result: dict[str, Any] = json.loads(line)
    return result


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.stdin:
                proc.stdin.close()
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_wire(settings: WireSettings, progress: Progress) -> dict[str, Any]:
    """Run every wire scenario; return the ``wire`` JSON section."""
    missing = mllp_trio_missing("serve_mllp", "open_mllp_connection")
    status: dict[str, str] = {}
    for contender in WIRE_CONTENDERS:
        if contender.needs_mllp_trio and missing:
            status[contender.key] = "unavailable: " + missing

    samples: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    errors: dict[tuple[str, str, int], str] = {}
    with tempfile.TemporaryDirectory(prefix="mllp-bench-") as tmp, _processes() as procs:
        certdir = Path(tmp)
        write_certificates(certdir)
        live = [c for c in WIRE_CONTENDERS if c.key not in status]

        # All servers start at once (they idle while others are measured).
        servers: dict[tuple[str, str], subprocess.Popen[str]] = {}
        for contender in live:
            for security in contender.securities:
                proc = _spawn("server", contender.server, security, str(certdir))
                procs.append(proc)
                servers[contender.key, security] = proc
        clients: dict[str, subprocess.Popen[str]] = {}
        for kind in sorted({c.client for c in live}):
            proc = _spawn("client", kind, str(certdir))
            procs.append(proc)
            clients[kind] = proc
        ports: dict[tuple[str, str], int] = {}
        progress(f"starting {len(servers)} servers")
        for key, proc in servers.items():
            try:
                ports[key] = int(_read_line(proc.stdout, settings.startup_timeout)["port"])
            except (TimeoutError, EOFError, KeyError, ValueError) as exc:
                status.setdefault(key[0], f"error: server did not start ({type(exc).__name__})")

        scenarios = [
            (security, conns, contender)
            for security in SECURITIES
            for conns in settings.connections
            for contender in live
            if security in contender.securities and (contender.key, security) in ports
        ]
        total = len(scenarios) * settings.rounds
        done = 0
        for round_no in range(settings.rounds):
            for security, conns, contender in scenarios:
                done += 1
                cell = (contender.key, security, conns)
                if cell in errors:
                    continue
                command = {
                    "port": ports[contender.key, security],
                    "security": security,
                    "connections": conns,
                    "duration": settings.duration,
                    "size": "1KB",
                    "timeout": settings.request_timeout,
                }
                client = clients[contender.client]
                assert client.stdin is not None
                client.stdin.write(json.dumps(command) + "\n")
                client.stdin.flush()
                try:
                    result = _read_line(
                        client.stdout, settings.duration + settings.request_timeout * 4 + 30
                    )
                except (TimeoutError, EOFError) as exc:
                    errors[cell] = f"error: client {type(exc).__name__}"
                    continue
                if "error" in result or not result.get("messages"):
                    reason = result.get("error") or result.get("first_error") or "no reply"
                    errors[cell] = f"error: {reason}"
                    continue
                samples.setdefault(cell, []).append(result)
                progress(
                    f"[{done}/{total}] wire round {round_no + 1} {security} c={conns} "
                    f"{contender.key}: {result['msgs_per_s']:.0f} msg/s"
                )

    results: list[dict[str, Any]] = []
    for security in SECURITIES:
        for conns in settings.connections:
            for contender in WIRE_CONTENDERS:
                if security not in contender.securities:
                    continue
                cell = (contender.key, security, conns)
                row: dict[str, Any] = {
                    "security": security,
                    "connections": conns,
                    "contender": contender.key,
                    "label": contender.label,
                }
                runs = samples.get(cell, [])
                row["status"] = status.get(contender.key) or errors.get(cell) or "ok"
                if row["status"] == "ok" and runs:
                    row.update(
                        runs=len(runs),
                        messages=sum(r["messages"] for r in runs),
                        errors=sum(r["errors"] for r in runs),
                        first_error=next(
                            (r["first_error"] for r in runs if r["first_error"]), None
                        ),
                        msgs_per_s=_summary([r["msgs_per_s"] for r in runs]),
                        p50_ms=_summary([r["p50_ms"] for r in runs]),
                        p99_ms=_summary([r["p99_ms"] for r in runs]),
                    )
                elif row["status"] == "ok":
                    row["status"] = "error: no runs"
                results.append(row)
    return {
        "settings": {**attrs.asdict(settings), "message_size": "1KB"},
        "results": results,
    }

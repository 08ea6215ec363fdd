"""Memory benchmark: server RSS per idle connection, and RSS over a long run (no growth)."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import attrs

from .baseline import REPO, Worker, workers
from .wire import write_certificates

__all__ = ["IDLE_SERVERS", "MemorySettings", "judge_growth", "run_memory"]

Progress = Callable[[str], None]

#: (contender key, worker server kind, securities) measured at rest with many connections.
IDLE_SERVERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mllp_trio", "mllp_trio-roomy", ("plain", "tls")),
    ("python-hl7-raw", "python-hl7-raw", ("plain", "tls")),
)
#: The listener whose RSS is followed over the long run (plain TCP, no journal).
GROWTH_SERVER = ("mllp_trio", "mllp_trio", "plain")


@attrs.frozen(kw_only=True)
class MemorySettings:
    """How many connections and messages the memory section uses.

    Attributes:
        idle_connections: Connections opened (one message each) and left idle.
        growth_messages: Messages of the long run whose RSS is followed.
        growth_connections: Connections of the long run (closed model).
        tolerance: Relative RSS rise from the second to the last quarter
            still called "no growth".
        tolerance_kib: Absolute rise still called "no growth" (small runs:
            allocator noise).
    """

    idle_connections: int = 1000
    growth_messages: int = 100_000
    growth_connections: int = 8
    tolerance: float = 0.02
    tolerance_kib: int = 1024


def judge_growth(samples: list[int], settings: MemorySettings) -> dict[str, Any]:
    """Summarise RSS samples (KiB, in time order) of a run and judge whether it grew.

    The second quarter's median is the reference (the first holds the
    warm-up's allocations); "no growth" when the last quarter's median is
    within ``tolerance`` (or ``tolerance_kib``) of it.
    """
    if len(samples) < 8:
        return {"verdict": "too few samples", "samples": len(samples)}
    quarter = len(samples) // 4
    second = statistics.median(samples[quarter : 2 * quarter])
    last = statistics.median(samples[3 * quarter :])
    allowed = max(second * settings.tolerance, settings.tolerance_kib)
    return {
        "samples": len(samples),
        "start_kib": samples[0],
        "end_kib": samples[-1],
        "peak_kib": max(samples),
        "second_quarter_kib": second,
        "last_quarter_kib": last,
        "growth_kib": last - second,
        "allowed_kib": round(allowed),
        "verdict": "no growth" if last - second <= allowed else "grows",
    }


def run_memory(
    settings: MemorySettings, progress: Progress, *, only: Collection[str] | None = None
) -> dict[str, Any]:
    """Measure idle-connection RSS and RSS over a long run; return the ``memory`` JSON section.

    Every measurement has a fresh server process, so one's memory never
    counts in another's.
    """
    idle: list[dict[str, Any]] = []
    growth: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mllp-bench-mem-") as tmp, workers() as started:
        certdir = Path(tmp)
        write_certificates(certdir)

        def spawn(name: str, *args: str) -> Worker:
            worker = Worker(
                "benchmarks.worker", args, lib_root=REPO, code_root=REPO, log=certdir / name
            )
            started.append(worker)
            return worker

        client = spawn("client.log", "client", "load", str(certdir))
        client.hello(60.0)

        def measure(
            kind: str, security: str, command: dict[str, Any], wait: float
        ) -> dict[str, Any]:
            server = spawn(f"server-{len(started)}.log", "server", kind, security, str(certdir))
            try:
                server.hello(60.0)
                port = int(server.read(60.0)["port"])
                client.send(
                    {**command, "port": port, "security": security, "server_pid": server.proc.pid}
                )
                return client.read(wait)
            except (TimeoutError, EOFError, KeyError, ValueError) as exc:
                return {"error": server.failure() or type(exc).__name__}
            finally:
                server.close()

        for key, kind, securities in IDLE_SERVERS:
            if only is not None and key not in only:
                continue
            for security in securities:
                progress(f"memory: {settings.idle_connections} idle connections, {security} {key}")
                result = measure(
                    kind,
                    security,
                    {"op": "idle", "connections": settings.idle_connections},
                    wait=120.0 + settings.idle_connections * 0.2,
                )
                row = {
                    "contender": key,
                    "security": security,
                    "connections": settings.idle_connections,
                }
                if "error" in result:
                    row["status"] = f"error: {result['error']}"
                else:
                    row.update(result, status="ok")
                idle.append(row)

        key, kind, security = GROWTH_SERVER
        if only is None or key in only:
            progress(f"memory: RSS over {settings.growth_messages:,} messages, {security} {key}")
            result = measure(
                kind,
                security,
                {
                    "op": "growth",
                    "count": settings.growth_messages,
                    "connections": settings.growth_connections,
                },
                wait=120.0 + settings.growth_messages * 0.01,
            )
            row = {
                "contender": key,
                "security": security,
                "connections": settings.growth_connections,
                "messages_asked": settings.growth_messages,
            }
            if "error" in result:
                row["status"] = f"error: {result['error']}"
            else:
                samples = result.pop("samples")
                row.update(result, **judge_growth(samples, settings), status="ok")
            growth.append(row)
    return {"settings": attrs.asdict(settings), "idle": idle, "growth": growth}

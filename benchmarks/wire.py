"""Wire benchmark: request/response rate and latency over loopback, in subprocesses."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import attrs

from .baseline import REPO, Baseline, Worker, add_baseline_ratios, alternate_pairs, workers
from .framing import mllp_trio_missing

__all__ = [
    "MLLP_TRIO_API",
    "WIRE_CONTENDERS",
    "WireContender",
    "WireSettings",
    "roster",
    "run_wire",
    "write_certificates",
]

Progress = Callable[[str], None]
SECURITIES = ("plain", "tls", "mtls")
#: What the mllp_trio contenders need from mllp_trio (``a|b``: either name).
MLLP_TRIO_API = ("serve_mllp", "open_mllp_client|open_mllp_connection")


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
        warmup: Seconds the load generator sends before measuring (the other
            clients send one message per connection instead).
    """

    duration: float = 0.25
    rounds: int = 3
    connections: tuple[int, ...] = (1, 8, 64)
    request_timeout: float = 5.0
    startup_timeout: float = 60.0
    warmup: float = 0.05


@attrs.frozen(kw_only=True)
class WireContender:
    """A server implementation and the client that drives it.

    Most servers are driven by the load generator (client ``load``,
    ``mllp_trio._load``): one instrument for all, cheaper per message than
    any server, so that the numbers are the server's. Two contenders keep a
    library client on purpose: ``mllp_trio-client`` (the project's own
    client) and ``python-hl7-raw-asyncio`` (python-hl7's asyncio client, the
    harness's client before the generator), whose client CPU per message is
    reported beside the generator's.

    Attributes:
        key: Stable identifier used in the JSON output.
        label: Human-readable name.
        server: Server kind understood by :mod:`benchmarks.worker`.
        client: Client kind understood by :mod:`benchmarks.worker`; ``load``
            always runs from this checkout (it is the instrument), the other
            clients from the contender's tree.
        check_control_id: Whether the load generator requires MSA-2 to match
            (not against a server that answers a canned ACK).
        securities: Which of plain, tls, mtls it supports.
        needs_mllp_trio: Whether it needs mllp_trio's listener or client.
        baseline_of: For a baseline contender (the baseline commit's server
            and client), the key of its twin in this checkout.
        extra: (security, connections) scenarios run besides the mode's
            concurrency levels (the targets compare the journal at 32).
    """

    key: str
    label: str
    server: str
    client: str
    securities: tuple[str, ...] = SECURITIES
    needs_mllp_trio: bool = False
    baseline_of: str | None = None
    check_control_id: bool = True
    extra: tuple[tuple[str, int], ...] = ()
    #: Whether ``--baseline`` adds a twin (False: the baseline's worker has no such server).
    twin: bool = True

    def levels(self, security: str, settings: WireSettings) -> list[int]:
        """The concurrency levels this contender runs at over ``security``."""
        if security not in self.securities:
            return []
        extra = {conns for sec, conns in self.extra if sec == security}
        return sorted(set(settings.connections) | extra)


WIRE_CONTENDERS = (
    WireContender(
        key="mllp_trio",
        label="mllp_trio listener (full ACK), load generator",
        server="mllp_trio",
        client="load",
        needs_mllp_trio=True,
        extra=(("plain", 32),),
    ),
    WireContender(
        key="mllp_trio-fixed-ack",
        label="mllp_trio listener (fixed pre-built ACK), load generator",
        server="mllp_trio-fixed",
        client="load",
        needs_mllp_trio=True,
        check_control_id=False,
    ),
    WireContender(
        key="mllp_trio-durable",
        label=(
            "mllp_trio listener with the SQLite journal (store before ACK), no handler"
            " (as `mllp-trio listen --store`), load generator"
        ),
        server="mllp_trio-durable",
        client="load",
        securities=("plain",),
        needs_mllp_trio=True,
        extra=(("plain", 32),),
    ),
    WireContender(
        key="mllp_trio-durable-handler",
        label=(
            "mllp_trio listener with the SQLite journal and an application handler"
            " (commit, handler, ACK saved: two transactions), load generator"
        ),
        server="mllp_trio-durable-handler",
        client="load",
        securities=("plain",),
        needs_mllp_trio=True,
        extra=(("plain", 32),),
        twin=False,
    ),
    WireContender(
        key="mllp_trio-client",
        label="mllp_trio listener (full ACK) + mllp_trio client (open_mllp_client)",
        server="mllp_trio",
        client="mllp_trio",
        needs_mllp_trio=True,
    ),
    WireContender(
        key="python-hl7-raw",
        label="python-hl7 asyncio server (split ACK), load generator",
        server="python-hl7-raw",
        client="load",
    ),
    WireContender(
        key="python-hl7-raw-asyncio",
        label="python-hl7 asyncio server (split ACK) + python-hl7 asyncio client",
        server="python-hl7-raw",
        client="python-hl7",
        securities=("plain", "mtls"),
    ),
    WireContender(
        key="python-hl7-parse",
        label="python-hl7 server (hl7.parse + create_ack), load generator",
        server="python-hl7-parse",
        client="load",
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


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def roster(
    baseline: Baseline | None = None, only: Collection[str] | None = None
) -> list[WireContender]:
    """Return the contenders to run, each mllp_trio one followed by its baseline twin."""
    out: list[WireContender] = []
    for contender in WIRE_CONTENDERS:
        if only is not None and contender.key not in only:
            continue
        out.append(contender)
        if baseline is not None and contender.needs_mllp_trio and contender.twin:
            out.append(
                attrs.evolve(
                    contender,
                    key=contender.key + baseline.suffix,
                    label=f"{contender.label}, at {baseline.short}",
                    baseline_of=contender.key,
                )
            )
    return out


def _pair(first: tuple[str, int, WireContender], second: tuple[str, int, WireContender]) -> bool:
    return first[:2] == second[:2] and second[2].baseline_of == first[2].key


def _failure(worker: Worker, exc: Exception) -> str:
    # Why it died: mllp_trio failing to import in its tree says most, then
    # the type of what the process died of, else of how we noticed.
    broken = worker.imported.get("mllp_trio_error")
    if broken:
        return f"mllp_trio not importable there: {broken}"
    return worker.failure() or type(exc).__name__


def run_wire(
    settings: WireSettings,
    progress: Progress,
    *,
    baseline: Baseline | None = None,
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Run every wire scenario; return the ``wire`` JSON section.

    Args:
        settings: Durations, rounds, concurrency levels.
        progress: Receives one line per step.
        baseline: Also run each mllp_trio contender's server and client from
            this commit's worktree (key ``KEY@short``), interleaved with this
            checkout's.
        only: Contender keys to run (default: all).
    """
    contenders = roster(baseline, only)
    missing = mllp_trio_missing(*MLLP_TRIO_API)
    status: dict[str, str] = {}
    for contender in contenders:
        # A baseline's API is its own business: its worker reports failures.
        if contender.needs_mllp_trio and contender.baseline_of is None and missing:
            status[contender.key] = "unavailable: " + missing

    def root(contender: WireContender) -> Path:
        return baseline.worktree if baseline and contender.baseline_of else REPO

    def client_root(contender: WireContender) -> Path:
        # The load generator is the instrument: always this checkout's.
        return REPO if contender.client == "load" else root(contender)

    def all_levels(security: str) -> list[int]:
        return sorted({n for c in contenders for n in c.levels(security, settings)})

    samples: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    errors: dict[tuple[str, str, int], str] = {}
    imported: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mllp-bench-") as tmp, workers() as started:
        certdir = Path(tmp)
        write_certificates(certdir)
        live = [c for c in contenders if c.key not in status]

        def spawn(name: str, *args: str, tree: Path) -> Worker:
            # The old worker for a baseline contender: its code and its mllp_trio.
            worker = Worker(
                "benchmarks.worker", args, lib_root=tree, code_root=tree, log=certdir / name
            )
            started.append(worker)
            return worker

        # All servers start at once (they idle while others are measured).
        servers: dict[tuple[str, str], Worker] = {}
        for contender in live:
            for security in contender.securities:
                servers[contender.key, security] = spawn(
                    f"server-{len(servers)}.log",
                    "server",
                    contender.server,
                    security,
                    str(certdir),
                    tree=root(contender),
                )
        clients: dict[tuple[str, Path], Worker] = {}
        for contender in live:
            client_key = (contender.client, client_root(contender))
            if client_key not in clients:
                clients[client_key] = spawn(
                    f"client-{len(clients)}.log",
                    "client",
                    client_key[0],
                    str(certdir),
                    tree=client_key[1],
                )
        progress(f"starting {len(servers)} servers and {len(clients)} clients")
        ports: dict[tuple[str, str], int] = {}
        for (key, security), worker in servers.items():
            try:
                imported.setdefault(key, {})["server"] = worker.hello(settings.startup_timeout)
                ports[key, security] = int(worker.read(settings.startup_timeout)["port"])
            except (TimeoutError, EOFError, KeyError, ValueError) as exc:
                status.setdefault(key, f"error: server did not start ({_failure(worker, exc)})")
        for contender in live:
            worker = clients[contender.client, client_root(contender)]
            try:
                if not worker.imported:
                    worker.hello(settings.startup_timeout)
                imported.setdefault(contender.key, {})["client"] = worker.imported
            except (TimeoutError, EOFError, KeyError, ValueError) as exc:
                status.setdefault(
                    contender.key, f"error: client did not start ({_failure(worker, exc)})"
                )

        scenarios = [
            (security, conns, contender)
            for security in SECURITIES
            for conns in all_levels(security)
            for contender in live
            if conns in contender.levels(security, settings)
            and (contender.key, security) in ports
            and contender.key not in status
        ]
        total = len(scenarios) * settings.rounds
        done = 0
        for round_no in range(settings.rounds):
            for security, conns, contender in alternate_pairs(scenarios, _pair, round_no):
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
                    "warmup": settings.warmup,
                    "check_control_id": contender.check_control_id,
                    "server_pid": servers[contender.key, security].proc.pid,
                }
                client = clients[contender.client, client_root(contender)]
                try:
                    client.send(command)
                    result = client.read(settings.duration + settings.request_timeout * 4 + 30)
                except (TimeoutError, EOFError, OSError) as exc:
                    errors[cell] = f"error: client {_failure(client, exc)}"
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
        for conns in all_levels(security):
            for contender in contenders:
                if conns not in contender.levels(security, settings):
                    continue
                cell = (contender.key, security, conns)
                row: dict[str, Any] = {
                    "security": security,
                    "connections": conns,
                    "contender": contender.key,
                    "label": contender.label,
                }
                if contender.baseline_of:
                    row["baseline_of"] = contender.baseline_of
                if contender.key in imported:
                    row["imported"] = imported[contender.key]
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
                    for side in ("client_cpu_us", "server_cpu_us"):
                        values = [r[side] for r in runs if r.get(side) is not None]
                        if values:
                            row[side] = _summary(values)
                elif row["status"] == "ok":
                    row["status"] = "error: no runs"
                results.append(row)
    add_baseline_ratios(results, ("security", "connections"))
    return {
        "settings": {**attrs.asdict(settings), "message_size": "1KB"},
        "results": results,
    }

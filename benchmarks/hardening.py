"""Issue 13 measurements: the memory budget under open giant frames, and large journal writes.

Not a test (the figures depend on the machine); run from the repository root::

    python -m benchmarks.hardening budget [--budget MIB|none] [--frames 50] [--frame-mib 4]
    python -m benchmarks.hardening journal [--large-mib 15] [--clients 4]

``budget``: a listener runs in a child process; ``--frames`` connections each
open a frame of ``--frame-mib`` MiB and hold it while a well-behaved client
sends messages. Prints the listener's peak RSS, connections shed, and the
good client's answer times.

``journal``: a listener with the SQLite journal in a temporary directory;
small-message clients send without pause while one client sends a large
message. Prints the small messages' answer times while the large one is
being committed, and overall.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from mllp_trio._config import FramingConfig, ServerConfig
from mllp_trio._server import MLLPServer
from mllp_trio.store import JournalProcessor, open_sqlite_store


def _message(control_id: str, extra: int = 0) -> bytes:
    head = (
        "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20240131120000||ADT^A01^ADT_A01|"
        f"{control_id}|P|2.5\rEVN|A01|20240131120000\rPID|1||12345^^^HOSP^MR||DOE^JOHN\r"
    ).encode("ascii")
    if extra:
        head += b"OBX|1|ED|PDF||" + b"A" * extra + b"\r"
    return head


async def _exchange(stream: trio.SocketStream, data: bytes) -> float:
    start = time.perf_counter()
    await stream.send_all(b"\x0b" + data + b"\x1c\r")
    reply = b""
    while not reply.endswith(b"\x1c\r"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError("closed")
        reply += chunk
    return time.perf_counter() - start


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"n={len(values)} p50={statistics.median(values) * 1000:.1f} ms "
        f"p99={p99 * 1000:.1f} ms max={ordered[-1] * 1000:.1f} ms"
    )


# --- budget -------------------------------------------------------------------


_SERVER = """
import functools, sys, trio
from mllp_trio._config import ServerConfig
from mllp_trio._server import MLLPServer
budget = None if sys.argv[1] == "none" else int(sys.argv[1])
async def main():
    server = MLLPServer(config=ServerConfig(memory_budget=budget, max_connections_per_peer=1000,
                                            read_timeout=600, idle_timeout=600))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
        print(listeners[0].socket.getsockname()[1], flush=True)
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                nursery.cancel_scope.cancel()
                return
            print(server.stats.shed_connections, server.buffered_bytes, flush=True)
trio.run(main)
"""


def _rss(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


async def _budget(args: argparse.Namespace) -> None:
    budget = "none" if args.budget == "none" else str(int(float(args.budget) * 1024 * 1024))
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, budget],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    port = int(proc.stdout.readline())
    rss_start = _rss(proc.pid)[0]
    frame = b"\x0b" + _message("BIG", args.frame_mib * 1024 * 1024)
    times: list[float] = []
    failures = 0
    try:
        async with trio.open_nursery() as nursery:

            async def attacker() -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                try:
                    await stream.send_all(frame)
                    await stream.receive_some(1)  # held until shed or the end
                except (trio.BrokenResourceError, OSError):
                    pass
                finally:
                    await trio.aclose_forcefully(stream)

            for _ in range(args.frames):
                nursery.start_soon(attacker)
            good = await trio.open_tcp_stream("127.0.0.1", port)
            deadline = time.perf_counter() + args.seconds
            i = 0
            while time.perf_counter() < deadline:
                try:
                    times.append(await _exchange(good, _message(f"G{i}")))
                except (EOFError, trio.BrokenResourceError):
                    failures += 1
                    good = await trio.open_tcp_stream("127.0.0.1", port)
                i += 1
                await trio.sleep(0.01)
            proc.stdin.write("\n")
            proc.stdin.flush()
            shed, buffered = proc.stdout.readline().split()
            rss_now, rss_peak = _rss(proc.pid)
            nursery.cancel_scope.cancel()
    finally:
        proc.stdin.close()
        proc.wait(10)
    print(
        f"budget={args.budget} MiB frames={args.frames}x{args.frame_mib} MiB: "
        f"listener RSS start {rss_start} MiB, peak {rss_peak} MiB, end {rss_now} MiB; "
        f"shed {shed}; buffered at the end {int(buffered) // (1024 * 1024)} MiB; "
        f"good client {_ms(times)}, failures {failures}"
    )


# --- journal ------------------------------------------------------------------


async def _journal(args: argparse.Namespace) -> None:
    large = _message("LARGE", args.large_mib * 1024 * 1024)
    config = ServerConfig(framing=FramingConfig(max_message_size=64 * 1024 * 1024))
    with tempfile.TemporaryDirectory() as tmp:
        async with open_sqlite_store(Path(tmp) / "journal") as store:
            server = MLLPServer(processor=JournalProcessor(store), config=config)
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    functools.partial(server.serve, 0, host="127.0.0.1")
                )
                port = listeners[0].socket.getsockname()[1]
                during: list[float] = []
                overall: list[float] = []
                window = [0.0, 0.0]  # when the large message was in flight
                stop = trio.Event()

                async def small(n: int) -> None:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    i = 0
                    while not stop.is_set():
                        sent = time.perf_counter()
                        took = await _exchange(stream, _message(f"S{n}-{i}"))
                        overall.append(took)
                        if window[0] and sent >= window[0] and (not window[1] or sent <= window[1]):
                            during.append(took)
                        i += 1

                for n in range(args.clients):
                    nursery.start_soon(small, n)
                await trio.sleep(0.5)
                big = await trio.open_tcp_stream("127.0.0.1", port)
                large_times = []
                for r in range(args.rounds):
                    window[:] = [time.perf_counter(), 0.0]
                    large_times.append(await _exchange(big, large.replace(b"LARGE", b"LARG%d" % r)))
                    window[1] = time.perf_counter()
                    await trio.sleep(0.3)
                stop.set()
                await trio.sleep(0.2)
                nursery.cancel_scope.cancel()
    print(
        f"journal, {args.large_mib} MiB message x{args.rounds}, {args.clients} small clients: "
        f"large {_ms(large_times)}; small while the large was in flight {_ms(during)}; "
        f"small overall {_ms(overall)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hardening", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("budget")
    b.add_argument("--budget", default="128", help="MiB, or none")
    b.add_argument("--frames", type=int, default=50)
    b.add_argument("--frame-mib", type=int, default=4)
    b.add_argument("--seconds", type=float, default=5.0)
    j = sub.add_parser("journal")
    j.add_argument("--large-mib", type=int, default=15)
    j.add_argument("--clients", type=int, default=4)
    j.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(_budget if args.what == "budget" else _journal, args)


if __name__ == "__main__":
    main()

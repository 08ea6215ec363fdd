"""Command line of the benchmark harness: pick a mode, run the sections, write the reports."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from .baseline import Baseline, BaselineError, open_baseline, resolve_ref
from .framing import FramingSettings, contenders, run_framing
from .memory import MemorySettings, run_memory
from .report import (
    baseline_comparison,
    client_comparison,
    environment,
    evaluate_targets,
    to_markdown,
    write_outputs,
)
from .wire import WIRE_CONTENDERS, WireSettings, run_wire

# (framing, wire, memory settings) per mode. "tiny" is the smoke test's size.
MODES: dict[str, tuple[FramingSettings, WireSettings, MemorySettings]] = {
    "tiny": (
        FramingSettings(
            sample_seconds=0.005, rounds=2, max_stream_bytes=1 << 20, linearity_messages=20
        ),
        WireSettings(duration=0.1, rounds=2, connections=(1, 8), request_timeout=1.5, warmup=0.02),
        MemorySettings(idle_connections=50, growth_messages=2_000),
    ),
    "quick": (
        FramingSettings(
            sample_seconds=0.04, rounds=3, max_stream_bytes=8 << 20, linearity_messages=100
        ),
        WireSettings(
            duration=0.15, rounds=3, connections=(1, 8, 64), request_timeout=1.5, warmup=0.05
        ),
        MemorySettings(idle_connections=1_000, growth_messages=20_000),
    ),
    "full": (
        # Sized so that --full --baseline 824b91f (the published run, every
        # mllp_trio contender twice) takes about 15 minutes on 2 CPUs.
        FramingSettings(
            sample_seconds=0.25, rounds=5, max_stream_bytes=64 << 20, linearity_messages=400
        ),
        WireSettings(
            duration=1.2, rounds=3, connections=(1, 8, 64), request_timeout=15.0, warmup=0.3
        ),
        MemorySettings(idle_connections=1_000, growth_messages=100_000),
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark mllp_trio's framing core and wire transport beside its peers.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="under a minute, for everyday use (default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="longer samples and more rounds, for published numbers",
    )
    mode.add_argument(
        "--tiny",
        dest="mode",
        action="store_const",
        const="tiny",
        help="smallest run that exercises everything (smoke test)",
    )
    parser.add_argument(
        "--only", choices=("framing", "wire", "memory"), help="run one section only"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results",
        help="directory for latest.json, latest.md, latest.png",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the mllp_trio contenders from this git commit (a temporary worktree), "
        "interleaved with this checkout's; the report adds a 'vs baseline' ratio",
    )
    parser.add_argument(
        "--contenders",
        metavar="KEY[,KEY...]",
        help="run only these contenders (keys as in the report; baseline twins follow theirs)",
    )
    parser.set_defaults(mode="quick")
    return parser


def _contender_keys(text: str | None) -> set[str] | None:
    if text is None:
        return None
    keys = {k.strip() for k in text.split(",") if k.strip()}
    known = {c.key for c in contenders()} | {c.key for c in WIRE_CONTENDERS}
    unknown = sorted(keys - known)
    if unknown or not keys:
        raise BaselineError(
            f"--contenders: unknown {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(sorted(known))}"
        )
    return keys


def _stop(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so that workers stop and the worktree goes.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table on stdout and progress on stderr."""
    args = _parser().parse_args(argv)
    try:
        only = _contender_keys(args.contenders)
        if args.baseline is not None:
            resolve_ref(args.baseline)  # fail before anything runs
    except BaselineError as exc:
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    try:
        return _run(args, only)
    except BaselineError as exc:
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, only: set[str] | None) -> int:
    framing_settings, wire_settings, memory_settings = MODES[args.mode]
    began = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {text}", file=sys.stderr, flush=True)

    data: dict[str, Any] = {
        "schema": 1,
        "mode": args.mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
    }
    with ExitStack() as stack:
        baseline: Baseline | None = None
        if args.baseline is not None:
            progress(f"checking out {args.baseline} in a temporary worktree")
            baseline = stack.enter_context(open_baseline(args.baseline))
            data["baseline"] = baseline.describe()
        if args.only in (None, "framing"):
            data["framing"] = run_framing(framing_settings, progress, baseline=baseline, only=only)
        if args.only in (None, "wire"):
            data["wire"] = run_wire(wire_settings, progress, baseline=baseline, only=only)
            data["wire"]["client_comparison"] = client_comparison(data["wire"])
        if args.only in (None, "memory"):
            data["memory"] = run_memory(memory_settings, progress, only=only)
    data["targets"] = evaluate_targets(data)
    if "baseline" in data:
        data["baseline_comparison"] = baseline_comparison(data)
    data["elapsed_seconds"] = round(time.perf_counter() - began, 1)
    paths = write_outputs(data, args.out)
    print(to_markdown(data))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

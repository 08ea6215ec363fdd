"""Command line of the benchmark harness: pick a mode, run the sections, write the reports."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .framing import FramingSettings, run_framing
from .report import environment, evaluate_targets, to_markdown, write_outputs
from .wire import WireSettings, run_wire

# (framing settings, wire settings) per mode. "tiny" is the smoke test's size.
MODES: dict[str, tuple[FramingSettings, WireSettings]] = {
    "tiny": (
        FramingSettings(
            sample_seconds=0.005, rounds=2, max_stream_bytes=1 << 20, linearity_messages=20
        ),
        WireSettings(duration=0.1, rounds=2, connections=(1, 8), request_timeout=1.5),
    ),
    "quick": (
        FramingSettings(
            sample_seconds=0.04, rounds=3, max_stream_bytes=8 << 20, linearity_messages=100
        ),
        WireSettings(duration=0.15, rounds=3, connections=(1, 8, 64), request_timeout=1.5),
    ),
    "full": (
        FramingSettings(
            sample_seconds=0.5, rounds=7, max_stream_bytes=64 << 20, linearity_messages=400
        ),
        WireSettings(duration=2.0, rounds=5, connections=(1, 8, 16, 64), request_timeout=15.0),
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
    parser.add_argument("--only", choices=("framing", "wire"), help="run one section only")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results",
        help="directory for latest.json, latest.md, latest.png",
    )
    parser.set_defaults(mode="quick")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table on stdout and progress on stderr."""
    args = _parser().parse_args(argv)
    framing_settings, wire_settings = MODES[args.mode]
    began = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {text}", file=sys.stderr, flush=True)

    data: dict[str, Any] = {
        "schema": 1,
        "mode": args.mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
    }
    if args.only in (None, "framing"):
        data["framing"] = run_framing(framing_settings, progress)
    if args.only in (None, "wire"):
        data["wire"] = run_wire(wire_settings, progress)
    data["targets"] = evaluate_targets(data)
    data["elapsed_seconds"] = round(time.perf_counter() - began, 1)
    paths = write_outputs(data, args.out)
    print(to_markdown(data))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

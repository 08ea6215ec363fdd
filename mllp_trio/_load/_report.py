"""A load result as a table for people, and as a latency chart (matplotlib, on request)."""

from __future__ import annotations

import math
from pathlib import Path

from mllp_trio._load._runner import PERCENTILES, LoadResult

__all__ = ["ChartUnavailable", "format_table", "write_chart"]


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed; the text says how to get it."""


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.3f}" if seconds < 0.01 else f"{seconds * 1000:.2f}"


def format_table(result: LoadResult, *, target: str = "") -> str:
    """The result as aligned text: rate, latency percentiles, errors by kind, client CPU."""
    hist = result.latency
    model = "closed" if result.model == "closed" else f"open at {result.target_rate:g} msg/s"
    rows: list[tuple[str, str]] = [
        ("target", target or "-"),
        ("model", f"{model}, {result.connections} connection(s)"),
        (
            "measured",
            f"{result.elapsed:.2f} s (warm-up of {result.warmup_sent:,} message(s) excluded)",
        ),
        ("sent", f"{result.sent:,}"),
        ("acknowledged", f"{result.ok:,} AA/CA of {result.answered:,} answered"),
        ("rate", f"{result.rate:,.1f} msg/s"),
    ]
    labels = [f"p{f * 100:g}" for f in PERCENTILES]
    values = hist.percentiles(PERCENTILES)
    latency = "  ".join(f"{label} {_ms(v)}" for label, v in zip(labels, values, strict=True))
    if hist.count:
        latency += f"  max {_ms(hist.max)}"
    rows.append(("latency ms", latency if hist.count else "- (no message answered)"))
    errors = result.errors
    rows.append(
        ("errors", ", ".join(f"{kind} {n:,}" for kind, n in errors.items()) if errors else "none")
    )
    if result.resends:
        rows.append(("resends", f"{result.resends:,} (after a NAK)"))
    per_message = result.cpu_per_message
    cpu = f"{result.cpu_seconds:.3f} s (user {result.cpu_user:.3f}, system {result.cpu_system:.3f})"
    if not math.isnan(per_message):
        cpu += f", {per_message * 1e6:.1f} µs per message"
    rows.append(("client CPU", cpu))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_chart(result: LoadResult, path: Path, *, title: str = "") -> None:
    """Draw the latency distribution and the latency over time as a PNG.

    Raises:
        ChartUnavailable: matplotlib is missing.
    """
    try:
        import matplotlib
    except ImportError:
        raise ChartUnavailable(
            "the latency chart needs matplotlib: pip install 'mllp-trio[bench]' "
            "(or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (spectrum, timeline) = plt.subplots(1, 2, figsize=(12, 4.5))
    points = result.latency.distribution()
    if points:
        # x: "one in N" (1 / (1 - fraction)), the usual latency spectrum view.
        floor = 0.5 / result.latency.count  # the maximum sits just right of the last sample
        xs = [1 / max(1 - fraction, floor) for _, fraction in points]
        ys = [latency * 1000 for latency, _ in points]
        spectrum.step(xs, ys, where="post")
        spectrum.set_xscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000]
        spectrum.set_xticks(ticks)
        spectrum.set_xticklabels(["0", "50", "90", "99", "99.9", "99.99"])
    spectrum.set_xlabel("percentile")
    spectrum.set_ylabel("latency (ms)")
    spectrum.set_title("latency by percentile")
    spectrum.grid(alpha=0.3)
    if result.series:
        seconds = [row[0] for row in result.series]
        timeline.bar(seconds, [row[1] for row in result.series], color="tab:blue", alpha=0.4)
        timeline.set_ylabel("answered per second", color="tab:blue")
        worst = timeline.twinx()
        worst.plot(seconds, [row[3] for row in result.series], color="tab:red", marker=".")
        worst.set_ylabel("max latency (ms)", color="tab:red")
    timeline.set_xlabel("second of the measurement")
    timeline.set_title("throughput and worst latency per second")
    fig.suptitle(title or f"{result.model} model, {result.connections} connection(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

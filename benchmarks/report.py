"""Turn benchmark results into the JSON file, the Markdown tables and the chart."""

from __future__ import annotations

import json
import os
import platform
import ssl
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "environment", "to_markdown", "write_chart", "write_outputs"]

_REPO = Path(__file__).resolve().parent.parent

#: (name, section, selector, numerator, denominator, target ratio). The
#: project's performance goals; the report prints measured beside target.
TARGETS: tuple[tuple[str, str, dict[str, Any], str, str, float], ...] = (
    (
        "framing decode 1KB in 64 KiB reads, vs python-hl7 readblock",
        "framing",
        {"operation": "decode", "size": "1KB", "chunk": 65536},
        "mllp_trio-mllp",
        "python-hl7",
        2.0,
    ),
    (
        "wire plain TCP, 8 connections, full listener vs python-hl7 raw asyncio",
        "wire",
        {"security": "plain", "connections": 8},
        "mllp_trio",
        "python-hl7-raw",
        1.2,
    ),
    (
        "wire mutual TLS, 8 connections, full listener vs python-hl7 raw asyncio",
        "wire",
        {"security": "mtls", "connections": 8},
        "mllp_trio",
        "python-hl7-raw",
        1.0,
    ),
    (
        "wire plain TCP, 8 connections, full listener vs python-hl7 parse-and-ACK",
        "wire",
        {"security": "plain", "connections": 8},
        "mllp_trio",
        "python-hl7-parse",
        10.0,
    ),
)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Describe the machine and software the numbers were measured on."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "openssl": ssl.OPENSSL_VERSION,
        "git_commit": _git_commit(),
        "versions": {
            name: _version(name)
            for name in ("mllp-trio", "trio", "hl7", "hl7apy", "attrs", "trustme", "matplotlib")
        },
    }


def _rows(data: dict[str, Any], section: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = data.get(section, {}).get("results", [])
    return rows


def _median(rows: list[dict[str, Any]], selector: dict[str, Any], contender: str) -> float | None:
    for row in rows:
        if row["contender"] == contender and all(row.get(k) == v for k, v in selector.items()):
            value = row.get("msgs_per_s", {}).get("median")
            return float(value) if value is not None else None
    return None


def evaluate_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target with its measured ratio (``None`` when not measured) and verdict."""
    out = []
    for name, section, selector, mine, theirs, target in TARGETS:
        rows = _rows(data, section)
        a, b = _median(rows, selector, mine), _median(rows, selector, theirs)
        measured = a / b if a is not None and b else None
        out.append(
            {
                "name": name,
                "target": target,
                "measured": measured,
                "met": None if measured is None else measured >= target,
            }
        )
    return out


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _spread(summary: dict[str, float], fmt: Any = _rate) -> str:
    return f"{fmt(summary['median'])} ({fmt(summary['min'])}-{fmt(summary['max'])})"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _framing_tables(framing: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for operation in ("decode", "encode"):
        header = ["size", "read", "contender", "msg/s median (min-max)", "MB/s", "vs floor"]
        header.append("vs python-hl7")
        rows = []
        for row in framing["results"]:
            if row["operation"] != operation:
                continue
            chunk = f"{row['chunk'] // 1024} KiB" if row["chunk"] else "-"
            if "msgs_per_s" in row:
                rows.append(
                    [
                        row["size"],
                        chunk,
                        row["contender"],
                        _spread(row["msgs_per_s"]),
                        f"{row['mb_per_s']['median']:.1f}",
                        _ratio(row.get("vs_floor")),
                        _ratio(row.get("vs_python_hl7")),
                    ]
                )
            else:
                rows.append([row["size"], chunk, row["contender"], row["status"], "", "", ""])
        lines += ["", f"### Framing core: {operation}", "", *_table(header, rows)]
    linearity = framing.get("linearity", [])
    if linearity:
        rows = []
        for item in linearity:
            if item.get("status") == "ok":
                rows.append(
                    [
                        item["contender"],
                        str(item["messages"]),
                        f"{item['seconds_n']:.3f}",
                        f"{item['seconds_2n']:.3f}",
                        f"{item['ratio']:.2f}",
                    ]
                )
            else:
                rows.append([item["contender"], item.get("status", "?"), "", "", ""])
        lines += [
            "",
            "### Byte-at-a-time linearity (1 KB messages fed one byte per call; ~2 is linear)",
            "",
            *_table(["contender", "N", "seconds N", "seconds 2N", "ratio"], rows),
        ]
    return lines


def _wire_tables(wire: dict[str, Any]) -> list[str]:
    header = ["security", "conns", "contender", "msg/s median (min-max)", "p50 ms", "p99 ms"]
    header += ["vs python-hl7 raw", "errors"]
    baseline = {
        (r["security"], r["connections"]): r["msgs_per_s"]["median"]
        for r in wire["results"]
        if r["contender"] == "python-hl7-raw" and "msgs_per_s" in r
    }
    rows = []
    for row in wire["results"]:
        if "msgs_per_s" not in row:
            rows.append(
                [row["security"], str(row["connections"]), row["contender"], row["status"]]
                + [""] * 4
            )
            continue
        base = baseline.get((row["security"], row["connections"]))
        rows.append(
            [
                row["security"],
                str(row["connections"]),
                row["contender"],
                _spread(row["msgs_per_s"]),
                f"{row['p50_ms']['median']:.2f}",
                f"{row['p99_ms']['median']:.2f}",
                _ratio(row["msgs_per_s"]["median"] / base if base else None),
                str(row["errors"]),
            ]
        )
    return ["", "### On the wire (1 KB ADT^A01, loopback)", "", *_table(header, rows)]


def to_markdown(data: dict[str, Any]) -> str:
    """Render the results as Markdown: environment, targets, framing and wire tables."""
    env = data["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [
        f"Benchmark mode `{data['mode']}`, {data['started']}, commit "
        f"`{env['git_commit'] or 'none'}`; Python {env['python']} on {env['platform']}, "
        f"{env['cpu_count']} CPUs; {versions}; {env['openssl']}.",
        "",
        "Medians over interleaved rounds, (min-max) in brackets. Ratios compare median messages/s.",
        "",
        "### Targets",
        "",
    ]
    rows = [
        [
            t["name"],
            f">= {t['target']:g}x",
            _ratio(t["measured"]),
            {None: "not measured", True: "met", False: "NOT met"}[t["met"]],
        ]
        for t in data["targets"]
    ]
    lines += _table(["target", "goal", "measured", "verdict"], rows)
    if "framing" in data:
        lines += _framing_tables(data["framing"])
    if "wire" in data:
        lines += _wire_tables(data["wire"])
    return "\n".join(lines) + "\n"


def write_chart(data: dict[str, Any], path: Path) -> None:
    """Draw messages/s per scenario (framing decode, wire) as grouped bars, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "framing" in data:
        rows = [r for r in data["framing"]["results"] if r["operation"] == "decode"]
        panels.append(("Framing decode (msg/s)", rows, ("size", "chunk")))
    if "wire" in data:
        panels.append(
            ("Wire request/response (msg/s)", data["wire"]["results"], ("security", "connections"))
        )
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 4.5 * len(panels)), squeeze=False)
    for ax, (title, rows, keys) in zip(axes[:, 0], panels, strict=True):
        scenarios: list[tuple[Any, ...]] = []
        names: list[str] = []
        for r in rows:
            scenario = tuple(r[k] for k in keys)
            if scenario not in scenarios:
                scenarios.append(scenario)
            if r["contender"] not in names:
                names.append(r["contender"])
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            xs, ys = [], []
            for j, scenario in enumerate(scenarios):
                for r in rows:
                    here = r["contender"] == name and tuple(r[k] for k in keys) == scenario
                    if here and "msgs_per_s" in r:
                        xs.append(j + i * width)
                        ys.append(r["msgs_per_s"]["median"])
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scenarios))])
        ax.set_xticklabels(
            [
                " ".join(
                    f"{v // 1024}KiB"
                    if k == "chunk" and v
                    else f"c={v}"
                    if k == "connections"
                    else str(v)
                    for k, v in zip(keys, s, strict=True)
                )
                for s in scenarios
            ],
            fontsize=8,
        )
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=3)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``latest.json``, ``latest.md`` and ``latest.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "latest.json",
        "markdown": out_dir / "latest.md",
        "chart": out_dir / "latest.png",
    }
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    tmp.replace(paths["json"])
    paths["markdown"].write_text(to_markdown(data))
    write_chart(data, paths["chart"])
    return paths

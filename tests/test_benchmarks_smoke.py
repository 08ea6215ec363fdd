"""Smoke test of the benchmark harness: the quick mode runs and writes well-formed reports.

Never asserts on speed: only that every contender was run (or is marked
unavailable for a reason) and that the JSON, Markdown and PNG are well formed.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.framing import CHUNK_SIZES, contenders, mllp_trio_missing
from benchmarks.messages import SIZES
from benchmarks.report import TARGETS
from benchmarks.wire import SECURITIES, WIRE_CONTENDERS

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
PEERS_AND_FLOOR = {"python-hl7", "hl7apy", "floor"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def _load(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return data


def _check_summary(summary: dict[str, float]) -> None:
    assert summary["min"] <= summary["median"] <= summary["max"]
    assert summary["min"] > 0


def test_json_has_environment_and_targets(run: tuple[Path, str]) -> None:
    data = _load(run[0])
    assert data["mode"] == "quick"
    env = data["environment"]
    assert env["python"] == sys.version.split()[0]
    assert isinstance(env["cpu_count"], int)
    assert "git_commit" in env
    assert env["versions"]["hl7"] and env["versions"]["hl7apy"]
    assert [t["name"] for t in data["targets"]] == [t[0] for t in TARGETS]
    for target in data["targets"]:
        assert target["met"] is None or target["met"] == (target["measured"] >= target["target"])


def test_every_framing_contender_present(run: tuple[Path, str]) -> None:
    framing = _load(run[0])["framing"]
    rows = {(r["operation"], r["size"], r["chunk"], r["contender"]): r for r in framing["results"]}
    for contender in contenders():
        for size in SIZES:
            cells: list[tuple[str, str, int | None]] = [
                ("decode", size, chunk) for chunk in CHUNK_SIZES
            ]
            if contender.encode is not None:
                cells.append(("encode", size, None))
            for cell in cells:
                row = rows[(*cell, contender.key)]
                if contender.key in PEERS_AND_FLOOR or contender.missing is None:
                    assert row["status"] == "ok", (cell, contender.key, row["status"])
                    _check_summary(row["msgs_per_s"])
                    _check_summary(row["mb_per_s"])
                    assert row["vs_floor"] > 0 and row["vs_python_hl7"] > 0
                else:
                    assert row["status"].startswith("unavailable")
    by_key = {item["contender"]: item for item in framing["linearity"]}
    assert by_key["floor"]["status"] == "ok" and by_key["floor"]["ratio"] > 0
    expected = "ok" if mllp_trio_missing("MLLPConnection") is None else "unavailable"
    assert by_key["mllp_trio-mllp"]["status"] == expected


def test_every_wire_contender_present(run: tuple[Path, str]) -> None:
    wire = _load(run[0])["wire"]
    rows = {(r["security"], r["connections"], r["contender"]): r for r in wire["results"]}
    api_missing = mllp_trio_missing("serve_mllp", "open_mllp_connection")
    for contender in WIRE_CONTENDERS:
        for security in SECURITIES:
            for conns in wire["settings"]["connections"]:
                key = (security, conns, contender.key)
                if security not in contender.securities:
                    assert key not in rows
                    continue
                row = rows[key]
                if contender.needs_mllp_trio and api_missing:
                    assert row["status"].startswith("unavailable")
                    continue
                assert row["status"] == "ok", (key, row["status"])
                assert row["runs"] == wire["settings"]["rounds"]
                assert row["messages"] > 0
                _check_summary(row["msgs_per_s"])
                assert row["p50_ms"]["median"] <= row["p99_ms"]["median"]


def test_markdown_and_terminal_table(run: tuple[Path, str]) -> None:
    out, stdout = run
    markdown = (out / "latest.md").read_text()
    assert markdown in stdout  # the terminal shows the same table
    for heading in ("### Targets", "### Framing core: decode", "### On the wire"):
        assert heading in markdown
    for name in [c.key for c in contenders()] + [c.key for c in WIRE_CONTENDERS]:
        assert f"| {name} |" in markdown
    for target in TARGETS:
        assert target[0] in markdown
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in table_lines)


def test_png_chart(run: tuple[Path, str]) -> None:
    png = (run[0] / "latest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100

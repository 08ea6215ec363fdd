"""Smoke test of the benchmark harness: the quick mode runs and writes well-formed reports.

Never asserts on speed: only that every contender was run (or is marked
unavailable for a reason), that every target has a verdict, and that the JSON,
Markdown and PNG are well formed.
The ``--baseline`` tests check that a baseline contender really imported the
other commit's code (from its temporary worktree) and that the worktree goes.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.baseline import add_baseline_ratios, alternate_pairs
from benchmarks.framing import CHUNK_SIZES, contenders, mllp_trio_missing
from benchmarks.memory import IDLE_SERVERS, MemorySettings, judge_growth
from benchmarks.messages import SIZES
from benchmarks.report import TARGET_BASELINE, TARGETS, baseline_comparison, evaluate_targets
from benchmarks.wire import MLLP_TRIO_API, SECURITIES, WIRE_CONTENDERS, WireSettings

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
PEERS_AND_FLOOR = {"python-hl7", "hl7apy", "floor"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--out", str(out)],
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
    assert data["mode"] == "tiny"
    env = data["environment"]
    assert env["python"] == sys.version.split()[0]
    assert isinstance(env["cpu_count"], int)
    assert "git_commit" in env
    assert env["versions"]["hl7"] and env["versions"]["hl7apy"]
    assert [t["name"] for t in data["targets"]] == [t.name for t in TARGETS]
    for target in data["targets"]:
        if target["met"] is None or target["metric"] == "verdict":
            continue
        if target["lower_is_better"]:
            assert target["met"] == (target["measured"] <= target["goal"])
        else:
            assert target["met"] == (target["measured"] >= target["goal"])
    by_name = {t["name"]: t for t in data["targets"]}
    # No --baseline: the "2x today's" targets say what they need.
    durable = [t for t in TARGETS if t.theirs == "@baseline"]
    assert durable and all(
        by_name[t.name]["verdict"] == f"needs --baseline {TARGET_BASELINE}" for t in durable
    )
    # Every other target was measured in the tiny run.
    for target in TARGETS:
        if target.theirs != "@baseline":
            assert by_name[target.name]["verdict"] != "not measured", target.name


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
    api_missing = mllp_trio_missing(*MLLP_TRIO_API)
    settings = WireSettings(connections=tuple(wire["settings"]["connections"]))
    for contender in WIRE_CONTENDERS:
        for security in SECURITIES:
            for conns in (*settings.connections, 32):
                key = (security, conns, contender.key)
                if conns not in contender.levels(security, settings):
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
                # CPU per message of both sides (Linux: /proc for the server).
                assert row["client_cpu_us"]["median"] > 0
                if sys.platform == "linux":
                    assert row["server_cpu_us"]["median"] > 0


def test_markdown_and_terminal_table(run: tuple[Path, str]) -> None:
    out, stdout = run
    markdown = (out / "latest.md").read_text()
    assert markdown in stdout  # the terminal shows the same table
    for heading in ("### Targets", "### Framing core: decode", "### On the wire"):
        assert heading in markdown
    for name in [c.key for c in contenders()] + [c.key for c in WIRE_CONTENDERS]:
        assert f"| {name} |" in markdown
    for target in TARGETS:
        assert target.name in markdown
    for heading in ("### Memory: server RSS per idle connection", "### Memory: server RSS over"):
        assert heading in markdown
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in table_lines)


def test_memory_section(run: tuple[Path, str]) -> None:
    memory = _load(run[0])["memory"]
    idle = {(r["contender"], r["security"]): r for r in memory["idle"]}
    for key, _kind, securities in IDLE_SERVERS:
        for security in securities:
            row = idle[key, security]
            assert row["status"] == "ok", row["status"]
            assert row["connections"] == memory["settings"]["idle_connections"]
            assert row["rss_before_kib"] > 0 and row["rss_after_kib"] > 0
    (growth,) = memory["growth"]
    assert growth["status"] == "ok", growth["status"]
    assert growth["messages"] >= memory["settings"]["growth_messages"]
    assert growth["verdict"] in ("no growth", "grows")
    assert growth["start_kib"] > 0 and growth["peak_kib"] >= growth["end_kib"]


def test_growth_verdict() -> None:
    settings = MemorySettings(tolerance=0.02, tolerance_kib=100)
    flat = [10_000] * 40
    assert judge_growth(flat, settings)["verdict"] == "no growth"
    # A rise in the last quarter beyond 2 %: growth, whatever the first quarter did.
    rising = [20_000] * 10 + [10_000] * 20 + [10_500] * 10
    assert judge_growth(rising, settings)["verdict"] == "grows"
    assert judge_growth([1, 2, 3], settings)["verdict"] == "too few samples"


def _wire_row(contender: str, conns: int, rate: float, cpu: float) -> dict[str, Any]:
    return {
        "security": "plain",
        "connections": conns,
        "contender": contender,
        "msgs_per_s": {"median": rate, "min": rate, "max": rate},
        "server_cpu_us": {"median": cpu, "min": cpu, "max": cpu},
    }


def test_targets_direction_and_baseline_twin() -> None:
    rows = [
        _wire_row("mllp_trio", 8, 1000.0, 30.0),
        _wire_row("python-hl7-raw", 8, 1000.0, 20.0),
        _wire_row("mllp_trio-durable", 8, 500.0, 50.0),
        _wire_row(f"mllp_trio-durable@{TARGET_BASELINE}", 8, 200.0, 90.0),
        _wire_row("mllp_trio", 32, 1000.0, 30.0),
        _wire_row("mllp_trio-durable", 32, 300.0, 70.0),
    ]
    data: dict[str, Any] = {"wire": {"results": rows}}
    by_name = {t["name"]: t for t in evaluate_targets(data)}
    plain = by_name["wire plain, 8 connections: server CPU/msg, mllp_trio / python-hl7-raw"]
    assert plain["measured"] == 1.5 and plain["met"] is True  # <= 1.5x: lower is better
    assert plain["stretch_met"] is False
    cpu8 = by_name["durable, 8 connections: server CPU/msg, mllp_trio-durable / mllp_trio"]
    assert abs(cpu8["measured"] - 50 / 30) < 1e-9 and cpu8["met"] is True
    cpu32 = by_name["durable, 32 connections: server CPU/msg, mllp_trio-durable / mllp_trio"]
    assert cpu32["met"] is False
    twin = f"durable, 8 connections: msg/s, mllp_trio-durable / itself at {TARGET_BASELINE}"
    assert by_name[twin]["verdict"] == f"needs --baseline {TARGET_BASELINE}"
    data["baseline"] = {
        "ref": TARGET_BASELINE,
        "commit": TARGET_BASELINE + "0" * 33,
        "short": TARGET_BASELINE,
    }
    by_name = {t["name"]: t for t in evaluate_targets(data)}
    assert by_name[twin]["measured"] == 2.5 and by_name[twin]["met"] is True
    # Another baseline commit is not the one the target is about.
    data["baseline"] = {"ref": "HEAD", "commit": "0" * 40, "short": "0000000"}
    by_name = {t["name"]: t for t in evaluate_targets(data)}
    assert by_name[twin]["verdict"] == f"needs --baseline {TARGET_BASELINE}"


def test_png_chart(run: tuple[Path, str]) -> None:
    png = (run[0] / "latest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100


# ------------------------------------------------------------------ --baseline


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _git_head() -> str | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def test_baseline_with_an_unknown_ref_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _bench("--tiny", "--baseline", "no-such-ref-d41d8cd9", "--out", str(out), timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no-such-ref-d41d8cd9" in lines[0] and "not a commit" in lines[0]
    assert not out.exists()  # failed before measuring anything


def test_unknown_contender_is_a_one_line_error(tmp_path: Path) -> None:
    done = _bench("--tiny", "--contenders", "mllp_trio,nginx", "--out", str(tmp_path), timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "nginx" in done.stderr and "Traceback" not in done.stderr


def test_baseline_ratio_pairs_twins_of_the_same_scenario() -> None:
    def row(contender: str, conns: int, median: float, of: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {
            "security": "plain",
            "connections": conns,
            "contender": contender,
            "msgs_per_s": {"median": median, "min": median, "max": median},
        }
        if of:
            found["baseline_of"] = of
        return found

    rows = [
        row("mllp_trio", 1, 300.0),
        row("mllp_trio@abc", 1, 200.0, of="mllp_trio"),
        row("mllp_trio", 8, 100.0),
        row("mllp_trio@abc", 8, 400.0, of="mllp_trio"),
        row("python-hl7-raw", 1, 50.0),
    ]
    add_baseline_ratios(rows, ("security", "connections"))
    assert [r.get("vs_baseline") for r in rows] == [1.5, None, 0.25, None, None]
    comparison = baseline_comparison({"wire": {"results": rows}})
    assert [p["ratio"] for p in comparison[0]["pairs"]] == [1.5, 0.25]
    assert comparison[0]["pairs"][1]["old"] == 400.0
    assert abs(comparison[0]["geomean"] - (1.5 * 0.25) ** 0.5) < 1e-12


def test_twins_swap_order_on_odd_rounds() -> None:
    items = ["a", "a@x", "b", "c", "c@x", "d@x"]

    def is_pair(first: str, second: str) -> bool:
        return second == first + "@x"

    assert alternate_pairs(items, is_pair, 0) == items
    # d@x has no contender before it (say, unavailable here): it stays put.
    assert alternate_pairs(items, is_pair, 1) == ["a@x", "a", "b", "c@x", "c", "d@x"]
    assert alternate_pairs(items, is_pair, 2) == items


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if _git_head() is None:
        pytest.skip("not a git checkout")
    out = tmp_path_factory.mktemp("bench-baseline")
    # One framing and one wire contender keep it short; --baseline adds their twins.
    done = _bench(
        "--tiny",
        "--contenders",
        "mllp_trio-mllp,mllp_trio",
        "--baseline",
        "HEAD",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _load(out)


def _under(path: str | None, root: str) -> bool:
    return path is not None and os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


def test_baseline_contenders_ran_the_worktree_code(baseline_run: dict[str, Any]) -> None:
    data = baseline_run
    base = data["baseline"]
    assert base["ref"] == "HEAD" and base["commit"].startswith(base["short"])
    worktree = base["worktree"]
    wire = {(r["security"], r["connections"], r["contender"]): r for r in data["wire"]["results"]}
    twin = "mllp_trio@" + base["short"]
    for security in SECURITIES:
        for conns in data["wire"]["settings"]["connections"]:
            old = wire[security, conns, twin]
            assert old["baseline_of"] == "mllp_trio"
            assert old["status"] == "ok", old["status"]
            # The old worker serving with the old mllp_trio, from the worktree;
            # the client is the load generator, the same instrument for both
            # twins, so it is this checkout's.
            assert _under(old["imported"]["server"]["mllp_trio"], worktree)
            assert _under(old["imported"]["server"]["module"], worktree)
            assert _under(old["imported"]["client"]["mllp_trio"], str(REPO))
            assert _under(old["imported"]["client"]["module"], str(REPO))
            new = wire[security, conns, "mllp_trio"]
            if new["status"] == "ok":  # this checkout's API may be mid-change
                assert _under(new["imported"]["server"]["mllp_trio"], str(REPO))
                assert new["vs_baseline"] > 0
    framing = [r for r in data["framing"]["results"] if r.get("baseline_of")]
    assert {r["contender"] for r in framing} == {"mllp_trio-mllp@" + base["short"]}
    for row in framing:
        assert row["status"] == "ok", row["status"]
        # This checkout's measuring code, the worktree's mllp_trio.
        assert _under(row["imported"]["mllp_trio"], worktree)
        assert _under(row["imported"]["module"], str(REPO))
    assert {s["section"] for s in data["baseline_comparison"]} == {"framing", "wire"}


def test_baseline_worktree_is_removed(baseline_run: dict[str, Any]) -> None:
    worktree = baseline_run["baseline"]["worktree"]
    assert not Path(worktree).exists()
    listed = subprocess.run(
        ["git", "worktree", "list", "--porcelain"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert worktree not in listed.stdout

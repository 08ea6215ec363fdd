"""``mllp-trio store prune --older-than`` and ``store stats``; the retention task."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from mllp_trio._cli import run
from mllp_trio._service import ServiceConfig, ServiceMonitor
from mllp_trio.store import InboundRecord, open_sqlite_store

SECRET = "SECRETPATIENT^NAME"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The command sets up logging to this test's captured stderr: undo it after."""
    root, ours = logging.getLogger(), logging.getLogger("mllp_trio")
    saved = (root.handlers[:], root.level, ours.level)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])


def rec(control_id: str, days_ago: float) -> InboundRecord:
    data = f"MSH|^~\\&|LAB|N|E|M|2024||ADT^A01|{control_id}|P|2.5\rPID|1||1||{SECRET}\r"
    return InboundRecord(
        data=data.encode(),
        received_at=datetime.now(UTC) - timedelta(days=days_ago),
        peer="127.0.0.1:1",
        control_id=control_id,
        sending_application="LAB",
        sending_facility="N",
    )


async def fill(path: Path) -> None:
    async with open_sqlite_store(path) as store:
        for cid, days, delivered in [("OLD", 40, True), ("KEEP", 40, False), ("NEW", 1, True)]:
            result = await store.commit_inbound(rec(cid, days))
            if delivered:
                await store.mark_delivered(result.message_id)


def test_prune_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "j"
    trio.run(fill, journal)
    assert run(["store", "--store", str(journal), "stats"]) == 0
    out = capsys.readouterr().out
    assert "inbound delivered:   2" in out and "inbound undelivered: 1" in out
    assert "(40 days ago)" in out and SECRET not in out

    assert run(["store", "--store", str(journal), "prune", "--older-than", "30d"]) == 0
    assert capsys.readouterr().out == "pruned 1 delivered message(s) older than 30d\n"
    # Shorter than the duplicate window (7 days): the window wins, says so.
    assert run(["store", "prune", "--store", str(journal), "--older-than", "1h"]) == 0
    assert "older than 7d (the duplicate window is longer)" in capsys.readouterr().out

    assert run(["store", "--store", str(journal), "stats"]) == 0
    out = capsys.readouterr().out
    assert "inbound delivered:   1" in out and "inbound undelivered: 1" in out


@pytest.mark.parametrize("value", ["30", "0d", "-1d", "thirty days"])
def test_prune_refuses_a_bad_duration_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert run(["store", "--store", str(tmp_path), "prune", "--older-than", value]) == 2
    err = capsys.readouterr().err
    assert "--older-than" in err and "30d" in err


def test_listen_refuses_a_bad_metrics_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["listen", "--plaintext", "--metrics", "localhost:http"]) == 2
    assert "--metrics" in capsys.readouterr().err


async def test_retention_task_prunes_in_the_background(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mllp_trio")
    await fill(tmp_path / "j")
    config = ServiceConfig(retention=timedelta(days=30), retention_interval=3600)
    async with open_sqlite_store(tmp_path / "j") as store:
        monitor = ServiceMonitor(config, store=store)
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            # The first pass runs at start, the next an interval later.
            with trio.fail_after(60):  # a guard against a hang, not a measurement
                while await store.count() != 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert {m.control_id for m in await store.list_messages()} == {"KEEP", "NEW"}
    assert "retention: pruned 1 delivered message(s)" in caplog.text

"""Journal at rest: retention that keeps what is still needed, private files, store stats."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mllp_trio.store import InboundRecord, SQLiteStoreConfig, open_sqlite_store
from mllp_trio.store._sqlite import DB_FILENAME

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def rec(control_id: str, *, days_ago: float) -> InboundRecord:
    data = f"MSH|^~\\&|LAB|NORTH|EHR|MAIN|20240501||ADT^A01|{control_id}|P|2.5\r"
    return InboundRecord(
        data=data.encode(),
        received_at=NOW - timedelta(days=days_ago),
        peer="127.0.0.1:40000",
        control_id=control_id,
        sending_application="LAB",
        sending_facility="NORTH",
    )


async def test_retention_prunes_only_delivered_entries_outside_both_windows(
    tmp_path: Path,
) -> None:
    config = SQLiteStoreConfig(duplicate_window=timedelta(days=7))
    async with open_sqlite_store(tmp_path, config=config) as store:
        ids = {}
        for name, days, delivered in [
            ("OLD-DELIVERED", 40, True),
            ("OLD-UNDELIVERED", 40, False),  # never pruned, whatever its age
            ("RECENT-DELIVERED", 20, True),  # inside the 30-day retention
            ("WINDOW-DELIVERED", 3, True),  # inside the duplicate window
        ]:
            result = await store.commit_inbound(rec(name, days_ago=days))
            ids[name] = result.message_id
            if delivered:
                await store.mark_delivered(result.message_id)
        sent = await store.enqueue("d", b"m1")
        dead = await store.enqueue("d", b"m2")
        await store.mark_sent(sent)
        await store.mark_dead(dead, "refused")

        assert await store.prune(now=NOW, older_than=timedelta(days=30)) == 1
        left = {m.control_id for m in await store.list_messages()}
        assert left == {"OLD-UNDELIVERED", "RECENT-DELIVERED", "WINDOW-DELIVERED"}

        # A retention shorter than the duplicate window is stretched to it:
        # the entry 3 days old still answers its duplicate.
        assert await store.prune(now=NOW, older_than=timedelta(days=1)) == 1
        left = {m.control_id for m in await store.list_messages()}
        assert left == {"OLD-UNDELIVERED", "WINDOW-DELIVERED"}
        again = await store.commit_inbound(rec("WINDOW-DELIVERED", days_ago=0))
        assert again.duplicate and again.message_id == ids["WINDOW-DELIVERED"]
        # The sent message went with the first prune only if it was old enough:
        # it was sent now, so it stays; the dead letter stays whatever happens.
        stats = await store.outbound_stats()
        assert (stats.delivered, stats.dead) == (1, 1)


async def test_no_pruning_when_duplicates_are_detected_forever(tmp_path: Path) -> None:
    config = SQLiteStoreConfig(duplicate_window=None)
    async with open_sqlite_store(tmp_path, config=config) as store:
        result = await store.commit_inbound(rec("A", days_ago=400))
        await store.mark_delivered(result.message_id)
        assert await store.prune(now=NOW, older_than=timedelta(days=30)) == 0
        assert await store.count() == 1


async def test_journal_stats_counts_by_state_and_oldest(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        empty = await store.journal_stats()
        assert (empty.inbound_delivered, empty.inbound_undelivered) == (0, 0)
        assert empty.oldest_entry is None
        a = await store.commit_inbound(rec("A", days_ago=5))
        await store.commit_inbound(rec("B", days_ago=2))
        await store.mark_delivered(a.message_id)
        queued = await store.enqueue("d", b"x")
        await store.mark_attempt(queued, "refused", NOW)
        stats = await store.journal_stats()
        assert (stats.inbound_delivered, stats.inbound_undelivered) == (1, 1)
        assert stats.oldest_entry == NOW - timedelta(days=5)
        assert stats.oldest_undelivered == NOW - timedelta(days=2)
        assert stats.outbound == {"pending": 1, "sent": 0, "dead": 0}
        assert stats.outbound_attempts == 1
        assert stats.size_bytes >= (tmp_path / DB_FILENAME).stat().st_size > 0


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
async def test_new_store_is_private_under_umask_000(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    async with open_sqlite_store(directory) as store:
        await store.commit_inbound(rec("A", days_ago=0))
        files = sorted(p.name for p in directory.iterdir())
        assert {DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"} <= set(files)
        assert {p.name: mode(p) for p in directory.iterdir()} == dict.fromkeys(files, 0o600)
    assert mode(directory) == 0o700


@pytest.mark.usefixtures("open_umask")
async def test_existing_loose_store_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mllp_trio")
    directory = tmp_path / "journal"
    async with open_sqlite_store(directory) as store:
        await store.commit_inbound(rec("A", days_ago=0))
    os.chmod(directory, 0o755)
    os.chmod(directory / DB_FILENAME, 0o644)
    async with open_sqlite_store(directory) as store:
        assert await store.count() == 1
        assert mode(directory) == 0o700
        assert {p.name: mode(p) for p in directory.iterdir()} == dict.fromkeys(
            (p.name for p in directory.iterdir()), 0o600
        )
    assert "was mode 0755" in caplog.text and "set to 0700" in caplog.text

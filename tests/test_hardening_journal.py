"""Issue 13: a large message does not hold up the journal's group commits of small ones."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
import trio

from mllp_trio.store import _sqlite
from mllp_trio.store._base import InboundRecord
from mllp_trio.store._sqlite import DB_FILENAME, SQLiteStore, open_sqlite_store

from .hl7_samples import make_message

PART = 1000


@pytest.fixture(autouse=True)
def _small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Parts of 1000 bytes: a 12 kB message stands for a 15 MB one.
    monkeypatch.setattr(_sqlite, "_PART_SIZE", PART)


def record(control_id: str, size: int = 0) -> InboundRecord:
    data = make_message(control_id=control_id)
    if size:
        data += b"OBX|1|ED|PDF||" + bytes(range(65, 91)) * (size // 26) + b"\r"
    return InboundRecord(data=data, peer="test", control_id=control_id, sending_application="LAB")


async def test_small_commits_do_not_wait_for_a_large_one(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        large = record("LARGE", 12 * PART)
        done_at: dict[str, int] = {}  # control id -> transactions when its commit returned

        async def commit(rec: InboundRecord) -> None:
            await store.commit_inbound(rec)
            done_at[rec.control_id] = store.stats.transactions

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit, large)
            for i in range(5):
                nursery.start_soon(commit, record(f"S{i}"))
        small = [done_at[f"S{i}"] for i in range(5)]
        # The small ones rode the first group commits; the large one took one
        # transaction per part after them.
        assert max(small) <= 2
        assert done_at["LARGE"] >= max(small) + 12
        await check_large_entry(store, large)


async def check_large_entry(store: SQLiteStore, large: InboundRecord) -> None:
    (entry,) = [m for m in await store.fetch_undelivered(100) if m.info.control_id == "LARGE"]
    assert entry.data == large.data
    assert entry.info.size == len(large.data)
    assert await store.export_message(entry.message_id) == large.data
    # Saving its ACK and marking it delivered leave the payload whole.
    await store.save_ack(entry.message_id, b"MSH|ACK", delivered=True)
    assert await store.export_message(entry.message_id) == large.data
    # A resend is a duplicate, found before any part is written again.
    before = store.stats.transactions
    again = await store.commit_inbound(large)
    assert again.duplicate and again.message_id == entry.message_id
    assert again.ack == b"MSH|ACK"
    assert store.stats.transactions == before


def parts(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        (count,) = conn.execute("SELECT count(*) FROM inbound_part").fetchone()
    return int(count)


async def test_parts_go_with_their_entry_and_orphans_on_open(tmp_path: Path) -> None:
    db = tmp_path / DB_FILENAME
    async with open_sqlite_store(tmp_path) as store:
        result = await store.commit_inbound(record("L1", 5 * PART))
        await store.commit_inbound(record("L2", 5 * PART))
    assert parts(db) >= 12
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        # A commit cut short between its parts leaves parts no entry refers to.
        conn.execute("INSERT INTO inbound_part (stage, seq, data) VALUES (x'ff', 0, x'00')")
        conn.execute("DELETE FROM inbound WHERE id = ?", (result.message_id,))
    async with open_sqlite_store(tmp_path) as store:
        (left,) = await store.fetch_undelivered(100)
        assert left.info.control_id == "L2"
        assert left.data == record("L2", 5 * PART).data
    assert parts(db) == 6  # L2's alone


async def test_a_store_without_large_messages_has_no_parts_table(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        await store.commit_inbound(record("SMALL"))
        (entry,) = await store.fetch_undelivered(10)
        assert entry.data == record("SMALL").data
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILENAME)) as conn, conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "inbound_part" not in names


async def test_large_message_committed_delivered_with_its_answer(tmp_path: Path) -> None:
    # The listener without a handler journals the answer and the delivery
    # with the message; for a large one, with its last part's transaction.
    async with open_sqlite_store(tmp_path) as store:
        large = record("LARGE", 5 * PART)
        result = await store.commit_inbound(large, ack=b"MSH|ACK", delivered=True)
        assert (result.duplicate, result.delivered) == (False, True)
        assert await store.fetch_undelivered() == []
        assert await store.export_message(result.message_id) == large.data
        again = await store.commit_inbound(large)
        assert (again.duplicate, again.ack, again.delivered) == (True, b"MSH|ACK", True)

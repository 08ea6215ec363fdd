"""The journal records of the folder transport and of journal consumers (SQLite store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from mllp_trio.store import InboundRecord, open_sqlite_store
from mllp_trio.store._base import FileIdentity, FileMessageResult, FileStatus
from mllp_trio.store._files import atomic_write, free_name, move_file

IDENTITY = FileIdentity(inbox="/in", name="a.hl7", size=10, mtime_ns=5, sha256="ab" * 32)


async def test_file_identity_and_progress_survive_a_reopen(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        first = await store.open_file(IDENTITY)
        assert first.created and first.next_seq == 0 and first.status is FileStatus.ACTIVE
        await store.record_file_results(
            first.file_id,
            [
                FileMessageResult(seq=0, control_id="A", code="AA", ack=b"MSA|AA|A\r"),
                FileMessageResult(seq=1, control_id="B", code="AE", ack=b"MSA|AE|B\r"),
            ],
        )
        # Recorded again (a resume that re-ran them): not counted twice.
        await store.record_file_results(
            first.file_id, [FileMessageResult(seq=1, control_id="B", code="AE")]
        )
    async with open_sqlite_store(tmp_path) as store:
        again = await store.open_file(IDENTITY)
        assert (again.file_id, again.created, again.next_seq, again.failed) == (
            first.file_id,
            False,
            2,
            1,
        )
        other = await store.open_file(
            FileIdentity(inbox="/in", name="a.hl7", size=10, mtime_ns=6, sha256="ab" * 32)
        )
        assert other.created and other.file_id != first.file_id
        results = await store.file_results(first.file_id, after_seq=0)
        assert [(r.seq, r.code, r.ack) for r in results] == [(1, "AE", b"MSA|AE|B\r")]
        await store.finish_file(first.file_id, FileStatus.DONE)
        assert (await store.open_file(IDENTITY)).status is FileStatus.DONE


async def test_journal_after_and_sink_positions(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        for n in range(3):
            await store.commit_inbound(
                InboundRecord(data=b"MSH|%d" % n, peer="p", control_id=f"C{n}"),
                ack=b"MSA|AA" if n != 1 else None,
            )
        entries = await store.journal_after(1, limit=10)
        assert [(e.message.message_id, e.ack) for e in entries] == [(2, None), (3, b"MSA|AA")]
        assert entries[0].message.data == b"MSH|1"
        assert await store.sink_position("batch") == 0
        await store.set_sink_position("batch", 2)
        await store.set_sink_position("batch", 3)
    async with open_sqlite_store(tmp_path) as store:
        assert await store.sink_position("batch") == 3


def test_atomic_write_replace_and_no_replace(tmp_path: Path) -> None:
    atomic_write(tmp_path, "x", [b"one", b"two"])
    assert (tmp_path / "x").read_bytes() == b"onetwo"
    try:
        atomic_write(tmp_path, "x", [b"three"], replace=False)
    except FileExistsError:
        pass
    else:
        raise AssertionError("an existing file was replaced")
    assert (tmp_path / "x").read_bytes() == b"onetwo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temporary left
    assert free_name(tmp_path, "x") == "x.1"
    (tmp_path / "sub").mkdir()
    moved = move_file(tmp_path / "x", tmp_path / "sub", "x")
    assert moved.read_bytes() == b"onetwo" and not (tmp_path / "x").exists()


async def test_prune_drops_finished_file_records_and_keeps_active_ones(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        done = await store.open_file(IDENTITY)
        await store.record_file_results(
            done.file_id, [FileMessageResult(seq=0, control_id="A", code="AA", ack=b"x")]
        )
        await store.finish_file(done.file_id, FileStatus.DONE)
        active_identity = FileIdentity(inbox="/in", name="b", size=1, mtime_ns=1, sha256="cd")
        active = await store.open_file(active_identity)
        assert await store.prune(now=datetime.now(UTC) + timedelta(days=30)) == 1
        assert await store.file_results(done.file_id) == []
        assert (await store.open_file(IDENTITY)).created
        assert not (await store.open_file(active_identity)).created
        assert (await store.open_file(active_identity)).file_id == active.file_id

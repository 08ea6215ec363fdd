"""Tests of the durable store: journal, group commit, duplicates, outbound queue, faults."""

from __future__ import annotations

import collections
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from mllp_trio._errors import MLLPError
from mllp_trio.store._base import (
    CommitResult,
    InboundRecord,
    MessageStore,
    StoreError,
    StoreErrorKind,
    backoff_delay,
)
from mllp_trio.store._sqlite import (
    DB_FILENAME,
    SQLiteStoreConfig,
    open_sqlite_store,
)

from .store_helpers import Blocker

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rec(
    control_id: str,
    *,
    app: str = "LAB",
    facility: str = "NORTH",
    at: datetime = T0,
    size: int = 0,
) -> InboundRecord:
    data = f"MSH|^~\\&|{app}|{facility}|EHR|MAIN|20240501||ADT^A01|{control_id}|P|2.5\r"
    return InboundRecord(
        data=data.encode() + b"x" * size,
        received_at=at,
        peer="127.0.0.1:40000",
        tls_identity="CN=lab",
        control_id=control_id,
        sending_application=app,
        sending_facility=facility,
    )


# -- journal basics -------------------------------------------------------------


async def test_commit_and_read_back(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "data") as store:
        # The SQLite store satisfies the interface a test double would implement.
        as_protocol: MessageStore = store
        r = rec("C1")
        result = await as_protocol.commit_inbound(r, ack=b"ACK1")
        assert result == CommitResult(message_id=result.message_id, duplicate=False, ack=b"ACK1")
        assert await store.count() == 1
        assert await store.export_message(result.message_id) == r.data
        (info,) = await store.list_messages()
        assert info.control_id == "C1"
        assert info.sending_application == "LAB"
        assert info.sending_facility == "NORTH"
        assert info.peer == "127.0.0.1:40000"
        assert info.tls_identity == "CN=lab"
        assert info.received_at == T0
        assert info.size == len(r.data)
        assert info.has_ack
        assert info.delivered_at is None
        assert not hasattr(info, "data")
    assert (tmp_path / "data" / DB_FILENAME).is_file()


async def test_list_messages_newest_first_and_paged(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        for i in range(5):
            await store.commit_inbound(rec(f"C{i}"))
        page = await store.list_messages(limit=2, offset=1)
        assert [m.control_id for m in page] == ["C3", "C2"]


async def test_export_unknown_id(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        with pytest.raises(StoreError) as exc_info:
            await store.export_message(42)
        assert exc_info.value.kind is StoreErrorKind.NOT_FOUND
        with pytest.raises(StoreError):
            await store.save_ack(42, b"ACK")
        with pytest.raises(StoreError):
            await store.mark_delivered(42)


def test_reprs_hide_content() -> None:
    r = rec("C1", size=10)
    assert "MSH" not in repr(r)
    assert f"<{len(r.data)} bytes>" in repr(r)
    assert "SECRET" not in repr(CommitResult(message_id=1, duplicate=True, ack=b"SECRET"))


def test_record_needs_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        InboundRecord(data=b"x", received_at=datetime(2024, 1, 1), peer="p", control_id="1")


def test_store_error_is_mllp_error() -> None:
    assert issubclass(StoreError, MLLPError)


# -- duplicates -----------------------------------------------------------------


async def test_duplicate_returns_stored_ack(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        first = await store.commit_inbound(rec("C1"))
        assert first.ack is None
        await store.save_ack(first.message_id, b"MSH|ACK\rMSA|AA|C1\r")
        again = await store.commit_inbound(rec("C1", size=3), ack=b"OTHER")
        assert again.duplicate
        assert again.message_id == first.message_id
        assert again.ack == b"MSH|ACK\rMSA|AA|C1\r"
        assert not again.delivered
        # Nothing written for the duplicate: content and ack stay the original's.
        assert await store.count() == 1
        assert await store.export_message(first.message_id) == rec("C1").data
        assert store.stats.duplicates == 1
        assert store.stats.records_committed == 1


async def test_duplicate_without_saved_ack(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        first = await store.commit_inbound(rec("C1"))
        await store.mark_delivered(first.message_id)
        again = await store.commit_inbound(rec("C1"))
        assert again.duplicate
        assert again.ack is None
        assert again.delivered


async def test_key_is_app_facility_control_id(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        await store.commit_inbound(rec("C1"))
        assert not (await store.commit_inbound(rec("C1", app="RAD"))).duplicate
        assert not (await store.commit_inbound(rec("C1", facility="SOUTH"))).duplicate
        assert not (await store.commit_inbound(rec("C2"))).duplicate
        # No control id, no key: never a duplicate.
        assert not (await store.commit_inbound(rec(""))).duplicate
        assert not (await store.commit_inbound(rec(""))).duplicate
        assert await store.count() == 6


async def test_duplicate_window(tmp_path: Path) -> None:
    config = SQLiteStoreConfig(duplicate_window=timedelta(days=7))
    async with open_sqlite_store(tmp_path, config=config) as store:
        first = await store.commit_inbound(rec("C1", at=T0))
        assert (await store.commit_inbound(rec("C1", at=T0 + timedelta(days=6)))).duplicate
        later = await store.commit_inbound(rec("C1", at=T0 + timedelta(days=8)))
        assert not later.duplicate
        assert later.message_id != first.message_id
        # The newest copy within the window is the one that counts.
        again = await store.commit_inbound(rec("C1", at=T0 + timedelta(days=9)))
        assert again.duplicate
        assert again.message_id == later.message_id


async def test_no_window_remembers_forever(tmp_path: Path) -> None:
    config = SQLiteStoreConfig(duplicate_window=None)
    async with open_sqlite_store(tmp_path, config=config) as store:
        await store.commit_inbound(rec("C1", at=T0))
        assert (await store.commit_inbound(rec("C1", at=T0 + timedelta(days=3650)))).duplicate
        assert await store.prune() == 0


async def test_duplicates_survive_reopen(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        first = await store.commit_inbound(rec("C1"), ack=b"ACK")
    async with open_sqlite_store(tmp_path) as store:
        again = await store.commit_inbound(rec("C1"))
        assert again.duplicate
        assert again.message_id == first.message_id
        assert again.ack == b"ACK"


# -- group commit and cancellation ---------------------------------------------------


async def test_group_commit_shares_transactions(tmp_path: Path) -> None:
    results: list[CommitResult] = []

    async def commit(i: int) -> None:
        results.append(await store.commit_inbound(rec(f"C{i}")))

    async with open_sqlite_store(tmp_path) as store:
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            for i in range(50):
                nursery.start_soon(commit, i)
            await trio.testing.wait_all_tasks_blocked()
            assert results == []  # nobody returns before its transaction commits
            blocker.release.set()
        stats = store.stats
        assert stats.transactions == 2  # the blocker's, then one for all 50
        assert stats.max_batch_size == 50
        assert stats.records_committed == 50
        assert len({r.message_id for r in results}) == 50
        assert await store.count() == 50


async def test_unblocked_concurrent_committers_all_land(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(store.commit_inbound, rec(f"C{i}"))
        assert store.stats.records_committed == 50
        assert store.stats.transactions <= 50
        assert await store.count() == 50


async def test_duplicate_inside_one_batch(tmp_path: Path) -> None:
    results: dict[int, CommitResult] = {}

    async def commit(i: int) -> None:
        results[i] = await store.commit_inbound(rec("SAME"), ack=b"ACK")

    async with open_sqlite_store(tmp_path) as store:
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            nursery.start_soon(commit, 0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(commit, 1)
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        assert store.stats.transactions == 2
        assert store.stats.max_batch_size == 2
        # Queued first, stored first; the second in the same transaction is the duplicate.
        assert (results[0].duplicate, results[1].duplicate) == (False, True)
        assert results[0].message_id == results[1].message_id
        assert await store.count() == 1


async def test_bulk_batch_matches_one_commit_at_a_time(tmp_path: Path) -> None:
    # The writer commits a batch's records in bulk (one duplicate check, one
    # executemany): every caller gets what a commit of its own would give.
    early = T0 - timedelta(days=30)
    records = [
        rec("K1"),
        rec("K2"),
        rec("K1"),  # duplicate of the first, in the same batch
        rec("K1", facility="SOUTH"),  # another sender's K1: new
        rec(""),  # no control id: never a duplicate
        rec(""),
        rec("OLD"),  # duplicate of an entry committed before the batch
        rec("STALE"),  # its twin is older than the window: new
        rec("K2", at=T0 + timedelta(seconds=1)),
    ]
    results: dict[int, CommitResult] = {}

    async def commit(i: int) -> None:
        results[i] = await store.commit_inbound(records[i], ack=f"ACK{i}".encode())

    async with open_sqlite_store(tmp_path) as store:
        old = await store.commit_inbound(rec("OLD"), ack=b"OLD-ACK")
        await store.save_ack(old.message_id, b"OLD-ACK", delivered=True)
        stale = await store.commit_inbound(rec("STALE", at=early))
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            for i in range(len(records)):
                nursery.start_soon(commit, i)
                await trio.testing.wait_all_tasks_blocked()  # queued in this order
            blocker.release.set()
        assert store.stats.max_batch_size == len(records)
        fresh = [i for i, r in results.items() if not r.duplicate]
        assert sorted(fresh) == [0, 1, 3, 4, 5, 7]
        ids = [results[i].message_id for i in fresh]
        assert len(set(ids)) == len(ids)
        assert stale.message_id not in ids
        for i in fresh:  # each id names its own record and answer
            assert await store.export_message(results[i].message_id) == records[i].data
            assert results[i].ack == f"ACK{i}".encode()
        assert results[2] == CommitResult(
            message_id=results[0].message_id, duplicate=True, ack=b"ACK0"
        )
        assert results[8] == CommitResult(
            message_id=results[1].message_id, duplicate=True, ack=b"ACK1"
        )
        assert results[6] == CommitResult(
            message_id=old.message_id, duplicate=True, ack=b"OLD-ACK", delivered=True
        )
        assert store.stats.duplicates == 3
        assert await store.count() == 2 + len(fresh)


async def test_bad_record_fails_alone_in_a_bulk_batch(tmp_path: Path) -> None:
    # A record the database refuses (a NULL peer, against NOT NULL) spoils
    # the bulk insert; the writer then commits the batch one record at a
    # time, so only that caller gets the error.
    outcomes: dict[str, object] = {}
    bad = attrs.evolve(rec("BAD"), peer=None)

    async def commit(name: str, record: InboundRecord) -> None:
        try:
            outcomes[name] = await store.commit_inbound(record)
        except StoreError as exc:
            outcomes[name] = exc

    async with open_sqlite_store(tmp_path) as store:
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            nursery.start_soon(commit, "a", rec("A"))
            nursery.start_soon(commit, "bad", bad)
            nursery.start_soon(commit, "b", rec("B"))
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        assert store.stats.max_batch_size == 3
        assert isinstance(outcomes["bad"], StoreError)
        a, b = outcomes["a"], outcomes["b"]
        assert isinstance(a, CommitResult)
        assert isinstance(b, CommitResult)
        assert await store.export_message(a.message_id) == rec("A").data
        assert await store.export_message(b.message_id) == rec("B").data
        assert await store.count() == 2


async def test_saved_acks_of_one_batch_and_an_unknown_id(tmp_path: Path) -> None:
    # Answers saved in bulk; an unknown id fails alone (NOT_FOUND) and the
    # others are saved, each with its own entry.
    outcomes: dict[int, object] = {}

    async def save(message_id: int, *, delivered: bool) -> None:
        try:
            await store.save_ack(message_id, b"ACK%d" % message_id, delivered=delivered)
            outcomes[message_id] = None
        except StoreError as exc:
            outcomes[message_id] = exc

    async with open_sqlite_store(tmp_path) as store:
        ids = [(await store.commit_inbound(rec(f"S{i}"))).message_id for i in range(3)]
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            nursery.start_soon(partial(save, ids[0], delivered=True))
            nursery.start_soon(partial(save, 999, delivered=True))
            nursery.start_soon(partial(save, ids[1], delivered=False))
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        error = outcomes[999]
        assert isinstance(error, StoreError)
        assert error.kind is StoreErrorKind.NOT_FOUND
        assert outcomes[ids[0]] is None
        assert outcomes[ids[1]] is None
        again = {i: await store.commit_inbound(rec(f"S{n}")) for n, i in enumerate(ids)}
        assert (again[ids[0]].ack, again[ids[0]].delivered) == (b"ACK%d" % ids[0], True)
        assert (again[ids[1]].ack, again[ids[1]].delivered) == (b"ACK%d" % ids[1], False)
        assert (again[ids[2]].ack, again[ids[2]].delivered) == (None, False)


async def test_failing_operation_does_not_spoil_its_batch(tmp_path: Path) -> None:
    outcomes: dict[str, object] = {}

    async def run(name: str, fn: Callable[[], object]) -> None:
        try:
            outcomes[name] = await fn()  # type: ignore[misc]
        except StoreError as exc:
            outcomes[name] = exc

    async with open_sqlite_store(tmp_path) as store:
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            nursery.start_soon(run, "a", lambda: store.commit_inbound(rec("A")))
            nursery.start_soon(run, "bad", lambda: store.mark_sent(999))
            nursery.start_soon(run, "b", lambda: store.commit_inbound(rec("B")))
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        assert store.stats.max_batch_size == 3
        bad = outcomes["bad"]
        assert isinstance(bad, StoreError)
        assert bad.kind is StoreErrorKind.NOT_FOUND
        assert isinstance(outcomes["a"], CommitResult)
        assert isinstance(outcomes["b"], CommitResult)
        assert await store.count() == 2


async def test_cancelled_callers_do_not_spoil_the_batch(tmp_path: Path) -> None:
    done: dict[int, CommitResult] = {}
    scopes: dict[int, trio.CancelScope] = {}

    async def commit(i: int) -> None:
        with trio.CancelScope() as scope:
            scopes[i] = scope
            done[i] = await store.commit_inbound(rec(f"C{i}"))

    async with open_sqlite_store(tmp_path) as store:
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            for i in range(30):
                nursery.start_soon(commit, i)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(0, 30, 3):
                scopes[i].cancel()
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        cancelled = set(range(0, 30, 3))
        assert set(done) == set(range(30)) - cancelled
        assert all(scopes[i].cancelled_caught for i in cancelled)
        # At-least-once: a request already queued is committed even though
        # its caller stopped waiting; the sender's resend is a duplicate.
        assert await store.count() == 30
        assert (await store.commit_inbound(rec("C0"))).duplicate


async def test_caller_cancelled_before_queueing_commits_nothing(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.commit_inbound(rec("C1"))
        assert scope.cancelled_caught
        assert await store.count() == 0


async def test_closed_store_refuses(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        pass
    with pytest.raises(StoreError) as exc_info:
        await store.commit_inbound(rec("C1"))
    assert exc_info.value.kind is StoreErrorKind.CLOSED


async def test_close_finishes_queued_work(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store, trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(store.commit_inbound, rec(f"C{i}"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    # Queued before the close: committed even though the callers were cancelled.
    async with open_sqlite_store(tmp_path) as store:
        assert await store.count() == 20


# -- delivery from the journal ---------------------------------------------------


async def test_undelivered_resume_after_reopen(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        ids = [(await store.commit_inbound(rec(f"C{i}"))).message_id for i in range(4)]
        await store.mark_delivered(ids[1])
        await store.mark_delivered(ids[1])  # idempotent
    async with open_sqlite_store(tmp_path) as store:
        pending = await store.fetch_undelivered()
        assert [m.message_id for m in pending] == [ids[0], ids[2], ids[3]]
        assert pending[1].data == rec("C2").data
        assert pending[1].info.control_id == "C2"
        assert [m.message_id for m in await store.fetch_undelivered(1, after_id=ids[0])] == [ids[2]]
        for m in pending:
            await store.mark_delivered(m.message_id)
        assert await store.fetch_undelivered() == []
        (info,) = [i for i in await store.list_messages() if i.message_id == ids[1]]
        assert info.delivered_at is not None


async def test_prune_keeps_undelivered_and_dead(tmp_path: Path) -> None:
    config = SQLiteStoreConfig(duplicate_window=timedelta(days=7))
    old = datetime.now(UTC) - timedelta(days=30)
    prune_at = datetime.now(UTC) + timedelta(days=8)
    async with open_sqlite_store(tmp_path, config=config) as store:
        delivered = await store.commit_inbound(rec("OLD1", at=old))
        undelivered = await store.commit_inbound(rec("OLD2", at=old))
        fresh = await store.commit_inbound(rec("NEW", at=prune_at - timedelta(days=1)))
        await store.mark_delivered(delivered.message_id)
        await store.mark_delivered(fresh.message_id)
        sent = await store.enqueue("d", b"m1")
        dead = await store.enqueue("d", b"m2")
        await store.mark_sent(sent)
        await store.mark_dead(dead, "refused")
        removed = await store.prune(now=prune_at)
        assert removed == 2  # the old delivered entry and the sent message
        remaining = {m.message_id for m in await store.list_messages()}
        assert remaining == {undelivered.message_id, fresh.message_id}
        stats = await store.outbound_stats()
        assert (stats.delivered, stats.dead) == (0, 1)


# -- outbound queue --------------------------------------------------------------


async def test_outbound_queue_order_and_lifecycle(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        a1 = await store.enqueue("lab", b"A1")
        b1 = await store.enqueue("rad", b"B1")
        a2 = await store.enqueue("lab", b"A2")
        assert await store.pending_destinations() == ["lab", "rad"]

        head = await store.fetch_next("lab")
        assert head is not None
        assert (head.message_id, head.data, head.attempts) == (a1, b"A1", 0)
        s = await store.outbound_stats()
        assert (s.pending, s.in_flight, s.delivered, s.dead) == (2, 1, 0, 0)

        retry_at = datetime.now(UTC) + timedelta(seconds=30)
        await store.mark_attempt(a1, "connection refused", retry_at)
        head = await store.fetch_next("lab")
        assert head is not None
        # Still the head: order per destination is strict.
        assert head.message_id == a1
        assert head.attempts == 1
        assert head.last_error == "connection refused"
        assert abs((head.next_attempt_at - retry_at).total_seconds()) < 0.001

        await store.mark_sent(a1)
        head = await store.fetch_next("lab")
        assert head is not None
        assert head.message_id == a2
        await store.mark_dead(a2, "AR from peer")
        assert await store.fetch_next("lab") is None
        s = await store.outbound_stats()
        assert (s.pending, s.in_flight, s.delivered, s.dead) == (1, 0, 1, 1)

        assert await store.requeue_dead() == 1
        head = await store.fetch_next("lab")
        assert head is not None
        assert (head.message_id, head.attempts) == (a2, 0)
        head_b = await store.fetch_next("rad")
        assert head_b is not None
        assert head_b.message_id == b1

        with pytest.raises(StoreError) as exc_info:
            await store.mark_dead(12345, "x")
        assert exc_info.value.kind is StoreErrorKind.NOT_FOUND


async def test_requeue_selected_dead(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        ids = [await store.enqueue("d", b"m%d" % i) for i in range(3)]
        for i in ids:
            await store.mark_dead(i, "gave up")
        assert await store.requeue_dead([ids[2], 999]) == 1
        head = await store.fetch_next("d")
        assert head is not None
        assert head.message_id == ids[2]
        assert (await store.outbound_stats()).dead == 2


async def test_outbound_survives_reopen(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        first = await store.enqueue("lab", b"A1")
        await store.enqueue("lab", b"A2")
        await store.fetch_next("lab")
        assert (await store.outbound_stats()).in_flight == 1
    async with open_sqlite_store(tmp_path) as store:
        s = await store.outbound_stats()
        # In flight when the process stopped: pending again.
        assert (s.pending, s.in_flight) == (2, 0)
        head = await store.fetch_next("lab")
        assert head is not None
        assert (head.message_id, head.data) == (first, b"A1")


# -- faults ----------------------------------------------------------------------


async def test_full_disk_is_a_clean_store_error(tmp_path: Path) -> None:
    config = SQLiteStoreConfig(max_database_bytes=64 * 1024)
    committed: list[int] = []
    async with open_sqlite_store(tmp_path, config=config) as store:
        with pytest.raises(StoreError) as exc_info:
            for i in range(100):
                committed.append((await store.commit_inbound(rec(f"C{i}", size=4000))).message_id)
        err = exc_info.value
        assert err.kind is StoreErrorKind.FULL
        assert "full" in str(err)
        assert "xxxx" not in str(err)  # never message content
        assert 0 < len(committed) < 100
        # Everything reported committed is there; the failed one is not.
        assert await store.count() == len(committed)
        failed_id = f"C{len(committed)}"
        assert failed_id not in {m.control_id for m in await store.list_messages(limit=200)}
        # The store keeps working for what fits.
        assert (await store.commit_inbound(rec("C0"))).duplicate


async def test_locked_database_is_a_clean_store_error(tmp_path: Path) -> None:
    config = SQLiteStoreConfig(busy_timeout=0.05)
    async with open_sqlite_store(tmp_path, config=config) as store:
        await store.commit_inbound(rec("C0"))
        other = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreError) as exc_info:
                await store.commit_inbound(rec("C1"))
            assert exc_info.value.kind is StoreErrorKind.LOCKED
            assert "locked by another process" in str(exc_info.value)
            # Reads do not need the write lock.
            assert await store.count() == 1
            other.execute("ROLLBACK")
        finally:
            other.close()
        result = await store.commit_inbound(rec("C1"))
        assert not result.duplicate  # the failed attempt left nothing behind
        assert await store.count() == 2


async def test_corrupt_file_is_a_clean_store_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(StoreError) as exc_info:
        async with open_sqlite_store(tmp_path):
            pass  # pragma: no cover
    assert exc_info.value.kind is StoreErrorKind.CORRUPT
    assert "restore" in str(exc_info.value)


async def test_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_bytes(b"")
    with pytest.raises(StoreError, match="not a directory") as exc_info:
        async with open_sqlite_store(target):
            pass  # pragma: no cover
    assert exc_info.value.kind is StoreErrorKind.IO


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path):
        pass
    raw = sqlite3.connect(tmp_path / DB_FILENAME)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(StoreError, match="upgrade"):
        async with open_sqlite_store(tmp_path):
            pass  # pragma: no cover


async def test_read_only(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as exc_info:
        async with open_sqlite_store(tmp_path, config=SQLiteStoreConfig(read_only=True)):
            pass  # pragma: no cover
    assert exc_info.value.kind is StoreErrorKind.IO
    async with open_sqlite_store(tmp_path) as writer:
        await writer.commit_inbound(rec("C1"))
        # An admin tool beside the running engine.
        config = SQLiteStoreConfig(read_only=True)
        async with open_sqlite_store(tmp_path, config=config) as reader:
            assert await reader.count() == 1
            with pytest.raises(StoreError) as exc_info:
                await reader.commit_inbound(rec("C2"))
            assert exc_info.value.kind is StoreErrorKind.READ_ONLY
        assert await writer.count() == 1


# -- crash safety ----------------------------------------------------------------

_CHILD = """
import sys, trio
from mllp_trio.store._sqlite import open_sqlite_store
from mllp_trio.store._base import InboundRecord


async def main():
    async with open_sqlite_store(sys.argv[1]) as store:
        async def worker(w):
            i = 0
            while True:
                cid = f"{w}-{i}"
                await store.commit_inbound(InboundRecord(
                    data=b"MSH|^~\\\\&|A|B|||||ADT^A01|" + cid.encode() + b"|P|2.5\\r",
                    peer="child", control_id=cid,
                    sending_application="A", sending_facility="B"))
                print(cid, flush=True)
                i += 1
        async with trio.open_nursery() as nursery:
            for w in range(4):
                nursery.start_soon(worker, w)

trio.run(main)
"""


async def test_sigkill_loses_nothing_reported_committed(tmp_path: Path) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out = bytearray()
    with trio.fail_after(30):  # a safety net against a hung child, not an assertion
        while out.count(b"\n") < 200:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                err = await proc.stderr.receive_some()
                pytest.fail(f"child exited early: {err.decode(errors='replace')}")
            out += chunk
        proc.send_signal(signal.SIGKILL)
        while chunk := await proc.stdout.receive_some():
            out += chunk
        await proc.wait()
    await proc.stdout.aclose()
    await proc.stderr.aclose()
    assert proc.returncode == -signal.SIGKILL
    # Only whole lines: a line cut by the kill was not fully reported.
    reported = out[: out.rfind(b"\n")].decode().split("\n")
    async with open_sqlite_store(tmp_path) as store:
        stored = collections.Counter(m.control_id for m in await store.list_messages(10**6))
    assert all(stored[cid] == 1 for cid in reported)
    assert max(stored.values()) == 1


# -- backoff ---------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=1e6),
    seed=st.integers(),
)
def test_backoff_within_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2.0 ** min(attempt, 62))


def test_backoff_grows_and_jitters() -> None:
    rng = random.Random(7)
    early = [backoff_delay(0, base=1, cap=1000, rng=rng) for _ in range(200)]
    late = [backoff_delay(8, base=1, cap=1000, rng=rng) for _ in range(200)]
    assert max(early) <= 1
    assert max(late) > 100  # the ceiling doubled eight times
    assert len(set(late)) > 190  # full jitter, not a fixed delay


def test_backoff_rejects_negative() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1)
    with pytest.raises(ValueError):
        backoff_delay(1, base=-1)

"""The journal without a handler (its per-message fast path) and group commit, on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from mllp_trio._hl7 import Outcome, PeerInfo
from mllp_trio.store._journal import JournalProcessor
from mllp_trio.store._sqlite import SQLiteStoreConfig, open_sqlite_store

from .hl7_samples import make_message
from .store_helpers import Blocker

PEER = PeerInfo(address="127.0.0.1:4000")


async def test_resends_in_one_batch_are_answered_with_the_original_ack(tmp_path: Path) -> None:
    # The same message arrives on several connections while the writer is
    # busy, so all of them land in one group commit: the first is journaled,
    # the others are its duplicates and get its answer, byte for byte.
    original = make_message(control_id="G1")
    others = [make_message(control_id=f"G{i}") for i in range(2, 6)]
    replies: dict[int, bytes] = {}
    async with open_sqlite_store(tmp_path) as store:
        processor = JournalProcessor(store)

        async def send(i: int, data: bytes) -> None:
            outcome = await processor(data, PEER)
            assert outcome.accepted
            assert outcome.reply is not None
            replies[i] = outcome.reply

        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            for i in range(4):
                nursery.start_soon(send, i, original)
                await trio.testing.wait_all_tasks_blocked()
            for i, data in enumerate(others, start=4):
                nursery.start_soon(send, i, data)
            await trio.testing.wait_all_tasks_blocked()
            blocker.release.set()
        stats = store.stats
        assert stats.transactions == 2  # the blocker's, then one for all nine messages
        assert (stats.records_committed, stats.duplicates) == (5, 3)
        assert {replies[i] for i in range(4)} == {replies[0]}
        entries = await store.journal_after(0)
        assert entries[0].message.data == original
        assert sorted(e.message.data for e in entries[1:]) == others
        assert entries[0].ack == replies[0]
        assert all(e.message.info.delivered_at is not None for e in entries)
        assert await store.fetch_undelivered() == []


async def test_a_resend_after_the_commit_gets_the_journaled_ack(tmp_path: Path) -> None:
    data = make_message(control_id="G7")
    async with open_sqlite_store(tmp_path) as store:
        processor = JournalProcessor(store)
        first = await processor(data, PEER)
        assert first.code == "AA"
        again = await processor(data, PeerInfo(address="127.0.0.1:4001"))
        assert first.reply is not None
        assert again.reply == first.reply
        assert (store.stats.records_committed, store.stats.duplicates) == (1, 1)
        (info,) = await store.list_messages()
        assert info.peer == PEER.address
        assert (info.control_id, info.sending_application) == ("G7", "LAB^1.2.3^ISO")
        assert (info.sending_facility, info.tls_identity) == ("HOSP", None)
        assert info.size == len(data)
        assert info.has_ack


async def test_a_cancelled_caller_leaves_its_message_journaled_once(tmp_path: Path) -> None:
    # Cancelled while its commit is queued: the commit still happens (the
    # sender, never answered, resends), and the resend is a duplicate.
    data = make_message(control_id="G8")
    outcomes: list[Outcome] = []
    async with open_sqlite_store(tmp_path) as store:
        processor = JournalProcessor(store)
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            scope = trio.CancelScope()

            async def send() -> None:
                with scope:
                    outcomes.append(await processor(data, PEER))

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert scope.cancelled_caught
            blocker.release.set()
        assert outcomes == []
        assert await store.count() == 1  # queued after the cancelled commit
        again = await processor(data, PEER)
        assert again.accepted
        assert store.stats.duplicates == 1
        assert await store.count() == 1


async def test_group_wait_keeps_returning_callers_in_one_transaction(tmp_path: Path) -> None:
    # Four connections, one message in flight each, whose next messages
    # come back some milliseconds apart: once their first messages were
    # committed together, the writer waits for all four next ones instead
    # of committing each alone.
    config = SQLiteStoreConfig(group_wait=60.0)  # never reached: all four come back
    async with open_sqlite_store(tmp_path, config=config) as store:
        processor = JournalProcessor(store)

        async def connection(i: int) -> None:
            for n in range(3):
                if n:
                    await trio.sleep(0.02 * i)  # the peer's think time, its own per connection
                outcome = await processor(make_message(control_id=f"W{i}-{n}"), PEER)
                assert outcome.accepted

        blocker = Blocker()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await blocker.hold(store, nursery)
                for i in range(4):
                    nursery.start_soon(connection, i)
                await trio.testing.wait_all_tasks_blocked()
                blocker.release.set()
        stats = store.stats
        assert stats.records_committed == 12
        assert stats.transactions == 4  # the blocker's, then three groups of four
        assert stats.max_batch_size == 4


async def test_group_wait_never_delays_a_lone_caller(tmp_path: Path) -> None:
    # One connection: each transaction holds its one message, so the writer
    # never waits for a second (with a wait of a minute, this would time out).
    config = SQLiteStoreConfig(group_wait=60.0)
    async with open_sqlite_store(tmp_path, config=config) as store:
        processor = JournalProcessor(store)
        with trio.fail_after(30):
            for n in range(5):
                assert (await processor(make_message(control_id=f"L{n}"), PEER)).accepted
        assert store.stats.transactions == 5


def test_group_wait_is_validated() -> None:
    with pytest.raises(ValueError, match="group_wait"):
        SQLiteStoreConfig(group_wait=-0.1)
    assert SQLiteStoreConfig().group_wait == 0.001

"""The durable sending queue: commit on enqueue, order, retries with backoff, dead letters."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from mllp_trio._config import ClientConfig
from mllp_trio._hl7 import HL7Error, HL7Reject, InboundMessage, MSHError
from mllp_trio._server import MLLPServer
from mllp_trio.store._base import (
    CommitResult,
    InboundRecord,
    MessageInfo,
    MessageStore,
    OutboundMessage,
    OutboundStats,
    StoredMessage,
    StoreError,
    StoreErrorKind,
    StoreStats,
)
from mllp_trio.store._queue import QueueConfig, QueuedSender
from mllp_trio.store._sqlite import DB_FILENAME, open_sqlite_store

from .conftest import StartServer
from .hl7_samples import make_message

SECRET = "SECRETSURNAME^JANE"


def hl7(control_id: str) -> bytes:
    return make_message(control_id=control_id, patient_name=SECRET)


@attrs.define
class _Row:
    destination: str
    data: bytes
    status: str = "pending"
    attempts: int = 0
    enqueued_at: datetime = attrs.field(factory=lambda: datetime.now(UTC))
    next_attempt_at: datetime = attrs.field(factory=lambda: datetime.now(UTC))
    last_error: str | None = None
    dead_reason: str | None = None


class MemoryQueue:
    """An in-memory outbound queue with the SQLite store's semantics.

    No thread: with ``autojump_clock`` the mock clock only jumps while the
    sender really waits, so backoff is tested on virtual time.
    """

    def __init__(self) -> None:
        self.rows: dict[int, _Row] = {}
        self.attempts: list[tuple[int, float, str]] = []  # (id, trio time, error)
        self._next_id = 1
        self.changed = trio.Event()

    def _touch(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_attempts(self, count: int) -> None:
        while len(self.attempts) < count:
            await self.changed.wait()

    @property
    def stats(self) -> StoreStats:
        return StoreStats()

    async def enqueue(self, destination: str, data: bytes) -> int:
        await trio.lowlevel.checkpoint()
        message_id, self._next_id = self._next_id, self._next_id + 1
        self.rows[message_id] = _Row(destination, data)
        self._touch()
        return message_id

    async def fetch_next(self, destination: str) -> OutboundMessage | None:
        await trio.lowlevel.checkpoint()
        for message_id, row in sorted(self.rows.items()):
            if row.destination == destination and row.status == "pending":
                return OutboundMessage(
                    message_id=message_id,
                    destination=destination,
                    data=row.data,
                    attempts=row.attempts,
                    enqueued_at=row.enqueued_at,
                    next_attempt_at=row.next_attempt_at,
                    last_error=row.last_error,
                )
        return None

    async def pending_destinations(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted({r.destination for r in self.rows.values() if r.status == "pending"})

    def _row(self, message_id: int) -> _Row:
        if message_id not in self.rows:
            raise StoreError(f"no outbound message {message_id}", kind=StoreErrorKind.NOT_FOUND)
        return self.rows[message_id]

    async def mark_attempt(self, message_id: int, error: str, next_attempt_at: datetime) -> None:
        await trio.lowlevel.checkpoint()
        row = self._row(message_id)
        row.attempts += 1
        row.last_error = error
        row.next_attempt_at = next_attempt_at
        self.attempts.append((message_id, trio.current_time(), error))
        self._touch()

    async def mark_sent(self, message_id: int) -> None:
        await trio.lowlevel.checkpoint()
        self._row(message_id).status = "sent"
        self._touch()

    async def mark_dead(self, message_id: int, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        row = self._row(message_id)
        row.status, row.dead_reason = "dead", reason
        self._touch()

    async def requeue_dead(
        self, message_ids: Iterable[int] | None = None, *, destination: str | None = None
    ) -> int:
        await trio.lowlevel.checkpoint()
        wanted = None if message_ids is None else set(message_ids)
        count = 0
        for message_id, row in self.rows.items():
            if destination is not None and row.destination != destination:
                continue
            if row.status == "dead" and (wanted is None or message_id in wanted):
                row.status, row.attempts, row.dead_reason = "pending", 0, None
                row.next_attempt_at = datetime.now(UTC)
                count += 1
        return count

    async def outbound_stats(self) -> OutboundStats:
        await trio.lowlevel.checkpoint()
        statuses = [r.status for r in self.rows.values()]
        return OutboundStats(
            pending=statuses.count("pending"),
            in_flight=0,
            delivered=statuses.count("sent"),
            dead=statuses.count("dead"),
        )

    # The inbound journal is not the sender's business.

    async def commit_inbound(
        self, record: InboundRecord, *, ack: bytes | None = None, delivered: bool = False
    ) -> CommitResult:
        raise NotImplementedError

    async def save_ack(self, message_id: int, ack: bytes, *, delivered: bool = False) -> None:
        raise NotImplementedError

    async def fetch_undelivered(
        self, limit: int = 100, *, after_id: int = 0
    ) -> list[StoredMessage]:
        raise NotImplementedError

    async def mark_delivered(self, message_id: int) -> None:
        raise NotImplementedError

    async def prune(self, *, now: datetime | None = None) -> int:
        raise NotImplementedError

    async def count(self) -> int:
        raise NotImplementedError

    async def list_messages(self, limit: int = 100, offset: int = 0) -> Sequence[MessageInfo]:
        raise NotImplementedError

    async def export_message(self, message_id: int) -> bytes:
        raise NotImplementedError


class Destination:
    """A handler whose answer per control id is scripted: a list of outcomes, then AA."""

    def __init__(self, script: dict[str, list[str]] | None = None) -> None:
        self.received: list[str] = []
        self.script = script or {}

    async def __call__(self, message: InboundMessage) -> None:
        self.received.append(message.control_id)
        plan = self.script.get(message.control_id)
        action = plan.pop(0) if plan else "AA"
        if action == "AE":
            raise HL7Error("try again", code=207)
        if action == "AR":
            raise HL7Reject("never", code=200)


FAST = QueueConfig(max_attempts=5, backoff_base=1.0, backoff_cap=8.0, poll_interval=1000.0)


def sender(store: MessageStore, port: int, config: QueueConfig = FAST) -> QueuedSender:
    return QueuedSender(
        store,
        "127.0.0.1",
        port,
        client_config=ClientConfig(connect_timeout=5, ack_timeout=5, retries=0),
        config=config,
    )


async def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listener.socket.getsockname()[1]
    await listener.aclose()
    return port


# -- enqueue ------------------------------------------------------------------------


async def test_enqueue_returns_after_commit(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        queue = sender(store, 9)
        message_id = await queue.enqueue(hl7("E1").replace(b"\r", b"\n"))
        # Another connection sees it at once: it was committed before returning.
        uri = (tmp_path / DB_FILENAME).resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn, conn:
            rows = conn.execute("SELECT id, status, data FROM outbound").fetchall()
        conn.close()
        assert rows == [(message_id, "pending", hl7("E1"))]  # LF normalised to CR
        with pytest.raises(MSHError):
            await queue.enqueue(b"not HL7 at all")
        assert (await store.outbound_stats()).pending == 1


# -- order, retries, dead letters -----------------------------------------------------------


async def test_delivers_in_order_and_retries_ae(
    start_server: StartServer, autojump_clock: trio.abc.Clock
) -> None:
    dest = Destination({"M3": ["AE"]})
    port = await start_server(MLLPServer(dest))
    store = MemoryQueue()
    queue = sender(store, port)
    ids = [f"M{i}" for i in range(8)]
    for control_id in ids:
        await queue.enqueue(hl7(control_id))
    report = await queue.deliver_pending()
    await queue.aclose()
    # M3 is resent before anything after it goes out.
    assert dest.received == ["M0", "M1", "M2", "M3", "M3", "M4", "M5", "M6", "M7"]
    assert (report.delivered, report.retried, report.dead) == (8, 1, 0)
    assert [r[0] for r in report.replies] == ids
    assert [(store.rows[i].status, store.rows[i].attempts) for i in (3, 4, 5)] == [
        ("sent", 0),
        ("sent", 1),
        ("sent", 0),
    ]
    ((_, _, error),) = store.attempts
    assert error.startswith("AE")


async def test_backoff_while_the_destination_is_down(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    port = await free_port()
    store = MemoryQueue()
    config = QueueConfig(max_attempts=50, backoff_base=1.0, backoff_cap=8.0)
    queue = sender(store, port, config)
    await queue.enqueue(hl7("B1"))
    await queue.enqueue(hl7("B2"))
    done = trio.Event()

    async def deliver() -> None:
        report = await queue.deliver_pending()
        assert report.delivered == 2
        done.set()

    nursery.start_soon(deliver)
    failures = 6
    await store.wait_attempts(failures)
    # The destination comes up; the queue drains on its own.
    dest = Destination()
    await nursery.start(partial(MLLPServer(dest).serve, port, host="127.0.0.1"))
    await done.wait()
    await queue.aclose()
    assert dest.received == ["B1", "B2"]
    assert {message_id for message_id, _, _ in store.attempts} == {1}  # only the head waited
    assert all("OSError" in e or "refused" in e.lower() for _, _, e in store.attempts)
    # Virtual time: gap k before retry k+1 is drawn from [0, min(cap, base * 2**k)].
    times = [t for _, t, _ in store.attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= failures - 1
    for k, gap in enumerate(gaps):
        assert 0 <= gap <= min(8.0, 2.0**k) + 1e-6, (k, gap)
    assert sum(gaps) > 0  # jitter draws are not all zero
    assert store.rows[1].attempts >= failures


async def test_ar_goes_to_the_dead_letters_at_once(
    start_server: StartServer, autojump_clock: trio.abc.Clock
) -> None:
    dest = Destination({"R1": ["AR"]})
    port = await start_server(MLLPServer(dest))
    store = MemoryQueue()
    queue = sender(store, port)
    await queue.enqueue(hl7("R1"))
    await queue.enqueue(hl7("R2"))
    report = await queue.deliver_pending()
    await queue.aclose()
    assert dest.received == ["R1", "R2"]  # R1 tried once only, and the queue moved on
    assert (report.delivered, report.dead, report.retried) == (1, 1, 0)
    assert report.replies[0][:2] == ("R1", "AR")
    assert store.rows[1].status == "dead"
    assert store.rows[1].dead_reason is not None and store.rows[1].dead_reason.startswith("AR")
    assert SECRET not in store.rows[1].dead_reason


async def test_max_attempts_then_dead_letter_then_requeue(
    start_server: StartServer, autojump_clock: trio.abc.Clock
) -> None:
    dest = Destination({"X1": ["AE"] * 3})
    port = await start_server(MLLPServer(dest))
    store = MemoryQueue()
    queue = sender(store, port, QueueConfig(max_attempts=3, backoff_base=0.5, backoff_cap=2.0))
    await queue.enqueue(hl7("X1"))
    await queue.enqueue(hl7("X2"))
    report = await queue.deliver_pending()
    assert dest.received == ["X1", "X1", "X1", "X2"]
    assert (report.delivered, report.dead, report.retried) == (1, 1, 2)
    assert store.rows[1].status == "dead"
    assert store.rows[1].dead_reason is not None and "3 attempts" in store.rows[1].dead_reason
    assert (await store.outbound_stats()).dead == 1

    # The destination is fixed; the dead letter is requeued and delivered.
    assert await store.requeue_dead() == 1
    report = await queue.deliver_pending()
    await queue.aclose()
    assert dest.received[-1] == "X1"
    assert (report.delivered, report.dead) == (1, 0)
    stats = await store.outbound_stats()
    assert (stats.pending, stats.delivered, stats.dead) == (0, 2, 0)


async def test_run_is_woken_by_enqueue(
    start_server: StartServer, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    dest = Destination()
    port = await start_server(MLLPServer(dest))
    store = MemoryQueue()
    queue = sender(store, port)  # poll_interval 1000 s
    await nursery.start(queue.run)
    await trio.sleep(1)  # run() is idle, waiting on the empty queue
    start = trio.current_time()
    await queue.enqueue(hl7("W1"))
    while not dest.received:
        await store.changed.wait()
    # Delivered on the wake-up, long before the next poll.
    assert trio.current_time() - start < FAST.poll_interval
    assert dest.received == ["W1"]
    with trio.fail_after(1):
        while (await store.outbound_stats()).delivered != 1:
            await store.changed.wait()


async def test_run_waits_out_backoff_on_the_trio_clock(
    start_server: StartServer, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # A retry delay is waited on the Trio clock, not re-measured against the
    # wall clock after every wake-up (which would stall a mock clock).
    dest = Destination({"K1": ["AE", "AE"]})
    port = await start_server(MLLPServer(dest))
    store = MemoryQueue()
    queue = sender(store, port, QueueConfig(backoff_base=2.0, backoff_cap=4.0))
    await nursery.start(queue.run)
    await queue.enqueue(hl7("K1"))
    while (await store.outbound_stats()).delivered != 1:
        await store.changed.wait()
    delivered_at = trio.current_time()
    assert dest.received == ["K1", "K1", "K1"]
    (_, first, _), (_, second, _) = store.attempts
    assert 0 <= second - first <= 4.0 + 1e-6
    assert 0 <= delivered_at - second <= 4.0 + 1e-6


# -- persistence and the command line ---------------------------------------------------------


async def test_queue_survives_closing_and_reopening_the_store(
    start_server: StartServer, tmp_path: Path
) -> None:
    dest = Destination()
    port = await start_server(MLLPServer(dest))
    async with open_sqlite_store(tmp_path) as store:
        queue = sender(store, port)
        for i in range(3):
            await queue.enqueue(hl7(f"P{i}"))
        # The process stops before delivering anything.
    assert dest.received == []
    async with open_sqlite_store(tmp_path) as store:
        queue = sender(store, port)
        report = await queue.deliver_pending()
        await queue.aclose()
        stats = await store.outbound_stats()
    assert dest.received == ["P0", "P1", "P2"]
    assert report.delivered == 3
    assert (stats.pending, stats.delivered, stats.dead) == (0, 3, 0)


async def test_cli_send_queue_delivers_and_exits_0(
    start_server: StartServer, tmp_path: Path
) -> None:
    dest = Destination()
    port = await start_server(MLLPServer(dest))
    messages = tmp_path / "messages.hl7"
    messages.write_bytes(hl7("Q1").replace(b"\r", b"\n") + b"\n" + hl7("Q2"))
    outbox = tmp_path / "outbox"
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "mllp_trio",
            "send",
            f"127.0.0.1:{port}",
            str(messages),
            "--plaintext",
            "--queue",
            "--store",
            str(outbox),
            "--log-level",
            "WARNING",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "Q1 AA" in out and "Q2 AA" in out
    assert dest.received == ["Q1", "Q2"]
    async with open_sqlite_store(outbox) as store:
        stats = await store.outbound_stats()
    assert (stats.pending, stats.delivered, stats.dead) == (0, 2, 0)


async def test_cli_send_queue_reports_dead_letters(
    start_server: StartServer, tmp_path: Path
) -> None:
    dest = Destination({"N1": ["AR"]})
    port = await start_server(MLLPServer(dest))
    messages = tmp_path / "messages.hl7"
    messages.write_bytes(hl7("N1"))
    result = await trio.run_process(
        [
            *(sys.executable, "-m", "mllp_trio", "send", f"127.0.0.1:{port}", str(messages)),
            *("--plaintext", "--queue", "--store", str(tmp_path / "outbox")),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert b"N1 AR" in result.stdout
    assert b"dead letter" in result.stdout + result.stderr
    assert SECRET.encode() not in result.stdout + result.stderr

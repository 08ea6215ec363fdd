"""Crash recovery: a listener killed with SIGKILL again and again loses and doubles nothing.

The listener is the real command line (``python -m mllp_trio listen``) with
a journal; the senders are durable :class:`QueuedSender` queues. After the
run, the journal must hold every message the senders saw acknowledged
exactly once, and every enqueued message must have been delivered.
"""

from __future__ import annotations

import collections
import contextlib
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from mllp_trio._config import ClientConfig
from mllp_trio._hl7 import read_msh
from mllp_trio.store._queue import QueueConfig, QueuedSender, SendReport
from mllp_trio.store._sqlite import DB_FILENAME, SQLiteStore, SQLiteStoreConfig, open_sqlite_store

from .hl7_samples import make_message

pytestmark = pytest.mark.slow

SENDERS = 4
PER_SENDER = 750  # 3000 messages in all
KILLS = 10
SEED = 20240531


class Listener:
    """The ``mllp-trio listen`` subprocess, restartable on the same port."""

    def __init__(self, store: Path, logs: Path) -> None:
        self.store = store
        self.logs = logs
        self.process: trio.Process | None = None
        self.port = 0
        self.starts = 0

    async def start(self) -> None:
        assert self.process is None
        self.starts += 1
        log_file = self.logs / f"listener-{self.starts:02d}.log"
        with log_file.open("wb") as stderr:
            self.process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "mllp_trio",
                    "listen",
                    "--plaintext",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--store",
                    str(self.store),
                    # INFO: the duplicate notices are counted from the log.
                    "--log-level",
                    "INFO",
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"listening on" not in output or not output.endswith(b"\n"):
                chunk = await self.process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(
                        f"listener exited at start: {output!r}\n{log_file.read_text()[-2000:]}"
                    )
                output += chunk
        line = next(x for x in output.decode().splitlines() if x.startswith("listening on"))
        port = int(line.split()[2].rsplit(":", 1)[1])
        assert self.port in (0, port)
        self.port = port  # restarts bind the same port (trio sets SO_REUSEADDR)

    async def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()

    def log_text(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("listener-*.log")))


def control_id(sender: int, number: int) -> str:
    return f"K{sender}-{number:05d}"


async def delivered(stores: list[SQLiteStore]) -> int:
    return sum([(await s.outbound_stats()).delivered for s in stores])


async def test_sigkilled_listener_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    total = SENDERS * PER_SENDER
    (tmp_path / "logs").mkdir()
    listener = Listener(tmp_path / "journal", tmp_path / "logs")
    reports: list[SendReport] = []
    kills = 0
    began = time.monotonic()
    try:
        await listener.start()
        async with AsyncExitStack() as stack:
            stores = [
                await stack.enter_async_context(open_sqlite_store(tmp_path / f"outbox{i}"))
                for i in range(SENDERS)
            ]
            senders = [
                QueuedSender(
                    store,
                    "127.0.0.1",
                    listener.port,
                    client_config=ClientConfig(connect_timeout=5, ack_timeout=10, retries=0),
                    config=QueueConfig(max_attempts=10_000, backoff_base=0.05, backoff_cap=0.5),
                )
                for store in stores
            ]
            for s, queue in enumerate(senders):
                for i in range(PER_SENDER):
                    await queue.enqueue(make_message(control_id=control_id(s, i)))

            # Kill points: after a random number of deliveries (so every kill
            # lands while traffic flows, whatever the machine's speed), plus a
            # random few milliseconds (so it lands anywhere in an exchange).
            thresholds = sorted(rng.sample(range(total // 20, total * 9 // 10), KILLS))

            async def deliver(queue: QueuedSender) -> None:
                try:
                    reports.append(await queue.deliver_pending())
                finally:
                    await queue.aclose()

            with trio.move_on_after(120) as deadline:
                async with trio.open_nursery() as nursery:
                    for queue in senders:
                        nursery.start_soon(deliver, queue)
                    for threshold in thresholds:
                        while await delivered(stores) < threshold:
                            await trio.sleep(0.005)
                        await trio.sleep(rng.uniform(0, 0.02))
                        await listener.kill()
                        kills += 1
                        # Down for a while: connections are refused, senders back off.
                        await trio.sleep(rng.uniform(0, 0.2))
                        await listener.start()
            sent_stats = [await s.outbound_stats() for s in stores]
            if deadline.cancelled_caught:
                heads = [
                    await s.fetch_next(q.destination) for s, q in zip(stores, senders, strict=True)
                ]
                pytest.fail(
                    f"stuck after {kills} kills: {sent_stats}; last errors "
                    f"{[h.last_error if h else None for h in heads]}; "
                    f"listener log tail: {listener.log_text()[-1500:]}"
                )
        # The final stop is a crash too; the journal must be readable as is.
        await listener.kill()
    finally:
        await listener.kill()

    elapsed = time.monotonic() - began
    # What the senders saw acknowledged: every row they marked sent.
    acknowledged: list[str] = []
    resends = 0
    for s in range(SENDERS):
        with (
            contextlib.closing(sqlite3.connect(tmp_path / f"outbox{s}" / DB_FILENAME)) as conn,
            conn,
        ):
            rows = conn.execute(
                "SELECT status, attempts, data FROM outbound ORDER BY id"
            ).fetchall()
        conn.close()
        resends += sum(attempts for _, attempts, _ in rows)
        acknowledged += [read_msh(data).control_id for status, _, data in rows if status == "sent"]

    config = SQLiteStoreConfig(read_only=True)
    async with open_sqlite_store(tmp_path / "journal", config=config) as journal:
        rows_total = await journal.count()
        infos = await journal.list_messages(limit=rows_total + 1)
        undelivered = len(await journal.fetch_undelivered(limit=rows_total + 1))
        # The control ids as the journal's bytes say, not only its metadata.
        uri = journal.path.resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn, conn:
            stored = conn.execute("SELECT id, data FROM inbound ORDER BY id").fetchall()
        conn.close()
    journaled = [read_msh(data).control_id for _, data in stored]
    assert [i.control_id for i in sorted(infos, key=lambda i: i.message_id)] == journaled
    counts = collections.Counter(journaled)
    doubled = sorted(cid for cid, n in counts.items() if n > 1)
    log = listener.log_text()
    duplicates = log.count("answered without delivery")
    recovered = sum(int(n) for n in re.findall(r"delivered (\d+) journaled message", log))

    summary = (
        f"kills={kills} listener starts={listener.starts} messages={total} "
        f"acknowledged={len(acknowledged)} journaled={rows_total} "
        f"duplicates recognised={duplicates} recovered at start={recovered} resends={resends} "
        f"stored twice={len(doubled)} undelivered={undelivered} elapsed={elapsed:.1f}s"
    )
    print(f"\ncrash test: {summary}")

    assert kills >= 8, summary
    assert [(r.delivered, r.dead) for r in reports] == [(PER_SENDER, 0)] * SENDERS, summary
    assert [(st.pending, st.delivered, st.dead) for st in sent_stats] == [
        (0, PER_SENDER, 0)
    ] * SENDERS, summary
    # Every enqueued message was eventually acknowledged ...
    assert sorted(acknowledged) == sorted(
        control_id(s, i) for s in range(SENDERS) for i in range(PER_SENDER)
    ), summary
    # ... is in the journal, exactly once (resends were recognised as duplicates) ...
    assert not doubled, f"{summary}; stored twice: {doubled[:10]}"
    assert set(journaled) >= set(acknowledged), summary
    assert rows_total == len(acknowledged), summary
    # ... in each sender's order, and was handed to the handler.
    for s in range(SENDERS):
        mine = [cid for cid in journaled if cid.startswith(f"K{s}-")]
        assert mine == sorted(mine), f"{summary}; sender {s} out of order"
    assert undelivered == 0, summary
    # The kills did hit traffic: some messages had to be sent again.
    assert resends > 0, summary

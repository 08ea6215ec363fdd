"""Test helpers for the SQLite store shared by the store and durable-listener tests."""

from __future__ import annotations

import sqlite3
import threading

import trio

from mllp_trio.store._sqlite import SQLiteStore


class Blocker:
    """Holds the store's writer thread inside one operation until released.

    While it is held, every request queues up, so the next batch is known:
    this makes the group-commit tests deterministic without timing.
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def op(self, _conn: sqlite3.Connection) -> None:
        self.started.set()
        self.release.wait()

    async def hold(self, store: SQLiteStore, nursery: trio.Nursery) -> None:
        nursery.start_soon(lambda: store._call(self.op, write=True))
        await trio.to_thread.run_sync(self.started.wait)

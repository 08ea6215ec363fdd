"""The SQLite message store: one writer thread, group commit, WAL with synchronous=FULL.

Design: the store owns one thread, and that thread owns the only connection.
Trio tasks put requests on a thread-safe queue and park (``trio.lowlevel``,
no Event per request); the thread takes every request waiting in the queue,
runs all the writes in one transaction (one fsync for the lot: group
commit), stores each result on its request and reschedules the waiting
tasks through the Trio token's ``run_sync_soon``, one call (one wake-up of
Trio) for the whole batch. This is simpler than a pool of ``trio.to_thread``
calls because a connection must stay on one thread, and it needs no OS thread
per waiting task, so a thousand waiting callers cost a thousand parked tasks
rather than a thousand threads.

The listener's two writes per message, journaling it and saving its answer,
run in bulk: one query checks the duplicate keys of every record of the
batch, one ``executemany`` inserts the new ones, one more saves every answer.
(Per statement, Python's sqlite3 layer costs more than SQLite's own work,
and every statement hands the GIL back and forth with the Trio thread.)
Any other write runs inside its own SAVEPOINT, so one failing operation (an
unknown id, say) is rolled back alone while the rest of the batch commits; a
bulk group that fails is rolled back and run one request at a time in the
same way. If the transaction itself fails (disk full at COMMIT, lock
timeout) every caller in the batch gets a :class:`StoreError` and nothing is
reported as committed.

Cancellation: a caller cancelled after its request was queued stops waiting,
but the request still runs and may commit. That is the at-least-once
promise: the sender, never told of the commit, resends, and the resend is
recognised as a duplicate.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import os
import queue
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import attrs
import trio

from mllp_trio._hl7 import is_negative
from mllp_trio.store._base import (
    BATCH_SIZE_BUCKETS,
    COMMIT_SECONDS_BUCKETS,
    CommitResult,
    FileIdentity,
    FileMessageResult,
    FileProgress,
    FileStatus,
    InboundRecord,
    JournalEntry,
    JournalStats,
    MessageInfo,
    OutboundMessage,
    OutboundStats,
    StoredMessage,
    StoreError,
    StoreErrorKind,
    StoreStats,
)

__all__ = [
    "DB_FILENAME",
    "BatchSendRecord",
    "BatchSendRow",
    "SQLiteStore",
    "SQLiteStoreConfig",
    "open_sqlite_store",
]

T = TypeVar("T")

log = logging.getLogger("mllp_trio.store")

#: The database file inside the store directory (SQLite adds ``-wal`` and ``-shm``).
DB_FILENAME: Final = "journal.sqlite3"

_SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    # AUTOINCREMENT: ids are never reused after pruning, so an id printed in
    # a log always names the same message.
    """CREATE TABLE inbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at REAL NOT NULL,
        peer TEXT NOT NULL,
        tls_identity TEXT,
        sending_application TEXT NOT NULL,
        sending_facility TEXT NOT NULL,
        control_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        ack BLOB,
        delivered_at REAL
    )""",
    """CREATE INDEX inbound_key ON inbound
        (sending_application, sending_facility, control_id, received_at)""",
    "CREATE INDEX inbound_undelivered ON inbound (id) WHERE delivered_at IS NULL",
    """CREATE TABLE outbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        sent_at REAL,
        dead_reason TEXT
    )""",
    "CREATE INDEX outbound_queue ON outbound (destination, id) WHERE status = 'pending'",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)

#: Tables added after schema version 1, created on every writable open.
_EXTENSIONS: Final = (
    # Folder transport (issue 10): one row per inbox file, with its progress,
    # and the answer to each of its messages (for the acknowledgement batch
    # and for resuming after a crash).
    """CREATE TABLE IF NOT EXISTS folder_file (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        inbox TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'done', 'error')),
        next_seq INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        started_at REAL NOT NULL,
        finished_at REAL,
        reason TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS folder_file_identity ON folder_file
        (inbox, name, size, mtime_ns, sha256)""",
    """CREATE TABLE IF NOT EXISTS folder_message (
        file_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        control_id TEXT NOT NULL,
        code TEXT NOT NULL,
        ack BLOB,
        PRIMARY KEY (file_id, seq)
    ) WITHOUT ROWID""",
    # Journal consumers (batch and directory sinks): the last id each finished.
    """CREATE TABLE IF NOT EXISTS sink_position (
        name TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # Durable batch sending (issue 10): one row per batch file sent through
    # the outbound queue, and which queue entry holds each of its messages
    # (inserted with the queue entry, in one transaction) with its answer.
    """CREATE TABLE IF NOT EXISTS batch_send_file (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        total INTEGER NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 0,
        started_at REAL NOT NULL,
        finished_at REAL
    )""",
    """CREATE INDEX IF NOT EXISTS batch_send_file_identity ON batch_send_file
        (destination, sha256)""",
    """CREATE TABLE IF NOT EXISTS batch_send_message (
        queue_id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        code TEXT,
        ack BLOB
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS batch_send_message_seq ON batch_send_message
        (file_id, seq)""",
)

#: Inbound payloads larger than this are journaled in parts of this size,
#: each its own write request: the writer thread is never held by one large
#: message for longer than one part, so the group commits of small messages
#: go on between its parts. (One transaction would also make every later
#: update of the entry, such as saving its ACK, rewrite the whole payload.)
_PART_SIZE = 1024 * 1024

#: The entry's data column then holds this byte and the parts' stage key
#: (a journaled message starts with "MSH", never with it). The parts table
#: is created with the first large message, so a store without any costs
#: no page; deleting an entry deletes its parts.
_STAGED: Final = b"\x00"
_PARTS_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS inbound_part (
        stage BLOB NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (stage, seq)
    )""",
    """CREATE TRIGGER IF NOT EXISTS inbound_part_deleted AFTER DELETE ON inbound
    WHEN substr(OLD.data, 1, 1) = x'00'
    BEGIN
        DELETE FROM inbound_part WHERE stage = substr(OLD.data, 2);
    END""",
)
# Parts of a commit cut short (a crash between its parts): no entry refers
# to them. length() of a blob is read from the record header alone.
_DROP_ORPHAN_PARTS: Final = """DELETE FROM inbound_part WHERE stage NOT IN
    (SELECT substr(data, 2) FROM inbound WHERE length(data) < size)"""

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_PERM: Final = 3
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_READONLY: Final = 8
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_CANTOPEN: Final = 14
_SQLITE_NOTADB: Final = 26


@attrs.frozen(kw_only=True)
class SQLiteStoreConfig:
    """Settings of the SQLite store.

    Attributes:
        duplicate_window: How long a journal entry counts for duplicate
            detection, measured back from the new record's arrival time, and
            how long delivered entries and sent outbound messages are kept
            before :meth:`SQLiteStore.prune` removes them. ``None`` keeps
            every entry forever. Default: 7 days.
        busy_timeout: Seconds to wait for a write lock held by another
            process before failing with ``StoreErrorKind.LOCKED``. Default: 5.
        max_batch: The most requests run in one transaction. Default: 512.
        group_wait: Seconds the writer may wait for more requests when
            fewer are queued than its previous transaction held (their
            callers, one message in flight per connection, are usually
            about to send the next): one transaction and one fsync for the
            whole group instead of two or three, which costs less CPU per
            message and lets more through. It waits only while that many
            have not arrived, so a lone caller is never delayed. It sleeps
            in steps of 0.25 ms. 0 disables.
            Default: 0.001 (1 ms).
        max_database_bytes: Refuse to grow the database file past this size
            (``PRAGMA max_page_count``); commits then fail with
            ``StoreErrorKind.FULL``, like a full disk. Default: ``None``, no limit.
        read_only: Open an existing store for reading only (admin tools
            next to a running engine). Default: False.
    """

    duplicate_window: timedelta | None = timedelta(days=7)
    busy_timeout: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    max_batch: int = attrs.field(default=512, validator=attrs.validators.ge(1))
    group_wait: float = attrs.field(default=0.001, validator=attrs.validators.ge(0))
    max_database_bytes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(4096))
    )
    read_only: bool = False


def _translate(exc: BaseException, db_file: Path, config: SQLiteStoreConfig) -> BaseException:
    """Turn an sqlite3 error into a StoreError a person can act on."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == _SQLITE_FULL:
        err = StoreError(
            f"store {db_file} is full: the disk has no space left or max_database_bytes "
            f"({config.max_database_bytes}) was reached; free space or raise the limit. "
            "Nothing of this operation was committed.",
            kind=StoreErrorKind.FULL,
        )
    elif code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        err = StoreError(
            f"store {db_file} is locked by another process for more than "
            f"{config.busy_timeout}s; only one engine may write a store directory at a "
            "time: stop the other process. Nothing of this operation was committed.",
            kind=StoreErrorKind.LOCKED,
        )
    elif code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        err = StoreError(
            f"store {db_file} is not an SQLite database or is corrupt ({exc}); stop the "
            "engine, move the file and its -wal/-shm files aside, and restore from a "
            "backup (the sqlite3 shell's .recover command may salvage rows).",
            kind=StoreErrorKind.CORRUPT,
        )
    elif code in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN):
        err = StoreError(
            f"cannot read or write store {db_file} ({exc}); check that the directory "
            "exists, its permissions, and the health of the disk.",
            kind=StoreErrorKind.IO,
        )
    else:
        err = StoreError(f"store {db_file} failed: {exc}", kind=StoreErrorKind.OTHER)
    err.__cause__ = exc
    return err


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _opt_ts(value: float | None) -> datetime | None:
    return None if value is None else _ts(value)


# ---------------------------------------------------------------------------
# Operations: plain functions of a connection, run on the writer thread.


def _commit_inbound(
    conn: sqlite3.Connection,
    record: InboundRecord,
    ack: bytes | None,
    window: timedelta | None,
    stage: bytes,
    delivered_at: float | None = None,
) -> CommitResult:
    """Journal a message whose parts were staged (see :data:`_PART_SIZE`), or find its original."""
    received = record.received_at.timestamp()
    duplicate = _duplicate_of(
        conn,
        record.sending_application,
        record.sending_facility,
        record.control_id,
        received,
        window,
    )
    if duplicate is not None:
        conn.execute("DELETE FROM inbound_part WHERE stage = ?", (stage,))
        return duplicate
    cur = conn.execute(
        _INSERT_INBOUND,
        (
            received,
            record.peer,
            record.tls_identity,
            record.sending_application,
            record.sending_facility,
            record.control_id,
            len(record.data),
            _STAGED + stage,
            ack,
            delivered_at,
        ),
    )
    assert cur.lastrowid is not None
    return CommitResult(
        message_id=cur.lastrowid, duplicate=False, ack=ack, delivered=delivered_at is not None
    )


def _commit_row(
    conn: sqlite3.Connection, row: _Row, window: timedelta | None
) -> int | CommitResult:
    """One message journaled whole: its new id, or the original it duplicates."""
    if row[5]:
        duplicate = _duplicate_of(conn, row[3], row[4], row[5], row[0], window)
        if duplicate is not None:
            return duplicate
    cur = conn.execute(_INSERT_ROW, row)
    assert cur.lastrowid is not None
    return cur.lastrowid


def _stage_part(conn: sqlite3.Connection, stage: bytes, seq: int, part: bytes) -> None:
    if seq == 0:
        for statement in _PARTS_SCHEMA:
            conn.execute(statement)
    conn.execute("INSERT INTO inbound_part (stage, seq, data) VALUES (?, ?, ?)", (stage, seq, part))


def _payload(conn: sqlite3.Connection, data: bytes) -> bytes:
    """A journal entry's message: its data column, or the parts it refers to."""
    if data[:1] != _STAGED:
        return data
    rows = conn.execute(
        "SELECT data FROM inbound_part WHERE stage = ? ORDER BY seq", (data[1:],)
    ).fetchall()
    return b"".join(row[0] for row in rows)


def _duplicate_of(
    conn: sqlite3.Connection,
    application: str,
    facility: str,
    control_id: str,
    received: float,
    window: timedelta | None,
) -> CommitResult | None:
    if control_id:
        sql = (
            "SELECT id, ack, delivered_at FROM inbound WHERE sending_application = ?"
            " AND sending_facility = ? AND control_id = ?"
        )
        params: list[object] = [application, facility, control_id]
        if window is not None:
            sql += " AND received_at >= ?"
            params.append(received - window.total_seconds())
        row = conn.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
        if row is not None:
            return CommitResult(
                message_id=row[0], duplicate=True, ack=row[1], delivered=row[2] is not None
            )
    return None


_INSERT_INBOUND: Final = (
    "INSERT INTO inbound (received_at, peer, tls_identity, sending_application,"
    " sending_facility, control_id, size, data, ack, delivered_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: A message journaled whole, as the Trio side builds it once for the
#: writer: (received_at, peer, tls_identity, sending_application,
#: sending_facility, control_id, size, data, ack, delivered_at).
_Row = tuple[float, str, str | None, str, str, str, int, bytes, bytes | None, float | None]

#: Inserts a :data:`_Row`. Plain ``?`` placeholders: numbered ones (``?7``)
#: bound from a sequence are deprecated from Python 3.12 and refused from 3.14.
_INSERT_ROW: Final = (
    "INSERT INTO inbound (received_at, peer, tls_identity, sending_application,"
    " sending_facility, control_id, size, data, ack, delivered_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Save an answer; with a time, also mark the entry delivered (once: the first time stays).
_SAVE_ACK: Final = (
    "UPDATE inbound SET ack = ?, delivered_at = coalesce(delivered_at, ?) WHERE id = ?"
)

#: Keys looked up by one statement of the batched duplicate check. A chunk
#: is padded (its last key repeated) to a power of two up to this, so a
#: handful of statements serve every batch size from SQLite's statement cache.
_KEY_CHUNK: Final = 64

#: A journal row that has a batch record's key: (id, ack, delivered_at, received_at).
_KeyRow = tuple[int, bytes | None, float | None, float]
_Key = tuple[str, str, str]


@functools.cache
def _find_keys_sql(keys: int, windowed: bool) -> str:
    # The keys drive the join (CROSS JOIN keeps them the outer loop), so
    # each is one search of the inbound_key index.
    values = ", ".join(["(?, ?, ?)"] * keys)
    where = " WHERE i.received_at >= ?" if windowed else ""
    return (
        f"WITH k(a, f, c) AS (VALUES {values}) SELECT k.a, k.f, k.c, i.id, i.ack,"
        " i.delivered_at, i.received_at FROM k CROSS JOIN inbound AS i"
        " ON i.sending_application = k.a AND i.sending_facility = k.f AND i.control_id = k.c"
        f"{where}"
    )


def _journaled_keys(
    conn: sqlite3.Connection, keys: list[_Key], since: float | None
) -> dict[_Key, list[_KeyRow]]:
    """Journal rows having any of ``keys`` (received at ``since`` or later), per key."""
    found: dict[_Key, list[_KeyRow]] = {}
    for start in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[start : start + _KEY_CHUNK]
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [chunk[-1]] * (size - len(chunk))
        params: list[object] = [part for key in chunk for part in key]
        if since is not None:
            params.append(since)
        seen: set[int] = set()  # a padded key matches its rows twice
        for a, f, c, *row in conn.execute(_find_keys_sql(size, since is not None), params):
            if row[0] not in seen:
                seen.add(row[0])
                found.setdefault((a, f, c), []).append(cast(_KeyRow, tuple(row)))
    return found


def _commit_many(
    conn: sqlite3.Connection, rows: Sequence[_Row], window: timedelta | None
) -> list[int | CommitResult]:
    """Journal a batch of messages, or recognise duplicates, as one call of each would.

    One query checks every key of the batch, one ``executemany`` inserts the
    new messages. A message is a duplicate of the newest entry with its key
    received within the window before it, earlier messages of the same batch
    included, exactly as if :func:`_commit_row` ran for each in order.

    Returns:
        Per message, its new journal id, or the :class:`CommitResult` of
        the original it duplicates.
    """
    span = None if window is None else window.total_seconds()
    keys = {row[3:6]: None for row in rows if row[5]}
    found: dict[_Key, list[_KeyRow]] = {}
    if keys:
        since = None if span is None else min(row[0] for row in rows) - span
        found = _journaled_keys(conn, list(keys), since)
    results: list[int | CommitResult | None] = [None] * len(rows)
    fresh: list[int] = []  # positions of the messages inserted
    earlier: dict[_Key, list[int]] = {}  # positions of messages inserted, per key
    copies: list[tuple[int, int]] = []  # (position, position of its original in this batch)
    for i, row in enumerate(rows):
        if row[5]:
            key = row[3:6]
            cutoff = None if span is None else row[0] - span
            prior = earlier.get(key)
            if prior is not None:
                # Newest first: this batch's messages have the highest ids.
                original = next(
                    (j for j in reversed(prior) if cutoff is None or rows[j][0] >= cutoff), None
                )
                if original is not None:
                    copies.append((i, original))
                    continue
            best: _KeyRow | None = None
            for stored in found.get(key, ()):
                if (cutoff is None or stored[3] >= cutoff) and (
                    best is None or stored[0] > best[0]
                ):
                    best = stored
            if best is not None:
                results[i] = CommitResult(
                    message_id=best[0], duplicate=True, ack=best[1], delivered=best[2] is not None
                )
                continue
            if prior is None:
                earlier[key] = [i]
            else:
                prior.append(i)
        fresh.append(i)
    if fresh:
        conn.executemany(_INSERT_ROW, rows if len(fresh) == len(rows) else [rows[i] for i in fresh])
        # AUTOINCREMENT gives each insert the next id: the batch's ids are
        # the last one and those just below it, in order.
        (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
        for message_id, i in enumerate(fresh, start=last - len(fresh) + 1):
            results[i] = message_id
    for i, original in copies:
        row = rows[original]
        results[i] = CommitResult(
            message_id=cast(int, results[original]),
            duplicate=True,
            ack=row[8],
            delivered=row[9] is not None,
        )
    return cast(list[int | CommitResult], results)


def _update_one(conn: sqlite3.Connection, sql: str, params: tuple[object, ...], what: str) -> None:
    if conn.execute(sql, params).rowcount == 0:
        raise StoreError(f"no {what} with id {params[-1]}", kind=StoreErrorKind.NOT_FOUND)


_INFO_COLUMNS: Final = (
    "id, received_at, peer, tls_identity, control_id, sending_application,"
    " sending_facility, size, ack IS NOT NULL, delivered_at"
)


def _info(row: tuple[Any, ...]) -> MessageInfo:
    return MessageInfo(
        message_id=row[0],
        received_at=_ts(row[1]),
        peer=row[2],
        tls_identity=row[3],
        control_id=row[4],
        sending_application=row[5],
        sending_facility=row[6],
        size=row[7],
        has_ack=bool(row[8]),
        delivered_at=_opt_ts(row[9]),
    )


def _fetch_undelivered(conn: sqlite3.Connection, limit: int, after_id: int) -> list[StoredMessage]:
    rows = conn.execute(
        f"SELECT {_INFO_COLUMNS}, data FROM inbound"
        " WHERE delivered_at IS NULL AND id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    return [StoredMessage(info=_info(row[:-1]), data=_payload(conn, row[-1])) for row in rows]


def _export(conn: sqlite3.Connection, message_id: int) -> bytes:
    row = conn.execute("SELECT data FROM inbound WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise StoreError(f"no journal entry with id {message_id}", kind=StoreErrorKind.NOT_FOUND)
    return _payload(conn, row[0])


def _fetch_next(conn: sqlite3.Connection, destination: str) -> OutboundMessage | None:
    row = conn.execute(
        "SELECT id, data, attempts, enqueued_at, next_attempt_at, last_error FROM outbound"
        " WHERE destination = ? AND status = 'pending' ORDER BY id LIMIT 1",
        (destination,),
    ).fetchone()
    if row is None:
        return None
    return OutboundMessage(
        message_id=row[0],
        destination=destination,
        data=row[1],
        attempts=row[2],
        enqueued_at=_ts(row[3]),
        next_attempt_at=_ts(row[4]),
        last_error=row[5],
    )


def _requeue(
    conn: sqlite3.Connection, ids: list[int] | None, now: float, destination: str | None
) -> int:
    sql = (
        "UPDATE outbound SET status = 'pending', attempts = 0, next_attempt_at = ?,"
        " dead_reason = NULL WHERE status = 'dead'"
    )
    params: tuple[object, ...] = (now,)
    if destination is not None:
        sql += " AND destination = ?"
        params += (destination,)
    if ids is None:
        return conn.execute(sql, params).rowcount
    return sum(conn.execute(sql + " AND id = ?", (*params, i)).rowcount for i in ids)


def _prune(conn: sqlite3.Connection, cutoff: float) -> int:
    # Undelivered entries are kept whatever their age: deleting them would
    # lose acknowledged messages. The caller keeps the cutoff at or before
    # the duplicate window, whose entries duplicate detection still reads.
    inbound = conn.execute(
        "DELETE FROM inbound WHERE delivered_at IS NOT NULL AND received_at < ?", (cutoff,)
    ).rowcount
    outbound = conn.execute(
        "DELETE FROM outbound WHERE status = 'sent' AND sent_at < ?", (cutoff,)
    ).rowcount
    # Finished folder files: their answers served the acknowledgement batch;
    # an active file's progress is kept whatever its age.
    finished = "SELECT id FROM folder_file WHERE status != 'active' AND finished_at < ?"
    conn.execute(f"DELETE FROM folder_message WHERE file_id IN ({finished})", (cutoff,))
    files = conn.execute(f"DELETE FROM folder_file WHERE id IN ({finished})", (cutoff,)).rowcount
    return inbound + outbound + files


def _outbound_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM outbound GROUP BY status").fetchall())


def _journal_stats(conn: sqlite3.Connection, files: list[Path]) -> JournalStats:
    delivered, undelivered, oldest = conn.execute(
        "SELECT count(delivered_at), count(*) - count(delivered_at), min(received_at) FROM inbound"
    ).fetchone()
    (oldest_undelivered,) = conn.execute(
        "SELECT min(received_at) FROM inbound WHERE delivered_at IS NULL"
    ).fetchone()
    (attempts,) = conn.execute(
        "SELECT coalesce(sum(attempts), 0) FROM outbound WHERE status != 'sent'"
    ).fetchone()
    size = 0
    for file in files:
        with contextlib.suppress(OSError):
            size += file.stat().st_size
    return JournalStats(
        size_bytes=size,
        inbound_delivered=delivered,
        inbound_undelivered=undelivered,
        outbound={"pending": 0, "sent": 0, "dead": 0, **_outbound_counts(conn)},
        outbound_attempts=attempts,
        oldest_entry=_opt_ts(oldest),
        oldest_undelivered=_opt_ts(oldest_undelivered),
    )


def _private_directory(directory: Path) -> None:
    """Create the store directory 0700, or tighten an existing looser one to 0700.

    The journal holds patient data: group and others get no access whatever
    the umask. An existing directory readable by others is tightened (and
    the change logged) rather than refused, so an upgrade keeps running.
    """
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode != 0o700:
        # mkdir's mode is masked by the umask, and an existing folder keeps its own.
        os.chmod(directory, 0o700)
        if mode & 0o077:
            log.warning(
                "store directory %s was mode %04o (open to group or others); set to 0700",
                directory,
                mode,
            )


def _private_files(db_file: Path) -> None:
    """Create the database file 0600 and tighten existing journal files to 0600.

    SQLite creates its ``-wal`` and ``-shm`` files with the mode of the
    database file, so a 0600 database keeps them private as well.
    """
    fd = os.open(db_file, os.O_CREAT | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        other = db_file.with_name(db_file.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(other.stat().st_mode) != 0o600:
                os.chmod(other, 0o600)


def _open_file(conn: sqlite3.Connection, identity: FileIdentity, now: float) -> FileProgress:
    key = (identity.inbox, identity.name, identity.size, identity.mtime_ns, identity.sha256)
    row = conn.execute(
        "SELECT id, status, next_seq, failed FROM folder_file WHERE inbox = ? AND name = ?"
        " AND size = ? AND mtime_ns = ? AND sha256 = ? ORDER BY id DESC LIMIT 1",
        key,
    ).fetchone()
    if row is not None:
        return FileProgress(
            file_id=row[0], status=FileStatus(row[1]), next_seq=row[2], failed=row[3], created=False
        )
    cur = conn.execute(
        "INSERT INTO folder_file (inbox, name, size, mtime_ns, sha256, status, started_at)"
        " VALUES (?, ?, ?, ?, ?, 'active', ?)",
        (*key, now),
    )
    assert cur.lastrowid is not None
    return FileProgress(
        file_id=cur.lastrowid, status=FileStatus.ACTIVE, next_seq=0, failed=0, created=True
    )


def _record_file_results(
    conn: sqlite3.Connection, file_id: int, results: list[FileMessageResult]
) -> None:
    row = conn.execute("SELECT next_seq FROM folder_file WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise StoreError(f"no folder file with id {file_id}", kind=StoreErrorKind.NOT_FOUND)
    # Results below the resume point are recorded already: counting them
    # again would inflate the failure count.
    fresh = [r for r in results if r.seq >= row[0]]
    if not fresh:
        return
    conn.executemany(
        "INSERT OR REPLACE INTO folder_message (file_id, seq, control_id, code, ack)"
        " VALUES (?, ?, ?, ?, ?)",
        [(file_id, r.seq, r.control_id, r.code, r.ack) for r in fresh],
    )
    conn.execute(
        "UPDATE folder_file SET next_seq = max(next_seq, ?), failed = failed + ? WHERE id = ?",
        (max(r.seq for r in fresh) + 1, sum(is_negative(r.code) for r in fresh), file_id),
    )


def _file_results(
    conn: sqlite3.Connection, file_id: int, after_seq: int, limit: int
) -> list[FileMessageResult]:
    rows = conn.execute(
        "SELECT seq, control_id, code, ack FROM folder_message WHERE file_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (file_id, after_seq, limit),
    ).fetchall()
    return [FileMessageResult(seq=r[0], control_id=r[1], code=r[2], ack=r[3]) for r in rows]


@attrs.frozen(kw_only=True)
class BatchSendRecord:
    """A batch file being sent (or sent) through the outbound queue.

    Attributes:
        file_id: Its record id.
        next_seq: Messages with a lower number are in the queue already.
        total: How many messages the file holds.
        finished: Whether every message was delivered or became a dead letter.
    """

    file_id: int
    next_seq: int
    total: int
    finished: bool


@attrs.frozen(kw_only=True)
class BatchSendRow:
    """One queued message of a batch file, and what became of it.

    Attributes:
        seq: Its number in the file.
        status: The queue status: ``pending``, ``sent`` or ``dead``.
        code: MSA-1 of its final answer, if recorded.
        ack: The final answer's bytes, if recorded. Not in the repr.
        error: Why it became a dead letter, or its last error.
    """

    seq: int
    status: str
    code: str | None
    ack: bytes | None = attrs.field(repr=False)
    error: str | None


def _open_batch_send(
    conn: sqlite3.Connection,
    destination: str,
    path: str,
    sha256: str,
    total: int,
    now: float,
    again: bool,
) -> BatchSendRecord:
    row = None
    if not again:
        row = conn.execute(
            "SELECT id, next_seq, total, finished_at FROM batch_send_file"
            " WHERE destination = ? AND sha256 = ? ORDER BY id DESC LIMIT 1",
            (destination, sha256),
        ).fetchone()
    if row is not None:
        return BatchSendRecord(
            file_id=row[0], next_seq=row[1], total=row[2], finished=row[3] is not None
        )
    cur = conn.execute(
        "INSERT INTO batch_send_file (destination, path, sha256, total, started_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (destination, path, sha256, total, now),
    )
    assert cur.lastrowid is not None
    return BatchSendRecord(file_id=cur.lastrowid, next_seq=0, total=total, finished=False)


def _enqueue_batch(
    conn: sqlite3.Connection,
    file_id: int,
    destination: str,
    items: list[tuple[int, bytes]],
    next_seq: int,
    now: float,
) -> None:
    row = conn.execute("SELECT next_seq FROM batch_send_file WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise StoreError(f"no batch file with id {file_id}", kind=StoreErrorKind.NOT_FOUND)
    for seq, data in items:
        if seq < row[0]:
            continue  # queued before a crash: never twice
        cur = conn.execute(
            "INSERT INTO outbound (destination, size, data, status, enqueued_at,"
            " next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?)",
            (destination, len(data), data, now, now),
        )
        conn.execute(
            "INSERT INTO batch_send_message (queue_id, file_id, seq) VALUES (?, ?, ?)",
            (cur.lastrowid, file_id, seq),
        )
    conn.execute(
        "UPDATE batch_send_file SET next_seq = max(next_seq, ?) WHERE id = ?", (next_seq, file_id)
    )


def _batch_send_rows(
    conn: sqlite3.Connection, file_id: int, after_seq: int, limit: int
) -> list[BatchSendRow]:
    rows = conn.execute(
        "SELECT m.seq, o.status, m.code, m.ack, coalesce(o.dead_reason, o.last_error)"
        " FROM batch_send_message m JOIN outbound o ON o.id = m.queue_id"
        " WHERE m.file_id = ? AND m.seq > ? ORDER BY m.seq LIMIT ?",
        (file_id, after_seq, limit),
    ).fetchall()
    return [BatchSendRow(seq=r[0], status=r[1], code=r[2], ack=r[3], error=r[4]) for r in rows]


def _journal_after(conn: sqlite3.Connection, after_id: int, limit: int) -> list[JournalEntry]:
    rows = conn.execute(
        f"SELECT {_INFO_COLUMNS}, data, ack FROM inbound WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    return [
        JournalEntry(
            message=StoredMessage(info=_info(row[:-2]), data=_payload(conn, row[-2])),
            ack=row[-1],
        )
        for row in rows
    ]


# ---------------------------------------------------------------------------
# The writer thread.


class _Pending:
    """A request to the writer thread and, once run, its result for the waiting Trio task.

    The waiting task is parked and rescheduled directly (no ``trio.Event``
    per request): the writer thread sets ``value`` or ``error``, then one
    ``run_sync_soon`` call per batch reschedules every task still waiting.
    """

    __slots__ = ("error", "task", "value")

    #: Whether the request writes (runs inside the batch's transaction).
    write = True

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.value: object = None
        self.error: BaseException | None = None

    def abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        # The caller stops waiting; the request itself still runs (and may
        # commit): the at-least-once promise of the module docstring.
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def fail(self, error: BaseException) -> None:
        self.value = None
        self.error = error


class _Request(_Pending):
    """Any operation: a function of the connection, in its own SAVEPOINT when it writes."""

    __slots__ = ("op", "write")

    def __init__(self, op: Callable[[sqlite3.Connection], object], *, write: bool) -> None:
        super().__init__()
        self.op = op
        self.write = write


class _Inbound(_Pending):
    """A message small enough to be journaled whole, committed in bulk with its batch.

    Its value is the new journal id, or the :class:`CommitResult` of the
    original it duplicates.
    """

    __slots__ = ("row",)

    def __init__(self, row: _Row) -> None:
        super().__init__()
        self.row = row


class _SaveAck(_Pending):
    """An acknowledgement to save with a journal entry, saved in bulk with its batch."""

    __slots__ = ("params",)

    def __init__(self, params: tuple[bytes, float | None, int]) -> None:
        super().__init__()
        self.params = params  # (ack, delivered_at, message_id): _SAVE_ACK's parameters


def _resolve(done: list[_Pending]) -> None:
    # Runs on the Trio thread: one call (one wake-up of Trio) per batch.
    reschedule = trio.lowlevel.reschedule
    for request in done:
        task = request.task
        if task is not None:
            request.task = None
            reschedule(task)


_STOP: Final = object()

#: The writer's sleep while it waits for the rest of a group (``group_wait``).
_WAIT_STEP: Final = 0.00025


class SQLiteStore:
    """The SQLite implementation of :class:`~mllp_trio.MessageStore`.

    Create it with :func:`open_sqlite_store`; every method is async and
    raises :class:`StoreError` on a storage failure. Only one process should
    write a store directory at a time; others may open it ``read_only``.
    """

    def __init__(self, directory: Path, config: SQLiteStoreConfig) -> None:
        self._directory = directory
        self._db_file = directory / DB_FILENAME
        self._config = config
        self._token = trio.lowlevel.current_trio_token()
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._closed = False
        self._stats = StoreStats()
        # Ids handed out by fetch_next and not yet marked: "in flight" means
        # something only to this process, so it lives in memory and a
        # restart makes them pending again without any recovery step.
        self._in_flight: set[int] = set()
        self._opened = _Request(lambda _conn: None, write=False)
        self._thread = threading.Thread(
            target=self._thread_main, name=f"mllp-store {directory}", daemon=True
        )

    @property
    def path(self) -> Path:
        """The database file."""
        return self._db_file

    @property
    def config(self) -> SQLiteStoreConfig:
        """The settings the store was opened with."""
        return self._config

    @property
    def stats(self) -> StoreStats:
        """Group-commit counters since the store was opened."""
        return self._stats

    # -- thread side --------------------------------------------------------

    def _deliver(self, done: list[_Pending]) -> None:
        # After the Trio run ended nobody is left to tell.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(_resolve, done)

    def _connect(self) -> sqlite3.Connection:
        cfg = self._config
        if cfg.read_only:
            if not self._db_file.is_file():
                raise StoreError(
                    f"no store at {self._db_file}; check the path", kind=StoreErrorKind.IO
                )
            uri = self._db_file.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=cfg.busy_timeout)
        else:
            if self._directory.exists() and not self._directory.is_dir():
                raise StoreError(
                    f"store path {self._directory} exists and is not a directory; "
                    "give a directory (the store creates "
                    f"{DB_FILENAME} in it)",
                    kind=StoreErrorKind.IO,
                )
            _private_directory(self._directory)
            _private_files(self._db_file)
            conn = sqlite3.connect(self._db_file, isolation_level=None, timeout=cfg.busy_timeout)
        try:
            if not cfg.read_only:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"store {self._db_file}: the filesystem does not support SQLite WAL "
                        f"mode (got {mode!r}); use a local disk",
                        kind=StoreErrorKind.IO,
                    )
            conn.execute("PRAGMA synchronous = FULL")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"store {self._db_file} has schema version {version}, newer than this "
                    f"mllp_trio understands ({_SCHEMA_VERSION}); upgrade mllp_trio",
                    kind=StoreErrorKind.OTHER,
                )
            if version == 0:
                if cfg.read_only:
                    raise StoreError(
                        f"{self._db_file} is not an mllp_trio store (no schema)",
                        kind=StoreErrorKind.CORRUPT,
                    )
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            if not cfg.read_only:
                for statement in _EXTENSIONS:
                    conn.execute(statement)
                if conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'inbound_part'"
                ).fetchone():
                    conn.execute(_DROP_ORPHAN_PARTS)
            if cfg.max_database_bytes is not None:
                (page_size,) = conn.execute("PRAGMA page_size").fetchone()
                pages = max(1, cfg.max_database_bytes // page_size)
                conn.execute(f"PRAGMA max_page_count = {int(pages)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _thread_main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._opened.fail(_translate(exc, self._db_file, self._config))
            self._deliver([self._opened])
            return
        self._deliver([self._opened])
        try:
            stopping = False
            get, get_nowait = self._queue.get, self._queue.get_nowait
            limit, linger = self._config.max_batch, self._config.group_wait
            # The size of the previous batch: its callers (one message in
            # flight per connection, typically) are likely back soon.
            expect = 1
            while not stopping:
                batch: list[_Pending] = []
                item = get()
                deadline = 0.0
                # Group commit: everything that queued up while the previous
                # transaction was being written joins this one; while fewer
                # than the previous batch are here, wait (at most group_wait)
                # for the rest: one transaction, one fsync for them all. The
                # wait sleeps in short steps and takes what came: woken by
                # every arrival, this thread would take the GIL from the Trio
                # thread once per message (measured: smaller groups, more CPU).
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(cast(_Pending, item))
                    if len(batch) >= limit:
                        break
                    try:
                        item = get_nowait()
                        continue
                    except queue.Empty:
                        pass
                    got = False
                    while len(batch) < expect and linger:
                        now = time.monotonic()
                        if not deadline:
                            deadline = now + linger
                        elif now >= deadline:
                            break
                        time.sleep(min(_WAIT_STEP, deadline - now))
                        try:
                            item = get_nowait()
                            got = True
                            break
                        except queue.Empty:
                            pass
                    if not got:
                        break
                expect = len(batch)
                if batch:
                    self._run_batch(conn, batch)
        finally:
            if not self._config.read_only:
                # Best effort: the WAL is replayed on the next open anyway.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        writes = [r for r in batch if r.write]
        if writes:
            try:
                self._run_writes(conn, writes)
            except BaseException as exc:
                # A bug, not a storage fault: never let it kill the writer thread.
                error = StoreError(f"internal store failure: {exc!r}")
                for r in writes:
                    r.fail(error)
            # The writes' callers go on at once; reads come after.
            self._deliver(writes)
        reads = [r for r in batch if not r.write]
        if reads:
            for r in reads:
                self._run_read(conn, cast(_Request, r))
            self._deliver(reads)

    def _run_read(self, conn: sqlite3.Connection, request: _Request) -> None:
        try:
            conn.execute("BEGIN")  # one snapshot for multi-query reads
            try:
                request.value = request.op(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except Exception as exc:
            request.fail(_translate(exc, self._db_file, self._config))

    def _run_writes(self, conn: sqlite3.Connection, writes: list[_Pending]) -> None:
        """Run a batch's writes in one transaction; every result once it is durable.

        Inbound commits and saved acknowledgements (the listener's two
        writes per message) run in bulk, a few statements for the lot;
        anything else runs alone in its SAVEPOINT. A bulk group that fails
        is rolled back and run again one request at a time, so that, as
        for every other operation, only the failing request fails.
        """
        inbound: list[_Inbound] = []
        acks: list[_SaveAck] = []
        others: list[_Request] = []
        for r in writes:
            if type(r) is _Inbound:
                inbound.append(r)
            elif type(r) is _SaveAck:
                acks.append(r)
            else:
                others.append(cast(_Request, r))
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Answers first: a duplicate in this batch then sees its original's.
            if acks:
                self._save_acks(conn, acks)
            if inbound:
                self._commit_inbounds(conn, inbound)
            for r in others:
                self._run_op(conn, r, r.op)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                # If even this fails, closing the connection rolls back too.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            # Nothing in this batch was committed: every caller learns so.
            error = _translate(exc, self._db_file, self._config)
            for r in writes:
                r.fail(error)
            return
        self._count(inbound, others, len(writes), time.perf_counter() - started)

    def _run_op(
        self, conn: sqlite3.Connection, request: _Pending, op: Callable[[sqlite3.Connection], Any]
    ) -> None:
        """One write in its own SAVEPOINT: if it fails, only it is rolled back."""
        conn.execute("SAVEPOINT op")
        try:
            value = op(conn)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled back the whole transaction
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            request.fail(_translate(exc, self._db_file, self._config))
            return
        conn.execute("RELEASE op")
        request.value = value
        request.error = None

    def _bulk(self, conn: sqlite3.Connection, run: Callable[[], bool]) -> bool:
        """Run ``run`` in a SAVEPOINT; False (and nothing of it kept) if it fails or says False."""
        conn.execute("SAVEPOINT bulk")
        try:
            ok = run()
        except Exception:
            if not conn.in_transaction:
                raise  # SQLite rolled back the whole transaction
            ok = False
        if not ok:
            conn.execute("ROLLBACK TO bulk")
        conn.execute("RELEASE bulk")
        return ok

    def _save_acks(self, conn: sqlite3.Connection, acks: list[_SaveAck]) -> None:
        def run() -> bool:
            cur = conn.executemany(_SAVE_ACK, [r.params for r in acks])
            return cur.rowcount == len(acks)  # else an unknown id: find which, one by one

        if self._bulk(conn, run):
            for r in acks:
                r.value = r.error = None
            return
        for r in acks:
            self._run_op(
                conn,
                r,
                functools.partial(
                    _update_one, sql=_SAVE_ACK, params=r.params, what="journal entry"
                ),
            )

    def _commit_inbounds(self, conn: sqlite3.Connection, inbound: list[_Inbound]) -> None:
        window = self._config.duplicate_window
        results: list[int | CommitResult] = []

        def run() -> bool:
            results.extend(_commit_many(conn, [r.row for r in inbound], window))
            return True

        if self._bulk(conn, run):
            for r, value in zip(inbound, results, strict=True):
                r.value = value
                r.error = None
            return
        for r in inbound:
            self._run_op(conn, r, functools.partial(_commit_row, row=r.row, window=window))

    def _count(
        self, inbound: list[_Inbound], others: list[_Request], size: int, seconds: float
    ) -> None:
        committed = duplicates = 0
        for r in inbound:
            if r.error is None:
                if type(r.value) is int:
                    committed += 1
                else:
                    duplicates += 1
        for other in others:
            value = other.value
            if isinstance(value, CommitResult):
                if value.duplicate:
                    duplicates += 1
                else:
                    committed += 1
        s = self._stats
        commit_seconds = list(s.commit_seconds)
        commit_seconds[bisect.bisect_left(COMMIT_SECONDS_BUCKETS, seconds)] += 1
        batch_sizes = list(s.batch_sizes)
        batch_sizes[bisect.bisect_left(BATCH_SIZE_BUCKETS, size)] += 1
        # One reference swap: the Trio thread always reads a consistent snapshot.
        self._stats = StoreStats(
            transactions=s.transactions + 1,
            records_committed=s.records_committed + committed,
            max_batch_size=max(s.max_batch_size, size),
            duplicates=s.duplicates + duplicates,
            commit_seconds=tuple(commit_seconds),
            commit_seconds_sum=s.commit_seconds_sum + seconds,
            batch_sizes=tuple(batch_sizes),
            batch_size_sum=s.batch_size_sum + size,
        )

    # -- Trio side ----------------------------------------------------------

    async def _call(self, op: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        return cast(T, await self._submit(_Request(op, write=write)))

    async def _submit(self, request: _Pending) -> object:
        # A caller cancelled before queueing must not commit anything.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise StoreError(f"store {self._db_file} is closed", kind=StoreErrorKind.CLOSED)
        if request.write and self._config.read_only:
            raise StoreError(
                f"store {self._db_file} was opened read-only", kind=StoreErrorKind.READ_ONLY
            )
        request.task = trio.lowlevel.current_task()
        self._queue.put(request)
        await trio.lowlevel.wait_task_rescheduled(request.abort)
        if request.error is not None:
            raise request.error
        return request.value

    async def _open(self) -> None:
        self._opened.task = trio.lowlevel.current_task()
        self._thread.start()
        await trio.lowlevel.wait_task_rescheduled(self._opened.abort)
        if self._opened.error is not None:
            raise self._opened.error

    async def _close(self) -> None:
        self._closed = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            await trio.to_thread.run_sync(self._thread.join)

    async def commit_inbound(
        self, record: InboundRecord, *, ack: bytes | None = None, delivered: bool = False
    ) -> CommitResult:
        """Journal a received message durably, or recognise a duplicate.

        A record whose (MSH-3, MSH-4, MSH-10) key was committed within
        ``duplicate_window`` before its ``received_at`` is a duplicate:
        nothing is written and the result carries the original's id and
        saved acknowledgement. This holds inside one group-commit batch too.

        Args:
            record: The message and its metadata.
            ack: The acknowledgement to store with it, when it was built
                before the commit (one transaction instead of two).
            delivered: Also mark it delivered (nothing is left to hand to an
                application), in the same transaction. A duplicate is left
                as it is.

        Returns:
            What was done.

        Raises:
            StoreError: Nothing was committed; answer with a NAK.
        """
        data = record.data
        if len(data) > _PART_SIZE:
            return await self._commit_staged(record, ack, delivered)
        value = await self._submit(
            _Inbound(
                (
                    record.received_at.timestamp(),
                    record.peer,
                    record.tls_identity,
                    record.sending_application,
                    record.sending_facility,
                    record.control_id,
                    len(data),
                    data,
                    ack,
                    time.time() if delivered else None,
                )
            )
        )
        if type(value) is int:
            return CommitResult(message_id=value, duplicate=False, ack=ack, delivered=delivered)
        return cast(CommitResult, value)

    async def _journal_accepted(
        self,
        data: bytes,
        peer: str,
        tls_identity: str | None,
        control_id: str,
        sending_application: str,
        sending_facility: str,
        ack: bytes,
    ) -> int | CommitResult:
        """``commit_inbound(record, ack=ack, delivered=True)`` received now, without the objects.

        The listener without a handler calls this once per message: no
        :class:`InboundRecord` (a validated attrs instance) is built and no
        :class:`CommitResult` for a new entry.

        Returns:
            The new journal id, or the result naming the original of a duplicate.
        """
        if len(data) > _PART_SIZE:
            record = InboundRecord(
                data=data,
                peer=peer,
                tls_identity=tls_identity,
                control_id=control_id,
                sending_application=sending_application,
                sending_facility=sending_facility,
            )
            result = await self._commit_staged(record, ack, True)
            return result if result.duplicate else result.message_id
        now = time.time()
        row = (
            now,
            peer,
            tls_identity,
            sending_application,
            sending_facility,
            control_id,
            len(data),
            data,
            ack,
            now,
        )
        return cast("int | CommitResult", await self._submit(_Inbound(row)))

    async def _commit_staged(
        self, record: InboundRecord, ack: bytes | None, delivered: bool
    ) -> CommitResult:
        window = self._config.duplicate_window
        data = record.data
        # A resend of a large message is recognised before its parts are written.
        found = await self._call(
            lambda conn: _duplicate_of(
                conn,
                record.sending_application,
                record.sending_facility,
                record.control_id,
                record.received_at.timestamp(),
                window,
            ),
            write=False,
        )
        if found is not None:
            return found
        stage = secrets.token_bytes(8)
        for seq, start in enumerate(range(0, len(data), _PART_SIZE)):
            part = data[start : start + _PART_SIZE]
            await self._call(
                functools.partial(_stage_part, stage=stage, seq=seq, part=part), write=True
            )
        delivered_at = time.time() if delivered else None
        return await self._call(
            lambda conn: _commit_inbound(conn, record, ack, window, stage, delivered_at), write=True
        )

    async def save_ack(self, message_id: int, ack: bytes, *, delivered: bool = False) -> None:
        """Save (or replace) the acknowledgement of a journal entry.

        Args:
            message_id: The journal id.
            ack: The acknowledgement bytes, answered again to duplicates.
            delivered: Also mark the entry delivered, in the same transaction.

        Raises:
            StoreError: With kind ``NOT_FOUND`` for an unknown id, or a storage fault.
        """
        await self._submit(_SaveAck((ack, time.time() if delivered else None, message_id)))

    async def fetch_undelivered(
        self, limit: int = 100, *, after_id: int = 0
    ) -> list[StoredMessage]:
        """The oldest journal entries not yet marked delivered, oldest first.

        Entries committed before a restart and never marked delivered are
        returned again: delivery is at-least-once.

        Args:
            limit: The most entries to return.
            after_id: Only entries with a larger id (for paging).
        """
        return await self._call(lambda conn: _fetch_undelivered(conn, limit, after_id), write=False)

    async def mark_delivered(self, message_id: int) -> None:
        """Record that a journal entry reached the application.

        Raises:
            StoreError: With kind ``NOT_FOUND`` for an unknown id, or a storage fault.
        """
        now = datetime.now(UTC).timestamp()
        await self._call(
            lambda conn: _update_one(
                conn,
                "UPDATE inbound SET delivered_at = coalesce(delivered_at, ?) WHERE id = ?",
                (now, message_id),
                "journal entry",
            ),
            write=True,
        )

    async def prune(
        self, *, now: datetime | None = None, older_than: timedelta | None = None
    ) -> int:
        """Delete what the retention window no longer needs.

        Removes delivered journal entries, sent outbound messages and the
        records of finished folder files older than ``older_than`` or
        ``duplicate_window``, whichever is longer:
        duplicate detection still reads every entry inside its window.
        Undelivered entries and dead letters are never pruned. Does nothing
        when the duplicate window is ``None`` (duplicates are then detected
        against every entry ever kept).

        Args:
            now: The reference time; defaults to now.
            older_than: The retention asked for (``--retention``,
                ``store prune --older-than``); default: the duplicate window.

        Returns:
            How many rows were deleted.
        """
        window = self._config.duplicate_window
        if window is None:
            return 0
        keep = window if older_than is None else max(window, older_than)
        cutoff = ((now or datetime.now(UTC)) - keep).timestamp()
        return await self._call(lambda conn: _prune(conn, cutoff), write=True)

    async def journal_stats(self) -> JournalStats:
        """Size on disk, counts by state and the oldest entries; never content."""
        files = [self._db_file.with_name(self._db_file.name + s) for s in ("", "-wal", "-shm")]
        return await self._call(lambda conn: _journal_stats(conn, files), write=False)

    async def enqueue(self, destination: str, data: bytes) -> int:
        """Append a message to a destination's outbound queue, durably.

        Returns:
            The message's queue id.
        """
        now = datetime.now(UTC).timestamp()

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO outbound (destination, size, data, status, enqueued_at,"
                " next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                (destination, len(data), data, now, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._call(op, write=True)

    async def fetch_next(self, destination: str) -> OutboundMessage | None:
        """The oldest pending message for a destination, or ``None``.

        Order per destination is strict: the head is returned even when its
        ``next_attempt_at`` lies in the future (the sender waits until then)
        and stays the head until it is marked sent or dead. The message
        counts as in flight until the next ``mark_*`` call for it.
        """
        msg = await self._call(lambda conn: _fetch_next(conn, destination), write=False)
        if msg is not None:
            self._in_flight.add(msg.message_id)
        return msg

    async def pending_destinations(self) -> list[str]:
        """Destinations that have pending messages, sorted."""
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT DISTINCT destination FROM outbound WHERE status = 'pending'"
                " ORDER BY destination"
            ).fetchall(),
            write=False,
        )
        return [row[0] for row in rows]

    async def mark_attempt(self, message_id: int, error: str, next_attempt_at: datetime) -> None:
        """Record a failed attempt; the message stays at the head of its queue.

        Args:
            message_id: The queue id.
            error: What went wrong, for operators; must not contain message content.
            next_attempt_at: When to try again (timezone-aware).
        """
        when = next_attempt_at.timestamp()
        self._in_flight.discard(message_id)
        await self._call(
            lambda conn: _update_one(
                conn,
                "UPDATE outbound SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?",
                (error, when, message_id),
                "outbound message",
            ),
            write=True,
        )

    async def mark_sent(self, message_id: int) -> None:
        """Record that an outbound message was delivered."""
        now = datetime.now(UTC).timestamp()
        self._in_flight.discard(message_id)
        await self._call(
            lambda conn: _update_one(
                conn,
                "UPDATE outbound SET status = 'sent', sent_at = ? WHERE id = ?",
                (now, message_id),
                "outbound message",
            ),
            write=True,
        )

    async def mark_dead(self, message_id: int, reason: str) -> None:
        """Move an outbound message to the dead letters; its queue moves on.

        Args:
            message_id: The queue id.
            reason: Why, for operators; must not contain message content.
        """
        self._in_flight.discard(message_id)
        await self._call(
            lambda conn: _update_one(
                conn,
                "UPDATE outbound SET status = 'dead', dead_reason = ? WHERE id = ?",
                (reason, message_id),
                "outbound message",
            ),
            write=True,
        )

    async def requeue_dead(
        self, message_ids: Iterable[int] | None = None, *, destination: str | None = None
    ) -> int:
        """Make dead letters pending again, with attempts reset to zero.

        They keep their original place in their destination's queue order.

        Args:
            message_ids: Which dead letters; all of them when ``None``.
                Ids that are not dead letters are ignored.
            destination: Only this destination's dead letters (default: any).

        Returns:
            How many were requeued.
        """
        ids = None if message_ids is None else list(message_ids)
        now = datetime.now(UTC).timestamp()
        return await self._call(lambda conn: _requeue(conn, ids, now, destination), write=True)

    async def outbound_stats(self) -> OutboundStats:
        """Counts of pending, in-flight, delivered and dead outbound messages."""
        counts = await self._call(_outbound_counts, write=False)
        in_flight = len(self._in_flight)
        return OutboundStats(
            pending=max(0, counts.get("pending", 0) - in_flight),
            in_flight=in_flight,
            delivered=counts.get("sent", 0),
            dead=counts.get("dead", 0),
        )

    async def count(self) -> int:
        """Number of journal entries."""
        return await self._call(
            lambda conn: cast(int, conn.execute("SELECT count(*) FROM inbound").fetchone()[0]),
            write=False,
        )

    async def list_messages(self, limit: int = 100, offset: int = 0) -> list[MessageInfo]:
        """Journal metadata, newest first; never the content.

        Args:
            limit: The most entries to return.
            offset: How many of the newest to skip.
        """
        rows = await self._call(
            lambda conn: conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM inbound ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall(),
            write=False,
        )
        return [_info(row) for row in rows]

    async def export_message(self, message_id: int) -> bytes:
        """The stored bytes of one journal entry.

        Raises:
            StoreError: With kind ``NOT_FOUND`` for an unknown id.
        """
        return await self._call(lambda conn: _export(conn, message_id), write=False)

    # -- folder transport and journal consumers (FileJournal) ----------------

    async def open_file(self, identity: FileIdentity) -> FileProgress:
        """The record of an inbox file with this identity, created (active) if none exists.

        The identity is the whole of (inbox, name, size, mtime, SHA-256): the
        same file seen again after a restart finds its record and progress.
        """
        now = datetime.now(UTC).timestamp()
        return await self._call(lambda conn: _open_file(conn, identity, now), write=True)

    async def record_file_results(self, file_id: int, results: Sequence[FileMessageResult]) -> None:
        """Record the answers to messages of a file, and its resume point, in one transaction.

        Results at or past the recorded resume point are written; those
        below it were recorded before and are ignored.

        Raises:
            StoreError: With kind ``NOT_FOUND`` for an unknown file id, or a storage fault.
        """
        batch = list(results)
        await self._call(lambda conn: _record_file_results(conn, file_id, batch), write=True)

    async def finish_file(
        self, file_id: int, status: FileStatus, reason: str | None = None
    ) -> None:
        """Mark a file done or error (with the reason of an error).

        Raises:
            StoreError: With kind ``NOT_FOUND`` for an unknown file id, or a storage fault.
        """
        now = datetime.now(UTC).timestamp()
        await self._call(
            lambda conn: _update_one(
                conn,
                "UPDATE folder_file SET status = ?, reason = ?, finished_at = ? WHERE id = ?",
                (str(status), reason, now, file_id),
                "folder file",
            ),
            write=True,
        )

    async def file_results(
        self, file_id: int, *, after_seq: int = -1, limit: int = 1000
    ) -> list[FileMessageResult]:
        """Recorded answers of a file with ``seq > after_seq``, in file order (for paging)."""
        return await self._call(
            lambda conn: _file_results(conn, file_id, after_seq, limit), write=False
        )

    async def journal_after(self, after_id: int, limit: int = 100) -> list[JournalEntry]:
        """Journal entries with an id above ``after_id``, oldest first, with their answers."""
        return await self._call(lambda conn: _journal_after(conn, after_id, limit), write=False)

    async def sink_position(self, name: str) -> int:
        """The last journal id the consumer ``name`` has finished with (0 if none)."""
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT last_id FROM sink_position WHERE name = ?", (name,)
            ).fetchone(),
            write=False,
        )
        return 0 if row is None else int(row[0])

    async def set_sink_position(self, name: str, last_id: int) -> None:
        """Record, durably, that the consumer ``name`` is done up to journal id ``last_id``."""
        await self._call(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO sink_position (name, last_id) VALUES (?, ?)",
                (name, last_id),
            ),
            write=True,
        )

    # -- durable batch sending --------------------------------------------------

    async def open_batch_send(
        self, destination: str, path: str, sha256: str, total: int, *, again: bool = False
    ) -> BatchSendRecord:
        """The record of a batch file sent to ``destination``, created if none exists.

        The identity is the destination and the file's SHA-256: a rerun of
        the same file finds its latest record (and how far queueing got).
        ``again`` starts a new record, to send the file once more.
        """
        now = datetime.now(UTC).timestamp()
        return await self._call(
            lambda conn: _open_batch_send(conn, destination, path, sha256, total, now, again),
            write=True,
        )

    async def enqueue_batch(
        self, file_id: int, destination: str, items: Sequence[tuple[int, bytes]], next_seq: int
    ) -> None:
        """Queue messages of a batch file and record the file's progress, in one transaction.

        Args:
            file_id: The record from :meth:`open_batch_send`.
            destination: The queue.
            items: ``(number in the file, message)`` pairs, in file order;
                numbers below the recorded progress are skipped (queued already).
            next_seq: The progress to record: every message numbered below
                it is queued (or was skipped for good) after this call.
        """
        batch = list(items)
        now = datetime.now(UTC).timestamp()
        await self._call(
            lambda conn: _enqueue_batch(conn, file_id, destination, batch, next_seq, now),
            write=True,
        )

    async def record_batch_answers(self, answers: Sequence[tuple[int, str, bytes | None]]) -> None:
        """Record the final answers ``(queue id, MSA-1, ACK bytes)`` of batch file messages.

        Queue ids that belong to no batch file are ignored.
        """
        batch = list(answers)
        await self._call(
            lambda conn: conn.executemany(
                "UPDATE batch_send_message SET code = ?, ack = ? WHERE queue_id = ?",
                [(code, ack, queue_id) for queue_id, code, ack in batch],
            ),
            write=True,
        )

    async def batch_send_rows(
        self, file_id: int, *, after_seq: int = -1, limit: int = 1000
    ) -> list[BatchSendRow]:
        """The queued messages of a batch file with ``seq > after_seq``, in file order."""
        return await self._call(
            lambda conn: _batch_send_rows(conn, file_id, after_seq, limit), write=False
        )

    async def finish_batch_send(self, file_id: int) -> None:
        """Mark a batch file as sent: a rerun of it sends nothing again."""
        now = datetime.now(UTC).timestamp()
        await self._call(
            lambda conn: _update_one(
                conn,
                "UPDATE batch_send_file SET finished_at = ? WHERE id = ?",
                (now, file_id),
                "batch file",
            ),
            write=True,
        )


@asynccontextmanager
async def open_sqlite_store(
    path: str | Path, *, config: SQLiteStoreConfig | None = None
) -> AsyncIterator[SQLiteStore]:
    """Open (creating if needed) the SQLite store in a directory.

    ``path`` is a directory, for example ``./mllp-data/``; it is created
    (mode 0700) if missing, and the database is ``<path>/journal.sqlite3``
    with SQLite's ``-wal`` and ``-shm`` files beside it. Leaving the block
    finishes queued operations, checkpoints the WAL and stops the writer
    thread, even when the block is cancelled.

    Args:
        path: The store directory.
        config: Settings; defaults to ``SQLiteStoreConfig()``.

    Yields:
        The open store.

    Raises:
        StoreError: The store cannot be opened (corrupt file, locked,
            permissions); the message says what to do.
    """
    store = SQLiteStore(Path(path), config or SQLiteStoreConfig())
    try:
        await store._open()
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store._close()

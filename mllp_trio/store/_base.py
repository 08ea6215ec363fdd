"""The durable-store interface: records, results, errors and the MessageStore protocol.

The SQLite implementation lives in ``_sqlite_store``; anything that satisfies
:class:`MessageStore` (a test double that fails on purpose, say) can take its
place in the listener and the client.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import attrs

from mllp_trio._errors import MLLPError

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "COMMIT_SECONDS_BUCKETS",
    "CommitResult",
    "FileIdentity",
    "FileJournal",
    "FileMessageResult",
    "FileProgress",
    "FileStatus",
    "InboundRecord",
    "JournalEntry",
    "JournalStats",
    "MessageInfo",
    "MessageStore",
    "OutboundMessage",
    "OutboundStats",
    "StoreError",
    "StoreErrorKind",
    "StoreStats",
    "StoredMessage",
    "backoff_delay",
]


class StoreErrorKind(enum.StrEnum):
    """Why a store operation failed, for code that reacts differently per cause."""

    FULL = "full"
    """The disk (or the configured size limit) is full."""
    LOCKED = "locked"
    """Another process held the database write lock longer than the busy timeout."""
    CORRUPT = "corrupt"
    """The file is not an SQLite database, or its content is damaged."""
    IO = "io"
    """The file could not be opened, read or written (permissions, I/O error)."""
    CLOSED = "closed"
    """The store was used after it was closed."""
    READ_ONLY = "read-only"
    """A write was attempted on a store opened read-only."""
    NOT_FOUND = "not-found"
    """The message id named in the call does not exist."""
    OTHER = "other"
    """Anything else; the message says what."""


class StoreError(MLLPError):
    """A store operation failed; nothing of the failed operation was committed.

    The listener answers with a negative acknowledgement (release 2 commit
    NAK, or AR/CR) so that the sender retries.

    Attributes:
        kind: The cause, as a :class:`StoreErrorKind`.
    """

    def __init__(self, message: str, *, kind: StoreErrorKind = StoreErrorKind.OTHER) -> None:
        super().__init__(message)
        self.kind = kind


def _check_aware(_inst: object, attribute: attrs.Attribute[datetime], value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class InboundRecord:
    """One received message, as the listener hands it to the journal.

    Attributes:
        data: The raw message bytes, exactly as received.
        received_at: Arrival time, timezone-aware; defaults to now (UTC).
        peer: The peer address (``PeerInfo.address``).
        tls_identity: The verified TLS client identity (for example the
            certificate subject), or ``None`` without TLS.
        control_id: MSH-10. An empty control id disables duplicate detection
            for this record: there is no key to compare.
        sending_application: MSH-3, the whole field as received.
        sending_facility: MSH-4, the whole field as received.
    """

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    received_at: datetime = attrs.field(factory=_utcnow, validator=_check_aware)
    peer: str
    tls_identity: str | None = None
    control_id: str
    sending_application: str = ""
    sending_facility: str = ""


def _ack_repr(ack: bytes | None) -> str:
    return "None" if ack is None else f"<{len(ack)} bytes>"


@attrs.frozen(kw_only=True)
class CommitResult:
    """What :meth:`MessageStore.commit_inbound` did.

    Attributes:
        message_id: The journal id of the stored message (of the original
            when ``duplicate`` is true).
        duplicate: True when the (MSH-3, MSH-4, MSH-10) key was already
            committed within the duplicate window; nothing was written.
        ack: For a duplicate, the acknowledgement saved with the original,
            or ``None`` if none was saved. For a new message, the ``ack``
            passed to the call.
        delivered: Whether the stored message has been marked delivered.
    """

    message_id: int
    duplicate: bool
    ack: bytes | None = attrs.field(default=None, repr=_ack_repr)
    delivered: bool = False


@attrs.frozen(kw_only=True)
class MessageInfo:
    """Metadata of one journal entry; never the content.

    Attributes:
        message_id: The journal id.
        received_at: Arrival time (UTC).
        peer: The peer address.
        tls_identity: The TLS client identity, or ``None``.
        control_id: MSH-10.
        sending_application: MSH-3.
        sending_facility: MSH-4.
        size: Length of the message in bytes.
        has_ack: Whether an acknowledgement is saved with it.
        delivered_at: When it was marked delivered, or ``None``.
    """

    message_id: int
    received_at: datetime
    peer: str
    tls_identity: str | None
    control_id: str
    sending_application: str
    sending_facility: str
    size: int
    has_ack: bool
    delivered_at: datetime | None


@attrs.frozen(kw_only=True)
class StoredMessage:
    """A journal entry with its content, for delivery.

    Attributes:
        info: The metadata.
        data: The message bytes.
    """

    info: MessageInfo
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")

    @property
    def message_id(self) -> int:
        """The journal id (``info.message_id``)."""
        return self.info.message_id


@attrs.frozen(kw_only=True)
class OutboundMessage:
    """The head of one destination's outbound queue.

    Attributes:
        message_id: The queue id.
        destination: The destination name given to ``enqueue``.
        data: The message bytes.
        attempts: How many failed attempts were recorded.
        enqueued_at: When it was enqueued (UTC).
        next_attempt_at: Do not send before this time (UTC).
        last_error: The error recorded by the last ``mark_attempt``, or ``None``.
    """

    message_id: int
    destination: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    attempts: int
    enqueued_at: datetime
    next_attempt_at: datetime
    last_error: str | None


@attrs.frozen(kw_only=True)
class OutboundStats:
    """Outbound queue counts.

    Attributes:
        pending: Waiting to be sent (not counting those in flight).
        in_flight: Handed out by ``fetch_next`` in this process and not yet
            marked; after a restart they are pending again.
        delivered: Marked sent.
        dead: Given up on (dead letters).
    """

    pending: int
    in_flight: int
    delivered: int
    dead: int


#: Upper bounds (seconds) of the commit latency histogram in :class:`StoreStats`.
COMMIT_SECONDS_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    float("inf"),
)
#: Upper bounds of the group-commit size histogram in :class:`StoreStats`.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, float("inf"))


def _zeros(bounds: tuple[float, ...]) -> tuple[int, ...]:
    return (0,) * len(bounds)


@attrs.frozen(kw_only=True)
class StoreStats:
    """Group-commit counters since the store was opened.

    Attributes:
        transactions: Write transactions committed.
        records_committed: Inbound records written (duplicates excluded).
        max_batch_size: The most write operations that shared one transaction.
        duplicates: Inbound records recognised as duplicates.
        commit_seconds: Per bucket of :data:`COMMIT_SECONDS_BUCKETS` (not
            cumulative), how many write transactions took at most that long,
            from ``BEGIN`` to the end of ``COMMIT`` (the fsync included).
        commit_seconds_sum: Their total duration, in seconds.
        batch_sizes: Per bucket of :data:`BATCH_SIZE_BUCKETS` (not
            cumulative), how many transactions carried that many writes.
        batch_size_sum: The writes of all transactions.
    """

    transactions: int = 0
    records_committed: int = 0
    max_batch_size: int = 0
    duplicates: int = 0
    commit_seconds: tuple[int, ...] = _zeros(COMMIT_SECONDS_BUCKETS)
    commit_seconds_sum: float = 0.0
    batch_sizes: tuple[int, ...] = _zeros(BATCH_SIZE_BUCKETS)
    batch_size_sum: int = 0


@attrs.frozen(kw_only=True)
class JournalStats:
    """What a store holds, for ``mllp-trio store stats`` and the metrics.

    Attributes:
        size_bytes: The database file plus its ``-wal`` and ``-shm`` files.
        inbound_delivered: Journal entries marked delivered.
        inbound_undelivered: Journal entries not yet delivered.
        outbound: Outbound messages by status (``pending``, ``sent``, ``dead``).
        outbound_attempts: Failed attempts recorded on messages still
            pending or dead.
        oldest_entry: Arrival time of the oldest journal entry, or ``None``.
        oldest_undelivered: Arrival time of the oldest undelivered entry, or ``None``.
    """

    size_bytes: int
    inbound_delivered: int
    inbound_undelivered: int
    outbound: dict[str, int]
    outbound_attempts: int
    oldest_entry: datetime | None
    oldest_undelivered: datetime | None


class MessageStore(Protocol):
    """The storage the listener and the client rely on.

    Every method raises :class:`StoreError` on a storage failure, and a
    method that writes has committed durably when it returns.
    """

    @property
    def stats(self) -> StoreStats:
        """Group-commit counters."""
        ...

    async def commit_inbound(
        self, record: InboundRecord, *, ack: bytes | None = None, delivered: bool = False
    ) -> CommitResult:
        """Journal a received message, or recognise it as a duplicate.

        With ``delivered=True`` a new entry is also marked delivered, in the
        same transaction (the listener without a handler: nothing is left to
        hand on).
        """
        ...

    async def save_ack(self, message_id: int, ack: bytes, *, delivered: bool = False) -> None:
        """Save (or replace) the acknowledgement sent for a journal entry.

        With ``delivered=True`` also mark it delivered, in the same transaction.
        """
        ...

    async def fetch_undelivered(
        self, limit: int = 100, *, after_id: int = 0
    ) -> list[StoredMessage]:
        """Oldest journal entries not yet marked delivered."""
        ...

    async def mark_delivered(self, message_id: int) -> None:
        """Record that a journal entry reached the application."""
        ...

    async def prune(self, *, now: datetime | None = None) -> int:
        """Delete delivered entries and sent messages past the retention window."""
        ...

    async def enqueue(self, destination: str, data: bytes) -> int:
        """Add a message to a destination's outbound queue; returns its id."""
        ...

    async def fetch_next(self, destination: str) -> OutboundMessage | None:
        """The oldest pending message for a destination, or ``None``."""
        ...

    async def pending_destinations(self) -> list[str]:
        """Destinations that have pending messages."""
        ...

    async def mark_attempt(self, message_id: int, error: str, next_attempt_at: datetime) -> None:
        """Record a failed send attempt and when to try again."""
        ...

    async def mark_sent(self, message_id: int) -> None:
        """Record that an outbound message was delivered."""
        ...

    async def mark_dead(self, message_id: int, reason: str) -> None:
        """Move an outbound message to the dead letters."""
        ...

    async def requeue_dead(
        self, message_ids: Iterable[int] | None = None, *, destination: str | None = None
    ) -> int:
        """Make dead letters pending again (all of them when ``None``).

        With ``destination``, only that destination's dead letters.
        """
        ...

    async def outbound_stats(self) -> OutboundStats:
        """Outbound queue counts."""
        ...

    async def count(self) -> int:
        """Number of journal entries."""
        ...

    async def list_messages(self, limit: int = 100, offset: int = 0) -> Sequence[MessageInfo]:
        """Journal metadata, newest first; never content."""
        ...

    async def export_message(self, message_id: int) -> bytes:
        """The stored bytes of one journal entry."""
        ...


class FileStatus(enum.StrEnum):
    """Where a file of the folder transport stands in the journal."""

    ACTIVE = "active"
    """Seen and being processed; its progress says how far it got."""
    DONE = "done"
    """Every message committed and the file moved to ``done/``."""
    ERROR = "error"
    """Refused as a whole (unreadable, malformed structure) and moved to ``error/``."""


@attrs.frozen(kw_only=True)
class FileIdentity:
    """What makes an inbox file the same file across restarts.

    Attributes:
        inbox: The watched folder (absolute path).
        name: The file name inside it.
        size: Its size in bytes.
        mtime_ns: Its modification time in nanoseconds.
        sha256: Lower-case hex SHA-256 of its content.
    """

    inbox: str
    name: str
    size: int
    mtime_ns: int
    sha256: str


@attrs.frozen(kw_only=True)
class FileProgress:
    """A file's record in the journal, as :meth:`FileJournal.open_file` returns it.

    Attributes:
        file_id: The record id.
        status: Active, done or error.
        next_seq: Messages ``0 .. next_seq - 1`` have their results recorded
            (the resume point after a crash).
        failed: How many recorded results are negative (AE/AR/CE/CR).
        created: True when this call created the record (a new file).
    """

    file_id: int
    status: FileStatus
    next_seq: int
    failed: int
    created: bool


@attrs.frozen(kw_only=True)
class FileMessageResult:
    """The recorded answer to one message of a file.

    Attributes:
        seq: The message's position in the file, from 0.
        control_id: Its MSH-10 (empty when unreadable).
        code: MSA-1 of the answer (AA, AE, AR, CA, CE, CR), empty without one.
        ack: The acknowledgement message, for the acknowledgement batch.
    """

    seq: int
    control_id: str
    code: str
    ack: bytes | None = attrs.field(default=None, repr=_ack_repr)


@attrs.frozen(kw_only=True)
class JournalEntry:
    """A journal entry with its saved acknowledgement, for journal consumers (sinks).

    Attributes:
        message: The entry and its content.
        ack: The acknowledgement saved with it, ``b""`` when none was
            sent, ``None`` while its answer is not final yet.
    """

    message: StoredMessage
    ack: bytes | None = attrs.field(default=None, repr=_ack_repr)


class FileJournal(Protocol):
    """Journal records of the folder transport and of journal consumers.

    A separate protocol, so that a :class:`MessageStore` written for the
    listener alone need not implement it. Every write has committed
    durably when it returns; every method raises :class:`StoreError`.
    """

    async def open_file(self, identity: FileIdentity) -> FileProgress:
        """The record of a file with this identity, created (active) if none exists."""
        ...

    async def record_file_results(self, file_id: int, results: Sequence[FileMessageResult]) -> None:
        """Record the answers to messages of a file, in one transaction."""
        ...

    async def finish_file(
        self, file_id: int, status: FileStatus, reason: str | None = None
    ) -> None:
        """Mark a file done or error, with the reason of an error."""
        ...

    async def file_results(
        self, file_id: int, *, after_seq: int = -1, limit: int = 1000
    ) -> list[FileMessageResult]:
        """Recorded answers of a file with ``seq > after_seq``, in file order."""
        ...

    async def journal_after(self, after_id: int, limit: int = 100) -> list[JournalEntry]:
        """Journal entries with an id above ``after_id``, oldest first, with their answers."""
        ...

    async def sink_position(self, name: str) -> int:
        """The last journal id a named consumer has finished with (0 if none)."""
        ...

    async def set_sink_position(self, name: str, last_id: int) -> None:
        """Record that a named consumer has finished with journal ids up to ``last_id``."""
        ...


# 2**62 seconds is past any cap; stopping there keeps the float math finite.
_MAX_EXPONENT = 62


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt``: exponential with full jitter.

    The delay is drawn uniformly from ``[0, min(cap, base * 2**attempt)]``,
    which spreads the retries of many senders that failed together.

    Args:
        attempt: How many attempts have failed so far, from 0.
        base: The ceiling for ``attempt == 0``, in seconds.
        cap: The largest ceiling, in seconds.
        rng: The random source; the ``random`` module's when ``None``.

    Returns:
        The delay in seconds.

    Raises:
        ValueError: ``attempt`` is negative, or ``base`` or ``cap`` is negative.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    draw = rng.random() if rng is not None else random.random()
    return draw * ceiling

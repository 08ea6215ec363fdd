"""mllp_trio.store: store before acknowledging, and the durable sending queue.

:func:`open_sqlite_store` opens the embedded journal (SQLite);
:class:`JournalProcessor` plugs it into a listener
(``serve_mllp(None, port, processor=JournalProcessor(store, handler))``) so
that every message is committed before it is acknowledged;
:class:`QueuedSender` delivers an outbound queue at least once. To keep
messages somewhere else, implement :class:`MessageStore`.
"""

from mllp_trio._public import expose
from mllp_trio.store._base import (
    CommitResult,
    InboundRecord,
    JournalStats,
    MessageInfo,
    MessageStore,
    OutboundMessage,
    OutboundStats,
    StoredMessage,
    StoreError,
    StoreErrorKind,
    StoreStats,
)
from mllp_trio.store._journal import Delivery, JournalProcessor
from mllp_trio.store._queue import QueueConfig, QueuedSender, SendReport, SendResult
from mllp_trio.store._sqlite import SQLiteStore, SQLiteStoreConfig, open_sqlite_store

__all__ = [
    "CommitResult",
    "Delivery",
    "InboundRecord",
    "JournalProcessor",
    "JournalStats",
    "MessageInfo",
    "MessageStore",
    "OutboundMessage",
    "OutboundStats",
    "QueueConfig",
    "QueuedSender",
    "SQLiteStore",
    "SQLiteStoreConfig",
    "SendReport",
    "SendResult",
    "StoreError",
    "StoreErrorKind",
    "StoreStats",
    "StoredMessage",
    "open_sqlite_store",
]

expose("mllp_trio.store", globals(), __all__)

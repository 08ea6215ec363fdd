"""mllp_trio.store: store before acknowledging, and the durable sending queue.

:func:`open_sqlite_store` opens the embedded journal (SQLite);
:class:`JournalProcessor` plugs it into a listener
(``serve_mllp(None, port, processor=JournalProcessor(store, handler))``) so
that every message is committed before it is acknowledged;
:class:`QueuedSender` delivers an outbound queue at least once. To keep
messages somewhere else, implement :class:`MessageStore`.

The folder transport: :class:`FolderWatcher` picks batch files up from an
inbox through the same processor and journal, exactly once across restarts
(:class:`FileJournal` records each file's identity and progress);
:class:`FolderDestination` drops files atomically; :class:`BatchSink` and
:class:`DirectorySink` write what the listener journaled into batch files
or one file per message.

Batch files over SFTP and FTPS (docs/remote.md): :class:`RemotePuller` picks
them up from a remote inbox through the folder transport, exactly once;
:func:`push_file` and :class:`RemoteDestination` drop them (temporary name,
size check, rename). Both talk to the server through a
:class:`RemoteClient` built from a :class:`RemoteTarget` (see
:func:`parse_target`) and :class:`RemoteOptions`; failures raise
:class:`RemoteError`.
"""

from mllp_trio._public import expose
from mllp_trio.store._base import (
    CommitResult,
    FileIdentity,
    FileJournal,
    FileMessageResult,
    FileProgress,
    FileStatus,
    InboundRecord,
    JournalEntry,
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
from mllp_trio.store._folder import FileReport, FolderConfig, FolderStats, FolderWatcher
from mllp_trio.store._journal import Delivery, JournalProcessor
from mllp_trio.store._queue import QueueConfig, QueuedSender, SendReport, SendResult
from mllp_trio.store._remote import (
    PullConfig,
    PullStats,
    PushResult,
    RemoteClient,
    RemoteDestination,
    RemoteError,
    RemoteErrorKind,
    RemoteOptions,
    RemotePuller,
    RemoteReport,
    RemoteTarget,
    RetryPolicy,
    format_target,
    parse_target,
    push_file,
)
from mllp_trio.store._sinks import (
    BatchSink,
    BatchSinkConfig,
    DirectorySink,
    DirectorySinkConfig,
    FolderDestination,
)
from mllp_trio.store._sqlite import SQLiteStore, SQLiteStoreConfig, open_sqlite_store

__all__ = [
    "BatchSink",
    "BatchSinkConfig",
    "CommitResult",
    "Delivery",
    "DirectorySink",
    "DirectorySinkConfig",
    "FileIdentity",
    "FileJournal",
    "FileMessageResult",
    "FileProgress",
    "FileReport",
    "FileStatus",
    "FolderConfig",
    "FolderDestination",
    "FolderStats",
    "FolderWatcher",
    "InboundRecord",
    "JournalEntry",
    "JournalProcessor",
    "JournalStats",
    "MessageInfo",
    "MessageStore",
    "OutboundMessage",
    "OutboundStats",
    "PullConfig",
    "PullStats",
    "PushResult",
    "QueueConfig",
    "QueuedSender",
    "RemoteClient",
    "RemoteDestination",
    "RemoteError",
    "RemoteErrorKind",
    "RemoteOptions",
    "RemotePuller",
    "RemoteReport",
    "RemoteTarget",
    "RetryPolicy",
    "SQLiteStore",
    "SQLiteStoreConfig",
    "SendReport",
    "SendResult",
    "StoreError",
    "StoreErrorKind",
    "StoreStats",
    "StoredMessage",
    "format_target",
    "open_sqlite_store",
    "parse_target",
    "push_file",
]

expose("mllp_trio.store", globals(), __all__)

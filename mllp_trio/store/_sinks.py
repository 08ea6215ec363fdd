"""Files out of the journal and into folders: batch and per-message sinks, the folder destination.

The sinks are journal consumers: they read what the listener committed, in
journal order, and keep their position in the journal (``sink_position``),
so they cost the listener's hot path nothing, write only what is already
durable, and resume after a restart where they stopped. A message is
written once its answer is final and positive (AA/CA, or no answer sent);
messages the handler refused (AE/AR/CE/CR) are left out, and one still in
its handler holds the sink back until it is answered.

Every file appears under its final name whole or not at all (written to a
temporary name, fsynced, renamed, folder fsynced). File names carry the
first journal id they hold, so a crash between a rename and the position
update rewrites the same name rather than adding a second copy; a consumer
that took the first file may still see its messages again: at least once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import attrs
import trio

from mllp_trio._batch import BatchWriter, HeaderFields
from mllp_trio._hl7 import (
    MSHError,
    hl7_timestamp,
    is_negative,
    new_control_id,
    read_msh,
    reply_code,
)
from mllp_trio.store._base import (
    FileJournal,
    JournalEntry,
    MessageStore,
    StoreError,
    backoff_delay,
)
from mllp_trio.store._files import (
    AtomicFile,
    atomic_write,
    copy_chunks,
    make_private_dir,
    remove_stale_temporaries,
)

__all__ = [
    "BatchSink",
    "BatchSinkConfig",
    "DirectorySink",
    "DirectorySinkConfig",
    "FolderDestination",
]

log = logging.getLogger("mllp_trio.sink")

_PAGE: Final = 200
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


def _accepted(entry: JournalEntry) -> bool:
    assert entry.ack is not None
    return not is_negative(reply_code(entry.ack))


def _check_name_part(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if "/" in value or os.sep in value:
        raise ValueError(f"{attribute.name} must not contain '/'")


def _check_prefix(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    _check_name_part(inst, attribute, value)
    if not value or value.startswith("."):
        raise ValueError(f"{attribute.name} must not be empty nor start with '.' (hidden files)")


@attrs.frozen(kw_only=True)
class BatchSinkConfig:
    """Settings of a :class:`BatchSink`.

    A batch file is closed (its trailers written, then renamed to its final
    name) when it holds ``max_messages`` messages, reaches ``max_bytes``, or
    its first message has waited ``max_age`` seconds, whichever comes first.

    Attributes:
        max_messages: Messages per file. Default 1000.
        max_bytes: Approximate largest file, in bytes. Default 16 MiB.
        max_age: Seconds a message may wait in an open file. Default 60.
        prefix: File name prefix; the name is ``<prefix><first journal
            id, 12 digits><suffix>``. Default ``"batch-"``.
        suffix: File name suffix. Default ``".hl7"``.
        sending_application: FHS-3 and BHS-3. Default ``"MLLP-TRIO"``.
        sending_facility: FHS-4 and BHS-4. Default empty.
        file_header: Write FHS and FTS around the batch. Default True.
        poll_interval: Seconds between looks at the journal. Default 1.
        name: The sink's position name in the journal; two sinks on one
            journal need different names. Default ``"batch"``.
    """

    max_messages: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_bytes: int = attrs.field(default=16 << 20, validator=attrs.validators.ge(1))
    max_age: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    prefix: str = attrs.field(default="batch-", validator=_check_prefix)
    suffix: str = attrs.field(default=".hl7", validator=_check_name_part)
    sending_application: str = "MLLP-TRIO"
    sending_facility: str = ""
    file_header: bool = True
    poll_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    name: str = attrs.field(default="batch", validator=attrs.validators.min_len(1))


@attrs.frozen(kw_only=True)
class DirectorySinkConfig:
    """Settings of a :class:`DirectorySink`.

    Attributes:
        suffix: File name suffix; the name is ``<journal id, 12 digits>-<MSH-10
            with unsafe characters replaced by _><suffix>``. Default ``".hl7"``.
        poll_interval: Seconds between looks at the journal. Default 1.
        name: The sink's position name in the journal. Default ``"directory"``.
    """

    suffix: str = attrs.field(default=".hl7", validator=_check_name_part)
    poll_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    name: str = attrs.field(default="directory", validator=attrs.validators.min_len(1))


class _Consumer:
    """Reads the journal in order from a saved position; subclasses write."""

    name: str
    poll_interval: float

    def __init__(self, store: FileJournal, directory: str | os.PathLike[str]) -> None:
        self.store = store
        self.directory = Path(directory)
        self.written = 0
        """Messages written since the start."""
        self.files = 0
        """Files completed since the start."""
        self._scan = 0  # the last journal id looked at
        self._waker = trio.Event()

    def wake(self) -> None:
        """Look at the journal now (call after a commit; optional, it polls too)."""
        self._waker.set()

    async def _sleep(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._waker.wait()
        self._waker = trio.Event()

    async def _next_entries(self) -> list[JournalEntry]:
        """Final entries after the scan position (stopping at the first undecided one)."""
        entries = await self.store.journal_after(self._scan, _PAGE)
        ready: list[JournalEntry] = []
        for entry in entries:
            if entry.ack is None:
                break  # still in its handler: keep journal order
            ready.append(entry)
        return ready


class BatchSink(_Consumer):
    """Writes what the listener accepted into rolling batch files in a folder.

    Each file is ``[FHS] BHS {MSH...} BTS [FTS]`` with correct counts,
    written under a temporary name and renamed when complete, and only
    journaled messages go in. Run :meth:`run` beside the listener::

        sink = BatchSink(store, "outbox", config=BatchSinkConfig(max_messages=500))
        nursery.start_soon(sink.run)

    Args:
        store: The listener's journal.
        directory: The folder the batch files go to (created if missing).
        config: Roll limits, names, header fields.
        on_file: Called with the path of each completed file.
    """

    def __init__(
        self,
        store: FileJournal,
        directory: str | os.PathLike[str],
        *,
        config: BatchSinkConfig | None = None,
        on_file: Callable[[Path], None] | None = None,
    ) -> None:
        super().__init__(store, directory)
        self.config = config if config is not None else BatchSinkConfig()
        self._on_file = on_file
        self._file: AtomicFile | None = None
        self._writer = BatchWriter()
        self._count = 0
        self._opened_at = 0.0

    def _header(self) -> HeaderFields:
        cfg = self.config
        return HeaderFields(
            sending_application=cfg.sending_application.encode(),
            sending_facility=cfg.sending_facility.encode(),
            date_time=hl7_timestamp().encode(),
            control_id=new_control_id().encode(),
        )

    def _open(self, first_id: int) -> None:
        cfg = self.config
        name = f"{cfg.prefix}{first_id:012d}{cfg.suffix}"
        self._file = AtomicFile(self.directory, name, replace=True)
        self._writer = BatchWriter()
        head = self._writer.file_header(self._header()) if cfg.file_header else b""
        self._file.write(head + self._writer.batch_header(self._header()))
        self._count = 0

    async def _roll(self) -> None:
        """Close the open file: trailers, fsync, rename; then save the position."""
        file = self._file
        assert file is not None
        self._file = None
        try:
            await trio.to_thread.run_sync(file.write, self._writer.close())
            path = await trio.to_thread.run_sync(file.commit)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(file.abort)
            raise
        await self.store.set_sink_position(self.config.name, self._scan)
        self.files += 1
        log.info("batch file %s written (%d message(s))", path, self._count)
        if self._on_file is not None:
            self._on_file(path)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batch files for ever; a failing folder or journal is retried."""
        await self._start()
        task_status.started()
        failures = 0
        try:
            while True:
                try:
                    await self.step()
                    failures = 0
                    await self._sleep(self._wait())
                except (OSError, StoreError) as exc:
                    await self._abandon()
                    delay = backoff_delay(failures, base=self.config.poll_interval, cap=60.0)
                    failures += 1
                    log.error("batch sink to %s paused %.1f s: %s", self.directory, delay, exc)
                    await trio.sleep(delay)
        finally:
            # Stopped (shutdown) with a file open: close it properly so that
            # its messages do not wait for the next start. If that fails they
            # are written again from the saved position then.
            if self._file is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await self._roll()
                    except (OSError, StoreError) as exc:
                        log.error("batch file not closed at shutdown: %s", exc)
                        await self._abandon()

    async def _start(self) -> None:
        await trio.to_thread.run_sync(make_private_dir, self.directory)
        await trio.to_thread.run_sync(remove_stale_temporaries, self.directory, self.config.prefix)
        self._scan = await self.store.sink_position(self.config.name)

    async def _abandon(self) -> None:
        """Drop the open file; its messages are written again from the saved position."""
        if self._file is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._file.abort)
            self._file = None
        self._scan = await self.store.sink_position(self.config.name)

    def _wait(self) -> float:
        if self._file is None:
            return self.config.poll_interval
        left = self._opened_at + self.config.max_age - trio.current_time()
        return max(0.0, min(self.config.poll_interval, left))

    async def step(self) -> None:
        """Take what the journal holds now; roll the open file when a limit is reached."""
        cfg = self.config
        while True:
            entries = await self._next_entries()
            for entry in entries:
                self._scan = entry.message.message_id
                if not _accepted(entry):
                    continue
                if self._file is None:
                    first = entry.message.message_id
                    await trio.to_thread.run_sync(self._open, first)
                    self._opened_at = trio.current_time()
                assert self._file is not None
                await trio.to_thread.run_sync(
                    self._file.write, self._writer.message(entry.message.data)
                )
                self._count += 1
                self.written += 1
                if self._count >= cfg.max_messages or self._file.size >= cfg.max_bytes:
                    await self._roll()
            if self._file is not None and trio.current_time() - self._opened_at >= cfg.max_age:
                await self._roll()
            if len(entries) < _PAGE:
                break
        if self._file is None and self._scan > await self.store.sink_position(cfg.name):
            # Only refused messages since the last file: remember we passed them.
            await self.store.set_sink_position(cfg.name, self._scan)

    async def aclose(self) -> None:
        """Close the open file now (trailers and rename), e.g. at shutdown."""
        if self._file is not None:
            await self._roll()


def _file_name(entry: JournalEntry, suffix: str) -> str:
    control = entry.message.info.control_id
    if not control:
        with contextlib.suppress(MSHError):
            control = read_msh(entry.message.data).control_id
    safe = _UNSAFE.sub("_", control)[:64]
    return (
        f"{entry.message.message_id:012d}-{safe}{suffix}"
        if safe
        else (f"{entry.message.message_id:012d}{suffix}")
    )


class DirectorySink(_Consumer):
    """Writes each message the listener accepted as a file of its own (as hl7rcv's ``--directory``).

    Args:
        store: The listener's journal.
        directory: Where the files go (created if missing).
        config: Names and polling.
    """

    def __init__(
        self,
        store: FileJournal,
        directory: str | os.PathLike[str],
        *,
        config: DirectorySinkConfig | None = None,
    ) -> None:
        super().__init__(store, directory)
        self.config = config if config is not None else DirectorySinkConfig()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write message files for ever; a failing folder or journal is retried."""
        await trio.to_thread.run_sync(make_private_dir, self.directory)
        self._scan = await self.store.sink_position(self.config.name)
        task_status.started()
        failures = 0
        while True:
            try:
                await self.step()
                failures = 0
                await self._sleep(self.config.poll_interval)
            except (OSError, StoreError) as exc:
                self._scan = await self.store.sink_position(self.config.name)
                delay = backoff_delay(failures, base=self.config.poll_interval, cap=60.0)
                failures += 1
                log.error("directory sink to %s paused %.1f s: %s", self.directory, delay, exc)
                await trio.sleep(delay)

    async def step(self) -> None:
        """Write every message the journal holds now, saving the position after each page."""
        while True:
            entries = await self._next_entries()
            wanted = [e for e in entries if _accepted(e)]

            def write_all(batch: list[JournalEntry] = wanted) -> None:
                for entry in batch:
                    atomic_write(
                        self.directory,
                        _file_name(entry, self.config.suffix),
                        [entry.message.data],
                        replace=True,
                    )

            await trio.to_thread.run_sync(write_all)
            if entries:
                self._scan = entries[-1].message.message_id
                await self.store.set_sink_position(self.config.name, self._scan)
                self.written += len(wanted)
                self.files += len(wanted)
            if len(entries) < _PAGE:
                return


@attrs.frozen(kw_only=True)
class FolderDestination:
    """A folder that another program picks files up from: the drop side of the folder transport.

    Every file appears under its final name whole or never: it is written to
    a hidden temporary name in the folder, fsynced, renamed, and the folder
    fsynced. It serves :func:`put` (``mllp-trio batch put``) and, as the
    destination named :attr:`name`, the store's outbound queue: messages
    enqueued with ``store.enqueue(destination.name, data)`` become one file
    each with :meth:`deliver_pending` or :meth:`run`.

    Attributes:
        directory: The folder (must exist, or be creatable).
        done_marker: Also write an empty ``NAME<marker>`` after each file,
            for pickers that wait for a marker. Default ``None``.
        suffix: Suffix of the files made from queued messages. Default ``".hl7"``.
    """

    directory: Path = attrs.field(converter=Path)
    done_marker: str | None = None
    suffix: str = attrs.field(default=".hl7", validator=_check_name_part)

    @property
    def name(self) -> str:
        """The destination name in the outbound queue: ``folder:<directory>``."""
        return f"folder:{self.directory}"

    def _mark(self, name: str) -> None:
        if self.done_marker is not None:
            atomic_write(self.directory, name + self.done_marker, [b""], replace=True)

    def put_sync(self, source: Path, name: str | None = None, *, replace: bool = False) -> Path:
        """Copy ``source`` into the folder atomically (blocking); return the new path.

        Raises:
            FileExistsError: A file of that name is there and ``replace`` is false.
            OSError: Reading or writing failed; nothing appeared in the folder.
        """
        final = name or source.name
        if final.startswith("."):
            raise ValueError(f"{final!r}: a hidden name would never be picked up")
        path = atomic_write(self.directory, final, copy_chunks(source), replace=replace)
        self._mark(final)
        return path

    async def put(
        self, source: str | os.PathLike[str], name: str | None = None, *, replace: bool = False
    ) -> Path:
        """Copy a file into the folder atomically; see :meth:`put_sync`."""
        return await trio.to_thread.run_sync(
            lambda: self.put_sync(Path(source), name, replace=replace)
        )

    async def write(self, data: bytes, name: str, *, replace: bool = False) -> Path:
        """Write ``data`` as the file ``name``, atomically."""

        def go() -> Path:
            path = atomic_write(self.directory, name, [data], replace=replace)
            self._mark(name)
            return path

        return await trio.to_thread.run_sync(go)

    async def deliver_pending(self, store: MessageStore) -> int:
        """Write the queued messages of this destination as files; return how many.

        One file per message, named by its queue id (a crash between the
        write and ``mark_sent`` rewrites the same name: at least once). A
        write that fails is recorded as a failed attempt and delivery stops
        until the next call.
        """
        written = 0
        while True:
            head = await store.fetch_next(self.name)
            if head is None:
                return written
            try:
                await self.write(head.data, f"{head.message_id:012d}{self.suffix}", replace=True)
            except OSError as exc:
                delay = backoff_delay(head.attempts)
                await store.mark_attempt(
                    head.message_id,
                    f"{type(exc).__name__}: {exc.strerror or exc}",
                    datetime.now(UTC) + timedelta(seconds=delay),
                )
                log.error("cannot write to %s: %s", self.directory, exc.strerror or exc)
                return written
            await store.mark_sent(head.message_id)
            written += 1

    async def run(
        self,
        store: MessageStore,
        *,
        poll_interval: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver this destination's queue into the folder for ever."""
        task_status.started()
        while True:
            await self.deliver_pending(store)
            await trio.sleep(poll_interval)

"""The folder transport, pickup side: batch files from an inbox through the journal.

:class:`FolderWatcher` watches an inbox folder. A file is picked up once it
is stable (size and modification time unchanged for ``stable_seconds``, or
a done-marker file beside it), and then:

1. **Survey** (one read, in a thread): its SHA-256 and its batch structure.
   A file whose structure is broken (a count that disagrees, a truncated
   file, a segment outside any message...) or that cannot be read goes to
   ``error/`` with an error report beside it, and none of its messages is
   processed: a half-processed file would be worse than none.
2. **Journal record**: its identity (inbox, name, size, mtime, SHA-256) finds
   or creates a record in the journal, with its progress.
3. **Messages**: from the first one without a recorded answer, each goes
   through the processor (a :class:`~mllp_trio.store.JournalProcessor`: the
   same handler and journal path as a message over MLLP), with a
   :class:`~mllp_trio.PeerInfo` naming the file. Answers are recorded in
   the journal every ``checkpoint_every`` messages. A message the handler
   refuses (AE/AR) is recorded as such; it does not send the file to
   ``error/``. A transient failure (the journal cannot commit, the handler
   asks to retry later) stops the file there; it is retried after
   ``retry_interval``, resuming at the first message without an answer.
4. **Done**: the acknowledgement batch is written to ``done/NAME.ack``
   (atomically), the file moved to ``done/``, and its record marked done.

Exactly once: after a crash the file is still in the inbox with the same
identity, so it resumes where its recorded progress stops; the messages
after the last checkpoint go through the processor again, and the journal
recognises them as duplicates by (MSH-3, MSH-4, MSH-10): they get their
stored answer and are not delivered again. (A message without MSH-10 has no
such key and may be delivered twice if the crash falls in that window.) A
file whose messages are all answered but that could not be moved (a
read-only or full ``done/``) stays in the inbox and only its move is retried.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final, Literal

import attrs
import trio

from mllp_trio._batch import (
    DEFAULT_MAX_MESSAGE_SIZE,
    AckBatchWriter,
    AckMode,
    BatchError,
    BatchHeader,
    BatchReader,
    BatchTrailer,
    EndOfFile,
    FileHeader,
    HeaderFields,
    Message,
    NeedData,
)
from mllp_trio._hl7 import PeerInfo, hl7_timestamp, is_negative, new_control_id
from mllp_trio._server import Processor
from mllp_trio.store._base import (
    FileIdentity,
    FileJournal,
    FileMessageResult,
    FileProgress,
    FileStatus,
    StoreError,
)
from mllp_trio.store._files import (
    AtomicFile,
    atomic_write,
    free_name,
    is_temporary,
    make_private_dir,
    move_file,
)

__all__ = ["FileReport", "FolderConfig", "FolderStats", "FolderWatcher"]

log = logging.getLogger("mllp_trio.folder")

_CHUNK: Final = 1 << 20
_RESULT_PAGE: Final = 1000


def _check_marker(_inst: object, _attr: object, value: str | None) -> None:
    if value is not None and (not value or "/" in value or os.sep in value):
        raise ValueError("done_marker must be a non-empty file name suffix such as '.done'")


@attrs.frozen(kw_only=True)
class FolderConfig:
    """Settings of the folder watcher.

    Attributes:
        done_dir: Where processed files go, with their acknowledgement batch.
            Default: ``done/`` inside the inbox.
        error_dir: Where files refused as a whole go, with an error report.
            Default: ``error/`` inside the inbox.
        pattern: Which file names to pick up (shell pattern). Hidden files
            (``.name``) and temporary files (``*.tmp``) never are. Default ``*``.
        stable_seconds: How long size and modification time must stay
            unchanged before a file is picked up. Default 2.
        done_marker: When set (say ``".done"``), a file is picked up only once
            ``NAME.done`` exists beside it, whatever its age; the marker is
            removed after the file moved. Default ``None``.
        poll_interval: Seconds between looks at the inbox. Default 1.
        retry_interval: Seconds before a file that could not be finished
            (journal failure, handler asking to retry, ``done/`` not
            writable) is tried again. Default 30.
        ack_mode: What the acknowledgement batch holds: every acknowledgement
            (``"all"``, default), the negative ones only (``"errors"``), or
            none (``"none"``: ``BTS|0`` when all were accepted).
        ack_suffix: Suffix of the acknowledgement batch beside the file in
            ``done/``. Default ``".ack"``.
        checkpoint_every: Record progress in the journal every this many
            messages (and at the end of the file). Default 100.
        window: How many messages of a file may be in the processor at
            once. 1 (default) hands them over strictly in file order; more
            lets the journal commit several in one transaction (one fsync),
            much faster on a slow disk, but the handler may then see the
            messages of a window in any order.
        lenient: Read files in the batch reader's lenient mode: structure
            problems are logged and the file is processed. Default False.
        max_message_size: Largest message in a file, in bytes. Default 16 MiB.
    """

    done_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    error_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    pattern: str = "*"
    stable_seconds: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    done_marker: str | None = attrs.field(default=None, validator=_check_marker)
    poll_interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    retry_interval: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    ack_mode: AckMode = attrs.field(default=AckMode.ALL, converter=AckMode)
    ack_suffix: str = attrs.field(default=".ack", validator=attrs.validators.min_len(1))
    checkpoint_every: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    window: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    lenient: bool = False
    max_message_size: int = attrs.field(
        default=DEFAULT_MAX_MESSAGE_SIZE, validator=attrs.validators.ge(1)
    )


FileOutcome = Literal["done", "error", "deferred"]


@attrs.frozen(kw_only=True)
class FileReport:
    """What happened to one file.

    Attributes:
        name: The file name in the inbox.
        outcome: ``"done"`` (moved to ``done/``), ``"error"`` (moved to
            ``error/``) or ``"deferred"`` (left in the inbox, retried later).
        messages: Messages in the file (0 when its structure was refused).
        processed: Messages that went through the processor in this attempt.
        failed: Messages answered negatively (AE/AR/CE/CR), all attempts.
        path: Where the file is now.
        reason: Why it went to ``error/`` or was deferred.
    """

    name: str
    outcome: FileOutcome
    messages: int = 0
    processed: int = 0
    failed: int = 0
    path: Path | None = None
    reason: str | None = None


@attrs.define
class FolderStats:
    """Counters since the watcher started.

    Attributes:
        files_done: Files moved to ``done/``.
        files_error: Files moved to ``error/``.
        files_deferred: Attempts that left a file in the inbox for later.
        messages: Messages that went through the processor.
        failed: Of those, answered negatively.
    """

    files_done: int = 0
    files_error: int = 0
    files_deferred: int = 0
    messages: int = 0
    failed: int = 0


@attrs.frozen
class _BatchPart:
    header: HeaderFields | None
    count: int


@attrs.define
class _Survey:
    sha256: str = ""
    messages: int = 0
    file_header: HeaderFields | None = None
    batches: list[_BatchPart] = attrs.Factory(list)
    error: str | None = None
    warnings: int = 0


def _survey(path: Path, *, lenient: bool, max_message_size: int) -> _Survey:
    """Hash the file and check its structure in one read (blocking)."""
    result = _Survey()
    digest = hashlib.sha256()
    reader = BatchReader(lenient=lenient, max_message_size=max_message_size)
    in_batch = False
    try:
        with open(path, "rb") as file:
            while True:
                event = reader.next_event()
                if isinstance(event, NeedData):
                    chunk = file.read(_CHUNK)
                    digest.update(chunk)
                    reader.receive_data(chunk)
                elif isinstance(event, FileHeader):
                    result.file_header = event.header
                elif isinstance(event, BatchHeader):
                    result.batches.append(_BatchPart(event.header, 0))
                    in_batch = True
                elif isinstance(event, Message):
                    if not in_batch:
                        result.batches.append(_BatchPart(None, 0))
                        in_batch = True
                    last = result.batches[-1]
                    result.batches[-1] = _BatchPart(last.header, last.count + 1)
                    result.messages += 1
                elif isinstance(event, BatchTrailer):
                    in_batch = False
                elif isinstance(event, EndOfFile):
                    break
    except BatchError as exc:
        result.error = f"malformed batch file: {exc}"
    except OSError as exc:
        result.error = f"cannot read the file: {exc.strerror or exc}"
    result.sha256 = digest.hexdigest()
    result.warnings = reader.warning_count
    if result.error is None and result.messages == 0:
        result.error = "no HL7 message in the file"
    return result


class _MessageSource:
    """The messages of a file, read in chunks in a worker thread."""

    def __init__(self, file: IO[bytes], *, lenient: bool, max_message_size: int) -> None:
        self._file = file
        self._reader = BatchReader(lenient=lenient, max_message_size=max_message_size)

    async def next(self) -> Message | None:
        while True:
            event = self._reader.next_event()
            if isinstance(event, NeedData):
                chunk = await trio.to_thread.run_sync(self._file.read, _CHUNK)
                self._reader.receive_data(chunk)
            elif isinstance(event, Message):
                return event
            elif isinstance(event, EndOfFile):
                return None


@attrs.define
class _FeedState:
    """What the tasks feeding one file share."""

    next_record: int
    processed: int = 0
    deferred: _Deferred | None = None
    deferred_at: int = 0
    failure: Exception | None = None

    def stop(self, reason: _Deferred, seq: int) -> None:
        """Stop at ``reason``; of several, the earliest message's reason is kept."""
        if self.deferred is None or seq < self.deferred_at:
            self.deferred, self.deferred_at = reason, seq


class _Deferred(Exception):
    """The file cannot be finished now; it stays in the inbox."""

    def __init__(self, reason: str, *, processed: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.processed = processed


class FolderWatcher:
    """Picks up batch files from an inbox and feeds their messages through a processor.

    Args:
        inbox: The folder to watch (created if missing).
        store: The journal holding each file's identity and progress
            (:class:`~mllp_trio.store.SQLiteStore` implements it).
        processor: The per-message pipeline, normally
            ``JournalProcessor(store, handler)`` on the same store.
        config: Settings.
        on_report: Called with the :class:`FileReport` of each file handled.
        on_progress: Called as ``(name, done, total)`` while a file is
            processed, at each checkpoint.

    Example::

        async with open_sqlite_store("data") as store:
            watcher = FolderWatcher("inbox", store, JournalProcessor(store, handler))
            await watcher.run()
    """

    def __init__(
        self,
        inbox: str | os.PathLike[str],
        store: FileJournal,
        processor: Processor,
        *,
        config: FolderConfig | None = None,
        on_report: Callable[[FileReport], None] | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.inbox = Path(inbox).absolute()
        self.store = store
        self.processor = processor
        self.config = config if config is not None else FolderConfig()
        self.done_dir = self.config.done_dir or self.inbox / "done"
        self.error_dir = self.config.error_dir or self.inbox / "error"
        self.stats = FolderStats()
        self._on_report = on_report
        self._on_progress = on_progress
        # name -> (size, mtime_ns, Trio time first seen with them)
        self._seen: dict[str, tuple[int, int, float]] = {}
        # name -> (size, mtime_ns, Trio time of the next attempt) for deferred files
        self._retry_at: dict[str, tuple[int, int, float]] = {}

    # ------------------------------------------------------------- scanning

    def _list_inbox(self) -> list[tuple[str, os.stat_result]]:
        marker = self.config.done_marker
        found: list[tuple[str, os.stat_result]] = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                name = entry.name
                if is_temporary(name) or (marker is not None and name.endswith(marker)):
                    continue
                if not fnmatch.fnmatchcase(name, self.config.pattern):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    found.append((name, entry.stat(follow_symlinks=False)))
                except OSError:
                    continue  # vanished meanwhile
        # Oldest first: files are usually meant to be processed in drop order.
        found.sort(key=lambda item: (item[1].st_mtime_ns, item[0]))
        return found

    def _ready(self, name: str, st: os.stat_result, now: float) -> bool:
        key = (st.st_size, st.st_mtime_ns)
        retry = self._retry_at.get(name)
        if retry is not None:
            if (retry[0], retry[1]) == key and now < retry[2]:
                return False
            del self._retry_at[name]
        marker = self.config.done_marker
        if marker is not None:
            return (self.inbox / (name + marker)).exists()
        seen = self._seen.get(name)
        if seen is None or (seen[0], seen[1]) != key:
            self._seen[name] = (*key, now)
            return self.config.stable_seconds == 0
        return now - seen[2] >= self.config.stable_seconds

    async def scan(self) -> tuple[list[FileReport], int]:
        """Look at the inbox once and process every file that is stable now.

        Returns:
            The reports of the files handled, and how many files are still
            waiting (not stable yet, no marker yet, or deferred).
        """
        await trio.to_thread.run_sync(self._make_dirs)
        listing = await trio.to_thread.run_sync(self._list_inbox)
        names = {name for name, _ in listing}
        for gone in set(self._seen) - names:
            del self._seen[gone]
        for gone in set(self._retry_at) - names:
            del self._retry_at[gone]
        reports: list[FileReport] = []
        waiting = 0
        now = trio.current_time()
        for name, st in listing:
            if not self._ready(name, st, now):
                waiting += 1
                continue
            self._seen.pop(name, None)
            report = await self.process_file(name)
            if report.outcome == "deferred":
                waiting += 1
            reports.append(report)
        return reports, waiting

    def _make_dirs(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        for directory in (self.done_dir, self.error_dir):
            # A folder we cannot create now is reported when a file needs it.
            with contextlib.suppress(OSError):
                directory.mkdir(parents=True, exist_ok=True)

    async def run(
        self,
        *,
        once: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> FolderStats:
        """Watch the inbox for ever, or with ``once`` until it holds nothing ready.

        Args:
            once: Return when no file is left in the inbox except deferred
                ones (files still being written are waited for).
            task_status: Started once the folders exist.

        Returns:
            The counters (only with ``once``).
        """
        await trio.to_thread.run_sync(self._make_dirs)
        task_status.started()
        while True:
            _, waiting = await self.scan()
            if once and waiting <= len(self._retry_at):
                return self.stats
            await trio.sleep(self.config.poll_interval)

    # ----------------------------------------------------------- one file

    async def process_file(self, name: str) -> FileReport:
        """Process one inbox file now (no stability check) and report what happened."""
        path = self.inbox / name
        try:
            report = await self._process(name, path)
        except _Deferred as exc:
            report = FileReport(
                name=name, outcome="deferred", processed=exc.processed, path=path, reason=exc.reason
            )
            with contextlib.suppress(OSError):
                st = path.stat()
                retry = trio.current_time() + self.config.retry_interval
                self._retry_at[name] = (st.st_size, st.st_mtime_ns, retry)
            self.stats.files_deferred += 1
            log.error("%s left in the inbox: %s", path, exc.reason)
        else:
            if report.outcome == "done":
                self.stats.files_done += 1
            else:
                self.stats.files_error += 1
        if self._on_report is not None:
            self._on_report(report)
        return report

    async def _process(self, name: str, path: Path) -> FileReport:
        cfg = self.config
        try:
            before = await trio.to_thread.run_sync(path.stat)
        except OSError as exc:
            raise _Deferred(f"cannot read it: {exc.strerror or exc}") from None
        survey = await trio.to_thread.run_sync(
            lambda: _survey(path, lenient=cfg.lenient, max_message_size=cfg.max_message_size)
        )
        with contextlib.suppress(OSError):
            after = await trio.to_thread.run_sync(path.stat)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise _Deferred("it changed while it was read; still being written?")
        if survey.warnings:
            log.warning(
                "%s: %d batch structure problem(s) read past (lenient)", path, survey.warnings
            )
        identity = FileIdentity(
            inbox=str(self.inbox),
            name=name,
            size=before.st_size,
            mtime_ns=before.st_mtime_ns,
            sha256=survey.sha256,
        )
        try:
            progress = await self.store.open_file(identity)
        except StoreError as exc:
            raise _Deferred(f"the journal failed: {exc}") from None
        if survey.error is not None:
            return await self._refuse(name, path, progress, survey.error)
        processed = 0
        if progress.next_seq < survey.messages:
            if progress.next_seq:
                log.info(
                    "%s: resuming at message %d of %d", path, progress.next_seq + 1, survey.messages
                )
            processed = await self._feed(name, path, progress, survey.messages)
        return await self._finish(name, path, progress, survey, processed, before)

    async def _feed(self, name: str, path: Path, progress: FileProgress, total: int) -> int:
        """Run messages ``progress.next_seq..`` through the processor; return how many.

        Up to ``config.window`` messages are in the processor at once. Only
        the answered prefix of the file is recorded as progress: a message
        answered while an earlier one is still running (or failed) waits,
        so the resume point never skips a message.
        """
        cfg = self.config
        peer = PeerInfo(address=f"file:{path}")
        answered: dict[int, FileMessageResult] = {}
        pending: list[FileMessageResult] = []
        state = _FeedState(next_record=progress.next_seq)
        slots = trio.Semaphore(cfg.window)

        async def record(*, force: bool) -> None:
            while state.next_record in answered:
                pending.append(answered.pop(state.next_record))
                state.next_record += 1
            if pending and (force or len(pending) >= cfg.checkpoint_every):
                try:
                    await self.store.record_file_results(progress.file_id, pending)
                except StoreError as exc:
                    state.stop(_Deferred(f"the journal failed: {exc}"), total)
                    return
                pending.clear()
                if self._on_progress is not None:
                    self._on_progress(name, state.next_record, total)

        async def one(message: Message, cancel: trio.CancelScope) -> None:
            try:
                outcome = await self.processor(message.raw, peer)
            except Exception as exc:  # a bug in a processor: stop, report it as it is
                state.failure = exc
                cancel.cancel()
                return
            finally:
                slots.release()
            seq = message.number - 1
            if outcome.transient:
                why = outcome.error.text if outcome.error is not None else outcome.code
                state.stop(
                    _Deferred(
                        f"message {message.number} (control id {outcome.control_id!r}) could"
                        f" not be processed now ({why}); retrying later"
                    ),
                    seq,
                )
                return
            code = outcome.application_code or outcome.code
            ack = outcome.application_ack or outcome.reply
            if ack is None:
                # No answer by control id (none readable): in a file its
                # place still correlates it; refused, with an AR of its own
                # in the acknowledgement batch.
                code = code or "AR"
            answered[seq] = FileMessageResult(
                seq=seq, control_id=outcome.control_id or "", code=code, ack=ack
            )
            state.processed += 1
            self.stats.messages += 1
            if is_negative(code):
                self.stats.failed += 1

        try:
            file = await trio.to_thread.run_sync(open, path, "rb")
        except OSError as exc:
            raise _Deferred(f"cannot read it: {exc.strerror or exc}") from None
        try:
            source = _MessageSource(
                file, lenient=cfg.lenient, max_message_size=cfg.max_message_size
            )
            async with trio.open_nursery() as nursery:
                while state.deferred is None:
                    try:
                        message = await source.next()
                    except (BatchError, OSError) as exc:
                        state.stop(_Deferred(f"it changed while it was read ({exc})"), total)
                        break
                    if message is None:
                        break
                    if message.number > total:  # it grew since the survey
                        state.stop(_Deferred("it changed while it was read"), total)
                        break
                    if message.number - 1 < progress.next_seq:
                        continue
                    await slots.acquire()
                    if state.deferred is not None:
                        slots.release()
                        break
                    nursery.start_soon(one, message, nursery.cancel_scope)
                    await record(force=False)
            if state.failure is not None:
                raise state.failure
            await record(force=True)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(file.close)
        if state.deferred is not None:
            state.deferred.processed = state.processed
            raise state.deferred
        if state.next_record < total:
            raise _Deferred(
                f"it changed while it was read ({state.next_record} of {total} messages)",
                processed=state.processed,
            )
        return state.processed

    async def _finish(
        self,
        name: str,
        path: Path,
        progress: FileProgress,
        survey: _Survey,
        processed: int,
        before: os.stat_result,
    ) -> FileReport:
        """Acknowledgement batch to ``done/``, then the file, then the journal record."""
        cfg = self.config
        failed = 0
        # A writer that went on after the file looked stable: what it added
        # has no answer yet, so the file must not move. Checked before the
        # acknowledgement batch and again just before the move.
        await self._check_unchanged(path, before, processed)
        try:
            await trio.to_thread.run_sync(make_private_dir, self.done_dir)
            final = await trio.to_thread.run_sync(
                lambda: free_name(self.done_dir, name, also=(cfg.ack_suffix,))
            )
            ack_file = await trio.to_thread.run_sync(
                AtomicFile, self.done_dir, final + cfg.ack_suffix
            )
        except OSError as exc:
            raise _Deferred(
                self._folder_problem(self.done_dir, exc, survey.messages), processed=processed
            ) from None
        try:
            failed = await self._write_acks(ack_file, progress.file_id, survey)
            await trio.to_thread.run_sync(ack_file.commit)
        except OSError as exc:
            await trio.to_thread.run_sync(ack_file.abort)
            raise _Deferred(
                self._folder_problem(self.done_dir, exc, survey.messages), processed=processed
            ) from None
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(ack_file.abort)
            raise
        try:
            await self._check_unchanged(path, before, processed)
            moved = await trio.to_thread.run_sync(move_file, path, self.done_dir, final)
        except _Deferred:
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(os.unlink, self.done_dir / (final + cfg.ack_suffix))
            raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(os.unlink, self.done_dir / (final + cfg.ack_suffix))
            raise _Deferred(
                self._folder_problem(self.done_dir, exc, survey.messages), processed=processed
            ) from None
        await self._mark(progress.file_id, FileStatus.DONE, None)
        await self._remove_marker(name)
        log.info("%s: %d message(s), %d refused; moved to %s", path, survey.messages, failed, moved)
        return FileReport(
            name=name,
            outcome="done",
            messages=survey.messages,
            processed=processed,
            failed=failed,
            path=moved,
        )

    @staticmethod
    async def _check_unchanged(path: Path, before: os.stat_result, processed: int) -> None:
        try:
            now = await trio.to_thread.run_sync(path.stat)
        except OSError as exc:
            raise _Deferred(f"cannot read it: {exc.strerror or exc}", processed=processed) from None
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise _Deferred(
                "it changed while it was processed (still being written?); it is taken "
                "again whole, and the messages already answered are not delivered twice",
                processed=processed,
            )

    async def _write_acks(self, file: AtomicFile, file_id: int, survey: _Survey) -> int:
        """Write the acknowledgement batch from the recorded answers; return the failures."""
        writer = AckBatchWriter(mode=self.config.ack_mode)
        failed = 0
        parts = [writer.file_header(survey.file_header)]
        after = -1
        for batch in survey.batches:
            parts.append(writer.batch_header(batch.header))
            left = batch.count
            while left:
                results = await self.store.file_results(
                    file_id, after_seq=after, limit=min(left, _RESULT_PAGE)
                )
                if not results:
                    raise _Deferred(f"the journal lacks the answers after message {after + 1}")
                for result in results:
                    failed += is_negative(result.code)
                    parts.append(writer.ack(result.ack or _unanswerable_ack(result.seq)))
                after = results[-1].seq
                left -= len(results)
                data = b"".join(parts)
                parts.clear()
                await trio.to_thread.run_sync(file.write, data)
        parts.append(writer.close())
        await trio.to_thread.run_sync(file.write, b"".join(parts))
        return failed

    async def _refuse(
        self, name: str, path: Path, progress: FileProgress, reason: str
    ) -> FileReport:
        """A file refused as a whole: error report, file to ``error/``, record marked error."""
        text = "\n".join(
            [
                f"file: {name}",
                f"refused: {reason}",
                "none of its messages was processed; fix the file and drop it again",
                "",
            ]
        ).encode()
        try:
            await trio.to_thread.run_sync(make_private_dir, self.error_dir)
            final = await trio.to_thread.run_sync(
                lambda: free_name(self.error_dir, name, also=(".error",))
            )
            await trio.to_thread.run_sync(
                lambda: atomic_write(self.error_dir, final + ".error", [text])
            )
            moved = await trio.to_thread.run_sync(move_file, path, self.error_dir, final)
        except OSError as exc:
            raise _Deferred(self._folder_problem(self.error_dir, exc, 0)) from None
        await self._mark(progress.file_id, FileStatus.ERROR, reason)
        await self._remove_marker(name)
        log.error("%s refused (%s); moved to %s", path, reason, moved)
        return FileReport(name=name, outcome="error", path=moved, reason=reason)

    @staticmethod
    def _folder_problem(directory: Path, exc: OSError, messages: int) -> str:
        what = exc.strerror or str(exc)
        done = (
            f"its {messages} message(s) are committed and will not be processed again; "
            if messages
            else ""
        )
        return (
            f"cannot write to {directory} ({what}); {done}"
            "make the folder writable or free space, the move is retried"
        )

    async def _mark(self, file_id: int, status: FileStatus, reason: str | None) -> None:
        try:
            await self.store.finish_file(file_id, status, reason)
        except StoreError as exc:
            # The file has moved: nothing can process it twice any more.
            log.error("file record %d not marked %s: %s", file_id, status, exc)

    async def _remove_marker(self, name: str) -> None:
        marker = self.config.done_marker
        if marker is not None:
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(os.unlink, self.inbox / (name + marker))


def _unanswerable_ack(seq: int) -> bytes:
    """An AR for the message at ``seq`` that had no readable control id.

    Its MSA-2 is empty (nothing to echo); the acknowledgement batch keeps
    one ACK per message, so the sender finds it by position and the text.
    """
    return (
        f"MSH|^~\\&|||||{hl7_timestamp()}||ACK|{new_control_id()}|P|2.5\r"
        f"MSA|AR|\rERR|||101^Required field missing^HL70357|E||||"
        f"message {seq + 1} of the file has no readable MSH-10 (control id)\r"
    ).encode("ascii")

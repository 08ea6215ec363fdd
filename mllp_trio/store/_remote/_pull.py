"""Remote pickup: batch files from an SFTP/FTPS inbox through the folder transport.

:class:`RemotePuller` polls a remote inbox and, for each stable file:

1. **Download** into the local staging folder (``incoming/NAME``), resuming
   after a broken connection from what the staging file holds; the finished
   copy gets the remote modification time and is renamed to ``NAME``.
2. **Process** it with the folder transport's own
   :meth:`~mllp_trio.store.FolderWatcher.process_file`, whose inbox is the
   staging folder: the same journal, handler path, exactly-once file
   identity (staging folder, name, size, remote mtime, SHA-256),
   checkpoints, acknowledgement batch and error report.
3. **Finish on the server**, only once every message is committed: the
   acknowledgement batch is uploaded beside the file's new place and to
   the optional outbox (temporary name, size check, rename), then the file
   moves to the remote ``done/`` (or is deleted, by option); a file refused
   as a whole goes to ``error/`` with its error report. What remains to do
   is written first to ``pending/NAME.json`` in the staging folder, so that a
   restart finishes it without processing anything again.

Exactly once across crashes: a partial download resumes; a downloaded file
resumes at its journal checkpoint (the journal recognises the messages after
it as duplicates); a file whose journal record is finished but whose pending
record was lost is downloaded again, found finished by its identity, and
only moved on the server.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import attrs
import trio

from mllp_trio._batch import DEFAULT_MAX_MESSAGE_SIZE, AckMode
from mllp_trio._server import Processor
from mllp_trio.store._base import FileJournal
from mllp_trio.store._files import atomic_write, fsync_dir, make_private_dir
from mllp_trio.store._folder import FolderConfig, FolderWatcher, _check_marker
from mllp_trio.store._remote._base import RemoteEntry, RemoteError, RemoteErrorKind, RemoteSession
from mllp_trio.store._remote._client import RemoteClient
from mllp_trio.store._remote._push import is_partial, opener, upload_atomically
from mllp_trio.store._remote._url import join

__all__ = ["PullConfig", "PullStats", "RemotePuller", "RemoteReport"]

log = logging.getLogger("mllp_trio.remote")

_PENDING: Final = "pending"
_INCOMING: Final = "incoming"


@attrs.frozen(kw_only=True)
class PullConfig:
    """Settings of the remote puller.

    Attributes:
        done_folder: Remote folder processed files move to. Default: ``done``
            inside the inbox.
        error_folder: Remote folder files refused as a whole move to, with
            their error report. Default: ``error`` inside the inbox.
        delete: Delete processed files on the server instead of moving them
            to ``done_folder`` (refused files still go to ``error_folder``).
            Default False.
        outbox: Remote folder that also gets each acknowledgement batch
            (``NAME.ack``). Default ``None``.
        pattern: Which names to take (shell pattern). Hidden names and
            uploads in progress (``.NAME...``, ``*.part``, ``*.tmp``) never
            are. Default ``*``.
        stable_seconds: How long size and modification time must stay the
            same, across at least two listings, before a file is taken.
            Default 2.
        done_marker: When set (``".done"``), a file is taken as soon as
            ``NAME.done`` is listed beside it; the marker is removed after
            the file moved. Default ``None``.
        poll_interval: Seconds between listings. Default 5.
        retry_interval: Seconds before a file that could not be finished
            (journal failure, handler asking to retry, the server refusing a
            move) is tried again. Default 30.
        ack_mode: What the acknowledgement batch holds (``all``, ``errors``,
            ``none``). Default ``all``.
        ack_suffix: Suffix of the acknowledgement batch. Default ``".ack"``.
        checkpoint_every: Journal checkpoint every this many messages. Default 100.
        window: Messages of a file in the processor at once. Default 1.
        lenient: Process files with batch structure problems. Default False.
        max_message_size: Largest message in a file. Default 16 MiB.
    """

    done_folder: str | None = None
    error_folder: str | None = None
    delete: bool = False
    outbox: str | None = None
    pattern: str = "*"
    stable_seconds: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    done_marker: str | None = attrs.field(default=None, validator=_check_marker)
    poll_interval: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    retry_interval: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    ack_mode: AckMode = attrs.field(default=AckMode.ALL, converter=AckMode)
    ack_suffix: str = attrs.field(default=".ack", validator=attrs.validators.min_len(1))
    checkpoint_every: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    window: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    lenient: bool = False
    max_message_size: int = attrs.field(
        default=DEFAULT_MAX_MESSAGE_SIZE, validator=attrs.validators.ge(1)
    )


RemoteOutcome = Literal["done", "error", "deferred"]


@attrs.frozen(kw_only=True)
class RemoteReport:
    """What happened to one remote file.

    Attributes:
        name: The file name in the remote inbox.
        outcome: ``"done"``, ``"error"`` or ``"deferred"`` (left on the
            server, retried later).
        messages: Messages in the file.
        processed: Messages that went through the processor in this attempt.
        failed: Messages answered negatively.
        remote_path: Where the file is now on the server (``None`` if deleted).
        reason: Why it was refused or deferred.
    """

    name: str
    outcome: RemoteOutcome
    messages: int = 0
    processed: int = 0
    failed: int = 0
    remote_path: str | None = None
    reason: str | None = None


@attrs.define
class PullStats:
    """Counters since the puller started.

    Attributes:
        files_done: Files finished and moved to ``done/`` (or deleted).
        files_error: Files moved to ``error/``.
        files_deferred: Attempts that left a file on the server for later.
        messages: Messages that went through the processor.
        failed: Of those, answered negatively.
        bytes_downloaded: Bytes downloaded (resumed parts count once).
        download_seconds: Time spent downloading.
        reconnects: Connection failures retried.
    """

    files_done: int = 0
    files_error: int = 0
    files_deferred: int = 0
    messages: int = 0
    failed: int = 0
    bytes_downloaded: int = 0
    download_seconds: float = 0.0
    reconnects: int = 0


@attrs.define
class _Pending:
    """A processed file whose server side is not finished yet (``pending/NAME.json``)."""

    name: str
    size: int
    mtime: float | None
    outcome: Literal["done", "error"]
    local: str
    report: str
    messages: int = 0
    failed: int = 0
    processed: int = 0
    reason: str | None = None
    remote_final: str | None = None
    outbox_final: str | None = None


class _Deferred(Exception):
    def __init__(self, reason: str, *, processed: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.processed = processed


def _mtime_ns(mtime: float | None) -> int:
    # FTP servers that tell no time: 0, the size and the hash still identify the file.
    return 0 if mtime is None else round(mtime * 1_000_000_000)


class RemotePuller:
    """Picks batch files up from a remote inbox into the journal, exactly once.

    Args:
        client: The remote client; its target's folder is the inbox.
        staging: Local folder for downloads and the folder transport's
            work (created, 0700). Keep one per remote inbox: the journal
            identifies files by it.
        store: The journal (file identities and progress).
        processor: The per-message pipeline, normally
            ``JournalProcessor(store, handler)``.
        config: Settings.
        on_report: Called with each file's :class:`RemoteReport`.
        on_progress: Called as ``(name, done, total)`` at each checkpoint.

    Example::

        from mllp_trio.store import RemoteClient, RemoteOptions, RemotePuller, parse_target

        client = RemoteClient(parse_target("sftp://lab@host/inbox"), RemoteOptions(...))
        async with open_sqlite_store("data") as store:
            puller = RemotePuller(client, "data/staging", store, JournalProcessor(store))
            await puller.run()
    """

    def __init__(
        self,
        client: RemoteClient,
        staging: str | os.PathLike[str],
        store: FileJournal,
        processor: Processor,
        *,
        config: PullConfig | None = None,
        on_report: Callable[[RemoteReport], None] | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.config = cfg = config if config is not None else PullConfig()
        self.staging = Path(staging).absolute()
        self.inbox = client.target.folder
        self.done_folder = (
            cfg.done_folder if cfg.done_folder is not None else join(self.inbox, "done")
        )
        self.error_folder = (
            cfg.error_folder if cfg.error_folder is not None else join(self.inbox, "error")
        )
        self.stats = PullStats()
        self._on_report = on_report
        self._watcher = FolderWatcher(
            self.staging,
            store,
            processor,
            config=FolderConfig(
                done_dir=self.staging / "done",
                error_dir=self.staging / "error",
                stable_seconds=0,
                retry_interval=cfg.retry_interval,
                ack_mode=cfg.ack_mode,
                ack_suffix=cfg.ack_suffix,
                checkpoint_every=cfg.checkpoint_every,
                window=cfg.window,
                lenient=cfg.lenient,
                max_message_size=cfg.max_message_size,
            ),
            on_progress=on_progress,
        )
        # name -> (size, mtime, Trio time first seen with them)
        self._seen: dict[str, tuple[int, float | None, float]] = {}
        # name -> (size, mtime, Trio time of the next attempt)
        self._retry_at: dict[str, tuple[int, float | None, float]] = {}
        # Listed names that are not plain file names (warned about once).
        self._odd_names: set[str] = set()

    # ------------------------------------------------------------------ loop

    async def run(
        self,
        *,
        once: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> PullStats:
        """Poll the inbox for ever, or with ``once`` until it holds nothing ready.

        Connection failures that outlast the client's retries end a pass:
        the next pass tries again (with ``once``, the error is raised).
        Trust and login failures, and a missing inbox, are always raised.

        Raises:
            RemoteError: See above.
        """
        await trio.to_thread.run_sync(self._make_dirs)
        task_status.started()
        try:
            while True:
                try:
                    _, waiting = await self.scan()
                except RemoteError as exc:
                    if once or not exc.transient:
                        raise
                    log.error(
                        "%s: %s; trying again in %g s",
                        self.client.url,
                        exc,
                        self.config.poll_interval,
                    )
                    waiting = 1
                if once and waiting <= len(self._retry_at):
                    return self.stats
                await trio.sleep(self.config.poll_interval)
        finally:
            self.stats.reconnects = self.client.reconnects
            await self.client.aclose()

    def _make_dirs(self) -> None:
        for folder in (self.staging, self.staging / _INCOMING, self.staging / _PENDING):
            make_private_dir(folder)

    async def scan(self) -> tuple[list[RemoteReport], int]:
        """List the inbox once, finish what a crash left, take every stable file.

        Returns:
            The reports of the files handled, and how many files are still
            waiting (not stable yet, or deferred).
        """
        await trio.to_thread.run_sync(self._make_dirs)
        inbox = self.inbox
        try:
            listing = await self.client.call(
                lambda s: s.list_files(inbox), f"listing of {inbox or '.'}"
            )
        except RemoteError as exc:
            if exc.kind is RemoteErrorKind.NOT_FOUND:
                raise RemoteError(
                    f"the inbox {inbox or '.'!r} does not exist on {self.client.url}: check the "
                    "folder in the URL",
                    kind=RemoteErrorKind.NOT_FOUND,
                ) from None
            raise
        self.stats.reconnects = self.client.reconnects
        by_name = {entry.name: entry for entry in listing}
        reports: list[RemoteReport] = []
        waiting = 0
        pending = await trio.to_thread.run_sync(self._load_pending)
        for record in pending:
            reports.append(await self._finish_reported(record, by_name.get(record.name)))
        busy = {record.name for record in pending}
        marker = self.config.done_marker
        candidates = [
            entry
            for entry in listing
            if self._plain_name(entry.name)
            and entry.name not in busy
            and not is_partial(entry.name)
            and not entry.name.endswith(".tmp")
            and not (marker is not None and entry.name.endswith(marker))
            and fnmatch.fnmatchcase(entry.name, self.config.pattern)
        ]
        names = {entry.name for entry in candidates}
        for gone in set(self._seen) - names:
            del self._seen[gone]
        for gone in set(self._retry_at) - names:
            del self._retry_at[gone]
        now = trio.current_time()
        for entry in candidates:
            if not self._ready(entry, by_name, now):
                waiting += 1
                continue
            self._seen.pop(entry.name, None)
            report = await self.take(entry)
            if report.outcome == "deferred":
                waiting += 1
            reports.append(report)
        return reports, waiting

    def _plain_name(self, name: str) -> bool:
        """Whether ``name`` is a plain file name, safe to use under the staging folder.

        The listing comes from the server: a name with a slash or a NUL
        (``../../x``, ``/etc/x``) would make the download and the folder
        transport write outside the staging folder. Skipped, with one warning.
        """
        if name and "/" not in name and "\0" not in name:
            return True
        if name not in self._odd_names:
            self._odd_names.add(name)
            log.warning(
                "%s: the server listed a file name that is not a plain name (%r); skipped",
                self.client.url,
                name,
            )
        return False

    def _ready(self, entry: RemoteEntry, listing: dict[str, RemoteEntry], now: float) -> bool:
        key = (entry.size, entry.mtime)
        retry = self._retry_at.get(entry.name)
        if retry is not None:
            if (retry[0], retry[1]) == key and now < retry[2]:
                return False
            del self._retry_at[entry.name]
        marker = self.config.done_marker
        if marker is not None:
            return entry.name + marker in listing
        seen = self._seen.get(entry.name)
        if seen is None or (seen[0], seen[1]) != key:
            self._seen[entry.name] = (*key, now)
            return False
        return now - seen[2] >= self.config.stable_seconds

    # ------------------------------------------------------------- one file

    async def take(self, entry: RemoteEntry) -> RemoteReport:
        """Download, process and finish one remote file now (no stability check)."""
        try:
            report = await self._take(entry)
        except _Deferred as exc:
            report = RemoteReport(
                name=entry.name,
                outcome="deferred",
                processed=exc.processed,
                remote_path=join(self.inbox, entry.name),
                reason=exc.reason,
            )
            self._retry_at[entry.name] = (
                entry.size,
                entry.mtime,
                trio.current_time() + self.config.retry_interval,
            )
            self.stats.files_deferred += 1
            log.error("%s left on the server: %s", entry.name, exc.reason)
            if self._on_report is not None:
                self._on_report(report)
        return report

    async def _take(self, entry: RemoteEntry) -> RemoteReport:
        name = entry.name
        staged = self.staging / name
        if not await trio.to_thread.run_sync(self._is_staged, staged, entry):
            started = trio.current_time()
            try:
                await self._download(entry)
            finally:
                self.stats.download_seconds += trio.current_time() - started
        before = self._watcher.stats.messages
        try:
            report = await self._watcher.process_file(name)
        finally:
            # Counted also when interrupted (Ctrl-C): the summary says what got in.
            self.stats.messages += self._watcher.stats.messages - before
            self.stats.failed = self._watcher.stats.failed
        if report.outcome == "deferred":
            raise _Deferred(report.reason or "deferred", processed=report.processed)
        assert report.path is not None
        suffix = self.config.ack_suffix if report.outcome == "done" else ".error"
        record = _Pending(
            name=name,
            size=entry.size,
            mtime=entry.mtime,
            outcome=report.outcome,
            local=str(report.path),
            report=str(report.path) + suffix,
            messages=report.messages,
            failed=report.failed,
            processed=report.processed,
            reason=report.reason,
        )
        await trio.to_thread.run_sync(self._save_pending, record)
        return await self._finish_reported(record, entry)

    @staticmethod
    def _is_staged(staged: Path, entry: RemoteEntry) -> bool:
        """Whether a complete download of this very remote file is in staging."""
        try:
            st = staged.stat()
        except FileNotFoundError:
            return False
        if (st.st_size, st.st_mtime_ns) == (entry.size, _mtime_ns(entry.mtime)):
            return True
        # An older file of that name, replaced on the server before it was
        # finished: the new one is taken whole.
        log.warning("%s: the server holds another version now; taking that one", staged)
        staged.unlink()
        return False

    async def _download(self, entry: RemoteEntry) -> None:
        """Download ``entry`` into staging, resuming a partial download."""
        name = entry.name
        part = self.staging / _INCOMING / name
        meta = self.staging / _INCOMING / (name + ".json")
        wanted = {"size": entry.size, "mtime": entry.mtime}

        def prepare() -> None:
            try:
                known = json.loads(meta.read_text())
            except (OSError, ValueError):
                known = None
            if known != wanted:
                # A partial download of another version (or none): start afresh.
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                atomic_write(meta.parent, meta.name, [json.dumps(wanted).encode()], replace=True)

        await trio.to_thread.run_sync(prepare)
        path = join(self.inbox, name)

        def attempt(session: RemoteSession) -> int:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "ab") as local:
                offset = local.tell()
                if offset > entry.size:
                    local.truncate(0)
                    offset = 0
                if offset:
                    log.info("%s: resuming the download at byte %d of %d", name, offset, entry.size)
                try:
                    if offset < entry.size or entry.size == 0:
                        session.download(path, local, offset=offset)
                finally:
                    # What arrived stays: the next attempt resumes after it.
                    local.flush()
                    os.fsync(local.fileno())
                    self.stats.bytes_downloaded += local.tell() - offset
                return local.tell()

        try:
            got = await self.client.call(attempt, f"download of {path}")
        except RemoteError as exc:
            if exc.transient:
                raise  # the pass ends; the partial download is kept for the next
            raise _Deferred(str(exc)) from None

        def place() -> None:
            if got != entry.size:
                part.unlink()
                meta.unlink()
                raise _Deferred(
                    f"it changed on the server while it was downloaded ({got:,} bytes, "
                    f"listed with {entry.size:,}); taken again once stable"
                )
            ns = _mtime_ns(entry.mtime)
            os.utime(part, ns=(ns, ns))
            os.replace(part, self.staging / name)
            fsync_dir(self.staging)
            meta.unlink()

        await trio.to_thread.run_sync(place)

    # ------------------------------------------------------- server side

    def _pending_path(self, name: str) -> Path:
        return self.staging / _PENDING / (name + ".json")

    def _save_pending(self, record: _Pending) -> None:
        data = json.dumps(attrs.asdict(record)).encode()
        atomic_write(self.staging / _PENDING, record.name + ".json", [data], replace=True)

    def _load_pending(self) -> list[_Pending]:
        records = []
        for path in sorted((self.staging / _PENDING).glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                records.append(_Pending(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                log.error("%s is unreadable (%s); moved aside", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(path.name + ".bad"))
        return records

    async def _finish_reported(self, record: _Pending, current: RemoteEntry | None) -> RemoteReport:
        try:
            report = await self._finish(record, current)
        except RemoteError as exc:
            if exc.transient:
                raise
            # Refused by the server (permissions, a full disk): tried again
            # at the next pass, never processed again.
            report = RemoteReport(
                name=record.name,
                outcome="deferred",
                messages=record.messages,
                processed=record.processed,
                remote_path=join(self.inbox, record.name),
                reason=f"all messages are committed, but the server refused to take the file "
                f"further: {exc}; retried at the next pass",
            )
            self.stats.files_deferred += 1
            log.error("%s: %s", record.name, report.reason)
        else:
            if report.outcome == "done":
                self.stats.files_done += 1
            else:
                self.stats.files_error += 1
        if self._on_report is not None:
            self._on_report(report)
        return report

    async def _finish(self, record: _Pending, current: RemoteEntry | None) -> RemoteReport:
        """Upload the reports, move (or delete) the remote file, drop the local copies."""
        cfg = self.config
        ok = record.outcome == "done"
        folder = self.done_folder if ok else self.error_folder
        suffix = cfg.ack_suffix if ok else ".error"
        keep_remote = not (ok and cfg.delete)
        report_file = Path(record.report)
        same = current is not None and (current.size, current.mtime) == (record.size, record.mtime)
        if current is not None and not same:
            log.warning(
                "%s: the server holds another file of that name now; it is left for a pass "
                "of its own",
                record.name,
            )
        uploaded = False
        if keep_remote:
            if record.remote_final is None:
                record.remote_final = await self._free_name(folder, record.name, suffix)
                await trio.to_thread.run_sync(self._save_pending, record)
            await self._upload_report(report_file, folder, record.remote_final + suffix)
            uploaded = True
        if ok and cfg.outbox is not None:
            if record.outbox_final is None:
                record.outbox_final = await self._free_name(cfg.outbox, record.name + suffix, "")
                await trio.to_thread.run_sync(self._save_pending, record)
            await self._upload_report(report_file, cfg.outbox, record.outbox_final)
            uploaded = True
        source = join(self.inbox, record.name)
        remote_path: str | None = None
        if same:
            if keep_remote:
                assert record.remote_final is not None
                target = remote_path = join(folder, record.remote_final)
                await self.client.call(lambda s: s.rename(source, target), f"move of {source}")
            else:
                await self.client.call(lambda s: s.delete(source), f"removal of {source}")
        elif keep_remote and record.remote_final is not None:
            remote_path = join(folder, record.remote_final)
        if cfg.done_marker is not None:
            marker = source + cfg.done_marker
            await self.client.call(lambda s: s.delete(marker), f"removal of {marker}")

        def cleanup() -> None:
            # The local copy goes once the server has the file (moved there,
            # or deleted by option). When the server holds another file
            # under that name, ours was replaced there: keep the only copy.
            if current is None or same:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(record.local)
            if uploaded:
                with contextlib.suppress(FileNotFoundError):
                    report_file.unlink()
            os.unlink(self._pending_path(record.name))
            fsync_dir(self.staging / _PENDING)

        await trio.to_thread.run_sync(cleanup)
        log.info(
            "%s: %d message(s), %d refused; %s",
            record.name,
            record.messages,
            record.failed,
            f"moved to {remote_path}" if remote_path else "deleted on the server",
        )
        return RemoteReport(
            name=record.name,
            outcome=record.outcome,
            messages=record.messages,
            processed=record.processed,
            failed=record.failed,
            remote_path=remote_path,
            reason=record.reason,
        )

    async def _free_name(self, folder: str, name: str, suffix: str) -> str:
        """``name``, ``name.1``... whichever is free in ``folder`` (and with ``suffix``)."""

        def find(session: RemoteSession) -> str:
            session.makedirs(folder)
            candidate, n = name, 0
            while any(session.size(join(folder, candidate + s)) is not None for s in {"", suffix}):
                n += 1
                candidate = f"{name}.{n}"
            return candidate

        return await self.client.call(find, f"a free name in {folder}")

    async def _upload_report(self, local: Path, folder: str, name: str) -> None:
        size = (await trio.to_thread.run_sync(local.stat)).st_size
        await upload_atomically(
            self.client, opener(local), size, "report", folder, name, replace=False
        )

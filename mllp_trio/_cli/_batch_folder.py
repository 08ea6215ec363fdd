"""``mllp-trio batch watch`` and ``batch put``: the folder transport on the command line.

``watch`` runs :class:`mllp_trio.store.FolderWatcher` with the journal and
the same processor as ``listen``; ``put`` drops a file into a folder with
:class:`mllp_trio.store.FolderDestination` (temporary name, fsync, rename,
fsync of the folder). Registered in the ``batch`` group by ``_batch``.
"""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path

import attrs
import click
import trio

import mllp_trio
from mllp_trio._batch import BatchError, iter_events
from mllp_trio._cli._common import DEFAULT_STORE, run_trio, setup_logging
from mllp_trio._cli._options import (
    POSITIVE_INT,
    POSITIVE_SECONDS,
    _option_set,
    done_marker_suffix,
    file_pickup_options,
    log_level_option,
)
from mllp_trio._cli._progress import FileProgress
from mllp_trio.store import FileReport, FolderConfig, FolderStats, FolderWatcher

__all__ = ["SinkOptions", "put", "sink_options", "watch"]

_DIRECTORY = click.Path(path_type=Path, file_okay=False)


@click.command()
@click.argument("inbox", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--store",
    type=_DIRECTORY,
    default=DEFAULT_STORE,
    show_default=True,
    help="journal folder: every message is stored, and every file's progress",
)
@click.option("--done", "done_dir", type=_DIRECTORY, help="processed files go here [INBOX/done]")
@click.option("--error", "error_dir", type=_DIRECTORY, help="refused files go here [INBOX/error]")
@click.option("--pattern", default="*", show_default=True, help="file names to pick up (glob)")
@click.option(
    "--poll-interval",
    type=POSITIVE_SECONDS,
    default=1.0,
    show_default=True,
    help="seconds between looks at the inbox",
)
@file_pickup_options(
    stable="size and mtime unchanged this long before a file is picked up",
    marker="pick NAME up only once NAME<suffix> exists (e.g. .done), whatever its age",
    left="in the inbox (journal or done/ failing)",
    ack_batch="done/NAME.ack",
    window="messages of a file in the journal and handler at once: more is faster on a "
    "slow disk (one fsync for several), but the handler may see them out of order",
)
@click.option("--once", is_flag=True, help="exit when the inbox holds nothing left to process")
@click.option("-q", "--quiet", is_flag=True, help="no per-file lines nor progress")
@log_level_option("warning")
def watch(
    *,
    inbox: Path,
    store: Path,
    done_dir: Path | None,
    error_dir: Path | None,
    pattern: str,
    stable_seconds: float,
    done_marker: str | None,
    poll_interval: float,
    retry_interval: float,
    ack_mode: str,
    checkpoint_every: int,
    window: int,
    lenient: bool,
    once: bool,
    quiet: bool,
    log_level: str,
) -> int:
    """Pick batch files up from INBOX into the journal, each exactly once.

    A file is taken when its size and modification time have not changed
    for --stable-seconds (or once its --done-marker exists). Its messages
    go through the same journal and handler path as messages over MLLP;
    the file then moves to done/ with its acknowledgement batch beside it
    (NAME.ack: a message the handler refused is answered AE/AR there, the
    file still goes to done/). A file whose structure is broken (a count
    that disagrees, a truncated file) or that holds no message goes to
    error/ with NAME.error, and none of its messages is processed. A crash
    or Ctrl-C mid-file resumes where it stopped, without duplicates.

    Exit codes: 0 all done, 1 a file went to error/ or was left in the
    inbox (--once), 130 interrupted.
    """
    setup_logging(log_level)
    config = FolderConfig(
        done_dir=done_dir,
        error_dir=error_dir,
        pattern=pattern,
        stable_seconds=stable_seconds,
        done_marker=done_marker,
        poll_interval=poll_interval,
        retry_interval=retry_interval,
        ack_mode=ack_mode.lower(),
        checkpoint_every=checkpoint_every,
        window=window,
        lenient=lenient,
    )
    started = time.monotonic()
    stats = run_trio(partial(_watch, inbox, store, config, once=once, quiet=quiet))
    elapsed = time.monotonic() - started
    rate = f", {stats.messages / elapsed:,.0f} msg/s" if elapsed > 0 and stats.messages else ""
    click.echo(
        f"{stats.files_done} file(s) done, {stats.files_error} to error/, "
        f"{stats.files_deferred} deferred; {stats.messages:,} message(s) processed "
        f"({stats.failed:,} refused) in {elapsed:.1f} s{rate}",
        err=True,
    )
    if stats.files_error or (once and stats.files_deferred):
        return 1
    return 0


def _report_line(report: FileReport) -> str:
    if report.outcome == "done":
        refused = f", {report.failed} refused" if report.failed else ""
        return f"done  {report.name}: {report.messages:,} message(s){refused} -> {report.path}"
    if report.outcome == "error":
        return f"error {report.name}: {report.reason} -> {report.path}"
    return f"left  {report.name}: {report.reason}"


async def _watch(
    inbox: Path, journal: Path, config: FolderConfig, *, once: bool, quiet: bool
) -> FolderStats:
    progress = FileProgress(quiet=quiet)

    def on_report(report: FileReport) -> None:
        progress.finished(report.name)
        if not quiet:
            click.echo(_report_line(report), err=report.outcome != "done")

    async with mllp_trio.store.open_sqlite_store(journal) as store:
        processor = mllp_trio.store.JournalProcessor(store)
        watcher = FolderWatcher(
            inbox, store, processor, config=config, on_report=on_report, on_progress=progress.update
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(processor.run)  # journaled messages left by a crash first
            if not quiet:
                click.echo(
                    f"watching {watcher.inbox}/ (journal: {journal}/); Ctrl-C stops", err=True
                )
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        click.echo(
                            "stopping: the file in progress resumes at the next start", err=True
                        )
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await watcher.run(once=once)
                nursery.cancel_scope.cancel()
        return watcher.stats


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True, readable=True))
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--name", help="file name in DIRECTORY [the name of FILE]")
@click.option("--replace", is_flag=True, help="replace a file of that name already there")
@click.option(
    "--done-marker",
    callback=done_marker_suffix,
    help="also write an empty NAME<suffix> after the file (for pickers that wait for one)",
)
@click.option(
    "--check/--no-check", default=True, show_default=True, help="refuse a malformed batch file"
)
def put(
    *,
    file: Path,
    directory: Path,
    name: str | None,
    replace: bool,
    done_marker: str | None,
    check: bool,
) -> int:
    """Drop FILE into DIRECTORY atomically (another program picks it up from there).

    The copy is written under a hidden temporary name in DIRECTORY, flushed
    to the disk, and renamed: a reader of DIRECTORY sees the whole file or
    nothing. An existing file of the same name is kept unless --replace.
    """
    final = name or file.name
    if "/" in final or final.startswith("."):
        raise click.BadParameter("a plain file name, not hidden", param_hint="'--name'")
    if check:
        try:
            for _ in iter_events(file):
                pass
        except BatchError as exc:
            raise click.ClickException(
                f"{file}:{exc.line}: {exc.segment}: {exc.reason}; not dropped "
                "(--no-check drops it anyway)"
            ) from None
    destination = mllp_trio.store.FolderDestination(directory=directory, done_marker=done_marker)
    try:
        path = destination.put_sync(file, final, replace=replace)
    except FileExistsError:
        raise click.ClickException(
            f"{directory / final} exists already; nothing written (--replace to overwrite, "
            "--name for another name)"
        ) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot write to {directory}: {exc.strerror or exc}; nothing was left there"
        ) from None
    click.echo(str(path))
    return 0


@attrs.frozen(kw_only=True)
class SinkOptions:
    """The listener's file sinks: rolling batch files, one file per message."""

    batch_sink: Path | None
    batch_sink_max_messages: int
    batch_sink_max_bytes: int
    batch_sink_max_age: float
    write_dir: Path | None

    def conflicts(self, *, no_store: bool) -> list[str]:
        """Flags that contradict each other, as sentences naming them."""
        wanted = [
            flag
            for flag, value in (("--batch-sink", self.batch_sink), ("--write-dir", self.write_dir))
            if value is not None
        ]
        if no_store and wanted:
            return [
                f"{' and '.join(wanted)} write what the journal committed, and --no-store "
                "keeps no journal: drop one"
            ]
        return []

    async def start(self, nursery: trio.Nursery, store: mllp_trio.store.SQLiteStore) -> None:
        """Start the configured sinks in ``nursery`` (they read the journal ``store``)."""
        if self.batch_sink is not None:
            config = mllp_trio.store.BatchSinkConfig(
                max_messages=self.batch_sink_max_messages,
                max_bytes=self.batch_sink_max_bytes,
                max_age=self.batch_sink_max_age,
            )
            await nursery.start(
                mllp_trio.store.BatchSink(store, self.batch_sink, config=config).run
            )
            click.echo(
                f"batch files: {self.batch_sink}/ (up to {self.batch_sink_max_messages:,} "
                f"message(s) or {self.batch_sink_max_age:g} s each)"
            )
        if self.write_dir is not None:
            await nursery.start(mllp_trio.store.DirectorySink(store, self.write_dir).run)
            click.echo(f"one file per message: {self.write_dir}/")


sink_options = _option_set(
    "sinks",
    lambda **v: SinkOptions(**v),
    click.option(
        "--batch-sink",
        type=_DIRECTORY,
        default=None,
        help="also write accepted messages into rolling batch files in this folder, once "
        "journaled (each renamed into place when complete)  [default: off]",
    ),
    click.option(
        "--batch-sink-max-messages",
        type=POSITIVE_INT,
        default=1000,
        show_default=True,
        help="messages per batch file",
    ),
    click.option(
        "--batch-sink-max-bytes",
        type=POSITIVE_INT,
        default=16 << 20,
        show_default="16 MiB",
        help="bytes per batch file, about",
    ),
    click.option(
        "--batch-sink-max-age",
        type=POSITIVE_SECONDS,
        default=60.0,
        show_default=True,
        help="seconds a message may wait in an open batch file",
    ),
    click.option(
        "--write-dir",
        type=_DIRECTORY,
        default=None,
        help="also write each accepted message as a file of its own in this folder, once "
        "journaled (as hl7rcv --directory)  [default: off]",
    ),
)

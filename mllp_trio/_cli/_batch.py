"""``mllp-trio batch``: HL7 batch files (FHS/BHS/BTS/FTS): check, split, build and send them.

The file work is the sans-IO batch layer's (``mllp_trio._batch``): this
module reads and writes files and talks to the user. ``batch send`` sends
over one connection with the public client; with ``--queue`` it goes
through the store's outbound queue and records each file's progress there,
so that a rerun after a crash resumes without resending what was
acknowledged.

Other modules add subcommands with ``batch.add_command(...)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import attrs
import click
import trio

import mllp_trio
from mllp_trio._batch import (
    DEFAULT_MAX_MESSAGE_SIZE,
    AckBatchWriter,
    AckMode,
    BatchError,
    BatchHeader,
    BatchTrailer,
    BatchWriter,
    Event,
    FileHeader,
    FileTrailer,
    HeaderFields,
    Message,
    iter_events,
)
from mllp_trio._cli._common import printable, run_trio, setup_logging
from mllp_trio._cli._errors import explain_send_error
from mllp_trio._cli._options import (
    POSITIVE_INT,
    ClientOptions,
    ClientTLSOptions,
    choice,
    client_options,
    client_tls_options,
    log_level_option,
    queue_store_options,
)
from mllp_trio._cli._progress import Progress, summary
from mllp_trio._cli._send import (
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    HostPort,
    _interruptible,
)
from mllp_trio._hl7 import MSHError, hl7_timestamp, new_control_id, read_msh
from mllp_trio.store._sqlite import BatchSendRow, SQLiteStore

_F = TypeVar("_F", bound=Callable[..., Any])

#: Problems printed per command before they are only counted.
MAX_SHOWN: Final = 20
#: Messages queued per transaction by ``batch send --queue``.
QUEUE_CHUNK: Final = 500
QUEUE_CHUNK_BYTES: Final = 4 * 1024 * 1024
#: Delivered (accepted) by an earlier run whose ACK was not recorded before it stopped.
_DELIVERED: Final = "delivered, ACK not recorded"
_ACCEPTED: Final = ("AA", "CA", _DELIVERED)


@click.group()
def batch() -> None:
    """HL7 batch files: check, split, build and send them.

    A batch file is [FHS] {[BHS] {MSH...} [BTS]} [FTS], every header and
    trailer optional (a file of concatenated messages is one too); segments
    may end with CR, LF or CRLF.
    """


def _file_argument(command: _F) -> _F:
    return click.argument(
        "file", type=click.Path(path_type=Path, dir_okay=False, exists=True, readable=True)
    )(command)


_LENIENT = click.option(
    "--lenient",
    is_flag=True,
    help="report every problem and go on (default: stop at the first)",
)
_MAX_MESSAGE_SIZE = click.option(
    "--max-message-size",
    type=POSITIVE_INT,
    default=DEFAULT_MAX_MESSAGE_SIZE,
    show_default="16 MiB",
    help="largest message, in bytes",
)


def _problem_text(path: Path | str, error: BatchError) -> str:
    return f"{path}:{error.line}: {error.segment}: {error.reason}"


class _Shown:
    """Prints problems, the first :data:`MAX_SHOWN` of them, and counts them all."""

    def __init__(self, *, err: bool = False) -> None:
        self.count = 0
        self.err = err

    def __call__(self, text: str) -> None:
        self.count += 1
        if self.count <= MAX_SHOWN:
            click.echo(printable(text), err=self.err)
        elif self.count == MAX_SHOWN + 1:
            click.echo("more problems: only the first ones are shown", err=self.err)


def _msh_problem(event: Message, exc: MSHError) -> BatchError:
    return BatchError(f"not an HL7 message ({exc})", line=event.line, segment="MSH")


class _AtomicFile:
    """A file written under a temporary name, fsynced and renamed into place when complete."""

    def __init__(self, path: Path, *, force: bool = True) -> None:
        if not force and path.exists():
            raise click.ClickException(
                f"{path} exists: give --force to overwrite it, or another --out"
            )
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
        # Open across calls, closed by commit() or abort().
        self.file: IO[bytes] = open(self.temporary, "wb")  # noqa: SIM115

    def write(self, data: bytes) -> None:
        if data:
            self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary, self.path)
        _fsync_directory(self.path.parent)

    def abort(self) -> None:
        self.file.close()
        self.temporary.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot: the rename happened all the same
    finally:
        os.close(fd)


# ---------------------------------------------------------------- check


@batch.command()
@_file_argument
@_LENIENT
@_MAX_MESSAGE_SIZE
def check(file: Path, lenient: bool, max_message_size: int) -> int:
    """Check that FILE is a well-formed batch file.

    Checks the structure (headers and trailers in order, BTS-1 and FTS-1
    counts) and that every message starts with a readable MSH. Exits 0
    when well-formed, 1 otherwise, printing FILE:LINE: SEGMENT: reason
    for the first problem (--lenient: for each).
    """
    shown = _Shown()
    counts: Counter[str] = Counter()

    def warn(error: BatchError) -> None:
        shown(_problem_text(file, error))

    try:
        for event in iter_events(
            file, lenient=lenient, max_message_size=max_message_size, on_warning=warn
        ):
            counts[type(event).__name__] += 1
            if isinstance(event, Message):
                try:
                    read_msh(event.raw)
                except MSHError as exc:
                    if not lenient:
                        raise _msh_problem(event, exc) from None
                    warn(_msh_problem(event, exc))
    except BatchError as exc:
        warn(exc)
        click.echo(
            f"mllp-trio: {file} is not well-formed (the first problem is shown; "
            "--lenient lists them all)",
            err=True,
        )
        return 1
    messages = counts["Message"]
    shape = ", ".join(
        f"{counts[kind]} {label}"
        for kind, label in (("FileHeader", "FHS"), ("BatchHeader", "BHS"))
        if counts[kind]
    )
    if shown.count:
        click.echo(
            f"mllp-trio: {file}: {shown.count} problem(s); {messages} message(s) read",
            err=True,
        )
        return 1
    click.echo(f"{file}: well-formed: {messages} message(s)" + (f" ({shape})" if shape else ""))
    return 0


# ---------------------------------------------------------------- split


@batch.command()
@_file_argument
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="folder for the pieces  [default: FILE.split/ beside FILE]",
)
@click.option(
    "--per",
    type=choice("message", "batch"),
    default="message",
    show_default=True,
    help="one piece per message (the message alone) or per batch (BHS ... BTS)",
)
@click.option("--force", is_flag=True, help="overwrite pieces that exist")
@_LENIENT
@_MAX_MESSAGE_SIZE
def split(
    file: Path, out: Path | None, per: str, force: bool, lenient: bool, max_message_size: int
) -> int:
    """Split FILE into one file per message, or per batch.

    Pieces are named FILE-000001.hl7, FILE-000002.hl7 ... in file order, in
    the --out folder. Per message, a piece is the message alone (CR
    segment ends). Per batch, a piece is BHS, its messages and BTS (the
    count written anew); messages outside any BHS make a piece of their own
    without headers. FHS and FTS are left out. Each piece is written under
    a temporary name and renamed when complete.
    """
    folder = out if out is not None else file.with_name(file.name + ".split")
    folder.mkdir(parents=True, exist_ok=True)
    stem = file.stem if file.suffix else file.name
    pieces = 0
    piece: _AtomicFile | None = None
    writer = BatchWriter()

    def new_piece() -> _AtomicFile:
        nonlocal pieces
        pieces += 1
        return _AtomicFile(folder / f"{stem}-{pieces:06d}.hl7", force=force)

    def end_piece() -> None:
        nonlocal piece
        if piece is not None:
            piece.write(writer.close())
            piece.commit()
            piece = None

    shown = _Shown(err=True)
    try:
        for event in iter_events(
            file,
            lenient=lenient,
            max_message_size=max_message_size,
            on_warning=lambda e: shown(_problem_text(file, e)),
        ):
            if isinstance(event, Message):
                if per == "message":
                    single = new_piece()
                    single.write(event.raw)
                    single.commit()
                    continue
                if piece is None:
                    piece, writer = new_piece(), BatchWriter()
                piece.write(writer.message(event.raw))
            elif per == "batch" and isinstance(event, BatchHeader):
                end_piece()
                piece, writer = new_piece(), BatchWriter()
                piece.write(writer.batch_header(event.header))
            elif per == "batch" and isinstance(event, (BatchTrailer, FileHeader, FileTrailer)):
                end_piece()
        end_piece()
    except BatchError as exc:
        if piece is not None:
            piece.abort()
        shown(_problem_text(file, exc))
        click.echo(
            f"mllp-trio: {file} is not well-formed: stopped after {pieces - 1 if piece else pieces}"
            " piece(s) (--lenient goes on)",
            err=True,
        )
        return 1
    except BaseException:
        if piece is not None:
            piece.abort()
        raise
    click.echo(f"{pieces} piece(s) written to {folder}/", err=True)
    return 1 if shown.count else 0


# ---------------------------------------------------------------- build


def _header_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and any(c in value for c in "|\r\n"):
        raise click.BadParameter("must not contain '|' or a line break", ctx, param)
    return value


def _header_option(name: str, what: str) -> Callable[[_F], _F]:
    return click.option(name, default="", callback=_header_value, help=what)


@batch.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path, exists=True, allow_dash=True))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=Path("-"),
    show_default=True,
    help="the batch file to write ('-': stdout)",
)
@click.option("--no-file-header", is_flag=True, help="no FHS/FTS")
@click.option("--no-batch-header", is_flag=True, help="no BHS/BTS")
@_header_option("--sending-application", "FHS-3/BHS-3")
@_header_option("--sending-facility", "FHS-4/BHS-4")
@_header_option("--receiving-application", "FHS-5/BHS-5")
@_header_option("--receiving-facility", "FHS-6/BHS-6")
@_header_option("--name", "FHS-9/BHS-9, the file or batch name")
@click.option(
    "--control-id",
    default=None,
    callback=_header_value,
    help="FHS-11 and BHS-11  [default: a new unique id each]",
)
@_MAX_MESSAGE_SIZE
def build(
    inputs: tuple[Path, ...],
    out: Path,
    no_file_header: bool,
    no_batch_header: bool,
    sending_application: str,
    sending_facility: str,
    receiving_application: str,
    receiving_facility: str,
    name: str,
    control_id: str | None,
    max_message_size: int,
) -> int:
    """Build a batch file from the messages in INPUTS (files, folders, '-' for stdin).

    Each input may hold one message or many (a batch file too: its
    messages are taken, its headers left out). The file gets FHS and BHS
    (unless --no-file-header, --no-batch-header), the messages with CR
    segment ends, then BTS and FTS with their counts.
    """
    if not inputs:
        raise click.UsageError("no INPUTS: give message files, folders or '-' (stdin)")
    stamp = hl7_timestamp()

    def header() -> HeaderFields:
        return HeaderFields(
            sending_application=sending_application,
            sending_facility=sending_facility,
            receiving_application=receiving_application,
            receiving_facility=receiving_facility,
            date_time=stamp,
            name=name,
            control_id=control_id if control_id is not None else new_control_id(),
        )

    writer = BatchWriter()
    target: _AtomicFile | None = None
    if str(out) == "-":
        stream: Callable[[bytes], object] = sys.stdout.buffer.write
    else:
        target = _AtomicFile(out)
        stream = target.write
    try:
        if not no_file_header:
            stream(writer.file_header(header()))
        if not no_batch_header:
            stream(writer.batch_header(header()))
        for source, event in _input_messages(inputs, max_message_size):
            try:
                read_msh(event.raw)
            except MSHError as exc:
                raise click.ClickException(
                    _problem_text(source, _msh_problem(event, exc)) + ": nothing written"
                ) from None
            stream(writer.message(event.raw))
        stream(writer.close())
        if writer.messages == 0:
            raise click.ClickException("the inputs hold no message: nothing written")
        if target is not None:
            target.commit()
    except BaseException:
        if target is not None:
            target.abort()
        raise
    where = "stdout" if target is None else str(out)
    click.echo(f"{writer.messages} message(s) written to {where}", err=True)
    return 0


def _input_messages(inputs: Iterable[Path], max_message_size: int) -> Iterator[tuple[str, Message]]:
    for path in inputs:
        if str(path) == "-":
            files: list[tuple[str, Path | None]] = [("stdin", None)]
        elif path.is_dir():
            files = [(str(f), f) for f in sorted(path.rglob("*")) if f.is_file()]
        else:
            files = [(str(path), path)]
        for name, file in files:
            source = file if file is not None else sys.stdin.buffer
            try:
                for event in iter_events(source, max_message_size=max_message_size):
                    if isinstance(event, Message):
                        yield name, event
            except BatchError as exc:
                raise click.ClickException(_problem_text(name, exc) + ": nothing written") from None


# ---------------------------------------------------------------- send

SEND_EPILOG = """\b
The acknowledgement batch (FHS/BHS answering the file's, the ACKs as
--ack-mode says, BTS/FTS) is written to FILE.ack unless --ack-out, under a
temporary name renamed when complete.

\b
With --queue the messages are first stored in the queue (--store), with
the file's progress, then delivered with retries; a rerun of the same
file after a crash queues nothing twice and resends nothing that was
acknowledged (the message in flight at the crash may go again: the
listener's journal recognises it). A file sent completely is not sent
again (--again sends it once more).

\b
Output: a line per message not accepted on stdout (-v: every message),
"<control id> <ACK code> [reason] (file:line)"; progress and the summary on
stderr (-q: none).

\b
Exit codes:
  0    every message acknowledged (AA or CA)
  1    a message refused (AE/AR/CE/CR), unanswered or skipped
  2    usage error, or FILE is not a well-formed batch file (nothing sent)
  3    the connection failed: the messages after it were not sent
  130  interrupted (Ctrl-C)
"""


@attrs.define
class _Tally:
    counts: Counter[str] = attrs.field(factory=Counter)
    sent: int = 0
    problems: int = 0
    failure: str | None = None

    def exit_code(self) -> int:
        if self.failure is not None:
            return EXIT_CONNECTION
        bad = sum(v for k, v in self.counts.items() if k not in _ACCEPTED)
        return EXIT_REFUSED if bad or self.problems else EXIT_OK


@attrs.frozen
class _Plan:
    """What ``batch send`` was asked to do."""

    file: Path
    host: str
    port: int
    tls: ClientTLSOptions
    client: ClientOptions
    ack_path: Path
    mode: AckMode
    lenient: bool
    quiet: bool
    verbose: bool

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def max_message_size(self) -> int:
        return self.client.framing.max_message_size

    def events(self, on_warning: Callable[[BatchError], None] | None = None) -> Iterator[Event]:
        return iter_events(
            self.file,
            lenient=self.lenient,
            max_message_size=self.max_message_size,
            on_warning=on_warning,
        )

    def note(self, text: str, progress: Progress | None = None) -> None:
        if not self.quiet:
            (progress.echo if progress is not None else click.echo)(text, err=True)


@batch.command("send", epilog=SEND_EPILOG)
@_file_argument
@click.argument("target", type=HostPort(), metavar="HOST:PORT")
@client_tls_options
@client_options
@click.option(
    "--ack-out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="where to write the acknowledgement batch  [default: FILE.ack]",
)
@click.option(
    "--ack-mode",
    type=choice("all", "errors", "none"),
    default="all",
    show_default=True,
    help="ACKs in the acknowledgement batch: every one, the negative ones, none (BTS|0)",
)
@_LENIENT
@click.option(
    "--queue",
    is_flag=True,
    help="store the messages durably first (--store), then deliver with retries",
)
@queue_store_options()
@click.option(
    "--max-attempts",
    type=POSITIVE_INT,
    default=None,
    help="with --queue: attempts before a message becomes a dead letter  [default: no limit]",
)
@click.option("--again", is_flag=True, help="with --queue: send a file that was sent already")
@click.option("-q", "--quiet", is_flag=True, help="no progress, notes or summary on stderr")
@click.option("-v", "--verbose", is_flag=True, help="print every reply")
@log_level_option("warning")
def send_batch(
    *,
    file: Path,
    target: tuple[str, int],
    tls: ClientTLSOptions,
    client: ClientOptions,
    ack_out: Path | None,
    ack_mode: str,
    lenient: bool,
    queue: bool,
    store: Path,
    give_up_after: float | None,
    max_attempts: int | None,
    again: bool,
    quiet: bool,
    verbose: bool,
    log_level: str,
) -> int:
    """Send every message of the batch FILE to HOST:PORT over one connection.

    The headers and trailers are not sent; each message's ACK goes into
    the acknowledgement batch.
    """
    setup_logging(log_level)
    if again and not queue:
        raise click.UsageError("--again goes with --queue (without it every run sends the file)")
    try:
        # Built once, before any connection: a bad file or password is a usage error.
        tls = attrs.evolve(tls, context=tls.ssl_context())
    except mllp_trio.TLSConfigError as exc:
        raise click.UsageError(f"TLS: {printable(str(exc))}") from None
    plan = _Plan(
        file=file,
        host=target[0],
        port=target[1],
        tls=tls,
        client=client,
        ack_path=ack_out if ack_out is not None else file.with_name(file.name + ".ack"),
        mode=AckMode(ack_mode.lower()),
        lenient=lenient,
        quiet=quiet,
        verbose=verbose,
    )
    if tls.plaintext:
        click.echo(
            "mllp-trio: warning: --plaintext: messages travel unencrypted and the server "
            "is not authenticated; use it only behind a VPN or an SSH tunnel",
            err=True,
        )
    else:
        plan.note(f"TLS: {tls.describe()}")
    total = _survey(plan)
    if total is None:
        return EXIT_USAGE
    if total == 0:
        click.echo(f"mllp-trio: {file} holds no message: nothing sent", err=True)
        return EXIT_USAGE
    if queue:
        retry = mllp_trio.store.QueueConfig(give_up_after=give_up_after, max_attempts=max_attempts)
        return run_trio(partial(_send_queued, plan, total, store, again, retry))
    return run_trio(partial(_send_direct, plan, total))


def _survey(plan: _Plan) -> int | None:
    """Count the messages and check the file before sending; ``None`` if it is malformed."""
    shown = _Shown(err=True)
    total = 0
    try:
        for event in plan.events(lambda e: shown(_problem_text(plan.file, e))):
            if isinstance(event, Message):
                total += 1
                # The rule of `batch check`: every message starts with a readable MSH.
                if not plan.lenient:
                    try:
                        read_msh(event.raw)
                    except MSHError as exc:
                        raise _msh_problem(event, exc) from None
    except BatchError as exc:
        shown(_problem_text(plan.file, exc))
        click.echo(
            f"mllp-trio: {plan.file} is not a well-formed batch file: nothing sent "
            "('mllp-trio batch check' shows why; --lenient sends its messages anyway)",
            err=True,
        )
        return None
    return total


def _control_id(raw: bytes) -> str:
    try:
        return read_msh(raw).control_id
    except MSHError:
        return "?"


def _reply_line(control_id: str, code: str, detail: str, where: str) -> str:
    text = f" {detail}" if detail else ""
    return printable(f"{control_id} {code}{text} ({where})")


async def _send_direct(plan: _Plan, total: int) -> int:
    tally = _Tally()
    acks = AckBatchWriter(mode=plan.mode)
    out = _AtomicFile(plan.ack_path)
    progress = Progress(total, quiet=plan.quiet)
    complete = False

    async def work() -> None:
        nonlocal complete
        try:
            async with mllp_trio.open_mllp_client(
                plan.host,
                plan.port,
                ssl_context=plan.tls.ssl_context(),
                server_hostname=plan.tls.server_hostname,
                config=plan.client.config(plan.tls.tls_stream),
            ) as conn:
                for event in plan.events():
                    if isinstance(event, FileHeader):
                        out.write(acks.file_header(event.header))
                    elif isinstance(event, BatchHeader):
                        out.write(acks.batch_header(event.header))
                    elif isinstance(event, Message):
                        if not await _send_one(conn, event, plan, tally, out, acks, progress):
                            return
                        progress.advance()
                out.write(acks.close())
                complete = True
        except (mllp_trio.MLLPError, OSError, trio.BrokenResourceError) as exc:
            tally.failure = explain_send_error(exc, plan.where, plan.tls)

    interrupted = await _interruptible(work)
    progress.close()
    return _finish_direct(plan, tally, total, progress, out, acks, complete, interrupted)


async def _send_one(
    conn: mllp_trio.MLLPClient,
    event: Message,
    plan: _Plan,
    tally: _Tally,
    out: _AtomicFile,
    acks: AckBatchWriter,
    progress: Progress,
) -> bool:
    """Send one message and write its ACK; False when the exchange failed (stop)."""
    where = f"{plan.file}:{event.line}"
    try:
        control_id = read_msh(event.raw).control_id
    except MSHError as exc:
        tally.problems += 1
        tally.counts["skipped"] += 1
        progress.echo(printable(f"{where}: skipped: not an HL7 message ({exc})"))
        return True
    try:
        reply = await conn.send(event.raw, raise_on_negative=False)
    except mllp_trio.MLLPError as exc:
        tally.failure = f"{explain_send_error(exc, plan.where, None)} (sending {where})"
        return False
    tally.sent += 1
    tally.counts[reply.code] += 1
    out.write(acks.ack(reply.raw))
    if plan.verbose or not reply.accepted:
        detail = "" if reply.accepted else _reason(reply)
        progress.echo(_reply_line(control_id, reply.code, detail, where))
    return True


def _reason(reply: mllp_trio.AckReply) -> str:
    parts = [
        "; ".join(x for x in (" ".join(y for y in (e.code, e.code_text) if y), e.message) if x)
        for e in reply.errors
    ]
    parts = [p for p in parts if p]
    if not parts and reply.text:
        parts.append(reply.text)
    return " | ".join(parts)


def _finish_direct(
    plan: _Plan,
    tally: _Tally,
    total: int,
    progress: Progress,
    out: _AtomicFile,
    acks: AckBatchWriter,
    complete: bool,
    interrupted: bool,
) -> int:
    counts = Counter(tally.counts)
    not_sent = total - tally.sent - counts["skipped"]
    if not_sent:
        counts["not sent"] = not_sent
    line = summary(counts, progress.elapsed, tally.sent)
    if complete and not interrupted:
        out.commit()
        plan.note(f"{line}; acknowledgement batch: {plan.ack_path} ({acks.written} ACK(s))")
        return tally.exit_code()
    out.abort()
    if tally.failure is not None:
        click.echo(f"mllp-trio: {tally.failure}", err=True)
    what = "interrupted" if interrupted else "stopped"
    click.echo(
        f"mllp-trio: {what}: {line}; no acknowledgement batch written (the file was not "
        "sent completely: send it again, or use --queue to resume where it stopped)",
        err=True,
    )
    return EXIT_INTERRUPTED if interrupted else tally.exit_code()


# ---------------------------------------------------------------- send --queue


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _send_queued(
    plan: _Plan, total: int, directory: Path, again: bool, retry: mllp_trio.store.QueueConfig
) -> int:
    tally = _Tally()
    started = time.monotonic()
    sha = await trio.to_thread.run_sync(_sha256, plan.file)
    async with mllp_trio.store.open_sqlite_store(directory) as store:
        record = await store.open_batch_send(
            plan.where, str(plan.file.resolve()), sha, total, again=again
        )
        if record.finished:
            plan.note(
                f"{plan.file} was sent to {plan.where} already (recorded in {directory}/): "
                "nothing is sent again (--again sends it once more); the acknowledgement "
                "batch is written from the record"
            )
        else:
            if record.next_seq:
                plan.note(f"resuming {plan.file}: messages before #{record.next_seq} are queued")
            await _enqueue(plan, store, record.file_id, record.next_seq, total, tally)
            outcome = await _deliver(plan, store, record.file_id, retry)
            if outcome is not None:
                return outcome
        return await _write_queued_acks(plan, store, record.file_id, tally, started)


async def _enqueue(
    plan: _Plan, store: SQLiteStore, file_id: int, next_seq: int, total: int, tally: _Tally
) -> None:
    progress = Progress(total, quiet=plan.quiet, label="queued")
    items: list[tuple[int, bytes]] = []
    size = 0
    last = next_seq
    for event in plan.events():
        if not isinstance(event, Message):
            continue
        if event.number < next_seq:
            progress.advance()
            continue
        try:
            read_msh(event.raw)
        except MSHError as exc:
            tally.problems += 1
            tally.counts["skipped"] += 1
            progress.echo(f"{plan.file}:{event.line}: skipped: not an HL7 message ({exc})")
        else:
            items.append((event.number, event.raw))
            size += len(event.raw)
        last = event.number + 1
        if len(items) >= QUEUE_CHUNK or size >= QUEUE_CHUNK_BYTES:
            await store.enqueue_batch(file_id, plan.where, items, last)
            progress.advance(len(items))
            items, size = [], 0
    await store.enqueue_batch(file_id, plan.where, items, last)
    progress.advance(len(items))
    progress.close()


async def _deliver(
    plan: _Plan, store: SQLiteStore, file_id: int, retry: mllp_trio.store.QueueConfig
) -> int | None:
    """Deliver the queue; an exit code if it could not finish, else ``None``."""
    pending = len([1 async for row in _rows(store, file_id) if row.status == "pending"])
    if not pending:
        return None
    plan.note(f"delivering {pending:,} message(s) to {plan.where}")
    progress = Progress(pending, quiet=plan.quiet, label="delivered")
    send, receive = trio.open_memory_channel[tuple[int, str, bytes | None]](math.inf)
    sender = mllp_trio.store.QueuedSender(
        store,
        plan.host,
        plan.port,
        ssl_context=plan.tls.ssl_context(),
        server_hostname=plan.tls.server_hostname,
        client_config=plan.client.config(plan.tls.tls_stream),
        config=retry,
    )

    def on_result(result: mllp_trio.store.SendResult) -> None:
        if result.outcome == "retry":
            progress.echo(
                printable(f"{result.control_id} {result.code}: retry in {result.retry_in:.0f} s"),
                err=True,
            )
            return
        raw = result.reply.raw if result.reply is not None else None
        send.send_nowait((result.message_id, result.code, raw))
        progress.advance()

    async def record() -> None:
        # Answers are recorded in groups (one transaction each) as they come.
        async with receive:
            async for first in receive:
                answers = [first]
                while True:
                    try:
                        answers.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await store.record_batch_answers(answers)

    failure: str | None = None

    async def work() -> None:
        nonlocal failure
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            try:
                async with send:
                    await sender.deliver_pending(on_result=on_result)
            except (mllp_trio.MLLPError, OSError) as exc:
                failure = explain_send_error(exc, plan.where, plan.tls)

    try:
        interrupted = await _interruptible(work)
    finally:
        with trio.CancelScope(shield=True):
            await sender.aclose()
            # What came before an interruption is kept too.
            answers: list[tuple[int, str, bytes | None]] = []
            while True:
                try:
                    answers.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            if answers:
                await store.record_batch_answers(answers)
    progress.close()
    if interrupted or failure is not None:
        if failure is not None:
            click.echo(f"mllp-trio: {failure}", err=True)
        click.echo(
            f"mllp-trio: {'interrupted' if interrupted else 'stopped'}: the messages not "
            f"delivered stay queued in the store; run the same command again to resume",
            err=True,
        )
        return EXIT_INTERRUPTED if interrupted else EXIT_CONNECTION
    return None


async def _rows(store: SQLiteStore, file_id: int) -> AsyncGenerator[BatchSendRow, None]:
    after = -1
    while True:
        rows = await store.batch_send_rows(file_id, after_seq=after)
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].seq


async def _write_queued_acks(
    plan: _Plan, store: SQLiteStore, file_id: int, tally: _Tally, started: float
) -> int:
    acks = AckBatchWriter(mode=plan.mode)
    out = _AtomicFile(plan.ack_path)
    try:
        async with contextlib.aclosing(_rows(store, file_id)) as rows:
            pending, lost = await _merge_acks(plan, rows, acks, out, tally)
        out.write(acks.close())
    except BaseException:
        out.abort()
        raise
    if pending:
        out.abort()
        click.echo(
            f"mllp-trio: {pending:,} message(s) still queued: no acknowledgement batch yet "
            "(run the same command again)",
            err=True,
        )
        return EXIT_CONNECTION
    out.commit()
    await store.finish_batch_send(file_id)
    if lost:
        plan.note(
            f"{lost:,} message(s) were delivered before an interruption without their "
            "ACK being recorded: they are not in the acknowledgement batch"
        )
    line = summary(tally.counts, time.monotonic() - started, tally.sent)
    plan.note(f"{line}; acknowledgement batch: {plan.ack_path} ({acks.written} ACK(s))")
    return tally.exit_code()


async def _merge_acks(
    plan: _Plan,
    rows: AsyncIterator[BatchSendRow],
    acks: AckBatchWriter,
    out: _AtomicFile,
    tally: _Tally,
) -> tuple[int, int]:
    """Write the acknowledgement batch from the file and its record; return (pending, lost)."""
    row: BatchSendRow | None = None
    pending = lost = 0
    for event in plan.events():
        if isinstance(event, FileHeader):
            out.write(acks.file_header(event.header))
        elif isinstance(event, BatchHeader):
            out.write(acks.batch_header(event.header))
        elif isinstance(event, Message):
            while row is None or row.seq < event.number:
                row = await anext(rows, None)
                if row is None:
                    break
            if row is None or row.seq != event.number:
                continue  # skipped (not an HL7 message): never queued
            where = f"{plan.file}:{event.line}"
            control_id = _control_id(event.raw)
            tally.sent += 1
            if row.status == "pending":
                pending += 1
                tally.counts["pending"] += 1
            elif row.ack is None and row.status == "sent":
                # Delivered (the queue marks only accepted messages sent) just
                # before an interruption, its ACK not yet recorded.
                lost += 1
                tally.counts[_DELIVERED] += 1
            elif row.ack is None:
                tally.counts["dead"] += 1
                click.echo(_reply_line(control_id, "ERROR", row.error or "", where))
            else:
                code = row.code or "?"
                tally.counts[code] += 1
                out.write(acks.ack(row.ack))
                if plan.verbose or code not in _ACCEPTED:
                    click.echo(_reply_line(control_id, code, _stored_reason(row.ack), where))
    return pending, lost


def _stored_reason(ack: bytes) -> str:
    try:
        reply = mllp_trio.parse_reply(ack, read_msh(ack).control_id, raise_on_negative=False)
    except mllp_trio.MLLPError:
        return ""
    return "" if reply.accepted else _reason(reply)


__all__ = ["batch"]

# The folder transport (watch, put) lives in its own module.
from mllp_trio._cli._batch_folder import put, watch  # noqa: E402

batch.add_command(watch)
batch.add_command(put)
from mllp_trio._cli._batch_remote import pull, push  # noqa: E402

batch.add_command(pull)
batch.add_command(push)

"""``mllp-trio send``: send messages from files, folders or stdin, print each reply."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Final, cast

import attrs
import click
import trio
from click.core import ParameterSource

import mllp_trio
from mllp_trio._cli._common import (
    DEFAULT_HOST,
    log,
    plain_reason,
    printable,
    setup_logging,
)
from mllp_trio._cli._common import run_trio as _run_trio
from mllp_trio._cli._errors import explain_send_error
from mllp_trio._cli._inputs import MAX_WARNINGS_SHOWN, Inputs, Item, Problem, Source, expand
from mllp_trio._cli._options import (
    PORT,
    POSITIVE_SECONDS,
    ClientOptions,
    ClientTLSOptions,
    ParamTypeBase,
    client_options,
    client_tls_options,
    log_level_option,
    queue_store_options,
)
from mllp_trio._cli._progress import Progress, summary

#: Exit codes of ``send`` (listed in its --help).
EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECTION: Final = 3
EXIT_INTERRUPTED: Final = 130

#: On a terminal, sends of up to this many messages list every reply.
LIST_ALL_UP_TO: Final = 50
NO_REPLY: Final = "no reply"
SKIPPED: Final = "skipped"
NOT_SENT: Final = "not sent"


class HostPort(ParamTypeBase):
    """``HOST:PORT`` (``[v6]:PORT`` too), the port in 1..65535."""

    name = "HOST:PORT"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return cast(tuple[str, int], value)
        text = str(value)
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            self.fail(f"expected HOST:PORT, got {text!r}", param, ctx)
        number = int(port)
        if not 1 <= number <= 65535:
            self.fail(f"port {number} in {text!r} is not in 1..65535", param, ctx)
        return host.strip("[]") or DEFAULT_HOST, number


def _looks_like_target(text: str) -> bool:
    _, sep, port = text.rpartition(":")
    return bool(sep) and port.isdigit() and not Path(text).exists()


def _target(
    ctx: click.Context, arguments: tuple[str, ...], host: str | None, port: int | None
) -> tuple[tuple[str, int], list[str]]:
    """The destination and the inputs, from HOST:PORT or --host/--port; never both silently."""
    given = host is not None or port is not None
    if arguments and (_looks_like_target(arguments[0]) or not given):
        try:
            target = HostPort().convert(arguments[0], None, ctx)
        except click.BadParameter as exc:
            exc.param_hint = "HOST:PORT"
            raise
        conflicts = []
        if host is not None and host != target[0]:
            conflicts.append(f"--host {host}")
        if port is not None and port != target[1]:
            conflicts.append(f"--port {port}")
        if conflicts:
            raise click.UsageError(
                f"HOST:PORT {arguments[0]} and {' and '.join(conflicts)} disagree: "
                "give the destination once"
            )
        return target, list(arguments[1:])
    if port is None:
        raise click.UsageError("missing HOST:PORT (or --port): where to send to")
    return (host or DEFAULT_HOST, port), list(arguments)


@attrs.define
class Tally:
    """What happened to each message."""

    counts: Counter[str] = attrs.field(factory=Counter)
    sent: int = 0
    problems: int = 0
    # Messages of the inputs whose MSH could not be read (never sent).
    unreadable: int = 0
    # Where the message in flight came from, if any: its fate is uncertain.
    in_flight: Item | None = None
    failure: str | None = None

    @property
    def acknowledged(self) -> int:
        return sum(v for k, v in self.counts.items() if k in ("AA", "CA"))

    def exit_code(self) -> int:
        if self.failure is not None:
            return EXIT_CONNECTION
        bad = sum(v for k, v in self.counts.items() if k not in ("AA", "CA"))
        return EXIT_REFUSED if bad or self.problems else EXIT_OK


EPILOG = """\b
Input: files, folders (every file in them, sorted) and '-' (stdin; the default).
Plain messages, concatenated messages and batch files (FHS/BHS/BTS/FTS: only the
messages are sent); CR, LF or CRLF; a UTF-8 BOM, indentation and MLLP framing
bytes are forgiven.

\b
Output: one line per message on stdout, "<control id> <ACK code> [error code]
[reason] (file:line)"; on a terminal, a send of more than 50 messages lists
only those not accepted (-v: all). Progress, notes and the summary go to
stderr (-q: none).

\b
Exit codes:
  0    every message acknowledged (AA or CA)
  1    a message refused (AE/AR/CE/CR) or unanswered, an input skipped,
       a dead letter (--queue)
  2    usage error: a bad option or argument, no messages
  3    the connection failed (cannot connect, TLS refused, lost): the
       messages after it were not sent
  130  interrupted (Ctrl-C): the summary says what was acknowledged
"""


@click.command(epilog=EPILOG)
@click.argument("arguments", nargs=-1, metavar="HOST:PORT [FILE|DIR|-]...")
@click.option("--host", default=None, help="destination address, instead of HOST:PORT")
@click.option("--port", type=PORT, default=None, help="destination port, instead of HOST:PORT")
@client_tls_options
@client_options
@click.option(
    "--queue",
    is_flag=True,
    help="enqueue durably first (--store), then deliver in order; the queue retries "
    "with backoff until --give-up-after (--retries is not used)",
)
@queue_store_options()
@click.option(
    "--max-backoff",
    type=POSITIVE_SECONDS,
    default=30.0,
    show_default=True,
    help="--queue: the longest wait between two attempts, in seconds",
)
@click.option(
    "--flush",
    is_flag=True,
    help="--queue: requeue this destination's dead letters and deliver everything queued "
    "(no input is read unless FILEs are given)",
)
@click.option("-q", "--quiet", is_flag=True, help="no progress, notes or summary on stderr")
@click.option("-v", "--verbose", is_flag=True, help="print every reply, also on a terminal")
# The library logs retries at INFO; send prints its own lines for them.
@log_level_option("warning")
@click.pass_context
def send(
    ctx: click.Context,
    *,
    arguments: tuple[str, ...],
    host: str | None,
    port: int | None,
    tls: ClientTLSOptions,
    client: ClientOptions,
    queue: bool,
    store: Path,
    give_up_after: float | None,
    max_backoff: float,
    flush: bool,
    quiet: bool,
    verbose: bool,
    log_level: str,
) -> int:
    """Send HL7 messages to HOST:PORT and print each reply."""
    problems = tls.conflicts()
    if problems:
        raise click.UsageError("; ".join(problems), ctx)
    setup_logging(log_level)
    (host_, port_), paths = _target(ctx, arguments, host, port)
    if flush and not queue:
        raise click.UsageError("--flush delivers the queue: it needs --queue", ctx)
    if not queue:
        for name in ("give_up_after", "max_backoff"):
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT):
                flag = "--" + name.replace("_", "-")
                raise click.UsageError(f"{flag} is for --queue (add --queue or drop it)", ctx)
    # "send --queue HOST:PORT" from a terminal, or --flush: deliver what is
    # queued, read no input.
    if not paths and (flush or (queue and sys.stdin.isatty())):
        sources: list[Source] = []
    else:
        sources = expand(paths)
    inputs = Inputs(sources, max_message_size=client.framing.max_message_size)
    ui = _UI(quiet=quiet, show_all=True)
    if tls.plaintext:
        click.echo(
            "mllp-trio: warning: --plaintext: messages travel unencrypted and the server "
            "is not authenticated; use it only behind a VPN or an SSH tunnel",
            err=True,
        )
    else:
        ui.note(f"TLS: {tls.describe()}")
    try:
        # Built once, before any connection: a bad file or password is a usage error.
        tls = attrs.evolve(tls, context=tls.ssl_context())
    except mllp_trio.TLSConfigError as exc:
        raise click.UsageError(f"TLS: {printable(str(exc))}", ctx) from None
    total = inputs.count()
    # A terminal lists every reply of a short send; of a long one (the bar
    # shows the progress) only the messages not accepted. Pipes get them all.
    ui.show_all = verbose or not sys.stdout.isatty() or total <= LIST_ALL_UP_TO
    if queue:
        options = QueueOptions(
            directory=store, give_up_after=give_up_after, max_backoff=max_backoff, flush=flush
        )
        return _run_trio(
            partial(_send_queued, host_, port_, inputs, total, tls, client, options, ui)
        )
    if total == 0:
        _report_empty(inputs, sources)
        return EXIT_USAGE
    return _run_trio(partial(_send_direct, host_, port_, inputs, total, tls, client, ui))


def _report_empty(inputs: Inputs, sources: list[Source]) -> None:
    for problem in _problems_only(inputs):
        click.echo(_problem_line(problem))
    names = ", ".join(s.name for s in sources[:3]) + (", ..." if len(sources) > 3 else "")
    click.echo(f"mllp-trio: no messages to send in {names or 'the input'}", err=True)


def _problems_only(inputs: Inputs) -> list[Problem]:
    return [p for p in inputs.items() if isinstance(p, Problem)][:MAX_WARNINGS_SHOWN]


def _problem_line(problem: Problem) -> str:
    where = f"{problem.source}:{problem.line}" if problem.line else problem.source
    return f"{where}: {problem.text}"


@attrs.define
class _UI:
    quiet: bool
    show_all: bool
    progress: Progress | None = None
    shown: Counter[str] = attrs.field(factory=Counter)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.echo(text, err=True)

    def echo(self, line: str, *, err: bool = False) -> None:
        if self.progress is not None:
            self.progress.echo(line, err=err)
        else:
            click.echo(line, err=err)

    def problem(self, problem: Problem, tally: Tally) -> None:
        tally.problems += 1
        if problem.skipped:
            tally.counts[SKIPPED] += 1
        self.shown[problem.source] += 1
        if self.shown[problem.source] <= MAX_WARNINGS_SHOWN:
            self.echo(_problem_line(problem))
        elif self.shown[problem.source] == MAX_WARNINGS_SHOWN + 1:
            self.echo(f"{problem.source}: more problems; only the first ones are shown")


def _reply_line(item: Item, control_id: str, reply: mllp_trio.AckReply) -> str:
    if reply.accepted:
        text = f" {printable(reply.text)}" if reply.text else ""
        return f"{printable(control_id)} {reply.code}{text}"
    return f"{printable(control_id)} {reply.code}{_reason(reply)} ({item.where})"


def _reason(reply: mllp_trio.AckReply) -> str:
    """The error code and reason of a refusal: ERR-3 and ERR-8 (or ERR-7), else MSA-3."""
    parts: list[str] = []
    for error in reply.errors:
        code = " ".join(x for x in (error.code, error.code_text) if x)
        detail = "; ".join(x for x in (code, error.message) if x)
        if detail:
            parts.append(detail)
    if not parts and reply.text:
        parts.append(reply.text)
    if not parts:
        return " (no reason given: no ERR segment, no MSA-3 text)"
    return " " + printable(" | ".join(parts))


async def _interruptible(work: Callable[[], Awaitable[object]]) -> bool:
    """Run ``work`` until it ends or SIGINT arrives; return whether it was interrupted."""
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await work()
            nursery.cancel_scope.cancel()
    return interrupted


async def _send_direct(
    host: str,
    port: int,
    inputs: Inputs,
    total: int,
    tls: ClientTLSOptions,
    client: ClientOptions,
    ui: _UI,
) -> int:
    tally = Tally()
    where = f"{host}:{port}"
    ui.progress = Progress(total, quiet=ui.quiet)

    async def work() -> None:
        log.debug("connecting to %s (%d message(s) to send)", where, total)
        try:
            async with mllp_trio.open_mllp_client(
                host,
                port,
                ssl_context=tls.context,
                server_hostname=tls.server_hostname,
                config=client.config(tls.tls_stream),
            ) as conn:
                log.debug("connected to %s", where)
                for entry in inputs.items():
                    if isinstance(entry, Problem):
                        ui.problem(entry, tally)
                        continue
                    if not await _send_one(conn, entry, tally, ui, where, client.framing.framing):
                        return
        except (mllp_trio.MLLPError, OSError, trio.BrokenResourceError) as exc:
            # Connecting failed (open_mllp_client connects first).
            tally.failure = explain_send_error(exc, where, tls)

    interrupted = await _interruptible(work)
    ui.progress.close()
    return _finish(tally, total, ui, interrupted, where)


async def _send_one(
    conn: mllp_trio.MLLPClient, item: Item, tally: Tally, ui: _UI, where: str, framing: str
) -> bool:
    """Send one message; return False when the connection failed for good."""
    try:
        control_id = mllp_trio.read_msh(item.data).control_id
    except mllp_trio.MLLPError as exc:
        ui.problem(
            Problem(item.source, item.line, f"skipped: not an HL7 message ({exc})", True), tally
        )
        tally.unreadable += 1
        return True
    tally.in_flight = item
    try:
        reply = await conn.send(item.data, raise_on_negative=False)
    except (mllp_trio.ConnectError, mllp_trio.TLSHandshakeError) as exc:
        tally.in_flight = None
        tally.failure = explain_send_error(exc, where, None)
        return False
    except mllp_trio.MLLPError as exc:
        tally.in_flight = None
        tally.sent += 1
        tally.counts[NO_REPLY] += 1
        ui.echo(
            f"{printable(control_id)} ERROR {explain_send_error(exc, where, None)} ({item.where})"
        )
        if ui.progress is not None:
            ui.progress.advance()
        return True
    tally.in_flight = None
    tally.sent += 1
    tally.counts[reply.code] += 1
    log.debug("%s: %s %s", item.where, control_id, reply.code)
    if ui.show_all or not reply.accepted:
        ui.echo(_reply_line(item, control_id, reply))
    if ui.progress is not None:
        ui.progress.advance()
    return True


def _finish(tally: Tally, total: int, ui: _UI, interrupted: bool, where: str) -> int:
    elapsed = ui.progress.elapsed if ui.progress is not None else 0.0
    if tally.failure is not None:
        click.echo(f"mllp-trio: {tally.failure}", err=True)
    in_flight = 1 if tally.in_flight is not None else 0
    not_sent = max(0, total - tally.sent - tally.unreadable - in_flight)
    counts = Counter(tally.counts)
    counts[NOT_SENT] = not_sent
    if interrupted:
        uncertain = ""
        if tally.in_flight is not None:
            uncertain = (
                f"; uncertain: the message from {tally.in_flight.where} was sent or being "
                "sent, its reply did not come"
            )
        click.echo(
            f"mllp-trio: interrupted: {tally.acknowledged:,} of {total:,} message(s) "
            f"acknowledged by {where}{uncertain}; {not_sent:,} not sent "
            f"({summary(counts, elapsed, tally.sent)})",
            err=True,
        )
        return EXIT_INTERRUPTED
    if not ui.quiet:
        click.echo(summary(counts, elapsed, tally.sent), err=True)
    return tally.exit_code()


@attrs.frozen(kw_only=True)
class QueueOptions:
    """How ``--queue`` keeps and retries messages."""

    directory: Path
    give_up_after: float | None
    max_backoff: float
    flush: bool

    def config(self) -> mllp_trio.store.QueueConfig:
        """The library's queue configuration."""
        return mllp_trio.store.QueueConfig(
            give_up_after=self.give_up_after, backoff_cap=self.max_backoff
        )


async def _send_queued(
    host: str,
    port: int,
    inputs: Inputs,
    total: int,
    tls: ClientTLSOptions,
    client: ClientOptions,
    options: QueueOptions,
    ui: _UI,
) -> int:
    tally = Tally()
    where = f"{host}:{port}"
    directory = options.directory
    async with mllp_trio.store.open_sqlite_store(directory) as store:
        sender = mllp_trio.store.QueuedSender(
            store,
            host,
            port,
            ssl_context=tls.context,
            server_hostname=tls.server_hostname,
            client_config=client.config(tls.tls_stream),
            config=options.config(),
        )
        try:
            queued = await _enqueue_all(sender, inputs, total, tally, ui)
            stats = await store.outbound_stats()
            pending = stats.pending + stats.in_flight
            if pending == 0 and not options.flush:
                if queued == 0 and tally.problems:
                    click.echo("mllp-trio: no messages to queue", err=True)
                    return EXIT_USAGE
                click.echo(f"mllp-trio: nothing queued for {where} in {directory}/", err=True)
                return EXIT_REFUSED if tally.problems else EXIT_OK
            waiting = f"{pending:,} message(s) waiting to be delivered to {where}"
            ui.note(f"queued {queued:,} in {directory}/; {waiting}" if queued else waiting)
            ui.progress = Progress(pending or None, quiet=ui.quiet, label="delivered")
            reports: list[mllp_trio.store.SendReport] = []
            on_result = partial(_on_result, ui, tally)

            async def deliver() -> None:
                if options.flush:
                    reports.append(await sender.flush(on_result=on_result))
                else:
                    reports.append(await sender.deliver_pending(on_result=on_result))

            try:
                interrupted = await _interruptible(deliver)
            except mllp_trio.TLSHandshakeError as exc:
                ui.progress.close()
                click.echo(f"mllp-trio: {explain_send_error(exc, where, tls)}", err=True)
                click.echo(
                    f"mllp-trio: the message(s) stay queued in {directory}/: fix the TLS "
                    f"settings and run 'mllp-trio send --queue {where}' again",
                    err=True,
                )
                return EXIT_CONNECTION
        finally:
            with trio.CancelScope(shield=True):
                await sender.aclose()
        ui.progress.close()
        if interrupted:
            stats = await store.outbound_stats()
            click.echo(
                f"mllp-trio: interrupted: {tally.acknowledged:,} acknowledged by {where}; "
                f"{stats.pending + stats.in_flight:,} still queued in {directory}/ (kept: "
                f"they go out with the next 'mllp-trio send --queue {where}')",
                err=True,
            )
            return EXIT_INTERRUPTED
    report = reports[0]
    if report.requeued:
        ui.note(f"requeued {report.requeued:,} dead letter(s)")
    ui.note(
        f"delivered {report.delivered:,}, dead letters {report.dead:,} "
        f"({summary(tally.counts, ui.progress.elapsed, report.delivered + report.dead)})"
    )
    if report.dead:
        ui.note(
            f"dead letters stay in {directory}/: 'mllp-trio store list --store {directory}' "
            f"shows them; 'mllp-trio send --queue --flush {where} --store {directory}' "
            "sends them again"
        )
    return EXIT_REFUSED if report.dead or tally.problems else EXIT_OK


async def _enqueue_all(
    sender: mllp_trio.store.QueuedSender, inputs: Inputs, total: int, tally: Tally, ui: _UI
) -> int:
    queued = 0
    ui.progress = Progress(total, quiet=ui.quiet, label="queued")
    for entry in inputs.items():
        if isinstance(entry, Problem):
            ui.problem(entry, tally)
            continue
        try:
            await sender.enqueue(entry.data)
        except mllp_trio.MSHError as exc:
            problem = Problem(
                entry.source, entry.line, f"skipped: not an HL7 message ({exc})", True
            )
            ui.problem(problem, tally)
            continue
        queued += 1
        ui.progress.advance()
    ui.progress.close()
    return queued


def _on_result(ui: _UI, tally: Tally, result: mllp_trio.store.SendResult) -> None:
    control_id = printable(result.control_id)
    if result.outcome == "retry":
        retry = f"; retry in {result.retry_in:.1f} s" if result.retry_in is not None else ""
        ui.note(
            f"{control_id} not delivered yet ({printable(plain_reason(result.text))}), "
            f"attempt {result.attempts}{retry}"
        )
        return
    tally.counts[result.code] += 1
    if ui.progress is not None:
        ui.progress.advance()
    accepted = result.outcome == "delivered"
    if result.reply is not None:
        reason = "" if accepted else _reason(result.reply)
        line = f"{control_id} {result.code}{reason}"
    else:
        line = f"{control_id} {result.code} {printable(plain_reason(result.text))}".rstrip()
    if ui.show_all or not accepted:
        ui.echo(line)

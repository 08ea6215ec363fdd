"""``mllp-trio bench HOST:PORT``: load any MLLP peer and measure it, every ACK checked."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import click
import trio

import mllp_trio
from mllp_trio import _load
from mllp_trio._batch import BatchError, read_messages
from mllp_trio._cli._common import run_trio
from mllp_trio._cli._options import (
    POSITIVE_INT,
    POSITIVE_SECONDS,
    ClientOptions,
    ClientTLSOptions,
    ParamTypeBase,
    choice,
    client_options,
    client_tls_options,
)
from mllp_trio._cli._send import HostPort

#: Exit codes of ``bench`` (listed in its --help).
EXIT_OK: Final = 0
EXIT_ERRORS: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_CONNECTION: Final = 3

#: Files beyond this many messages are not read further: templates stay in memory.
MAX_TEMPLATES: Final = 10_000
_MESSAGE_TYPE: Final = re.compile(r"^[A-Z0-9]{3}\^[A-Z0-9]{3}(\^[A-Z0-9_]{3,7})?$")

EPILOG = """\b
Models:
  closed (default)  each of --connections sends its next message when the
                    reply to the previous one has come
  open (--rate R)   R messages per second in all, whatever the peer does;
                    latency counts from when each message was due, so a
                    stall shows in every message that waited behind it

\b
Messages: the files given (plain, concatenated or batch files, as for
'send'), else generated ones (--message-type, --size). Each message sent
gets a unique MSH-10; every reply must be an ACK whose MSA-2 is that id.

\b
Exit codes:
  0  every message acknowledged with AA or CA, no connection error
  1  errors (counted by kind in the report)
  2  usage error
  3  no connection could be made, nothing was sent
"""


class MessageType(ParamTypeBase):
    """An MSH-9 such as ``ADT^A01`` or ``ORU^R01^ORU_R01``."""

    name = "TYPE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().upper()
        if not _MESSAGE_TYPE.match(text):
            self.fail(
                f"{value!r} is not a message type like ADT^A01 or ORU^R01^ORU_R01", param, ctx
            )
        return text


@click.command(epilog=EPILOG)
@click.argument("arguments", nargs=-1, metavar="HOST:PORT [FILE|DIR]...")
@click.option(
    "-c",
    "--connections",
    type=POSITIVE_INT,
    default=8,
    show_default=True,
    help="connections, each with one message in flight",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="open model: messages per second over all connections  [default: closed model]",
)
@click.option(
    "-d",
    "--duration",
    type=POSITIVE_SECONDS,
    default=None,
    help="seconds measured after the warm-up  [default: 10, or none with --count]",
)
@click.option("-n", "--count", type=POSITIVE_INT, default=None, help="messages measured")
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="seconds sent first and left out of the results",
)
@click.option(
    "--message-type",
    type=MessageType(),
    default="ADT^A01",
    show_default=True,
    help="MSH-9 of the generated messages",
)
@click.option(
    "--size",
    type=click.IntRange(min=100),
    default=1024,
    show_default=True,
    help="bytes per generated message",
)
@client_tls_options
@client_options
@click.option(
    "--format",
    "output_format",
    type=choice("table", "json"),
    default="table",
    show_default=True,
    help="what goes to stdout",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="also write the results as JSON to this file",
)
@click.option(
    "--chart",
    type=click.Path(path_type=Path, dir_okay=False),
    help="write a latency chart (PNG; needs matplotlib, the bench extra)",
)
@click.option(
    "--no-check-control-id",
    is_flag=True,
    help="accept an ACK whatever its MSA-2 (a peer that answers with a canned ACK)",
)
@click.option("-q", "--quiet", is_flag=True, help="no notes on stderr")
@click.pass_context
def bench(
    ctx: click.Context,
    *,
    arguments: tuple[str, ...],
    connections: int,
    rate: float | None,
    duration: float | None,
    count: int | None,
    warmup: float,
    message_type: str,
    size: int,
    tls: ClientTLSOptions,
    client: ClientOptions,
    output_format: str,
    json_file: Path | None,
    chart: Path | None,
    no_check_control_id: bool,
    quiet: bool,
) -> int:
    """Load HOST:PORT with HL7 messages and report rate, latency and errors."""
    problems = tls.conflicts()
    if problems:
        raise click.UsageError("; ".join(problems), ctx)
    if not arguments:
        raise click.UsageError("missing HOST:PORT: the MLLP peer to load", ctx)
    host, port = HostPort().convert(arguments[0], None, ctx)
    if chart is not None and chart.suffix.lower() != ".png":
        raise click.BadParameter(
            f"{chart}: the chart is a PNG, name it *.png", param_hint="'--chart'"
        )
    if chart is not None and importlib.util.find_spec("matplotlib") is None:
        # Before the run, not after minutes of it.
        raise click.UsageError(
            "--chart needs matplotlib: pip install 'mllp-trio[bench]' (or pip install "
            "matplotlib), or leave --chart out",
            ctx,
        )
    framing = client.framing.config()
    if framing.framing == "hllp" and size > mllp_trio.proto.HLLP_MAX_DATA:
        raise click.BadParameter(
            f"{size} bytes do not fit an HLLP block (at most {mllp_trio.proto.HLLP_MAX_DATA})",
            param_hint="'--size'",
        )
    try:
        config = _load.LoadConfig(
            connections=connections,
            rate=rate,
            duration=duration if duration is not None or count is not None else 10.0,
            count=count,
            warmup=warmup,
            timeout=client.ack_timeout,
            connect_timeout=client.handshake_timeout,
            framing=framing,
            retries=client.retries,
            check_control_id=not no_check_control_id,
        )
    except ValueError as exc:  # pragma: no cover - every value is checked by its option
        raise click.UsageError(str(exc), ctx) from None
    templates = _templates(list(arguments[1:]), message_type, size, client, quiet)
    note = _notes(quiet or output_format == "json")
    where = f"{host}:{port}"
    if tls.plaintext:
        note("plain TCP (--plaintext): no TLS")
    else:
        note(f"TLS: {tls.describe()}")
    connect = _load.tcp_connector(
        host,
        port,
        ssl_context=tls.ssl_context(),
        server_hostname=tls.server_hostname,
        tls_stream=tls.tls_stream,
        handshake_timeout=client.handshake_timeout,
    )
    model = f"open model at {rate:g} msg/s" if rate else "closed model"
    limit = " and ".join(
        x
        for x in (
            f"{config.duration:g} s" if config.duration else "",
            f"{count:,} messages" if count else "",
        )
        if x
    )
    interrupted: list[bool] = []
    started = partial(
        note,
        f"loading {where} ({framing.framing}), {model}, {connections} connection(s), "
        f"warm-up {warmup:g} s, then {limit}",
    )
    result = run_trio(partial(_run, connect, templates, config, interrupted, started))
    if interrupted:
        note("interrupted (Ctrl-C): the results cover what was measured until then")
    data = {"target": where, "framing": framing.framing, **result.to_dict()}
    if output_format == "json":
        click.echo(json.dumps(data, indent=2, allow_nan=False))
    else:
        click.echo(_load.format_table(result, target=f"{where} ({framing.framing})"))
    if json_file is not None:
        json_file.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        note(f"results written to {json_file}")
    if chart is not None:
        try:
            _load.write_chart(result, chart, title=f"{where}: {model}, {connections} connection(s)")
        except _load.ChartUnavailable as exc:
            click.echo(f"mllp-trio: no chart: {exc}", err=True)
            return EXIT_ERRORS
        note(f"latency chart written to {chart}")
    if result.sent == 0 and result.connection_errors:
        click.echo(
            f"mllp-trio: could not connect to {where} "
            f"({', '.join(f'{k} {v}' for k, v in result.connection_errors.items())}): check "
            "HOST:PORT, that the peer runs, and TLS (--plaintext for a plain listener)",
            err=True,
        )
        return EXIT_NO_CONNECTION
    return EXIT_ERRORS if result.errors else EXIT_OK


async def _run(
    connect: _load.Connector,
    templates: list[_load.Template],
    config: _load.LoadConfig,
    interrupted: list[bool],
    started: Callable[[], None],
) -> _load.LoadResult:
    """Run the load; Ctrl-C stops sending and still reports."""
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    interrupted.append(True)
                    stop.set()

            nursery.start_soon(watch)
            started()  # the receiver is in place: Ctrl-C from now on is ours
            result = await _load.run_load(connect, templates, config, stop=stop)
            nursery.cancel_scope.cancel()
    return result


def _notes(quiet: bool) -> Any:
    def note(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    return note


def _files(paths: list[str]) -> list[Path]:
    """The files named, and every file in the folders named (sorted)."""
    out: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise click.BadParameter(f"{name}: no such file or folder", param_hint="FILE")
    return out


def _warn(path: Path, error: BatchError, *, quiet: bool) -> None:
    if not quiet:
        click.echo(f"{path}: {error}", err=True)


def _templates(
    paths: list[str], message_type: str, size: int, client: ClientOptions, quiet: bool
) -> list[_load.Template]:
    if not paths:
        return _load.make_templates(_load.generate_messages(message_type, size))
    messages: list[bytes] = []
    for path in _files(paths):
        try:
            for data in read_messages(
                path,
                lenient=True,
                max_message_size=client.framing.max_message_size,
                on_warning=partial(_warn, path, quiet=quiet),
            ):
                messages.append(data)
                if len(messages) >= MAX_TEMPLATES:
                    break
        except (OSError, BatchError) as exc:
            raise click.UsageError(f"cannot read messages from {path}: {exc}") from None
        if len(messages) >= MAX_TEMPLATES:
            if not quiet:
                click.echo(f"mllp-trio: using the first {MAX_TEMPLATES:,} messages", err=True)
            break
    if not messages:
        raise click.UsageError(f"no messages in {', '.join(paths)}")
    try:
        return _load.make_templates(messages)
    except _load.TemplateError as exc:
        raise click.UsageError(f"cannot send from {', '.join(paths)}: {exc}") from None

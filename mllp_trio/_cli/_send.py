"""``mllp-trio send``: send messages from files or stdin, print each reply."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import cast

import click

import mllp_trio
from mllp_trio._cli._common import DEFAULT_HOST, DEFAULT_OUTBOX, run_trio, setup_logging
from mllp_trio._cli._options import (
    PORT,
    ClientOptions,
    ClientTLSOptions,
    ParamTypeBase,
    client_options,
    client_tls_options,
    log_level_option,
)


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


def split_messages(data: bytes) -> list[bytes]:
    """Split file content into messages: each starts at an ``MSH`` segment.

    Segments may end in CR, LF or CRLF; they are normalised to CR. Blank
    lines are dropped.
    """
    segments = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    messages: list[list[bytes]] = []
    for segment in segments:
        if not segment.strip():
            continue
        if segment.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return [b"\r".join(m) + b"\r" for m in messages]


@click.command()
@click.argument("target", type=HostPort(), metavar="HOST:PORT")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--host", default=None, help="address (overrides the one in HOST:PORT)")
@click.option("--port", type=PORT, default=None, help="TCP port (overrides the one in HOST:PORT)")
@client_tls_options
@client_options
@click.option(
    "--queue",
    is_flag=True,
    help="enqueue durably first, then deliver with retries and backoff",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_OUTBOX,
    show_default=True,
    help="queue folder for --queue",
)
@log_level_option()
def send(
    *,
    target: tuple[str, int],
    files: tuple[Path, ...],
    host: str | None,
    port: int | None,
    tls: ClientTLSOptions,
    client: ClientOptions,
    queue: bool,
    store: Path,
    log_level: str,
) -> int:
    """Send messages from FILEs (default: stdin) and print each reply.

    Segments may end in CR, LF or CRLF. Each reply prints as
    "<control id> <MSA code> [text]".
    """
    setup_logging(log_level)
    host_, port_ = target
    if host:
        host_ = host
    if port is not None:
        port_ = port
    if files:
        messages = [m for f in files for m in split_messages(f.read_bytes())]
    else:
        messages = split_messages(sys.stdin.buffer.read())
    if not messages:
        click.echo("no messages to send", err=True)
        return 2
    if queue:
        return run_trio(partial(_send_queued, host_, port_, messages, tls, client, store))
    return run_trio(partial(_send, host_, port_, messages, tls, client))


async def _send(
    host: str, port: int, messages: list[bytes], tls: ClientTLSOptions, client: ClientOptions
) -> int:
    failures = 0
    async with mllp_trio.open_mllp_client(
        host,
        port,
        ssl_context=tls.ssl_context(),
        server_hostname=tls.server_hostname,
        config=client.config(tls.tls_stream),
    ) as conn:
        for message in messages:
            try:
                control_id = mllp_trio.read_msh(message).control_id
            except mllp_trio.MLLPError as exc:
                click.echo(f"? skipped: not an HL7 message ({exc})")
                failures += 1
                continue
            try:
                reply = await conn.send(message, raise_on_negative=False)
            except mllp_trio.MLLPError as exc:
                click.echo(f"{control_id} ERROR {exc}")
                failures += 1
                continue
            text = f" {reply.text}" if reply.text else ""
            click.echo(f"{control_id} {reply.code}{text}")
            if not reply.accepted:
                failures += 1
    return 1 if failures else 0


async def _send_queued(
    host: str,
    port: int,
    messages: list[bytes],
    tls: ClientTLSOptions,
    client: ClientOptions,
    directory: Path,
) -> int:
    async with mllp_trio.store.open_sqlite_store(directory) as store:
        sender = mllp_trio.store.QueuedSender(
            store,
            host,
            port,
            ssl_context=tls.ssl_context(),
            server_hostname=tls.server_hostname,
            client_config=client.config(tls.tls_stream),
            config=mllp_trio.store.QueueConfig(max_attempts=client.retries + 1, backoff_cap=30.0),
        )
        try:
            for message in messages:
                try:
                    await sender.enqueue(message)
                except mllp_trio.MSHError as exc:
                    click.echo(f"? skipped: not an HL7 message ({exc})")
            click.echo(f"queued {len(messages)} message(s) in {directory}/")
            report = await sender.deliver_pending()
        finally:
            await sender.aclose()
    for control_id, code, text in report.replies:
        click.echo(f"{control_id} {code}{' ' + text if text else ''}")
    click.echo(f"delivered {report.delivered}, dead letters {report.dead}")
    return 1 if report.dead else 0

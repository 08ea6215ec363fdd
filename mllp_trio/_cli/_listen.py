"""``mllp-trio listen``: run a listener."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import click
import trio
from click.core import ParameterSource

import mllp_trio
from mllp_trio._cli._batch_folder import SinkOptions, sink_options
from mllp_trio._cli._common import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STORE, log, run_trio
from mllp_trio._cli._common import setup_logging as _setup_logging
from mllp_trio._cli._errors import explain_listen_error
from mllp_trio._cli._limits import budget_bytes, limit_options
from mllp_trio._cli._options import (
    LISTEN_PORT,
    OPTIONAL_SECONDS,
    POSITIVE_INT,
    POSITIVE_SECONDS,
    FramingOptions,
    ServerTLSOptions,
    choice,
    framing_options,
    handshake_timeout_option,
    log_level_option,
    retries_option,
    server_tls_options,
)
from mllp_trio._cli._service import ServiceOptions, sd_notify, service_options


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="address to listen on")
@click.option(
    "--port",
    type=LISTEN_PORT,
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port (0: any free port)",
)
@server_tls_options
@framing_options
@handshake_timeout_option()
@click.option(
    "--idle-timeout",
    type=OPTIONAL_SECONDS,
    default=300.0,
    show_default=True,
    help="seconds between messages before the connection is closed; 0 or 'none': no limit",
)
@click.option(
    "--read-timeout",
    type=POSITIVE_SECONDS,
    default=30.0,
    show_default=True,
    help="seconds to finish a started frame",
)
@click.option(
    "--write-timeout",
    type=POSITIVE_SECONDS,
    default=30.0,
    show_default=True,
    help="seconds to write a reply",
)
@click.option(
    "--max-connections", type=POSITIVE_INT, default=1000, show_default=True, help="in total"
)
@click.option(
    "--max-connections-per-peer",
    type=POSITIVE_INT,
    default=100,
    show_default=True,
    help="per client address",
)
@click.option(
    "--shutdown-grace",
    type=POSITIVE_SECONDS,
    default=10.0,
    show_default=True,
    help="seconds for in-flight messages on shutdown",
)
@click.option(
    "--ack-timeout",
    type=POSITIVE_SECONDS,
    default=30.0,
    show_default=True,
    help="seconds the peer has to commit our reply (release 2)",
)
@limit_options
@retries_option()
@click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_STORE,
    show_default=True,
    help="journal folder: every message is stored before it is acknowledged",
)
@click.option("--no-store", is_flag=True, help="keep no journal (stateless relays, benchmarks)")
@click.option(
    "--delivery",
    type=choice("before_ack", "after_commit"),
    default="before_ack",
    show_default=True,
    help="with a store: handle before acknowledging, or acknowledge on commit",
)
@service_options
@sink_options
@log_level_option()
@click.pass_context
def listen(
    ctx: click.Context,
    *,
    host: str,
    port: int,
    tls: ServerTLSOptions,
    framing: FramingOptions,
    handshake_timeout: float,
    idle_timeout: float | None,
    read_timeout: float,
    write_timeout: float,
    max_connections: int,
    max_connections_per_peer: int,
    shutdown_grace: float,
    ack_timeout: float,
    memory_budget: int | None,
    max_strikes: int | None,
    retries: int,
    store: Path,
    no_store: bool,
    delivery: str,
    log_level: str,
    service: ServiceOptions,
    sinks: SinkOptions,
) -> int:
    """Run a listener (mutual TLS on 127.0.0.1:2575 by default).

    Every message is stored in the journal (--store) before it is
    acknowledged. SIGINT and SIGTERM stop it gracefully; SIGHUP reloads the
    certificates, key, CA, CRL and allow list.
    """
    _check_flags(ctx, tls, no_store=no_store, delivery=delivery)
    if sink_problems := sinks.conflicts(no_store=no_store):
        raise click.UsageError("; ".join(sink_problems), ctx)
    _setup_logging(log_level)
    service.setup_logging(log_level)
    config = mllp_trio.ServerConfig(
        framing=framing.config(),
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        read_timeout=read_timeout,
        write_timeout=write_timeout,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
        shutdown_grace=shutdown_grace,
        retries=retries,
        ack_timeout=ack_timeout,
        memory_budget=budget_bytes(ctx, memory_budget, framing.config()),
        max_strikes=max_strikes,
        tls_stream=tls.tls_stream,
    )
    server_tls = tls.server_tls()
    journal = None if no_store else store
    try:
        run_trio(
            partial(
                _listen, host, port, config, server_tls, journal, delivery.lower(), service, sinks
            )
        )
    except OSError as exc:
        explained = explain_listen_error(exc, host, port)
        if explained is None:
            raise
        raise click.ClickException(explained) from None
    return 0


def _check_flags(
    ctx: click.Context, tls: ServerTLSOptions, *, no_store: bool, delivery: str
) -> None:
    """Refuse contradictory flags, naming them."""
    problems = tls.conflicts()
    if no_store:
        if ctx.get_parameter_source("store") not in (None, ParameterSource.DEFAULT):
            problems.append("--no-store keeps no journal, so --store has no use: drop one")
        if delivery.lower() == "after_commit":
            problems.append(
                "--delivery after_commit acknowledges on the journal's commit, and "
                "--no-store keeps no journal: drop one"
            )
        for flag, param in (("--retention", "retention"), ("--ready-min-free", "ready_min_free")):
            if ctx.get_parameter_source(param) not in (None, ParameterSource.DEFAULT):
                problems.append(
                    f"{flag} applies to the journal, which --no-store turns off: drop one"
                )
    if problems:
        raise click.UsageError("; ".join(problems), ctx)


async def _listen(
    host: str,
    port: int,
    config: mllp_trio.ServerConfig,
    tls: mllp_trio.ServerTLS | None,
    journal: Path | None,
    delivery: Any,
    service: ServiceOptions | None = None,
    sinks: SinkOptions | None = None,
) -> None:
    async with AsyncExitStack() as stack:
        processor = None
        if journal is None:
            click.echo(
                "running without a journal (--no-store): "
                "messages are acknowledged without being stored"
            )
        else:
            store = await stack.enter_async_context(mllp_trio.store.open_sqlite_store(journal))
            click.echo(f"journal: {journal}/ (messages are stored before they are acknowledged)")
            processor = mllp_trio.store.JournalProcessor(
                store, None, config=config.hl7, delivery=delivery
            )
        server = mllp_trio.MLLPServer(ssl_context=tls, config=config, processor=processor)
        async with trio.open_nursery() as side:
            if service is not None:  # metrics, health, message log, retention
                db = getattr(processor, "store", None)
                await service.monitor(side, server, f"{host}:{port}", db, tls)
            if sinks is not None and journal is not None:  # files written from the journal
                await sinks.start(side, store)
            await _serve_until_signal(server, host, port, tls)
            side.cancel_scope.cancel()


async def _serve_until_signal(
    server: mllp_trio.MLLPServer, host: str, port: int, tls: mllp_trio.ServerTLS | None
) -> None:
    # The signal handlers go in before "listening on" is printed: a supervisor
    # that signals as soon as it reads that line must not kill the process.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(server.serve, port, host=host))
            where = ", ".join(_sockname(listener) for listener in listeners)
            mode = (
                "plaintext"
                if tls is None
                else ("mutual TLS" if tls.config.require_client_cert else "TLS")
            )
            framing = server.config.framing.framing
            click.echo(f"listening on {where} ({framing}, {mode}); Ctrl-C stops")
            sd_notify("READY=1")  # systemd Type=notify
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        server.reload_tls()
                    except mllp_trio.MLLPError as exc:
                        log.error("certificate reload failed, keeping the old ones: %s", exc)
                    continue
                click.echo("shutting down (in-flight messages get the grace period)")
                sd_notify("STOPPING=1")
                server.shutdown()
                break


def _sockname(listener: Any) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

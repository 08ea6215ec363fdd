"""``mllp-trio check HOST:PORT``: one real MLLP exchange, for scripts and probes."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final

import click
import trio

import mllp_trio
from mllp_trio._cli._common import describe, run_trio, setup_logging
from mllp_trio._cli._options import (
    ClientOptions,
    ClientTLSOptions,
    client_options,
    client_tls_options,
    log_level_option,
)
from mllp_trio._cli._send import HostPort

#: Exit codes of ``check`` (listed in its --help).
EXIT_OK: Final = 0
EXIT_NEGATIVE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECTION: Final = 3
EXIT_NO_REPLY: Final = 4

EPILOG = """\b
Exit codes:
  0  the peer answered AA or CA (or any code, with --any-ack)
  1  the peer answered with a negative code (AE, AR, CE, CR)
  2  usage error
  3  cannot connect, TLS refused, or the connection was lost
  4  no reply within --ack-timeout, or a reply that is not an ACK of ours

The check message is a real message: the peer may store or process it. By
default it is a network management query (NMQ^N01, MSH-3 MLLP-TRIO-CHECK),
which an engine may refuse (AR) and still prove it is alive: use --any-ack
then, or --message FILE with a message the peer accepts.
"""


def check_message(now: datetime | None = None) -> bytes:
    """The default check message: NMQ^N01 with a unique control id."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    control_id = f"CHK{stamp}{os.getpid() % 10000:04d}"
    msh = f"MSH|^~\\&|MLLP-TRIO-CHECK|MLLP-TRIO|||{stamp}||NMQ^N01^NMQ_N01|{control_id}|P|2.5"
    return f"{msh}\rNCK|{stamp}\r".encode("ascii")


@click.command(epilog=EPILOG)
@click.argument("target", type=HostPort(), metavar="HOST:PORT")
@client_tls_options
@client_options
@click.option(
    "--message",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="send this HL7 message instead of the NMQ^N01 check message",
)
@click.option("--any-ack", is_flag=True, help="a negative ACK also counts as success")
@click.option("-q", "--quiet", is_flag=True, help="print nothing; the exit code tells")
@log_level_option("warning")
def check(
    *,
    target: tuple[str, int],
    tls: ClientTLSOptions,
    client: ClientOptions,
    message: Path | None,
    any_ack: bool,
    quiet: bool,
    log_level: str,
) -> int:
    """Send one test message to HOST:PORT and report the acknowledgement."""
    setup_logging(log_level)
    data = message.read_bytes() if message is not None else check_message()
    code, line = run_trio(partial(_check, target, tls, client, data))
    if code == EXIT_NEGATIVE and any_ack:
        code = EXIT_OK
    if not quiet:
        click.echo(line, err=code != EXIT_OK)
    return code


async def _check(
    target: tuple[str, int],
    tls: ClientTLSOptions,
    client: ClientOptions,
    data: bytes,
) -> tuple[int, str]:
    host, port = target
    where = f"{host}:{port}"
    config = client.config(tls.tls_stream)
    started = time.perf_counter()
    try:
        context = tls.ssl_context()
        async with mllp_trio.open_mllp_client(
            host,
            port,
            ssl_context=context,
            server_hostname=tls.server_hostname,
            config=config,
        ) as conn:
            reply = await conn.send(data, raise_on_negative=False)
    except (mllp_trio.MLLPTimeoutError, mllp_trio.DeliveryFailed) as exc:
        return EXIT_NO_REPLY, f"FAIL: no acknowledgement from {where}: {describe(exc)}"
    except (mllp_trio.InvalidReply, mllp_trio.ControlIdMismatch) as exc:
        return EXIT_NO_REPLY, f"FAIL: {where} answered, but not with an ACK of ours: {exc}"
    except (mllp_trio.TransportError, trio.BrokenResourceError, OSError) as exc:
        text = describe(exc)
        # Our transport errors name the address already.
        return (
            EXIT_CONNECTION,
            f"FAIL: {text}" if where in text else f"FAIL: cannot reach {where}: {text}",
        )
    except mllp_trio.TLSConfigError as exc:
        return EXIT_CONNECTION, f"FAIL: TLS settings: {exc}"
    millis = (time.perf_counter() - started) * 1000
    summary = f"{reply.code} from {where} in {millis:.1f} ms"
    if reply.accepted:
        return EXIT_OK, f"OK: {summary}"
    return EXIT_NEGATIVE, f"NEGATIVE: {summary}" + (f" ({reply.text})" if reply.text else "")

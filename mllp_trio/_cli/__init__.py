"""The ``mllp-trio`` command line, built on click and the public API.

``cli`` is the root group; each command lives in its own module and is
registered below with one line. ``main`` is the console script's entry
point (``mllp_trio._cli:main``).

Why click rather than argparse: it validates every option in the parser
and names the flag in the error (``Invalid value for '--port'``), reads
every option from an environment variable (``auto_envvar_prefix``),
matches choices case-insensitively, takes a config file as a default map
below the environment, nests groups (``store list``), and gives shell
completion, all without code of ours.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click
import trio

import mllp_trio
from mllp_trio._cli._batch import batch
from mllp_trio._cli._bench import bench
from mllp_trio._cli._certs import certs
from mllp_trio._cli._check import check
from mllp_trio._cli._common import describe
from mllp_trio._cli._config import config_option
from mllp_trio._cli._listen import listen
from mllp_trio._cli._send import send
from mllp_trio._cli._store import store
from mllp_trio._cli._store_admin import prune, stats

CONTEXT_SETTINGS = {
    "auto_envvar_prefix": "MLLP_TRIO",
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(mllp_trio.__version__, prog_name="mllp-trio")
@config_option
def cli() -> None:
    """HL7 v2 over MLLP, MLLP release 2 and HLLP, with mutual TLS.

    Every option can also come from an environment variable named
    MLLP_TRIO_<COMMAND>_<OPTION> (MLLP_TRIO_LISTEN_PORT=2576,
    MLLP_TRIO_STORE_LIST_LIMIT=10) and from a TOML file given with --config
    or MLLP_TRIO_CONFIG ([listen] port = 2576). A flag wins over the
    environment, which wins over the file, which wins over the default.
    "mllp-trio COMMAND --help" shows each command's options.

    Exit codes: 0 done, 1 a failure the command reports (send: a message
    refused), 2 a usage error (the bad option is named), 130 interrupted;
    send and check list theirs in their --help.
    """


cli.add_command(listen)
cli.add_command(send)
cli.add_command(store)
cli.add_command(certs)
cli.add_command(bench)
cli.add_command(check)
store.add_command(prune)
store.add_command(stats)
cli.add_command(batch)


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``mllp-trio`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="mllp-trio",
            standalone_mode=False,
        )
    except click.UsageError as exc:
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"mllp-trio: {exc.format_message()}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        return 130
    except BrokenPipeError:
        # "mllp-trio store list | head": the reader left. Say nothing (as
        # cat and ls do), and keep the interpreter's final flush quiet too.
        _silence_stdout()
        return 141
    except (mllp_trio.MLLPError, OSError) as exc:
        click.echo(f"mllp-trio: {exc}", err=True)
        return 1
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        # A failed TLS handshake while connecting: report it, not a traceback.
        click.echo(f"mllp-trio: connection failed: {describe(exc)}", err=True)
        return 1
    return result if isinstance(result, int) else 0


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``mllp-trio`` and exit with its code."""
    sys.exit(run(argv))

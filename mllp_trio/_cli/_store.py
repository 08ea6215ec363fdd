"""``mllp-trio store``: look into a journal or a sending queue.

A click group: each subcommand is a click command registered on ``store``.
Another module adds one with ``@store.command()`` or
``store.add_command(...)``, using ``store_dir_option`` and ``open_store`` to
find the folder the same way.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click

import mllp_trio
from mllp_trio._cli._common import DEFAULT_STORE, run_trio, setup_logging
from mllp_trio._cli._options import POSITIVE_INT, log_level_option

F = TypeVar("F", bound=Callable[..., Any])


def _remember_store(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    # ``store --store X list`` and ``store list --store X`` both work: the
    # group keeps its value for the subcommand.
    if value is not None:
        ctx.ensure_object(dict)["store"] = value
    return value


def store_dir_option(command: F) -> F:
    """``--store PATH`` on a store subcommand (the group's value otherwise)."""
    return click.option(
        "--store",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        expose_value=False,
        callback=_remember_store,
        help=f"store folder  [default: {DEFAULT_STORE}]",
    )(command)


def store_path(ctx: click.Context) -> Path:
    """The folder given with ``--store`` (on the group or the subcommand), else the default."""
    obj = ctx.find_object(dict)
    path = obj.get("store") if obj else None
    return path if isinstance(path, Path) else DEFAULT_STORE


@asynccontextmanager
async def open_store(
    path: Path, *, write: bool = False
) -> AsyncIterator[mllp_trio.store.SQLiteStore]:
    """Open the store at ``path``, read-only unless ``write``.

    Raises:
        click.ClickException: There is no store there.
    """
    if not path.is_dir():
        raise click.ClickException(f"no store at {path}/ (give the folder with --store)")
    config = mllp_trio.store.SQLiteStoreConfig(read_only=not write)
    async with mllp_trio.store.open_sqlite_store(path, config=config) as store:
        yield store


@click.group(name="store")
@store_dir_option
@log_level_option("warning")
def store(log_level: str) -> None:
    """Look into a journal or a sending queue.

    count, list and requeue show and change metadata only; export writes
    message content to stdout.
    """
    setup_logging(log_level)


@store.command()
@store_dir_option
@click.pass_context
def count(ctx: click.Context) -> int:
    """Print how many messages the journal holds."""

    async def run() -> None:
        async with open_store(store_path(ctx)) as db:
            click.echo(await db.count())

    run_trio(run)
    return 0


@store.command(name="list")
@store_dir_option
@click.option("--limit", type=POSITIVE_INT, default=50, show_default=True, help="how many")
@click.pass_context
def list_(ctx: click.Context, limit: int) -> int:
    """List message metadata, newest first (never content)."""

    async def run() -> None:
        async with open_store(store_path(ctx)) as db:
            for info in await db.list_messages(limit=limit):
                delivered = "delivered" if info.delivered_at else "undelivered"
                click.echo(
                    f"{info.message_id}\t{info.received_at.isoformat()}\t{info.peer}\t"
                    f"{info.sending_application}|{info.sending_facility}\t{info.control_id}\t"
                    f"{info.size} bytes\t{delivered}"
                )

    run_trio(run)
    return 0


@store.command()
@store_dir_option
@click.argument("ids", nargs=-1, type=int, metavar="ID")
@click.pass_context
def export(ctx: click.Context, ids: tuple[int, ...]) -> int:
    """Write the content of message ID to stdout (patient data: handle with care)."""
    if len(ids) != 1:
        raise click.UsageError("store export takes exactly one message id")

    async def run() -> None:
        async with open_store(store_path(ctx)) as db:
            data = await db.export_message(ids[0])
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    run_trio(run)
    return 0


@store.command()
@store_dir_option
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@click.pass_context
def requeue(ctx: click.Context, ids: tuple[int, ...]) -> int:
    """Put dead letters back in the sending queue (default: all of them)."""
    done = run_trio(partial(_requeue, store_path(ctx), list(ids) or None))
    click.echo(f"requeued {done} dead letter(s)")
    return 0


async def _requeue(path: Path, ids: list[int] | None) -> int:
    async with open_store(path, write=True) as db:
        return await db.requeue_dead(ids)

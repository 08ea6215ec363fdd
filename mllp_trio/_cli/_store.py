"""``mllp-trio store``: look into a journal or a sending queue.

A click group: each subcommand is a click command registered on ``store``.
Another module adds one with ``@store.command()`` or
``store.add_command(...)``, using ``store_dir_option`` and ``open_store`` to
find the folder the same way.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click

import mllp_trio
from mllp_trio._cli._common import DEFAULT_STORE, printable, run_trio, setup_logging
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

    count, list and requeue show or change metadata only (ids, times,
    peers, control ids, sizes, states); export writes message content
    (patient data) to stdout or to files.
    """
    setup_logging(log_level)


@store.command()
@store_dir_option
@click.pass_context
def count(ctx: click.Context) -> int:
    """Print how many messages the journal holds, and the sending queue's counts.

    The first line is the journal's count; a second line follows when the
    store holds a sending queue (send --queue): pending, in flight,
    delivered and dead letters.
    """

    async def run() -> None:
        async with open_store(store_path(ctx)) as db:
            click.echo(await db.count())
            stats = await db.outbound_stats()
            if stats.pending or stats.in_flight or stats.delivered or stats.dead:
                click.echo(
                    f"outbound queue: {stats.pending} pending, {stats.delivered} delivered, "
                    f"{stats.dead} dead letter(s)"
                )

    run_trio(run)
    return 0


@store.command(name="list")
@store_dir_option
@click.option("--limit", type=POSITIVE_INT, default=50, show_default=True, help="how many of each")
@click.pass_context
def list_(ctx: click.Context, limit: int) -> int:
    """List the journal's messages, then the sending queue's, newest first (never content).

    Journal lines: id, received, peer, sending application|facility, control
    id, size, delivered or not. Queue lines: "out" id, enqueued, destination,
    control id, size, state (pending, sent, dead) with attempts and the last
    error. Control characters in any field are printed escaped.
    """

    async def run() -> None:
        async with open_store(store_path(ctx)) as db:
            for info in await db.list_messages(limit=limit):
                delivered = "delivered" if info.delivered_at else "undelivered"
                fields = (
                    str(info.message_id),
                    info.received_at.isoformat(),
                    info.peer,
                    f"{info.sending_application}|{info.sending_facility}",
                    info.control_id,
                    f"{info.size} bytes",
                    delivered,
                )
                click.echo("\t".join(printable(f) for f in fields))
            for row in await _outbound(db, limit):
                click.echo("\t".join(printable(f) for f in row))

    run_trio(run)
    return 0


async def _outbound(db: mllp_trio.store.SQLiteStore, limit: int) -> list[tuple[str, ...]]:
    """The sending queue's metadata, newest first, as printable fields."""

    def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT id, enqueued_at, destination, substr(data, 1, 1024), size, status, "
            "attempts, coalesce(dead_reason, last_error) FROM outbound ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()

    # The store has no public listing of the queue (only counts): read its
    # metadata on the store's own connection, read-only.
    rows = await db._call(query, write=False)
    result: list[tuple[str, ...]] = []
    for message_id, enqueued, destination, head, size, status, attempts, error in rows:
        state = status if not attempts else f"{status}, {attempts} attempt(s)"
        if error:
            state += f": {error}"
        result.append(
            (
                f"out {message_id}",
                datetime.fromtimestamp(enqueued, UTC).isoformat(),
                destination,
                _control_id(bytes(head)),
                f"{size} bytes",
                state,
            )
        )
    return result


def _control_id(head: bytes) -> str:
    try:
        return mllp_trio.read_msh(head).control_id
    except mllp_trio.MLLPError:
        return "?"


@store.command()
@store_dir_option
@click.argument("ids", nargs=-1, type=POSITIVE_INT, metavar="ID...", required=True)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="write each message to DIR/<id>.hl7 instead of stdout",
)
@click.pass_context
def export(ctx: click.Context, ids: tuple[int, ...], output_dir: Path | None) -> int:
    """Write the content of journal messages ID... (patient data: handle with care).

    To stdout, one after the other (segments end with CR: the result reads
    as a file of concatenated messages), or one file each with -o.
    """

    async def run() -> None:
        async with open_store(store_path(ctx)) as db:
            if output_dir is not None:
                output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for message_id in ids:
                data = await db.export_message(message_id)
                if output_dir is not None:
                    path = output_dir / f"{message_id}.hl7"
                    # 0600 whatever the umask: patient data.
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                    with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
                        out.write(data)
                    click.echo(f"wrote {path}", err=True)
                else:
                    sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    run_trio(run)
    return 0


@store.command()
@store_dir_option
@click.argument("ids", nargs=-1, type=POSITIVE_INT, metavar="[ID]...")
@click.pass_context
def requeue(ctx: click.Context, ids: tuple[int, ...]) -> int:
    """Put dead letters of the sending queue back (default: all of them).

    They go out with the next "mllp-trio send --queue HOST:PORT" to their
    destination (with no input it only delivers what is queued).
    """
    done = run_trio(partial(_requeue, store_path(ctx), list(ids) or None))
    click.echo(f"requeued {done} dead letter(s)")
    return 0


async def _requeue(path: Path, ids: list[int] | None) -> int:
    async with open_store(path, write=True) as db:
        return await db.requeue_dead(ids)

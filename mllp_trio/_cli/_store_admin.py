"""``mllp-trio store prune`` and ``store stats``: retention and what a journal holds.

Registered on the ``store`` group in ``mllp_trio/_cli/__init__.py``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

import click

from mllp_trio._cli._common import run_trio
from mllp_trio._cli._options import ParamTypeBase
from mllp_trio._cli._store import open_store, store_dir_option, store_path

_DURATION: Final = re.compile(r"\s*(\d+)\s*([smhdw])\s*", re.IGNORECASE)
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Duration(ParamTypeBase):
    """A duration such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``; more than zero."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse the text into a timedelta, or fail naming the flag."""
        if isinstance(value, timedelta):
            return value
        match = _DURATION.fullmatch(str(value))
        if match is None or int(match.group(1)) == 0:
            self.fail(
                f"expected a positive duration such as 30d, 12h or 90m, got {value!r}", param, ctx
            )
        return timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})


DURATION = Duration()


def human_duration(value: timedelta) -> str:
    """``30d``, ``12h``, ``90m`` or ``45s``: the largest whole unit."""
    seconds = int(value.total_seconds())
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    age = datetime.now(UTC) - value
    return f"{value.isoformat(timespec='seconds')} ({age.days} days ago)"


@click.command()
@store_dir_option
@click.option(
    "--older-than",
    type=DURATION,
    required=True,
    help="prune delivered messages received longer ago than this (e.g. 30d)",
)
@click.pass_context
def prune(ctx: click.Context, older_than: timedelta) -> int:
    """Delete delivered messages older than --older-than.

    Never deletes a message not yet delivered, nor a dead letter, nor one
    the duplicate window still needs (the store's window, 7 days by default,
    wins over a shorter --older-than). Safe next to a running listener.
    """
    removed, window = run_trio(partial(_prune, store_path(ctx), older_than))
    if window is None:
        click.echo("pruned nothing: this store detects duplicates against every message kept")
        return 0
    kept = human_duration(max(window, older_than))
    note = " (the duplicate window is longer)" if window > older_than else ""
    click.echo(f"pruned {removed} delivered message(s) older than {kept}{note}")
    return 0


async def _prune(path: Path, older_than: timedelta) -> tuple[int, timedelta | None]:
    async with open_store(path, write=True) as db:
        return await db.prune(older_than=older_than), db.config.duplicate_window


@click.command()
@store_dir_option
@click.pass_context
def stats(ctx: click.Context) -> int:
    """Print the journal's size, its counts by state and its oldest entries (never content)."""

    async def run() -> None:
        async with open_store(store_path(ctx)) as db:
            s = await db.journal_stats()
        out = s.outbound
        click.echo(f"size:                {_human_size(s.size_bytes)}")
        click.echo(f"inbound delivered:   {s.inbound_delivered}")
        click.echo(f"inbound undelivered: {s.inbound_undelivered}")
        click.echo(f"outbound pending:    {out.get('pending', 0)}")
        click.echo(f"outbound sent:       {out.get('sent', 0)}")
        click.echo(f"outbound dead:       {out.get('dead', 0)}")
        click.echo(f"oldest entry:        {_when(s.oldest_entry)}")
        click.echo(f"oldest undelivered:  {_when(s.oldest_undelivered)}")

    run_trio(run)
    return 0

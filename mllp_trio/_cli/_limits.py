"""``listen`` options against hostile peers: the memory budget and the strikes (issue 13)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from mllp_trio._cli._options import ParamTypeBase
from mllp_trio.proto import FramingConfig

F = TypeVar("F", bound=Callable[..., Any])

_MIB = 1024 * 1024
_READ = 65536  # ServerConfig.receive_size, which listen leaves at its default


class OptionalCount(ParamTypeBase):
    """A whole number at least one, or ``none``/``off`` for no limit (``None``)."""

    name = "count|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text in ("none", "off"):
            return None
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is not a whole number, nor 'none'", param, ctx)
        if number < 1:
            self.fail(f"{value!r} must be at least 1 (or 'none' for no limit)", param, ctx)
        return number


OPTIONAL_COUNT = OptionalCount()


def limit_options(func: F) -> F:
    """Add ``--memory-budget`` (MiB, given as ``memory_budget``) and ``--max-strikes``."""
    func = click.option(
        "--max-strikes",
        type=OPTIONAL_COUNT,
        metavar="N|none",
        default="3",
        show_default=True,
        help="bad inputs in a row without an answer before a connection is closed; "
        "'none': never (see docs/bad-input.md)",
    )(func)
    return click.option(
        "--memory-budget",
        type=OPTIONAL_COUNT,
        metavar="MIB|none",
        default="128",
        show_default=True,
        help="MiB all connections may buffer together; the largest partial messages "
        "are dropped first when it is reached; 'none': no budget",
    )(func)


def budget_bytes(
    ctx: click.Context, memory_budget: int | None, framing: FramingConfig
) -> int | None:
    """``--memory-budget`` in bytes, checked against the largest message size.

    Raises:
        click.BadParameter: The budget cannot hold one message of the largest size.
    """
    if memory_budget is None:
        return None
    # A receive buffer holds up to the largest message plus one read (64 KiB).
    largest = framing.max_message_size + _READ
    if memory_budget * _MIB < largest:
        raise click.BadParameter(
            f"{memory_budget} MiB cannot hold one message of the largest size "
            f"({framing.max_message_size} bytes) and a read; raise it to at least "
            f"{-(-largest // _MIB)} MiB",
            ctx,
            param_hint="'--memory-budget'",
        )
    return memory_budget * _MIB

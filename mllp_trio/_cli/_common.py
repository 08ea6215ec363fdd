"""What every command shares: defaults, logging, running Trio, error text."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

DEFAULT_PORT = 2575  # IANA's hl7 port
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CERTS = Path("certs")
DEFAULT_STORE = Path("mllp-data")
DEFAULT_OUTBOX = Path("mllp-outbox")

log = logging.getLogger("mllp_trio.cli")

T = TypeVar("T")


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (a name such as ``"INFO"``)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_trio(command: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``trio.run(command, *args)``, with a lone error out of a nursery unwrapped.

    The listener runs in nurseries, so "address already in use" arrives in
    an exception group; ``main`` reports it like any other error.
    """
    try:
        return trio.run(command, *args)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if isinstance(error, BaseExceptionGroup):
            raise
        raise error from None


def describe(exc: BaseException) -> str:
    """The text of ``exc`` and of its cause when the cause adds something."""
    # trio wraps ssl.SSLError without repeating its text: show both.
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text

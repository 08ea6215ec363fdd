"""What every command shares: defaults, logging, running Trio, error text."""

from __future__ import annotations

import logging
import re
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
    """Log to stderr at ``level`` (a name such as ``"INFO"``, any case)."""
    number = getattr(logging, level.upper())
    # force: a second run in the same process (tests) logs to today's stderr.
    logging.basicConfig(
        level=number, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    # The library's loggers follow the flag, whatever set them before.
    logging.getLogger("mllp_trio").setLevel(number)


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
    return printable(plain_reason(text))


# Every C0 control character but TAB, DEL and the C1 range: a control id, an
# ACK text or an error the peer wrote could otherwise carry terminal escape
# sequences (clear the screen, set the window title) to the operator's terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if c != 0x09}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r", 0x1B: "\\e"})
_ESCAPES = str.maketrans({chr(c): text for c, text in _CONTROL.items()})


_EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception): ")
_CONNECT_ECHO = re.compile(r"Error connecting to \([^)]*\): ")


def plain_reason(text: str) -> str:
    """An error text without Python exception names or the echo of the address.

    ``ConnectError: cannot connect to h:p: ConnectionRefusedError: Error
    connecting to ('h', p): Connection refused`` reads ``cannot connect to
    h:p: Connection refused``.
    """
    return _CONNECT_ECHO.sub("", _EXCEPTION_NAME.sub("", text))


def printable(text: str) -> str:
    """``text`` with control characters escaped (ESC shows as backslash-e), for a terminal."""
    return text.translate(_ESCAPES)


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it: causes, contexts and group members."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 50:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)
    return seen

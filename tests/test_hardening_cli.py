"""Issue 13: ``listen --memory-budget`` and ``--max-strikes`` are validated with the flag named."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from mllp_trio._cli._limits import OPTIONAL_COUNT, budget_bytes
from mllp_trio.proto import FramingConfig

from .test_cli_support import invoke

LISTEN_QUICK = ("listen", "--plaintext", "--no-store")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket: ``listen`` on it fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--memory-budget", "0", "at least 1"),
        ("--memory-budget", "lots", "not a whole number"),
        ("--memory-budget", "16", "raise it to at least 17 MiB"),
        ("--max-strikes", "0", "at least 1"),
        ("--max-strikes", "-2", "at least 1"),
    ],
)
def test_bad_limits_are_refused_naming_the_flag(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    result = invoke(*LISTEN_QUICK, flag, value, cwd=tmp_path)
    assert result.code == 2, result.output
    assert flag in result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--memory-budget", "none", "--max-strikes", "none"],
        ["--memory-budget", "64", "--max-strikes", "10"],
        ["--memory-budget", "2", "--max-message-size", "1048576"],
    ],
)
def test_good_limits_pass_the_parser(tmp_path: Path, busy_port: int, args: list[str]) -> None:
    # Past the parser the listener meets a port already taken: not a usage error.
    result = invoke(*LISTEN_QUICK, "--port", str(busy_port), *args, cwd=tmp_path)
    assert result.code not in (0, 2), result.output
    assert "Traceback" not in result.output


def test_budget_in_bytes() -> None:
    ctx = click.Context(click.Command("listen"))
    assert budget_bytes(ctx, None, FramingConfig()) is None
    assert budget_bytes(ctx, 128, FramingConfig()) == 128 * 1024 * 1024
    assert OPTIONAL_COUNT.convert("NONE", None, None) is None
    assert OPTIONAL_COUNT.convert("7", None, None) == 7

"""Measure another commit beside this checkout: a temporary git worktree and JSON-line workers.

``open_baseline(ref)`` checks ``ref`` out into a temporary detached worktree
and removes it afterwards, also on error or Ctrl-C. :class:`Worker` starts a
benchmark subprocess whose ``mllp_trio`` comes from a chosen tree (this
checkout or the worktree) and reports, as its first output line, the files
it really imported: the proof that a baseline contender ran the old code.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import attrs

__all__ = [
    "REPO",
    "Baseline",
    "BaselineError",
    "Worker",
    "add_baseline_ratios",
    "alternate_pairs",
    "open_baseline",
    "resolve_ref",
    "workers",
]

T = TypeVar("T")

#: This checkout: the tree the harness itself runs from.
REPO = Path(__file__).resolve().parent.parent

# Run as ``python -c BOOTSTRAP LIB_ROOT CODE_ROOT MODULE ARGS...``. mllp_trio is
# imported from LIB_ROOT first, ahead of everything on sys.path (the venv's
# editable install of this checkout included); then MODULE is run from
# CODE_ROOT. The first stdout line names the files actually imported.
_BOOTSTRAP = """\
import importlib.util, json, os, runpy, sys
lib_root, code_root, module, *args = sys.argv[1:]
sys.path.insert(0, lib_root)
imported = {}
try:
    import mllp_trio
    imported["mllp_trio"] = os.path.realpath(mllp_trio.__file__)
except Exception as exc:
    imported["mllp_trio"] = None
    imported["mllp_trio_error"] = type(exc).__name__
sys.path[0] = code_root
origin = importlib.util.find_spec(module).origin
imported["module"] = os.path.realpath(origin)
print(json.dumps({"imported": imported}), flush=True)
sys.argv = [origin, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Group))(?::|$)")


class BaselineError(Exception):
    """The baseline commit cannot be used; the message is one line for the user."""


@attrs.frozen(kw_only=True)
class Baseline:
    """A commit checked out in a temporary worktree.

    Attributes:
        ref: The ref as the user gave it.
        commit: The full commit hash it resolved to.
        short: The abbreviated hash; contender keys end in ``@short``.
        worktree: Where the commit is checked out (removed after the run).
    """

    ref: str
    commit: str
    short: str
    worktree: Path

    @property
    def suffix(self) -> str:
        """Return what a baseline contender's key adds to its twin's: ``@short``."""
        return "@" + self.short

    def describe(self) -> dict[str, str]:
        """Return the JSON description of the baseline."""
        return {
            "ref": self.ref,
            "commit": self.commit,
            "short": self.short,
            "worktree": os.path.realpath(self.worktree),
        }


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaselineError(f"cannot run git ({type(exc).__name__})") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def resolve_ref(ref: str) -> tuple[str, str]:
    """Return ``(full hash, short hash)`` of the commit ``ref`` names in this repository.

    Raises:
        BaselineError: ``ref`` names no commit here (or git is unavailable).
    """
    if not ref or ref.startswith("-"):
        raise BaselineError(f"--baseline {ref!r}: not a commit of this repository")
    done = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        raise BaselineError(f"--baseline {ref!r}: not a commit of this repository")
    commit = done.stdout.strip()
    short = _git("rev-parse", "--short", commit).stdout.strip() or commit[:7]
    return commit, short


@contextmanager
def open_baseline(ref: str) -> Iterator[Baseline]:
    """Check ``ref`` out in a temporary detached worktree; remove it on exit.

    The worktree lives under the system's temporary directory, outside this
    checkout, and is removed (``git worktree remove --force``) however the
    block ends.

    Raises:
        BaselineError: ``ref`` is not a commit, or the worktree cannot be made.
    """
    commit, short = resolve_ref(ref)
    parent = Path(tempfile.mkdtemp(prefix="mllp-bench-baseline-"))
    tree = parent / short
    try:
        done = _git("worktree", "add", "--detach", "--quiet", str(tree), commit)
        if done.returncode != 0:
            raise BaselineError(f"git worktree add failed: {_last_line(done.stderr)}")
        yield Baseline(ref=ref, commit=commit, short=short, worktree=tree)
    finally:
        if tree.exists():
            removed = _git("worktree", "remove", "--force", str(tree))
            if removed.returncode != 0:
                shutil.rmtree(tree, ignore_errors=True)
                _git("worktree", "prune")
        shutil.rmtree(parent, ignore_errors=True)


class Worker:
    """A benchmark subprocess that speaks one JSON object per line on stdin and stdout.

    It runs ``python -m MODULE ARGS`` through the bootstrap: ``mllp_trio``
    from ``lib_root``, ``MODULE`` from ``code_root`` (with ``code_root`` as the
    working directory and on ``PYTHONPATH``). Read :attr:`imported` with
    :meth:`hello` before anything else.
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        lib_root: Path = REPO,
        code_root: Path = REPO,
        log: Path | None = None,
    ) -> None:
        env = dict(os.environ)
        roots = dict.fromkeys([str(lib_root), str(code_root)])
        env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
        self.log = log
        errors: IO[bytes] | int = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(lib_root), str(code_root), module, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=code_root,
                env=env,
            )
        finally:
            if not isinstance(errors, int):
                errors.close()
        self._buffer = b""
        self._stopped = False
        self.imported: dict[str, Any] = {}

    def send(self, command: dict[str, Any]) -> None:
        """Write one command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any]:
        """Return the next JSON line.

        Raises:
            TimeoutError: No complete line within ``timeout`` seconds.
            EOFError: The process closed its stdout (it exited).
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        # Our own buffer, read with os.read: select() on a buffered file
        # object would miss a second line already sitting in its buffer.
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("worker did not answer in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("worker exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def hello(self, timeout: float) -> dict[str, Any]:
        """Read the bootstrap's first line; return (and keep) the imported files."""
        self.imported = dict(self.read(timeout)["imported"])
        return self.imported

    def failure(self) -> str | None:
        """Return the exception type the process died of, from its log's last line.

        Only the type name: an exception's text could quote message bytes.
        """
        if self.log is None:
            return None
        try:
            # Its stdout may close a moment before it has exited.
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return None
        # Bottom up: in an exception group's box the innermost cause is last.
        for line in reversed(lines):
            found = _EXCEPTION_LINE.match(line.lstrip(" |"))
            if found:
                return found.group(1)
        return None

    def stop(self) -> None:
        """Close stdin and send SIGTERM, once: a second signal could cut short its cleanup."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        if not self._stopped and self.proc.poll() is None:
            self._stopped = True
            self.proc.terminate()

    def close(self) -> None:
        """Stop the process and wait for it (kill after 5 s)."""
        self.stop()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@contextmanager
def workers() -> Iterator[list[Worker]]:
    """Collect workers started in the block; close all of them however it ends."""
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()  # all at once, then wait for each
        for worker in started:
            worker.close()


def add_baseline_ratios(rows: list[dict[str, Any]], scenario: Sequence[str]) -> None:
    """Set ``vs_baseline`` (median msg/s, this checkout / baseline) on rows with a twin.

    A baseline row carries ``baseline_of`` (its twin's contender key); the
    twin is the row with that key in the same scenario (the ``scenario``
    fields equal).
    """
    medians: dict[tuple[Any, ...], float] = {}
    for row in rows:
        if row.get("baseline_of") and "msgs_per_s" in row:
            key = (*(row[k] for k in scenario), row["baseline_of"])
            medians[key] = row["msgs_per_s"]["median"]
    for row in rows:
        if row.get("baseline_of") or "msgs_per_s" not in row:
            continue
        old = medians.get((*(row[k] for k in scenario), row["contender"]))
        if old:
            row["vs_baseline"] = row["msgs_per_s"]["median"] / old


def alternate_pairs(items: Sequence[T], is_pair: Callable[[T, T], bool], round_no: int) -> list[T]:
    """Return ``items`` for round ``round_no``: on odd rounds each pair's members swap.

    ``is_pair(a, b)`` says that ``b`` is the baseline twin right after ``a``.
    Alternating who goes first cancels an order effect (a warm cache, a CPU
    clock still ramping up) that would otherwise favour one side every round.
    """
    out = list(items)
    if round_no % 2 == 0:
        return out
    i = 1
    while i < len(out):
        if is_pair(out[i - 1], out[i]):
            out[i - 1], out[i] = out[i], out[i - 1]
            i += 2
        else:
            i += 1
    return out

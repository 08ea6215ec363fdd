"""Progress and the closing summary of a long send.

On a terminal (stderr) a tqdm bar shows the count, the rate and the time
left; reply lines are written above it. Elsewhere (a log file, CI) plain
``progress:`` lines go to stderr at each tenth of the way and at least every
``interval`` seconds, for sends of at least ``PLAIN_MINIMUM`` messages.
``-q`` turns both off. Everything here goes to stderr: stdout carries only
the per-message results, for scripts.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import IO, Any, Final

import click
from tqdm import tqdm

#: Below this many messages the plain (non-terminal) progress lines are noise.
PLAIN_MINIMUM: Final = 50


def _size(stream: IO[str]) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return 0, 0
    return size.columns, size.lines


def _rate(count: int, seconds: float) -> str:
    if seconds <= 0:
        return "- msg/s"
    rate = count / seconds
    return f"{rate:,.0f} msg/s" if rate >= 10 else f"{rate:.2g} msg/s"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A progress display for ``total`` messages (``None``: unknown).

    Args:
        total: How many messages will be handled.
        quiet: Show nothing.
        stream: Where the display goes (stderr).
        interval: Seconds between plain progress lines at most.
        label: What is counted ("sent", "queued", "delivered").
    """

    def __init__(
        self,
        total: int | None,
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        interval: float = 5.0,
        label: str = "sent",
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.label = label
        self.done = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._next_step = 1
        self._bar: Any = None
        self._plain = False
        if quiet:
            return
        if self.stream.isatty():
            # A terminal that reports no size (a bare pseudo-terminal) would
            # get no bar from tqdm: give it 80 columns and 24 lines.
            width: dict[str, Any] = (
                {"dynamic_ncols": True}
                if min(_size(self.stream)) > 0
                else {"ncols": 80, "nrows": 24}
            )
            self._bar = tqdm(
                total=total,
                unit="msg",
                file=self.stream,
                desc=label,
                leave=False,
                mininterval=0.2,
                **width,
            )
        else:
            self._plain = total is None or total >= PLAIN_MINIMUM

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.started

    def advance(self, count: int = 1) -> None:
        """``count`` more messages are done."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self._plain:
            self._maybe_line()

    def set_done(self, done: int) -> None:
        """Set the count (for progress read from elsewhere, such as the queue)."""
        if done > self.done:
            self.advance(done - self.done)

    def _maybe_line(self) -> None:
        now = time.monotonic()
        step_reached = False
        if self.total:
            step = self.done * 10 // self.total
            if step >= self._next_step:
                self._next_step = step + 1
                step_reached = True
        if not step_reached and now - self._last_line < self.interval:
            return
        self._last_line = now
        elapsed = now - self.started
        if self.total:
            left = self.total - self.done
            eta = left * elapsed / self.done if self.done else 0.0
            text = (
                f"progress: {self.label} {self.done:,}/{self.total:,} "
                f"({100 * self.done // self.total}%), {_rate(self.done, elapsed)}, "
                f"{_duration(eta)} left"
            )
        else:
            text = f"progress: {self.label} {self.done:,}, {_rate(self.done, elapsed)}"
        click.echo(text, file=self.stream)

    def echo(self, line: str, *, err: bool = False) -> None:
        """Print a line (a reply, a warning) without breaking the bar."""
        if self._bar is not None:
            self._bar.clear()
            click.echo(line, err=err)
            self._bar.refresh()
        else:
            click.echo(line, err=err)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def summary(counts: Counter[str], elapsed: float, sent: int) -> str:
    """``12 messages in 0.4 s (30 msg/s): AA 10, AE 1, no reply 1``."""
    parts = ", ".join(f"{key} {value:,}" for key, value in counts.items() if value)
    if sent == 0:
        return f"no message sent ({parts})" if parts else "no message sent"
    return f"{sent:,} message(s) in {_duration(elapsed)} ({_rate(sent, elapsed)})" + (
        f": {parts}" if parts else ""
    )


#: Files at least this large (in messages) get progress lines while processed.
FILE_PROGRESS_MINIMUM = 1000


class FileProgress:
    """Progress lines while batch files are processed: one per tenth of a large file.

    ``update`` is the ``on_progress`` callback of the folder watcher and the
    remote puller; ``finished`` forgets a file once its report is out.
    """

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet
        self._shown: dict[str, int] = {}

    def update(self, name: str, done: int, total: int) -> None:
        """Print a line when ``name`` passes another tenth of its ``total`` messages."""
        if self._quiet or total < FILE_PROGRESS_MINIMUM:
            return
        tenth = done * 10 // total
        if tenth <= self._shown.get(name, 0):
            return
        self._shown[name] = tenth
        click.echo(f"progress: {name} {done:,}/{total:,} ({tenth * 10}%)", err=True)

    def finished(self, name: str) -> None:
        """Forget ``name`` (processed again later, it starts from zero)."""
        self._shown.pop(name, None)

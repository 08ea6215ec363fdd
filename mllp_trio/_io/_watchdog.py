"""The one timeout mechanism of a connection: a deadline kept by one sleeping task."""

from __future__ import annotations

import enum
import math

import trio

__all__ = ["Expiry", "Watchdog"]


class Expiry(enum.Enum):
    """Why a connection's deadline passed."""

    HANDSHAKE = "TLS handshake timed out"
    IDLE = "timed out waiting for the next message"
    FRAME = "timed out waiting for the frame to complete"
    WRITE = "timed out writing to the peer"
    ACK = "no acknowledgement within the ACK timeout"
    CONNECT = "timed out connecting"

    def __str__(self) -> str:
        return self.value


class Watchdog:
    """Deadlines for one connection, kept by one sleeping task.

    A cancel scope per read or write costs several microseconds; a
    connection answering thousands of messages a second instead moves one
    number (:meth:`arm_at`), and :meth:`run`, started in the connection's
    nursery, cancels the armed scope once the number is passed.

    Poll invariant: the task looks at the deadline at least every ``poll``
    seconds and never before it, so an expiry is noticed no earlier than the
    deadline and at most ``poll`` after it, however the deadline moved while
    the task slept. ``poll`` is therefore at most the shortest timeout in
    use; :meth:`arm` refuses a shorter timeout rather than overshoot it.

    With a task, after :meth:`disarm` the connection's scope is the target
    again: a hot loop may then set :attr:`deadline` and :attr:`reason`
    itself (two stores instead of a call) and set :attr:`deadline` back to
    ``math.inf`` to disarm.

    Without a task (``poll=None``, the client's way: one exchange at a time,
    no nursery of its own), the same calls put the deadline on the scope
    itself and Trio enforces it; :attr:`expired` then tells the reason once
    the scope was cancelled at the deadline.

    Args:
        scope: Cancelled when a deadline passes, unless :meth:`arm_at` names
            another scope for that deadline.
        poll: Longest sleep between looks at the deadline, in seconds, or
            ``None`` for direct mode (no :meth:`run` task).
    """

    def __init__(self, scope: trio.CancelScope, *, poll: float | None) -> None:
        if poll is not None and not poll > 0:
            raise ValueError(f"poll must be positive, got {poll!r}")
        self.scope = scope
        self.poll = poll
        self.deadline = math.inf
        self.reason = Expiry.IDLE
        self._target = scope
        #: What timed out, once the watchdog fired (``None`` until then).
        self.expired: Expiry | None = None

    def arm(self, timeout: float | None, reason: Expiry) -> None:
        """Start a deadline ``timeout`` seconds from now (``None``: none)."""
        if timeout is None:
            self.disarm()
            return
        if self.poll is not None and timeout < self.poll:
            raise ValueError(f"timeout {timeout} is shorter than the watchdog's poll {self.poll}")
        self.arm_at(trio.current_time() + timeout, reason)

    def arm_at(
        self, deadline: float, reason: Expiry, scope: trio.CancelScope | None = None
    ) -> None:
        """Start an absolute deadline; ``scope`` (default: the connection's) is cancelled at it."""
        target = self.scope if scope is None else scope
        if self.poll is None and (deadline != self.deadline or target is not self._target):
            # Trio re-files a scope in its deadline heap on every change:
            # only a new deadline is worth it.
            target.deadline = deadline
        self.deadline = deadline
        self.reason = reason
        self._target = target

    def disarm(self) -> None:
        """No deadline until the next :meth:`arm`.

        Direct mode leaves the scope's deadline in place until the next arm:
        the scope guards one exchange and ends with it, so moving the
        deadline back and forth would only cost time.
        """
        if self.poll is not None:
            self.deadline = math.inf
            self._target = self.scope

    def retarget(self, scope: trio.CancelScope) -> None:
        """Direct mode: guard ``scope`` from now on (one per exchange); clears :attr:`expired`."""
        self.scope = self._target = scope
        self.deadline = math.inf
        self.expired = None

    def check(self) -> Expiry | None:
        """Direct mode: the reason, if the armed deadline cancelled its scope.

        Call after leaving the scope; it also records :attr:`expired`.
        """
        fired = self._target.cancelled_caught and trio.current_time() >= self.deadline
        if self.expired is None and fired:
            self.expired = self.reason
        return self.expired

    async def run(self) -> None:
        """Sleep until a deadline passes, cancel its scope, and go on watching."""
        poll = self.poll
        if poll is None:
            raise RuntimeError("a direct-mode Watchdog (poll=None) has no task to run")
        while True:
            now = trio.current_time()
            if now >= self.deadline:
                self.expired = self.reason
                self.deadline = math.inf
                self._target.cancel()
                if self._target is self.scope:
                    return
                continue
            await trio.sleep_until(min(self.deadline, now + poll))

"""Opening remote sessions, and calling them from Trio with reconnects and backoff."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs
import trio

from mllp_trio.store._base import backoff_delay
from mllp_trio.store._remote._base import (
    RemoteError,
    RemoteOptions,
    RemoteSession,
    RemoteTarget,
)
from mllp_trio.store._remote._url import format_target

__all__ = ["RemoteClient", "RetryPolicy", "open_session"]

log = logging.getLogger("mllp_trio.remote")

T = TypeVar("T")


def open_session(target: RemoteTarget, options: RemoteOptions) -> RemoteSession:
    """Open a blocking session on ``target`` with the backend of its scheme.

    Raises:
        RemoteError: The connection failed (see its ``kind``).
    """
    if target.scheme == "sftp":
        from mllp_trio.store._remote._sftp import connect_sftp

        return connect_sftp(target, options)
    # Imported on use: the FTP backend is its own module (ftplib, TLS).
    module: Any = importlib.import_module("mllp_trio.store._remote._ftps")
    return cast(RemoteSession, module.connect_ftp(target, options))


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a broken connection is retried.

    Attributes:
        retries: Reconnects after a connection failure before giving up on
            the operation (it is tried ``retries + 1`` times). Default 5.
        base: Backoff ceiling of the first retry, in seconds (exponential,
            full jitter, see ``backoff_delay``). Default 1.
        cap: Largest backoff ceiling, in seconds. Default 60.
    """

    retries: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    base: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    cap: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))


class RemoteClient:
    """A remote session used from Trio: opened on demand, one call at a time, reconnected.

    Each call runs in a worker thread. A connection failure (``CONNECTION``)
    closes the session and retries the call on a new one after a backoff,
    up to ``policy.retries`` times; the call must therefore be safe to
    repeat (a download resumes from what the local file holds). Any other
    failure is raised at once.

    Args:
        target: The server and folder.
        options: How to connect and whom to trust.
        policy: Retries and backoff.
        connect: Opens a blocking session (default: :func:`open_session`).
    """

    def __init__(
        self,
        target: RemoteTarget,
        options: RemoteOptions,
        *,
        policy: RetryPolicy | None = None,
        connect: Callable[[RemoteTarget, RemoteOptions], RemoteSession] = open_session,
    ) -> None:
        self.target = target
        self.options = options
        self.policy = policy if policy is not None else RetryPolicy()
        self._connect = connect
        self._session: RemoteSession | None = None
        self._lock = trio.Lock()
        #: Connection failures retried so far.
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """Whether a session is open (False before the first call, and after a failed connect)."""
        return self._session is not None

    @property
    def url(self) -> str:
        """The target as a URL (no secret in it)."""
        return format_target(self.target)

    async def call(self, operation: Callable[[RemoteSession], T], what: str) -> T:
        """Run ``operation(session)`` in a worker thread, reconnecting on connection failures.

        Raises:
            RemoteError: A failure that is not a connection failure, or a
                connection failure after the last retry.
        """
        async with self._lock:
            attempt = 0
            while True:
                try:
                    session = await self._open()
                    return await self._run(operation, session)
                except RemoteError as exc:
                    if not exc.transient:
                        raise
                    await self._drop()
                    if attempt >= self.policy.retries:
                        raise
                    delay = backoff_delay(attempt, base=self.policy.base, cap=self.policy.cap)
                    attempt += 1
                    self.reconnects += 1
                    log.warning(
                        "%s: %s failed (%s); retry %d of %d in %.1f s",
                        self.url,
                        what,
                        exc,
                        attempt,
                        self.policy.retries,
                        delay,
                    )
                    await trio.sleep(delay)

    async def _open(self) -> RemoteSession:
        if self._session is None:
            self._session = await trio.to_thread.run_sync(
                self._connect, self.target, self.options, abandon_on_cancel=True
            )
        return self._session

    async def _run(self, operation: Callable[[RemoteSession], T], session: RemoteSession) -> T:
        try:
            return await trio.to_thread.run_sync(operation, session, abandon_on_cancel=True)
        except trio.Cancelled:
            # The thread may still be in the call: this session is never used
            # again (closing it makes that call fail and end).
            self._session = None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(session.close)
            raise

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(RemoteError):
                await trio.to_thread.run_sync(session.close)

    async def aclose(self) -> None:
        """Close the session, if one is open."""
        with trio.CancelScope(shield=True):
            await self._drop()

"""Readiness checks: each returns ``None`` when fine, or the reason, for ``/readyz``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import attrs

from mllp_trio._server import MLLPServer
from mllp_trio._service._certs import Expiry, expiring

__all__ = ["Readiness", "check_certificates", "check_disk", "check_listening", "check_writable"]


@attrs.frozen
class Readiness:
    """The answer of ``/readyz``.

    Attributes:
        reasons: Why not ready; empty when ready.
    """

    reasons: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        """True when nothing stands in the way."""
        return not self.reasons


def check_listening(servers: Sequence[MLLPServer]) -> str | None:
    """Every listener has open listening sockets."""
    for server in servers:
        if not server.listeners:
            return "not listening yet"
        for listener in server.listeners:
            if listener.socket.fileno() < 0:
                return "listener closed (shutting down)"
    return None


def check_writable(directory: Path) -> str | None:
    """A new file can be created, written, synced and removed in ``directory``.

    That is what SQLite needs for its ``-wal``, ``-shm`` and journal files;
    permission bits alone would say nothing for root, an immutable or
    read-only-mounted directory or a full disk. Blocking; run it in a thread.
    """
    probe = directory / f".ready-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return f"journal directory {directory} is not writable: {exc.strerror or exc}"
    return None


def check_disk(directory: Path, min_free_bytes: int) -> str | None:
    """At least ``min_free_bytes`` are free for an unprivileged writer in ``directory``."""
    try:
        st = os.statvfs(directory)
    except OSError as exc:
        return f"cannot read free space of {directory}: {exc.strerror or exc}"
    free = st.f_bavail * st.f_frsize
    if free < min_free_bytes:
        return (
            f"disk space low in {directory}: {free // 2**20} MiB free, "
            f"below the threshold of {min_free_bytes // 2**20} MiB"
        )
    return None


def check_certificates(
    expiries: Sequence[Expiry], now: datetime, window_seconds: float
) -> list[str]:
    """A reason for each certificate or CRL that expires within the window."""
    return [
        ("expired: " if e.not_after <= now else "expiring soon: ") + e.describe()
        for e in expiring(expiries, now, window_seconds)
    ]

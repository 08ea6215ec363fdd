"""Batch files on remote servers: SFTP and FTPS pickup and drop.

- :mod:`._base`: the contract every backend meets (a blocking
  :class:`RemoteSession`), targets, options, errors.
- :mod:`._sftp` (paramiko) and ``._ftps`` (ftplib): the backends;
  :func:`open_session` picks one by the target's scheme.
- :mod:`._client`: :class:`RemoteClient` calls a session from Trio (worker
  threads, one call at a time) and reconnects with backoff.
- :mod:`._pull`: :class:`RemotePuller`, remote pickup through the folder
  transport and the journal, exactly once.
- :mod:`._push`: :func:`push_file` and :class:`RemoteDestination`, remote
  drop (temporary name, size check, rename).

docs/remote.md describes the design.
"""

from mllp_trio.store._remote._base import (
    RemoteEntry,
    RemoteError,
    RemoteErrorKind,
    RemoteOptions,
    RemoteSession,
    RemoteTarget,
)
from mllp_trio.store._remote._client import RemoteClient, RetryPolicy, open_session
from mllp_trio.store._remote._pull import PullConfig, PullStats, RemotePuller, RemoteReport
from mllp_trio.store._remote._push import (
    PushResult,
    RemoteDestination,
    push_file,
    upload_atomically,
)
from mllp_trio.store._remote._url import format_target, parse_target

__all__ = [
    "PullConfig",
    "PullStats",
    "PushResult",
    "RemoteClient",
    "RemoteDestination",
    "RemoteEntry",
    "RemoteError",
    "RemoteErrorKind",
    "RemoteOptions",
    "RemotePuller",
    "RemoteReport",
    "RemoteSession",
    "RemoteTarget",
    "RetryPolicy",
    "format_target",
    "open_session",
    "parse_target",
    "push_file",
    "upload_atomically",
]

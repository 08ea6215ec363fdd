"""The contract every remote folder backend (SFTP, FTPS, plain FTP) meets.

A backend is a blocking *session* on one server: the pickup and drop code
calls it from a worker thread (``trio.to_thread.run_sync``), one call at a
time per session, so a backend needs no locking of its own. Blocking
clients keep the Trio loop free and let us use the libraries the field
trusts (paramiko, ftplib) as they are meant to be used.

Paths are POSIX strings as the server sees them (``inbox/a.hl7``).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import attrs

from mllp_trio._errors import MLLPError

__all__ = [
    "RemoteEntry",
    "RemoteError",
    "RemoteErrorKind",
    "RemoteOptions",
    "RemoteSession",
    "RemoteTarget",
]


class RemoteErrorKind(enum.Enum):
    """Why a remote operation failed; decides whether retrying can help."""

    #: The server could not be reached, or the connection broke: retry later.
    CONNECTION = "connection"
    #: The server is not who it claims: unknown or changed SSH host key, an
    #: untrusted or mismatching TLS certificate. Never retried.
    TRUST = "trust"
    #: The server refused our credentials. Never retried.
    AUTH = "auth"
    #: No such file or folder.
    NOT_FOUND = "not-found"
    #: The server refused the operation (permissions, quota, name taken...).
    REFUSED = "refused"


class RemoteError(MLLPError):
    """A remote folder operation failed.

    Attributes:
        kind: Why, as a :class:`RemoteErrorKind`.
        transient: Whether a later retry may succeed (only ``CONNECTION``).
    """

    def __init__(self, message: str, *, kind: RemoteErrorKind) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def transient(self) -> bool:
        """Whether retrying later may help."""
        return self.kind is RemoteErrorKind.CONNECTION


@attrs.frozen(kw_only=True)
class RemoteEntry:
    """One regular file in a remote folder listing.

    Attributes:
        name: The file name (no folder part).
        size: Size in bytes.
        mtime: Modification time in seconds since the epoch, as precise as
            the server says (FTP's MLSD/MDTM: whole seconds), or ``None``
            when the server does not tell.
    """

    name: str
    size: int
    mtime: float | None


class RemoteSession(Protocol):
    """A blocking session on one remote server (see the module docstring).

    Every method raises :class:`RemoteError` on failure, never a library's
    own exception, and never leaves a half-written *final* name behind.
    """

    def list_files(self, folder: str) -> list[RemoteEntry]:
        """Return the regular files directly in ``folder`` (no folders, no links)."""

    def download(self, path: str, local: BinaryIO, *, offset: int = 0) -> int:
        """Write ``path``'s bytes from ``offset`` on to ``local``; return how many.

        ``local`` is positioned at ``offset`` by the caller: a download that
        broke off resumes where the staging file ends.
        """

    def upload(self, local: BinaryIO, path: str, *, offset: int = 0) -> int:
        """Write ``local``'s bytes from ``offset`` on to ``path``; return how many.

        With ``offset`` > 0 the remote file is appended to (resume): the
        caller has checked that ``path`` holds exactly ``offset`` bytes.
        """

    def size(self, path: str) -> int | None:
        """Return ``path``'s size in bytes, or ``None`` when it does not exist."""

    def rename(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target``, replacing nothing: fails if ``target`` exists."""

    def delete(self, path: str) -> None:
        """Remove the file ``path`` (not an error if it is already gone)."""

    def makedirs(self, folder: str) -> None:
        """Create ``folder`` and its parents where missing."""

    def close(self) -> None:
        """End the session; safe to call twice."""


Scheme = Literal["sftp", "ftps", "ftp"]


@attrs.frozen(kw_only=True)
class RemoteTarget:
    """Where a remote folder is: the parts of ``sftp://user@host:port/inbox``.

    Attributes:
        scheme: ``"sftp"``, ``"ftps"`` or ``"ftp"`` (plain, insecure).
        host: Server name or address (a name is what TLS checks the certificate against).
        port: TCP port (the scheme's default when the URL names none: 22 for
            SFTP, 21 for FTPS and FTP, 990 for implicit FTPS).
        username: Login name, or ``None`` (the backend's default).
        folder: The folder on the server, as the server sees it (``inbox``,
            ``/data/in``); ``""`` for the login folder.
    """

    scheme: Scheme
    host: str
    port: int
    username: str | None = None
    folder: str = ""


@attrs.frozen(kw_only=True)
class RemoteOptions:
    """How to connect and whom to trust; secure by default.

    Attributes:
        password: Password for password authentication. Default ``None``.
        timeout: Seconds allowed for connecting and for each network
            operation to make progress. Default 30.
        known_hosts: SFTP: the OpenSSH ``known_hosts`` file the server's host
            key must be listed in. Default ``None``: ``~/.ssh/known_hosts``.
        accept_new_host_key: SFTP: trust on first use. A host missing from
            ``known_hosts`` is accepted and its key appended; a *changed*
            key is still refused. Default False (unknown hosts refused).
        identity: SFTP: private key file for key authentication. Default ``None``.
        identity_password: SFTP: passphrase of ``identity``. Default ``None``.
        ca: FTPS: PEM file of the CAs the server certificate must chain to.
            Default ``None``: the system's trust store.
        cert: FTPS: client certificate (PEM, may include the key). Default ``None``.
        key: FTPS: the client certificate's key when not in ``cert``. Default ``None``.
        tls_minimum: FTPS: lowest TLS version, ``"1.2"`` (default) or ``"1.3"``.
        implicit_tls: FTPS: TLS from the first byte (port 990 style) instead
            of explicit ``AUTH TLS``. Default False.
        insecure_plain_ftp: Allow the ``ftp`` scheme (no encryption at all).
            Default False: an ``ftp://`` target is refused.
    """

    password: str | None = attrs.field(default=None, repr=False)
    timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    known_hosts: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    accept_new_host_key: bool = False
    identity: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    identity_password: str | None = attrs.field(default=None, repr=False)
    ca: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    cert: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    key: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    tls_minimum: Literal["1.2", "1.3"] = "1.2"
    implicit_tls: bool = False
    insecure_plain_ftp: bool = False

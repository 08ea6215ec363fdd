"""The SFTP backend: a blocking :class:`RemoteSession` on paramiko.

paramiko is the SSH library the Python field trusts most, and its client is
blocking, which fits the backend contract (one worker thread per call). The
server's host key is checked against an OpenSSH ``known_hosts`` file with a
refusing policy: an unknown host is refused, unless
``RemoteOptions.accept_new_host_key`` pins it on first use (appended to the
file); a *changed* key is refused in every mode.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import logging
import os
import socket
import stat
from pathlib import Path
from typing import BinaryIO, Final, NoReturn

import paramiko

from mllp_trio.store._remote._base import (
    RemoteEntry,
    RemoteError,
    RemoteErrorKind,
    RemoteOptions,
    RemoteTarget,
)

__all__ = ["SFTPSession", "connect_sftp", "default_known_hosts"]

log = logging.getLogger("mllp_trio.remote")

_CHUNK: Final = 1 << 18
#: Downloads are written locally per SFTP request (32 KiB), so a broken
#: connection keeps everything that arrived.
_READ_CHUNK: Final = 1 << 15


def default_known_hosts() -> Path:
    """``~/.ssh/known_hosts``, the file OpenSSH's client reads."""
    return Path("~/.ssh/known_hosts").expanduser()


def _host_label(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _UnknownHost(paramiko.SSHException):
    """The server's host key is not in known_hosts (and first use is not trusted)."""


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHost(hostname)


class _PinOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Trust on first use: append the new host's key to known_hosts."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "host key of %s (%s %s) was not known: trusted on first use and added to %s",
            hostname,
            key.get_name(),
            key.fingerprint,
            self._path,
        )


def connect_sftp(target: RemoteTarget, options: RemoteOptions) -> SFTPSession:
    """Open an SFTP session on ``target`` (blocking).

    Raises:
        RemoteError: ``TRUST`` (unknown or changed host key), ``AUTH``
            (credentials refused), ``CONNECTION`` (unreachable, timed out,
            closed); each message says what to do.
    """
    where = f"{target.host}:{target.port}"
    known_hosts = options.known_hosts or default_known_hosts()
    client = paramiko.SSHClient()
    try:
        try:
            client.load_host_keys(str(known_hosts))
        except FileNotFoundError:
            pass  # no known hosts yet: every host is unknown
        except (OSError, paramiko.SSHException) as exc:
            raise RemoteError(
                f"cannot read the known hosts file {known_hosts}: {exc}; fix or remove it",
                kind=RemoteErrorKind.TRUST,
            ) from None
        if options.accept_new_host_key:
            client.set_missing_host_key_policy(_PinOnFirstUse(known_hosts))
        else:
            client.set_missing_host_key_policy(_RefuseUnknown())
        no_secret = options.password is None and options.identity is None
        client.connect(
            target.host,
            port=target.port,
            username=target.username or getpass.getuser(),
            password=options.password,
            key_filename=str(options.identity) if options.identity is not None else None,
            passphrase=options.identity_password,
            timeout=options.timeout,
            banner_timeout=options.timeout,
            auth_timeout=options.timeout,
            channel_timeout=options.timeout,
            # Without a password or key named, do what ssh does: the agent
            # and the default keys in ~/.ssh.
            allow_agent=no_secret,
            look_for_keys=no_secret,
        )
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(options.timeout)  # type: ignore[union-attr]
    except _UnknownHost:
        client.close()
        raise RemoteError(
            f"host key of {where} is not in {known_hosts}: the server cannot be verified; "
            f"add it (ssh-keyscan -p {target.port} {target.host} >> {known_hosts}, after "
            "checking its fingerprint with the server's administrator) or pass "
            "--accept-new-host-key to trust it on first use",
            kind=RemoteErrorKind.TRUST,
        ) from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise RemoteError(
            f"host key of {where} has CHANGED: the server sent {exc.key.get_name()} "
            f"{exc.key.fingerprint}, {known_hosts} lists another; refused (someone may be "
            f"impersonating the server). If the server's key really changed, remove the old "
            f"line (ssh-keygen -R '{_host_label(target.host, target.port)}' -f {known_hosts}) "
            "and add the new one",
            kind=RemoteErrorKind.TRUST,
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        user = target.username or getpass.getuser()
        raise RemoteError(
            f"{where} refused the login of {user!r} ({exc}); check the user name, the "
            "password (--password-env/--password-file) or the key (--identity)",
            kind=RemoteErrorKind.AUTH,
        ) from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise RemoteError(
            f"the key {options.identity} is encrypted: give its passphrase",
            kind=RemoteErrorKind.AUTH,
        ) from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        if isinstance(exc, OSError) and exc.filename is not None:
            raise RemoteError(
                f"cannot read the key file {exc.filename}: {exc.strerror}",
                kind=RemoteErrorKind.AUTH,
            ) from None
        raise RemoteError(
            f"cannot connect to {where}: {_reason(exc)}", kind=RemoteErrorKind.CONNECTION
        ) from None
    except BaseException:
        client.close()
        raise
    return SFTPSession(client, sftp, where)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class SFTPSession:
    """One SFTP session (see :class:`~mllp_trio.store._remote._base.RemoteSession`)."""

    def __init__(self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient, where: str) -> None:
        self._client = client
        self._sftp = sftp
        self._where = where

    def _fail(self, exc: BaseException, what: str) -> NoReturn:
        transport = self._client.get_transport()
        alive = transport is not None and transport.is_active()
        if not alive or isinstance(exc, (EOFError, socket.timeout, paramiko.SSHException)):
            raise RemoteError(
                f"{self._where}: connection lost while trying to {what}: {_reason(exc)}",
                kind=RemoteErrorKind.CONNECTION,
            ) from None
        number = exc.errno if isinstance(exc, OSError) else None
        if isinstance(exc, FileNotFoundError) or number == errno.ENOENT:
            raise RemoteError(
                f"{self._where}: cannot {what}: no such file or folder",
                kind=RemoteErrorKind.NOT_FOUND,
            ) from None
        if isinstance(exc, PermissionError) or number == errno.EACCES:
            raise RemoteError(
                f"{self._where}: cannot {what}: permission denied", kind=RemoteErrorKind.REFUSED
            ) from None
        raise RemoteError(
            f"{self._where}: cannot {what}: {_reason(exc)}", kind=RemoteErrorKind.REFUSED
        ) from None

    def list_files(self, folder: str) -> list[RemoteEntry]:
        """Return the regular files directly in ``folder``."""
        try:
            entries = self._sftp.listdir_attr(folder or ".")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._fail(exc, f"list {folder or '.'}")
        return [
            RemoteEntry(name=e.filename, size=e.st_size or 0, mtime=e.st_mtime)
            for e in entries
            if e.st_mode is not None and stat.S_ISREG(e.st_mode)
        ]

    def download(self, path: str, local: BinaryIO, *, offset: int = 0) -> int:
        """Write ``path``'s bytes from ``offset`` on to ``local``; return how many."""
        count = 0
        try:
            with self._sftp.open(path, "rb") as remote:
                size = remote.stat().st_size or 0
                remote.seek(offset)
                if size > offset:
                    # Pipelined reads from the current position: far faster than one by one.
                    remote.prefetch(size - offset)
                while True:
                    chunk = remote.read(_READ_CHUNK)
                    if not chunk:
                        break
                    local.write(chunk)
                    count += len(chunk)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            with contextlib.suppress(OSError):
                local.flush()
            self._fail(exc, f"download {path}")
        return count

    def upload(self, local: BinaryIO, path: str, *, offset: int = 0) -> int:
        """Write ``local``'s bytes from ``offset`` on to ``path``; return how many."""
        count = 0
        try:
            with self._sftp.open(path, "r+b" if offset else "wb") as remote:
                remote.set_pipelined(True)
                remote.seek(offset)
                while True:
                    chunk = local.read(_CHUNK)
                    if not chunk:
                        break
                    remote.write(chunk)
                    count += len(chunk)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._fail(exc, f"upload {path}")
        return count

    def size(self, path: str) -> int | None:
        """Return ``path``'s size, or ``None`` when it does not exist."""
        try:
            return self._sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._fail(exc, f"look at {path}")

    def rename(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target``; fails if ``target`` exists (SFTP's own rename)."""
        try:
            self._sftp.rename(source, target)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._fail(exc, f"rename {source} to {target}")

    def delete(self, path: str) -> None:
        """Remove ``path``; nothing happens if it is gone."""
        try:
            self._sftp.remove(path)
        except FileNotFoundError:
            return
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._fail(exc, f"delete {path}")

    def makedirs(self, folder: str) -> None:
        """Create ``folder`` and its missing parents."""
        parts = [p for p in folder.split("/") if p]
        current = "/" if folder.startswith("/") else ""
        for part in parts:
            current = f"{current}{part}" if current in ("", "/") else f"{current}/{part}"
            try:
                self._sftp.stat(current)
                continue
            except FileNotFoundError:
                pass
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self._fail(exc, f"look at {current}")
            try:
                self._sftp.mkdir(current)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                # Made meanwhile by someone else: fine.
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    self._sftp.stat(current)
                    continue
                self._fail(exc, f"create the folder {current}")

    def close(self) -> None:
        """End the session (twice is fine)."""
        with contextlib.suppress(Exception):
            self._sftp.close()
        with contextlib.suppress(Exception):
            self._client.close()

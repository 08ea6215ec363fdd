"""Remote folder URLs: ``sftp://user@host:port/folder`` to a :class:`RemoteTarget` and back."""

from __future__ import annotations

import urllib.parse
from typing import Final, cast

from mllp_trio.store._remote._base import RemoteTarget, Scheme

__all__ = ["DEFAULT_PORTS", "format_target", "parse_target"]

#: The port of each scheme when the URL names none (implicit FTPS: 990).
DEFAULT_PORTS: Final = {"sftp": 22, "ftps": 21, "ftp": 21}
IMPLICIT_FTPS_PORT: Final = 990


def parse_target(url: str, *, implicit_tls: bool = False) -> RemoteTarget:
    """Read ``scheme://[user@]host[:port][/folder]``.

    The folder is taken as the server sees it, relative to the login folder:
    ``sftp://lab@host/inbox`` is ``inbox``; a second slash makes it absolute
    (``sftp://lab@host//data/in`` is ``/data/in``).

    Raises:
        ValueError: Not such a URL, an unknown scheme, or a password in it
            (it would show in ``ps`` and in logs: pass it another way).
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"{url!r}: the URL must start with sftp://, ftps:// or ftp:// (e.g. sftp://lab@host/inbox)"
        )
    if parts.password is not None:
        raise ValueError(
            f"{url!r}: no password in the URL (ps and logs would show it); "
            "give it with --password-env or --password-file"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a folder URL has no ?query nor #fragment")
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r}: no host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
    if port is None:
        port = IMPLICIT_FTPS_PORT if scheme == "ftps" and implicit_tls else DEFAULT_PORTS[scheme]
    elif port == 0:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535")
    folder = urllib.parse.unquote(parts.path)
    folder = folder[1:] if folder.startswith("/") else folder
    folder = folder.rstrip("/") if folder not in ("", "/") else folder
    username = urllib.parse.unquote(parts.username) if parts.username else None
    return RemoteTarget(
        scheme=cast(Scheme, scheme), host=host, port=port, username=username, folder=folder
    )


def format_target(target: RemoteTarget) -> str:
    """The URL of ``target`` (no password: there is none in a target)."""
    user = f"{urllib.parse.quote(target.username, safe='')}@" if target.username else ""
    host = f"[{target.host}]" if ":" in target.host else target.host
    folder = urllib.parse.quote(target.folder, safe="/")
    return f"{target.scheme}://{user}{host}:{target.port}/{folder}"


def join(folder: str, name: str) -> str:
    """``folder/name`` in the server's POSIX paths (``name`` alone for the login folder)."""
    if not folder:
        return name
    return f"{folder.rstrip('/')}/{name}" if folder != "/" else f"/{name}"

"""Write a development CA, server and client certificate for trying mutual TLS locally.

The certificates come from trustme and say "development only" in their
subjects. The CA's private key is never written, so nothing else can be
issued under it: delete the directory and generate again to start over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs
import trustme

from mllp_trio._errors import MLLPError

__all__ = [
    "DEV_CLIENT_NAME",
    "DEV_SERVER_NAMES",
    "DevCertPaths",
    "DevCertsExist",
    "ensure_dev_certs",
    "write_dev_certs",
]

#: Common name and DNS subject alternative name of the development client.
DEV_CLIENT_NAME: Final = "mllp-trio-dev-client"
#: Names the development server certificate is valid for.
DEV_SERVER_NAMES: Final = ("localhost", "127.0.0.1", "::1")

_ORGANIZATION: Final = "mllp-trio DEVELOPMENT ONLY - not for production"


class DevCertsExist(MLLPError, FileExistsError):
    """Development certificate files are already there and overwriting was not asked for."""


@attrs.frozen(kw_only=True)
class DevCertPaths:
    """Where the development certificates are.

    Attributes:
        directory: The directory holding them all.
        ca: ``ca.pem``, the development CA certificate both sides trust.
        server_cert: ``server.pem``, the server certificate for
            ``localhost``, ``127.0.0.1`` and ``::1``.
        server_key: ``server.key``, its private key (mode 0600).
        client_cert: ``client.pem``, the client certificate for
            ``mllp-trio-dev-client``.
        client_key: ``client.key``, its private key (mode 0600).
    """

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> DevCertPaths:
        """The standard file names inside ``directory``.

        Args:
            directory: The certificate directory.

        Returns:
            The paths (the files need not exist).
        """
        directory = Path(directory)
        return cls(
            directory=directory,
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
        )

    def files(self) -> tuple[Path, ...]:
        """All five files, CA first.

        Returns:
            The file paths.
        """
        return (self.ca, self.server_cert, self.server_key, self.client_cert, self.client_key)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    # Write beside the target and rename, so a reader never sees half a file;
    # a key is created 0600 from the start, never readable by others even briefly.
    tmp = path.with_name(f".{path.name}.tmp")
    mode = 0o600 if private else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.chmod(tmp, mode)  # the mode given to open() does not apply to a leftover file
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
        os.replace(tmp, path)
    finally:
        if fd != -1:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def write_dev_certs(directory: Path, *, overwrite: bool = False) -> DevCertPaths:
    """Generate a development CA and a server and client certificate issued by it.

    Args:
        directory: Where to write ``ca.pem``, ``server.pem``, ``server.key``,
            ``client.pem`` and ``client.key``; created if missing.
        overwrite: Replace existing files. Default ``False``: refuse, because
            clients may already trust the existing CA.

    Returns:
        The paths written.

    Raises:
        DevCertsExist: One of the files exists and ``overwrite`` is false.
    """
    paths = DevCertPaths.in_directory(directory)
    if not overwrite:
        existing = [p.name for p in paths.files() if p.exists()]
        if existing:
            raise DevCertsExist(
                f"{', '.join(existing)} already in {os.fspath(paths.directory)!r}; "
                "delete them or ask for overwriting"
            )
    paths.directory.mkdir(parents=True, exist_ok=True)

    ca = trustme.CA(
        organization_name=_ORGANIZATION,
        organization_unit_name="mllp-trio development CA",
    )
    server = ca.issue_cert(
        *DEV_SERVER_NAMES,
        common_name="localhost",
        organization_name=_ORGANIZATION,
        organization_unit_name="mllp-trio development server",
    )
    client = ca.issue_cert(
        DEV_CLIENT_NAME,
        common_name=DEV_CLIENT_NAME,
        organization_name=_ORGANIZATION,
        organization_unit_name="mllp-trio development client",
    )
    # Keys first and the CA last: ensure_dev_certs sees a complete set only
    # once every file is in place.
    _write(paths.server_key, server.private_key_pem.bytes(), private=True)
    _write(paths.client_key, client.private_key_pem.bytes(), private=True)
    _write(paths.server_cert, b"".join(b.bytes() for b in server.cert_chain_pems), private=False)
    _write(paths.client_cert, b"".join(b.bytes() for b in client.cert_chain_pems), private=False)
    _write(paths.ca, ca.cert_pem.bytes(), private=False)
    return paths


def ensure_dev_certs(directory: Path) -> tuple[DevCertPaths, bool]:
    """Generate the development certificates unless they are already there.

    Args:
        directory: The certificate directory.

    Returns:
        The paths, and whether they were created now.

    Raises:
        DevCertsExist: Only some of the files exist: a mixed set could pair
            certificates from different CAs, so nothing is replaced.
    """
    paths = DevCertPaths.in_directory(directory)
    present = [p.exists() for p in paths.files()]
    if all(present):
        return paths, False
    if any(present):
        missing = [p.name for p, ok in zip(paths.files(), present, strict=True) if not ok]
        raise DevCertsExist(
            f"{os.fspath(paths.directory)!r} has an incomplete set of development "
            f"certificates (missing {', '.join(missing)}); delete the directory and run again"
        )
    return write_dev_certs(directory), True

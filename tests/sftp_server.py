"""A real SFTP server on loopback for the tests: asyncssh in a thread of its own.

It serves a folder (chrooted), with a generated host key, password and key
authentication. It can be stopped and started again on the same port with
the same host key, also from inside a transfer: ``drop_after_read`` /
``drop_after_write`` cut every connection once that many bytes went
through, and ``down_for`` keeps the server away that long before it listens
again. ``events`` records opens, renames and removals as the server saw them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh

USER = "lab"
PASSWORD = "s3cret-pass"


class _Files(asyncssh.SFTPServer):
    owner: SFTPTestServer

    def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
        super().__init__(chan, chroot=str(self.owner.root).encode())
        self.generation = self.owner.generation

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        self.owner.events.append(("open", path.decode().lstrip("/")))
        return super().open(path, pflags, attrs)

    async def scandir(self, path: bytes) -> Any:
        async for entry in super().scandir(path):
            yield entry
        # Names a hostile server could list, with the attributes of a real file.
        for name, source in self.owner.extra_names:
            attrs = asyncssh.SFTPAttrs.from_local(os.stat(source))
            yield asyncssh.SFTPName(name, attrs=attrs)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self.owner.events.append(
            ("rename", oldpath.decode().lstrip("/"), newpath.decode().lstrip("/"))
        )
        return super().rename(oldpath, newpath)  # type: ignore[return-value]

    def remove(self, path: bytes) -> None:
        self.owner.events.append(("remove", path.decode().lstrip("/")))
        return super().remove(path)  # type: ignore[return-value]

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        owner = self.owner
        if owner.read_delay:
            # One read at a time: a slow server, even for pipelined requests.
            async with owner._read_lock:
                await asyncio.sleep(owner.read_delay)
        if self.generation != owner.generation:
            # Cut: read requests already queued (pipelined) are not answered
            # either; without this, a loaded machine served the whole file
            # before the cut took effect.
            raise asyncssh.SFTPConnectionLost("the server went away")
        data = super().read(file_obj, offset, size)
        assert isinstance(data, bytes)
        owner.bytes_read += len(data)
        if owner.drop_after_read is not None and owner.bytes_read >= owner.drop_after_read:
            owner.drop_after_read = None
            owner._go_away()
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        owner = self.owner
        if self.generation != owner.generation:
            # Cut: requests that were already buffered must not land either,
            # as with a server that really went away.
            raise asyncssh.SFTPConnectionLost("the server went away")
        if owner.write_delay:
            async with owner._write_lock:
                await asyncio.sleep(owner.write_delay)
        written = super().write(file_obj, offset, data)
        assert isinstance(written, int)
        owner.bytes_written += len(data)
        if owner.drop_after_write is not None and owner.bytes_written >= owner.drop_after_write:
            owner.drop_after_write = None
            owner._go_away()
        return written


class _Auth(asyncssh.SSHServer):
    def __init__(self, owner: SFTPTestServer) -> None:
        self.owner = owner

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.owner._connections.add(conn)
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        if self.owner.client_keys:
            self.conn.set_authorized_keys(
                asyncssh.import_authorized_keys(self.owner.authorized_keys())
            )
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == self.owner.password

    def public_key_auth_supported(self) -> bool:
        return bool(self.owner.client_keys)


class SFTPTestServer:
    """The server; use as a context manager (or ``start``/``stop``)."""

    def __init__(self, root: Path, *, password: str = PASSWORD) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_keys: list[asyncssh.SSHKey] = []
        self.port = 0
        self.events: list[tuple[str, ...]] = []
        self.bytes_read = 0
        self.bytes_written = 0
        self.drop_after_read: int | None = None
        self.drop_after_write: int | None = None
        self.down_for = 0.0
        self.read_delay = 0.0
        self.write_delay = 0.0
        self.drops = 0
        #: ``(name, file)``: ``name`` added to every listing with ``file``'s attributes.
        self.extra_names: list[tuple[bytes, Path]] = []
        self.generation = 0
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._acceptor: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- control

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> None:
        """Listen (on a free port the first time, then on the same one)."""
        self._call(self._listen())

    async def _listen(self) -> None:
        files = type("Files", (_Files,), {"owner": self})
        self._acceptor = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_host_keys=[self.host_key],
            server_factory=lambda: _Auth(self),
            sftp_factory=files,
            allow_scp=False,
            reuse_address=True,
        )
        self.port = self._acceptor.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening and cut every connection."""
        self._call(self._stop())

    async def _stop(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
        # Cut the connections before waiting for the listener: since Python
        # 3.12.1 its wait_closed() also waits for every connection to end.
        for conn in list(self._connections):
            conn.abort()
        self._connections.clear()
        if acceptor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(acceptor.wait_closed(), 5)

    def _go_away(self) -> None:
        """From inside a transfer (the server's loop): cut everything, come back later."""
        self.drops += 1
        self.generation += 1

        async def away() -> None:
            await self._stop()
            await asyncio.sleep(self.down_for)
            await self._listen()

        self._loop.create_task(away())

    def close(self) -> None:
        """Stop for good and end the server's thread."""
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SFTPTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers

    def known_hosts_line(self) -> str:
        """This server's line for an OpenSSH known_hosts file."""
        key = self.host_key.export_public_key().decode().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"

    def write_known_hosts(self, path: Path) -> Path:
        """Write a known_hosts file that trusts this server."""
        path.write_text(self.known_hosts_line())
        return path

    def add_client_key(self, directory: Path) -> Path:
        """Make a client key pair, authorise it, return the private key file."""
        key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_keys.append(key)
        path = directory / f"id_{len(self.client_keys)}"
        key.write_private_key(str(path), format_name="openssh")
        path.chmod(0o600)
        return path

    def authorized_keys(self) -> str:
        return "".join(k.export_public_key().decode() for k in self.client_keys)

    def url(self, folder: str = "inbox", user: str = USER) -> str:
        return f"sftp://{user}@127.0.0.1:{self.port}/{folder}"

    def files(self, folder: str) -> dict[str, bytes]:
        """The regular files in ``folder`` of the served tree, by name."""
        base = self.root / folder
        if not base.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sorted(base.iterdir()) if p.is_file()}


@contextlib.contextmanager
def sftp_server(root: Path, **kwargs: Any) -> Iterator[SFTPTestServer]:
    """A started :class:`SFTPTestServer`, closed at the end."""
    server = SFTPTestServer(root, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.close()


# ------------------------------------------------------------------ test helpers


def batch_file(ids: list[str] | tuple[str, ...], *, count: int | None = None) -> bytes:
    """A batch file (FHS, BHS, one message per control id, BTS, FTS)."""
    from .hl7_samples import make_message

    body = b"".join(make_message(control_id=i) for i in ids)
    n = len(ids) if count is None else count
    return (
        b"FHS|^~\\&|LAB|HOSP|EHR|CLINIC|20240131||lab.hl7||F001\r"
        b"BHS|^~\\&|LAB|HOSP|EHR|CLINIC|20240131||||B001\r" + body + b"BTS|%d\rFTS|1\r" % n
    )


def client_for(
    server: SFTPTestServer,
    known_hosts: Path,
    *,
    folder: str = "inbox",
    password: str = PASSWORD,
    retries: int = 20,
    **options: Any,
) -> Any:
    """A RemoteClient on ``server`` with quick retries (base 50 ms, cap 200 ms)."""
    from mllp_trio.store._remote import RemoteClient, RemoteOptions, RetryPolicy, parse_target

    return RemoteClient(
        parse_target(server.url(folder)),
        RemoteOptions(password=password, known_hosts=known_hosts, timeout=5, **options),
        policy=RetryPolicy(retries=retries, base=0.05, cap=0.2),
    )


def main() -> None:
    """``python -m tests.sftp_server ROOT [--port N] [--known-hosts FILE]``: serve until Ctrl-C.

    For trying ``batch pull``/``batch push`` by hand (README): user ``lab``,
    the password in ``MLLP_TRIO_REMOTE_PASSWORD`` (default ``s3cret-pass``);
    a new host key each start, written to ``--known-hosts``.
    """
    import argparse
    import os
    import time

    parser = argparse.ArgumentParser(prog="python -m tests.sftp_server")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=2222)
    parser.add_argument("--known-hosts", type=Path, default=Path("known_hosts"))
    args = parser.parse_args()
    server = SFTPTestServer(
        args.root, password=os.environ.get("MLLP_TRIO_REMOTE_PASSWORD", PASSWORD)
    )
    server.port = args.port
    server.start()
    server.write_known_hosts(args.known_hosts)
    print(
        f"serving {args.root}/ at {server.url('')} (host key in {args.known_hosts}); Ctrl-C stops",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()

"""Remote drop: files uploaded under a temporary name, verified, then renamed into place.

A reader of the remote folder sees a file under its final name whole or not
at all: the bytes go to ``.NAME.<tag>.part`` (hidden: the puller, and most
pickers, ignore it), the server's size of it is checked against the local
size, and only then is it renamed to ``NAME``. ``<tag>`` is the start of
the content's SHA-256, so a broken upload resumes from what the server
holds of *this* content (the temporary file's size is a prefix length) and
never appends to a stale one. Connection failures are retried with
backoff (:class:`~mllp_trio.store._remote._client.RemoteClient`).

Idempotence after a crash: a final name that already holds a file of the
same content (same size, then the same SHA-256, downloaded to compare) is
taken as this file delivered by the run that crashed between the rename and
recording it (the local file is then only marked sent); other content there
is refused unless ``replace``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Final, Literal, cast

import attrs
import trio

from mllp_trio.store._base import MessageStore, backoff_delay
from mllp_trio.store._files import make_private_dir, move_file
from mllp_trio.store._remote._base import RemoteError, RemoteErrorKind, RemoteSession
from mllp_trio.store._remote._client import RemoteClient
from mllp_trio.store._remote._url import join

__all__ = ["PushResult", "RemoteDestination", "push_file", "upload_atomically"]

log = logging.getLogger("mllp_trio.remote")

_CHUNK: Final = 1 << 20
#: Suffix of the temporary names of uploads in progress.
PART_SUFFIX: Final = ".part"


def is_partial(name: str) -> bool:
    """Whether ``name`` is an upload in progress (or any hidden file): never picked up."""
    return name.startswith(".") or name.endswith(PART_SUFFIX)


def opener(path: Path) -> Callable[[], BinaryIO]:
    """A function opening ``path`` for reading (the caller closes what it returns)."""

    def open_it() -> BinaryIO:
        return open(path, "rb")

    return open_it


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Digest:
    """A writable sink that only hashes what is written (a download compared, not kept)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        pass


def _same_content(session: RemoteSession, path: str, open_source: Callable[[], BinaryIO]) -> bool:
    """Whether the server's ``path`` holds the bytes ``open_source`` gives (SHA-256 of both)."""
    local = hashlib.sha256()
    with open_source() as source:
        while chunk := source.read(_CHUNK):
            local.update(chunk)
    remote = _Digest()
    session.download(path, cast(BinaryIO, remote))
    return remote.hash.digest() == local.digest()


@attrs.frozen(kw_only=True)
class PushResult:
    """What one upload did.

    Attributes:
        path: The final remote path.
        size: Bytes in the file.
        outcome: ``"uploaded"``, or ``"present"`` when the final name held
            a file of that size already (a rerun after a crash).
        resumed_from: Bytes of the temporary file the server held already.
    """

    path: str
    size: int
    outcome: Literal["uploaded", "present"]
    resumed_from: int = 0


async def upload_atomically(
    client: RemoteClient,
    open_source: Callable[[], BinaryIO],
    size: int,
    tag: str,
    folder: str,
    name: str,
    *,
    replace: bool = False,
) -> PushResult:
    """Upload to ``folder/.name.tag.part``, check the size, rename to ``folder/name``.

    Args:
        client: The remote client (retries connection failures).
        open_source: Opens the content for reading (called once per attempt).
        size: The content's size in bytes.
        tag: Names the temporary file; must change when the content does.
        folder: The remote folder.
        name: The final name.
        replace: Replace a file of that name (else a different file there
            is refused).

    Raises:
        RemoteError: The upload failed (after retries for connection failures).
    """
    final = join(folder, name)
    temp = join(folder, f".{name}.{tag}{PART_SUFFIX}")
    resumed = [0]

    def attempt(session: RemoteSession) -> Literal["uploaded", "present"]:
        existing = session.size(final)
        if existing is not None and not replace:
            # The same size is not enough: a different file of that size
            # (yesterday's batch under the same name) would be taken as
            # delivered and this one marked sent without ever arriving.
            if existing == size and _same_content(session, final, open_source):
                session.delete(temp)
                return "present"
            raise RemoteError(
                f"{final} exists on the server with other content ({existing:,} bytes, this "
                f"file has {size:,}); not replaced (give another name, or replace it)",
                kind=RemoteErrorKind.REFUSED,
            )
        done = session.size(temp) or 0
        if done > size:
            session.delete(temp)
            done = 0
        if done:
            resumed[0] = max(resumed[0], done)
        if done < size or size == 0:
            with open_source() as source:
                source.seek(done)
                session.upload(source, temp, offset=done)
        held = session.size(temp)
        if held != size:
            session.delete(temp)
            raise RemoteError(
                f"{temp} holds {held} bytes after the upload, not {size}; removed, nothing "
                "renamed into place (retry the upload)",
                kind=RemoteErrorKind.REFUSED,
            )
        if existing is not None:
            session.delete(final)
        session.rename(temp, final)
        return "uploaded"

    outcome = await client.call(attempt, f"upload of {final}")
    return PushResult(path=final, size=size, outcome=outcome, resumed_from=resumed[0])


async def push_file(
    client: RemoteClient,
    source: str | os.PathLike[str],
    *,
    folder: str | None = None,
    name: str | None = None,
    replace: bool = False,
    done_marker: str | None = None,
    sent_dir: str | os.PathLike[str] | None = None,
) -> PushResult:
    """Upload a local file atomically; then mark it sent (moved to ``sent_dir``) if asked.

    Args:
        client: The remote client.
        source: The local file.
        folder: The remote folder (default: the target's).
        name: The remote name (default: the local one).
        replace: Replace a different file of that name on the server.
        done_marker: Also write an empty ``NAME<marker>`` after the file.
        sent_dir: Move the local file here once the rename is done (the
            "sent" mark: it happens only after the file is in place).

    Raises:
        RemoteError: The upload failed; the local file is where it was.
        OSError: The local file could not be read, or not moved.
    """
    path = Path(source)
    final = name or path.name
    if not final or "/" in final or final.startswith("."):
        raise ValueError(f"{final!r}: a plain file name, not hidden")
    where = client.target.folder if folder is None else folder
    size = (await trio.to_thread.run_sync(path.stat)).st_size
    tag = (await trio.to_thread.run_sync(_sha256, path))[:12]
    try:
        result = await upload_atomically(
            client, opener(path), size, tag, where, final, replace=replace
        )
    except RemoteError as exc:
        if exc.kind is not RemoteErrorKind.NOT_FOUND:
            raise
        raise RemoteError(
            f"the folder {where or '.'!r} does not exist on {client.url} ({exc}): check the "
            "folder in the URL; nothing was uploaded",
            kind=RemoteErrorKind.NOT_FOUND,
        ) from None
    if done_marker is not None:
        marker = join(where, final + done_marker)
        await client.call(lambda s: s.upload(io.BytesIO(b""), marker), f"upload of {marker}")
    if sent_dir is not None:
        sent = Path(sent_dir)

        def mark() -> None:
            make_private_dir(sent)
            target = path.name
            n = 0
            while (sent / target).exists():
                n += 1
                target = f"{path.name}.{n}"
            move_file(path, sent, target)

        await trio.to_thread.run_sync(mark)
    log.info("%s -> %s (%s, %d bytes)", path, result.path, result.outcome, size)
    return result


class RemoteDestination:
    """A remote folder as a destination of the outbound queue (SFTP, FTPS).

    The remote counterpart of :class:`~mllp_trio.store.FolderDestination`:
    messages enqueued with ``store.enqueue(destination.name, data)`` become
    one file each (``<queue id>.hl7``), uploaded atomically; a message is
    marked sent only after its file was renamed into place. A failed upload
    is recorded as a failed attempt with a backoff, and delivery stops
    until the next call.

    Args:
        client: The remote client (target folder, credentials, retries).
        suffix: Suffix of the files. Default ``".hl7"``.
        done_marker: Also write an empty ``NAME<marker>`` after each file.
    """

    def __init__(
        self, client: RemoteClient, *, suffix: str = ".hl7", done_marker: str | None = None
    ) -> None:
        self.client = client
        self.suffix = suffix
        self.done_marker = done_marker

    @property
    def name(self) -> str:
        """The destination name in the outbound queue: the target's URL."""
        return self.client.url

    async def write(self, data: bytes, name: str, *, replace: bool = False) -> PushResult:
        """Upload ``data`` as the file ``name`` in the target folder, atomically."""
        folder = self.client.target.folder
        tag = hashlib.sha256(data).hexdigest()[:12]
        result = await upload_atomically(
            self.client, lambda: io.BytesIO(data), len(data), tag, folder, name, replace=replace
        )
        if self.done_marker is not None:
            marker = join(folder, name + self.done_marker)
            await self.client.call(
                lambda s: s.upload(io.BytesIO(b""), marker), f"upload of {marker}"
            )
        return result

    async def deliver_pending(self, store: MessageStore) -> int:
        """Upload the queued messages of this destination; return how many.

        A file already on the server under a message's name with its content
        (a crash between the rename and ``mark_sent``) counts as delivered:
        at least once, never a partial file.
        """
        written = 0
        while True:
            head = await store.fetch_next(self.name)
            if head is None:
                return written
            try:
                await self.write(head.data, f"{head.message_id:012d}{self.suffix}")
            except RemoteError as exc:
                delay = backoff_delay(head.attempts)
                await store.mark_attempt(
                    head.message_id,
                    f"remote {exc.kind.value}: {exc}",
                    datetime.now(UTC) + timedelta(seconds=delay),
                )
                log.error("cannot upload to %s: %s", self.name, exc)
                return written
            await store.mark_sent(head.message_id)
            written += 1

    async def run(
        self,
        store: MessageStore,
        *,
        poll_interval: float = 5.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver this destination's queue for ever."""
        task_status.started()
        try:
            while True:
                await self.deliver_pending(store)
                await trio.sleep(poll_interval)
        finally:
            with contextlib.suppress(RemoteError):
                await self.client.aclose()

"""Durable file operations: atomic writes, moves and fsyncs (blocking; run them in a thread).

Every file that another program may pick up is written under a temporary
name in its final folder (``.NAME.<random>.tmp``: hidden, and ignored by the
folder watcher), fsynced, renamed to its final name in one step, and the
folder fsynced, so that a reader sees either nothing or the whole file, and
a crash leaves at worst a stray temporary file, never a partial one under
the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final

__all__ = [
    "TEMP_SUFFIX",
    "AtomicFile",
    "atomic_write",
    "copy_chunks",
    "free_name",
    "fsync_dir",
    "is_temporary",
    "move_file",
    "remove_stale_temporaries",
]

#: Temporary files end with this and start with a dot.
TEMP_SUFFIX: Final = ".tmp"
_CHUNK: Final = 1 << 20


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a hidden or temporary file that nobody should pick up."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIX)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new name in ``directory`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows: directories cannot be opened, renames are durable anyway
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(directory: Path, name: str) -> Path:
    return directory / f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _link_or_rename(temp: Path, final: Path, *, replace: bool) -> None:
    if replace:
        os.replace(temp, final)
        return
    try:
        # link() fails if the name exists: a no-replace rename in two steps.
        os.link(temp, final)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "file exists", str(final)) from None
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # No hard links on this file system: check, then rename.
        if final.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(final)) from None
        os.rename(temp, final)
        return
    os.unlink(temp)


class AtomicFile:
    """A file written under a temporary name and renamed to its final name on commit.

    Blocking calls; in Trio run them with ``trio.to_thread.run_sync``.

    Args:
        directory: The folder; it must exist.
        name: The final file name.
        replace: Replace an existing file of that name on commit (else
            :meth:`commit` raises ``FileExistsError`` and removes the
            temporary file).
        fsync: Flush the file and the folder to the disk on commit.

    Raises:
        OSError: The temporary file cannot be created.
    """

    def __init__(self, directory: Path, name: str, *, replace: bool = True, fsync: bool = True):
        self.directory = directory
        self.name = name
        self.replace = replace
        self.fsync = fsync
        self.size = 0
        self._temp = _temp_path(directory, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        # 0600 whatever the umask: these files hold patient data.
        self._file = os.fdopen(os.open(self._temp, flags, 0o600), "wb")

    def write(self, data: bytes) -> None:
        """Append ``data``.

        Raises:
            OSError: No space, file too large, I/O error (call :meth:`abort`).
        """
        self._file.write(data)
        self.size += len(data)

    def commit(self) -> Path:
        """Flush, fsync, and give the file its final name; return the final path.

        Raises:
            OSError: Flushing or renaming failed; the temporary file is removed.
        """
        final = self.directory / self.name
        try:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            _link_or_rename(self._temp, final, replace=self.replace)
        except BaseException:
            self.abort()
            raise
        if self.fsync:
            fsync_dir(self.directory)
        return final

    def abort(self) -> None:
        """Close and remove the temporary file (never raises)."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._temp)


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` and its parents if missing; a new one gets mode 0700 (patient data)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def atomic_write(
    directory: Path,
    name: str,
    chunks: Iterable[bytes],
    *,
    replace: bool = True,
    fsync: bool = True,
) -> Path:
    """Write a file so that it appears under ``name`` whole or not at all.

    Args:
        directory: The folder; it must exist.
        name: The final file name.
        chunks: The content, in pieces.
        replace: Replace an existing file of that name (else raise
            ``FileExistsError`` and leave both files as they were).
        fsync: Flush the file and the folder to the disk.

    Returns:
        The final path.

    Raises:
        OSError: Writing failed (no space, read-only folder, permissions);
            the temporary file is removed and nothing appears under ``name``.
    """
    file = AtomicFile(directory, name, replace=replace, fsync=fsync)
    try:
        for chunk in chunks:
            file.write(chunk)
    except BaseException:
        file.abort()
        raise
    return file.commit()


def copy_chunks(source: Path) -> Iterable[bytes]:
    """The content of ``source`` in 1 MiB pieces (for :func:`atomic_write`)."""
    with open(source, "rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def free_name(directory: Path, name: str, *, also: Iterable[str] = ()) -> str:
    """``name``, or ``name.1``, ``name.2``... whichever is free in ``directory``.

    Args:
        directory: The folder.
        name: The wanted name.
        also: Suffixes that must be free too (``".ack"``: the file's
            acknowledgement batch goes beside it).
    """
    suffixes = ("", *also)
    candidate, n = name, 0
    while any((directory / (candidate + s)).exists() for s in suffixes):
        n += 1
        candidate = f"{name}.{n}"
    return candidate


def move_file(source: Path, directory: Path, name: str) -> Path:
    """Move ``source`` to ``directory/name`` durably, never replacing a file there.

    A rename when both are on one file system; else an atomic copy, then the
    source is removed. Both folders are fsynced.

    Returns:
        The new path.

    Raises:
        FileExistsError: ``directory/name`` exists.
        OSError: The move failed; the source is still in place.
    """
    final = directory / name
    if final.exists():
        raise FileExistsError(errno.EEXIST, "file exists", str(final))
    try:
        os.rename(source, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_write(directory, name, copy_chunks(source), replace=False)
        os.unlink(source)
    fsync_dir(directory)
    fsync_dir(source.parent)
    return final


def remove_stale_temporaries(directory: Path, prefix: str) -> int:
    """Remove our temporary files left in ``directory`` by a crash; return how many.

    Only those of final names starting with ``prefix``: another writer's
    temporary file in a shared folder may be in use.
    """
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith("." + prefix) and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed

"""The folder watcher in a separate process: SIGKILL mid-file, a read-only and a full done/ folder.

Each scenario runs a small watcher program (``WORKER`` below) with the real
store and ``JournalProcessor``; its handler appends every control id it is
given to a log file (flushed before it returns), and the test reads that
log and the journal afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .hl7_samples import make_message

WORKER = r"""
import json, resource, sys
import trio
from mllp_trio.store import JournalProcessor, open_sqlite_store
from mllp_trio.store._folder import FolderConfig, FolderWatcher

mode, journal, inbox, log_path = sys.argv[1:5]

async def main():
    log = open(log_path, "a")

    async def handler(message):
        log.write(message.control_id + "\n")
        log.flush()
        if mode == "run":
            print(message.control_id, flush=True)

    limited = []

    def on_progress(name, done, total):
        # "full": the disk fills up once every message is committed, just
        # before the acknowledgement batch is written.
        if mode == "full" and done == total and not limited:
            resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
            limited.append(True)

    async with open_sqlite_store(journal) as store:
        config = FolderConfig(stable_seconds=0, checkpoint_every=25, retry_interval=0.01)
        watcher = FolderWatcher(
            inbox, store, JournalProcessor(store, handler), config=config,
            on_progress=on_progress,
        )
        if mode == "run":
            stats = await watcher.run(once=True)
            print("STATS", stats.files_done, stats.messages, flush=True)
            return
        for attempt in range(2):
            report = await watcher.process_file("lab.hl7")
            if limited:
                resource.setrlimit(
                    resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
                )
            print(json.dumps({"outcome": report.outcome, "reason": report.reason}), flush=True)
            if mode == "ro":
                return

trio.run(main)
"""


def batch(n: int) -> bytes:
    body = b"".join(make_message(control_id=f"C{i:05d}") for i in range(n))
    return b"BHS|^~\\&|LAB|HOSP\r" + body + b"BTS|%d\r" % n


def start(tmp_path: Path, mode: str, *prefix: str) -> subprocess.Popen[str]:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    args = [sys.executable, str(worker), mode]
    args += [str(tmp_path / "journal"), str(tmp_path / "inbox"), str(tmp_path / "handled.log")]
    return subprocess.Popen(
        [*prefix, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.splitlines()


def journal_ids(tmp_path: Path) -> list[str]:
    db = sqlite3.connect(tmp_path / "journal" / "journal.sqlite3")
    try:
        return [row[0] for row in db.execute("SELECT control_id FROM inbound ORDER BY id")]
    finally:
        db.close()


def handled(tmp_path: Path) -> list[str]:
    return (tmp_path / "handled.log").read_text().split()


def drop(tmp_path: Path, n: int) -> list[str]:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "lab.hl7").write_bytes(batch(n))
    return [f"C{i:05d}" for i in range(n)]


@pytest.mark.slow
def test_sigkill_mid_file_then_restart_loses_nothing_and_delivers_nothing_twice(
    tmp_path: Path,
) -> None:
    ids = drop(tmp_path, 200)
    proc = start(tmp_path, "run")
    assert proc.stdout is not None
    for _ in range(70):  # mid-file, between two checkpoints (every 25)
        assert proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert (tmp_path / "inbox" / "lab.hl7").exists()
    first = handled(tmp_path)
    assert 70 <= len(first) < 200

    lines = finish(start(tmp_path, "run"))
    assert lines[-1].startswith("STATS 1 ")
    assert journal_ids(tmp_path) == ids  # every message once, in file order
    seen = handled(tmp_path)
    assert sorted(set(seen)) == ids
    # Only the message whose handler was running at the kill may run again.
    assert len(seen) - len(ids) <= 1
    done = tmp_path / "inbox" / "done"
    assert (done / "lab.hl7").read_bytes() == batch(200)
    assert (done / "lab.hl7.ack").read_bytes().count(b"MSA|AA|") == 200


def test_full_done_folder_defers_the_move_and_never_processes_twice(tmp_path: Path) -> None:
    """RLIMIT_FSIZE: a file system refusing to grow files (EFBIG), as a full disk would."""
    ids = drop(tmp_path, 30)
    lines = finish(start(tmp_path, "full"))
    first, second = (json.loads(line) for line in lines)
    assert first["outcome"] == "deferred"
    assert "File too large" in first["reason"], first["reason"]
    assert "30 message(s) are committed" in first["reason"]
    assert second["outcome"] == "done", second["reason"][-200:]
    assert handled(tmp_path) == ids
    assert journal_ids(tmp_path) == ids
    done = tmp_path / "inbox" / "done"
    assert sorted(p.name for p in done.iterdir()) == ["lab.hl7", "lab.hl7.ack"]


def _read_only_prefix(done: Path) -> list[str] | None:
    """How to run the worker with ``done`` read-only, or None when this machine cannot."""
    if os.geteuid() != 0:
        done.chmod(0o555)
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [
            unshare,
            "-rm",
            "sh",
            "-c",
            f"mount --bind {done} {done} && mount -o remount,bind,ro {done}",
        ],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    script = f'mount --bind "{done}" "{done}" && mount -o remount,bind,ro "{done}" && exec "$@"'
    return [unshare, "-rm", "sh", "-c", script, "sh"]


def test_read_only_done_folder_leaves_the_file_and_a_later_run_only_moves_it(
    tmp_path: Path,
) -> None:
    ids = drop(tmp_path, 30)
    done = tmp_path / "inbox" / "done"
    done.mkdir()
    prefix = _read_only_prefix(done)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here (root without unshare)")
    try:
        (result,) = finish(start(tmp_path, "ro", *prefix))
    finally:
        done.chmod(0o755)
    first = json.loads(result)
    assert first["outcome"] == "deferred"
    assert str(done) in first["reason"]
    assert "30 message(s) are committed and will not be processed again" in first["reason"]
    assert (tmp_path / "inbox" / "lab.hl7").exists() and list(done.iterdir()) == []

    lines = finish(start(tmp_path, "run"))
    assert lines[-1] == "STATS 1 0"  # moved, nothing processed again
    assert handled(tmp_path) == ids
    assert journal_ids(tmp_path) == ids
    assert (done / "lab.hl7.ack").read_bytes().count(b"MSA|AA|") == 30

"""Remote pickup over SFTP against a real asyncssh server on loopback (no mocks).

The puller runs in-process with the real journal and ``JournalProcessor``;
the server is stopped mid-download in one case. The SIGKILL case runs
``mllp-trio batch pull`` as a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from mllp_trio._batch import Message, iter_events
from mllp_trio._hl7 import HL7Error, InboundMessage
from mllp_trio.store import JournalProcessor, open_sqlite_store
from mllp_trio.store._remote import PullConfig, RemoteError, RemoteErrorKind, RemotePuller
from mllp_trio.store._sqlite import SQLiteStore

from .sftp_server import PASSWORD, SFTPTestServer, batch_file, client_for, sftp_server


class Recorder:
    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.seen: list[str] = []
        self.refuse = set(refuse)

    async def __call__(self, message: InboundMessage) -> None:
        self.seen.append(message.control_id)
        if message.control_id in self.refuse:
            raise HL7Error("unknown patient", code=204)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SFTPTestServer]:
    with sftp_server(tmp_path / "served") as srv:
        (srv.root / "inbox").mkdir()
        yield srv


@pytest.fixture
def known_hosts(tmp_path: Path, server: SFTPTestServer) -> Path:
    return server.write_known_hosts(tmp_path / "known_hosts")


@asynccontextmanager
async def puller_for(
    tmp_path: Path,
    server: SFTPTestServer,
    known_hosts: Path,
    handler: Recorder,
    client: Any = None,
    **config: Any,
) -> AsyncIterator[tuple[RemotePuller, SQLiteStore]]:
    async with open_sqlite_store(tmp_path / "journal") as store:
        cfg = PullConfig(**{"stable_seconds": 0, "poll_interval": 0.05, **config})
        puller = RemotePuller(
            client or client_for(server, known_hosts),
            tmp_path / "staging",
            store,
            JournalProcessor(store, handler),
            config=cfg,
        )
        yield puller, store


def ack_codes(data: bytes) -> list[tuple[str, str]]:
    out = []
    for event in iter_events(io.BytesIO(data)):
        if isinstance(event, Message):
            msa = next(s for s in event.raw.split(b"\r") if s.startswith(b"MSA"))
            fields = msa.split(b"|")
            out.append((fields[1].decode(), fields[2].decode()))
    return out


def journal_ids(tmp_path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(tmp_path / "journal" / "journal.sqlite3")) as db:
        return [row[0] for row in db.execute("SELECT control_id FROM inbound ORDER BY id")]


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


async def test_several_files_are_picked_up_each_once_and_moved_to_done(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    files = {f"lab{n}.hl7": batch_file(ids(f"F{n}-", 3)) for n in range(3)}
    for name, data in files.items():
        (server.root / "inbox" / name).write_bytes(data)
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler) as (puller, store):
        stats = await puller.run(once=True)
        assert (stats.files_done, stats.files_error, stats.messages) == (3, 0, 9)
        assert await store.count() == 9
    assert sorted(handler.seen) == sorted(i for n in range(3) for i in ids(f"F{n}-", 3))
    assert server.files("inbox") == {}
    done = server.files("inbox/done")
    for name, data in files.items():
        assert done[name] == data
        assert [code for code, _ in ack_codes(done[name + ".ack"])] == ["AA"] * 3
    # Nothing of the patient data stays in staging once the server has it.
    staging = tmp_path / "staging"
    assert not [p for p in staging.rglob("*") if p.is_file()]


async def test_a_file_still_growing_is_not_taken_until_stable(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    path = server.root / "inbox" / "lab.hl7"
    whole = batch_file(ids("G", 4))
    path.write_bytes(whole[:150])
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler) as (puller, _):
        assert await puller.scan() == ([], 1)  # first seen
        with open(path, "ab") as f:
            f.write(whole[150:300])
        assert await puller.scan() == ([], 1)  # it changed: not stable
        with open(path, "ab") as f:
            f.write(whole[300:])
        assert await puller.scan() == ([], 1)  # changed again
        assert handler.seen == []
        reports, waiting = await puller.scan()  # unchanged across two listings
        assert [(r.name, r.outcome, r.messages) for r in reports] == [("lab.hl7", "done", 4)]
        assert waiting == 0
    assert handler.seen == ids("G", 4)


async def test_stable_seconds_and_hidden_uploads(
    tmp_path: Path,
    server: SFTPTestServer,
    known_hosts: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Uploads in progress (hidden, .part) are never taken; a file waits
    # stable_seconds after it stopped changing (Trio's clock).
    (server.root / "inbox" / ".lab.hl7.abc.part").write_bytes(batch_file(["H1"]))
    (server.root / "inbox" / "x.part").write_bytes(batch_file(["H2"]))
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["H3"]))
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler, stable_seconds=60) as (
        puller,
        _,
    ):
        assert await puller.scan() == ([], 1)
        await trio.sleep(30)
        assert await puller.scan() == ([], 1)
        await trio.sleep(31)
        reports, _ = await puller.scan()
        assert [r.name for r in reports] == ["lab.hl7"]
    assert handler.seen == ["H3"]
    assert set(server.files("inbox")) == {".lab.hl7.abc.part", "x.part"}


async def test_a_listed_name_that_is_not_a_plain_file_name_is_skipped(
    tmp_path: Path,
    server: SFTPTestServer,
    known_hosts: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A hostile (or broken) server lists a name with slashes: taken as it
    # is, an absolute one makes the download and the folder transport write
    # outside the staging folder ("staging / '/abs/x'" is "/abs/x").
    outside = tmp_path / "outside"
    outside.mkdir()
    odd = str(outside / "x.hl7")
    (server.root / "x.hl7").write_bytes(batch_file(["EVIL1"]))
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["OK1"]))
    server.extra_names.append((odd.encode(), server.root / "x.hl7"))
    handler = Recorder()
    with trio.fail_after(30):
        async with puller_for(tmp_path, server, known_hosts, handler) as (puller, _):
            stats = await puller.run(once=True)
            await puller.scan()  # listed again: warned about once only
    assert (stats.files_done, stats.files_deferred, stats.messages) == (1, 0, 1)
    assert handler.seen == ["OK1"]
    assert journal_ids(tmp_path) == ["OK1"]
    assert list(outside.iterdir()) == []
    warnings = [r for r in caplog.records if "not a plain name" in r.getMessage()]
    assert len(warnings) == 1 and repr(odd) in warnings[0].getMessage()


async def test_messages_of_an_interrupted_file_are_counted(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    # Ctrl-C in the middle of a file: the summary counts what went in.
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(ids("C", 20)))
    handler = Recorder()
    with trio.CancelScope() as scope:

        async def stop_at_five(message: InboundMessage) -> None:
            await handler(message)
            if len(handler.seen) == 5:
                scope.cancel()

        async with open_sqlite_store(tmp_path / "journal") as store:
            puller = RemotePuller(
                client_for(server, known_hosts),
                tmp_path / "staging",
                store,
                JournalProcessor(store, stop_at_five),
                config=PullConfig(stable_seconds=0, poll_interval=0.05),
            )
            await puller.run(once=True)
    assert scope.cancelled_caught
    assert 4 <= puller.stats.messages <= 5
    assert len(journal_ids(tmp_path)) >= puller.stats.messages


async def test_done_marker_mode_takes_a_file_once_its_marker_is_listed(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["D1"]))
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler, done_marker=".done") as (
        puller,
        _,
    ):
        assert await puller.scan() == ([], 1)
        assert await puller.scan() == ([], 1)  # stable, but no marker
        (server.root / "inbox" / "lab.hl7.done").write_bytes(b"")
        reports, _ = await puller.scan()
        assert [(r.name, r.outcome) for r in reports] == [("lab.hl7", "done")]
    assert server.files("inbox") == {}  # the marker is removed too


async def test_a_file_with_one_bad_message_goes_to_done_with_an_AE_for_it(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["B1", "B2", "B3"]))
    (server.root / "outbox").mkdir()
    handler = Recorder(refuse=["B2"])
    async with puller_for(tmp_path, server, known_hosts, handler, outbox="outbox") as (puller, _):
        stats = await puller.run(once=True)
    assert (stats.files_done, stats.failed) == (1, 1)
    expected = [("AA", "B1"), ("AE", "B2"), ("AA", "B3")]
    assert ack_codes(server.files("inbox/done")["lab.hl7.ack"]) == expected
    # The outbox copy arrived under its final name only (temporary name, then rename).
    assert ack_codes(server.files("outbox")["lab.hl7.ack"]) == expected
    renames = [e for e in server.events if e[0] == "rename" and e[2] == "outbox/lab.hl7.ack"]
    assert len(renames) == 1 and renames[0][1].startswith("outbox/.lab.hl7.ack.")


async def test_a_malformed_file_goes_to_the_remote_error_folder_with_its_report(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    (server.root / "inbox" / "bad.hl7").write_bytes(batch_file(["E1", "E2"], count=5))
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler) as (puller, _):
        stats = await puller.run(once=True)
    assert (stats.files_done, stats.files_error) == (0, 1)
    assert handler.seen == []
    error = server.files("inbox/error")
    assert error["bad.hl7"] == batch_file(["E1", "E2"], count=5)
    assert b"BTS-1" in error["bad.hl7.error"]
    assert server.files("inbox") == {}


async def test_delete_option_removes_the_file_and_keeps_the_ack_locally(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["X1"]))
    async with puller_for(tmp_path, server, known_hosts, Recorder(), delete=True) as (puller, _):
        stats = await puller.run(once=True)
    assert stats.files_done == 1
    assert server.files("inbox") == {} and not (server.root / "inbox" / "done").exists()
    assert ack_codes((tmp_path / "staging" / "done" / "lab.hl7.ack").read_bytes()) == [("AA", "X1")]
    assert not (tmp_path / "staging" / "done" / "lab.hl7").exists()


async def test_a_file_finished_in_the_journal_is_only_moved_not_fed_again(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    # The same file (name, size, mtime, content) back in the inbox, as after a
    # crash between the journal's "done" and the move on the server.
    data = batch_file(["R1", "R2"])
    path = server.root / "inbox" / "lab.hl7"
    path.write_bytes(data)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler) as (puller, _):
        await puller.run(once=True)
        shutil.move(server.root / "inbox" / "done" / "lab.hl7", path)
        os.utime(path, (1_700_000_000, 1_700_000_000))
        (server.root / "inbox" / "done" / "lab.hl7.ack").unlink()
        stats = await puller.run(once=True)
    assert handler.seen == ["R1", "R2"]  # not fed again
    assert stats.files_done == 2 and stats.messages == 2
    assert server.files("inbox") == {}
    assert ack_codes(server.files("inbox/done")["lab.hl7.ack"]) == [("AA", "R1"), ("AA", "R2")]


async def test_the_server_going_away_mid_download_is_resumed_without_loss_or_duplicates(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    expected = ids("M", 1500)
    data = batch_file(expected)
    (server.root / "inbox" / "big.hl7").write_bytes(data)
    server.drop_after_read = len(data) // 4
    server.read_delay = 0.002  # the cut lands well inside the file
    server.down_for = 0.3
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler, window=50) as (puller, store):
        stats = await puller.run(once=True)
        assert await store.count() == 1500
    assert server.drops == 1 and stats.reconnects >= 1
    # The download resumed: less than twice the file went over the wire.
    assert len(data) <= stats.bytes_downloaded < 2 * len(data)
    assert stats.files_done == 1
    # A window of 50 hands messages over in any order: each once is what counts.
    assert sorted(handler.seen) == expected
    assert sorted(journal_ids(tmp_path)) == expected
    assert server.files("inbox/done")["big.hl7"] == data


async def test_connection_failures_beyond_the_retries_leave_the_partial_download(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    data = batch_file(ids("P", 2000))
    (server.root / "inbox" / "big.hl7").write_bytes(data)
    server.drop_after_read = len(data) // 2
    server.down_for = 3600  # gone for good
    handler = Recorder()
    client = client_for(server, known_hosts, retries=1)
    async with puller_for(tmp_path, server, known_hosts, handler, client=client) as (puller, _):
        with pytest.raises(RemoteError) as info:
            await puller.run(once=True)
    assert info.value.kind is RemoteErrorKind.CONNECTION
    assert "cannot connect" in str(info.value) or "connection lost" in str(info.value)
    part = tmp_path / "staging" / "incoming" / "big.hl7"
    assert 0 < part.stat().st_size < len(data)
    assert data.startswith(part.read_bytes())
    assert handler.seen == []
    assert server.files("inbox")["big.hl7"] == data


@pytest.mark.parametrize("kind", ["wrong key", "unknown host"])
async def test_an_unverified_host_key_is_refused_with_a_clear_error(
    tmp_path: Path, server: SFTPTestServer, kind: str
) -> None:
    known = tmp_path / "known_hosts"
    if kind == "wrong key":
        other = SFTPTestServer(tmp_path / "other")
        try:
            line = other.host_key.export_public_key().decode().split()
        finally:
            other.close()
        known.write_text(f"[127.0.0.1]:{server.port} {line[0]} {line[1]}\n")
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["K1"]))
    handler = Recorder()
    async with puller_for(tmp_path, server, known, handler) as (puller, _):
        with pytest.raises(RemoteError) as info:
            await puller.run(once=True)
    assert info.value.kind is RemoteErrorKind.TRUST
    text = str(info.value)
    if kind == "wrong key":
        assert "has CHANGED" in text and "ssh-keygen -R" in text
    else:
        assert "is not in" in text and "ssh-keyscan" in text and "--accept-new-host-key" in text
    assert handler.seen == [] and "lab.hl7" in server.files("inbox")


async def test_first_use_pinning_accepts_then_refuses_a_changed_key(
    tmp_path: Path, server: SFTPTestServer
) -> None:
    import asyncssh

    known = tmp_path / "ssh" / "known_hosts"
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["T1"]))
    client = client_for(server, known, accept_new_host_key=True)
    async with puller_for(tmp_path, server, known, Recorder(), client=client) as (puller, _):
        assert (await puller.run(once=True)).files_done == 1
    assert known.read_text() == server.known_hosts_line()
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    # The same address now answers with another key.
    server.stop()
    server.host_key = asyncssh.generate_private_key("ssh-ed25519")
    server.start()
    client = client_for(server, known, accept_new_host_key=True)
    async with puller_for(tmp_path, server, known, Recorder(), client=client) as (puller, _):
        with pytest.raises(RemoteError) as info:
            await puller.run(once=True)
    assert info.value.kind is RemoteErrorKind.TRUST and "CHANGED" in str(info.value)


async def test_wrong_password_is_refused_as_an_auth_error(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    client = client_for(server, known_hosts, password="wrong")
    async with puller_for(tmp_path, server, known_hosts, Recorder(), client=client) as (
        puller,
        _,
    ):
        with pytest.raises(RemoteError) as info:
            await puller.run(once=True)
    assert info.value.kind is RemoteErrorKind.AUTH
    assert "refused the login of 'lab'" in str(info.value)


async def test_key_authentication(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    key = server.add_client_key(tmp_path)
    (server.root / "inbox" / "lab.hl7").write_bytes(batch_file(["A1"]))
    client = client_for(server, known_hosts, password=None, identity=key)  # type: ignore[arg-type]
    handler = Recorder()
    async with puller_for(tmp_path, server, known_hosts, handler, client=client) as (puller, _):
        assert (await puller.run(once=True)).files_done == 1
    assert handler.seen == ["A1"]


# ---------------------------------------------------------------- SIGKILL


def _pull_command(tmp_path: Path, server: SFTPTestServer, known_hosts: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mllp_trio",
        "batch",
        "pull",
        server.url(),
        "--store",
        str(tmp_path / "journal"),
        "--staging",
        str(tmp_path / "staging"),
        "--known-hosts",
        str(known_hosts),
        "--password-env",
        "SFTP_PASSWORD",
        "--stable-seconds",
        "0",
        "--interval",
        "0.05",
        "--checkpoint-every",
        "50",
        "--window",
        "10",
        "--once",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "SFTP_PASSWORD": PASSWORD, "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["download", "processing"])
def test_sigkill_of_the_puller_mid_file_then_restart_is_exactly_once(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path, moment: str
) -> None:
    expected = ids("S", 1000)
    data = batch_file(expected)
    (server.root / "inbox" / "lab.hl7").write_bytes(data)
    command = _pull_command(tmp_path, server, known_hosts)
    part = tmp_path / "staging" / "incoming" / "lab.hl7"
    if moment == "download":
        server.read_delay = 0.1  # a slow server: the kill lands mid-download
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=_env())
    assert proc.stderr is not None
    try:
        if moment == "download":
            deadline = time.monotonic() + 60
            while not (part.exists() and part.stat().st_size > 0):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.01)
        else:
            for line in proc.stderr:
                if line.startswith("progress: lab.hl7"):
                    break
            else:
                raise AssertionError("no progress line")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    if moment == "download":
        assert 0 < part.stat().st_size < len(data)
    else:
        assert 0 < len(journal_ids(tmp_path)) < len(expected)
    assert "lab.hl7" in server.files("inbox")

    server.read_delay = 0
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 file(s) done, 0 to error/" in done.stderr
    assert sorted(journal_ids(tmp_path)) == expected  # every message once
    with contextlib.closing(sqlite3.connect(tmp_path / "journal" / "journal.sqlite3")) as db:
        rows = db.execute("SELECT status, next_seq FROM folder_file").fetchall()
    assert rows == [("done", 1000)]
    assert server.files("inbox") == {}
    remote_done = server.files("inbox/done")
    assert remote_done["lab.hl7"] == data
    assert ack_codes(remote_done["lab.hl7.ack"]) == [("AA", i) for i in expected]


async def test_the_server_lost_after_processing_is_finished_from_the_pending_record(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    data = batch_file(["P1", "P2"])
    (server.root / "inbox" / "lab.hl7").write_bytes(data)
    (server.root / "inbox" / "done").mkdir()
    (server.root / "inbox" / "done" / "lab.hl7").write_bytes(b"yesterday's file")
    handler = Recorder()

    def on_progress(name: str, done: int, total: int) -> None:
        if done == total:
            server.stop()  # every message committed; the server goes away

    client = client_for(server, known_hosts, retries=0)
    async with open_sqlite_store(tmp_path / "journal") as store:
        puller = RemotePuller(
            client,
            tmp_path / "staging",
            store,
            JournalProcessor(store, handler),
            config=PullConfig(stable_seconds=0, poll_interval=0.05),
            on_progress=on_progress,
        )
        with pytest.raises(RemoteError):
            await puller.run(once=True)
    assert handler.seen == ["P1", "P2"]
    assert list((tmp_path / "staging" / "pending").glob("*.json"))
    assert server.files("inbox")["lab.hl7"] == data  # not moved yet

    server.start()
    async with puller_for(tmp_path, server, known_hosts, handler) as (puller, _):
        stats = await puller.run(once=True)
    assert handler.seen == ["P1", "P2"]  # not fed again
    assert (stats.files_done, stats.messages) == (1, 0)
    done = server.files("inbox/done")
    assert done["lab.hl7"] == b"yesterday's file"  # never replaced
    assert done["lab.hl7.1"] == data
    assert ack_codes(done["lab.hl7.1.ack"]) == [("AA", "P1"), ("AA", "P2")]
    assert server.files("inbox") == {}
    assert not list((tmp_path / "staging" / "pending").glob("*.json"))

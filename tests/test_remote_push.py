"""Remote drop over SFTP against a real asyncssh server: temporary name, size check, rename."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mllp_trio.store import open_sqlite_store
from mllp_trio.store._remote import RemoteDestination, RemoteError, RemoteErrorKind, push_file

from .sftp_server import SFTPTestServer, batch_file, client_for, sftp_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SFTPTestServer]:
    with sftp_server(tmp_path / "served") as srv:
        (srv.root / "drop").mkdir()
        yield srv


@pytest.fixture
def known_hosts(tmp_path: Path, server: SFTPTestServer) -> Path:
    return server.write_known_hosts(tmp_path / "known_hosts")


def local_file(tmp_path: Path, n: int, name: str = "lab.hl7") -> Path:
    path = tmp_path / "out" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(batch_file([f"U{i:05d}" for i in range(n)]))
    return path


async def test_push_writes_a_temporary_name_then_renames_it(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    source = local_file(tmp_path, 50)
    data = source.read_bytes()
    client = client_for(server, known_hosts, folder="drop")
    try:
        result = await push_file(client, source, sent_dir=tmp_path / "sent")
    finally:
        await client.aclose()
    assert (result.path, result.outcome, result.size) == ("drop/lab.hl7", "uploaded", len(data))
    assert server.files("drop") == {"lab.hl7": data}
    # Server side: the bytes went to a hidden temporary name, renamed once whole;
    # the final name was never opened for writing.
    opened = [e[1] for e in server.events if e[0] == "open"]
    renames = [e[1:] for e in server.events if e[0] == "rename"]
    assert len(renames) == 1
    temp, final = renames[0]
    assert final == "drop/lab.hl7"
    assert temp.startswith("drop/.lab.hl7.") and temp.endswith(".part")
    assert temp in opened and final not in opened
    # Marked sent (moved) after the rename.
    assert not source.exists() and (tmp_path / "sent" / "lab.hl7").read_bytes() == data


async def test_the_server_going_away_mid_upload_resumes_and_never_shows_a_partial_file(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    source = local_file(tmp_path, 3000)
    data = source.read_bytes()
    server.drop_after_write = len(data) // 3
    server.write_delay = 0.002  # the cut lands well inside the file
    server.down_for = 0.3
    client = client_for(server, known_hosts, folder="drop")
    try:
        result = await push_file(client, source)
    finally:
        await client.aclose()
    assert server.drops == 1 and client.reconnects >= 1
    assert 0 < result.resumed_from < len(data)  # resumed, not started over
    assert server.files("drop") == {"lab.hl7": data}
    renames = [e[1:] for e in server.events if e[0] == "rename"]
    assert len(renames) == 1 and renames[0][1] == "drop/lab.hl7"
    assert "drop/lab.hl7" not in [e[1] for e in server.events if e[0] == "open"]
    # Less than twice the file crossed the network.
    assert len(data) <= server.bytes_written < 2 * len(data)
    assert source.exists()  # no --sent-dir: left where it was


async def test_upload_that_cannot_finish_leaves_no_final_name_and_the_local_file(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    source = local_file(tmp_path, 2000)
    server.drop_after_write = 50_000
    server.down_for = 3600
    client = client_for(server, known_hosts, folder="drop", retries=1)
    with pytest.raises(RemoteError) as info:
        await push_file(client, source, sent_dir=tmp_path / "sent")
    await client.aclose()
    assert info.value.kind is RemoteErrorKind.CONNECTION
    assert "lab.hl7" not in server.files("drop")
    assert source.exists() and not (tmp_path / "sent").exists()


async def test_a_rerun_finds_the_file_in_place_and_a_different_one_is_refused(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    source = local_file(tmp_path, 5)
    client = client_for(server, known_hosts, folder="drop")
    try:
        assert (await push_file(client, source)).outcome == "uploaded"
        # The same file again (a rerun after a crash before it was marked sent).
        assert (await push_file(client, source)).outcome == "present"
        other = local_file(tmp_path, 7, name="other.hl7")
        with pytest.raises(RemoteError) as info:
            await push_file(client, other, name="lab.hl7")
        assert info.value.kind is RemoteErrorKind.REFUSED
        assert "exists on the server with other content" in str(info.value)
        assert server.files("drop")["lab.hl7"] == source.read_bytes()
        await push_file(client, other, name="lab.hl7", replace=True, done_marker=".done")
    finally:
        await client.aclose()
    assert server.files("drop") == {"lab.hl7": other.read_bytes(), "lab.hl7.done": b""}


async def test_a_different_file_of_the_same_size_is_not_taken_as_delivered(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    # Yesterday's lab.hl7, not picked up yet, has exactly the size of today's:
    # today's must not be marked sent (moved to sent/) without arriving.
    source = local_file(tmp_path, 5)
    today = source.read_bytes()
    yesterday = today.replace(b"U00000", b"Y00000")
    assert len(yesterday) == len(today) and yesterday != today
    (server.root / "drop" / "lab.hl7").write_bytes(yesterday)
    client = client_for(server, known_hosts, folder="drop")
    try:
        with pytest.raises(RemoteError) as info:
            await push_file(client, source, sent_dir=tmp_path / "sent")
        assert info.value.kind is RemoteErrorKind.REFUSED
        assert "exists on the server with other content" in str(info.value)
        assert source.exists() and not (tmp_path / "sent").exists()
        assert server.files("drop") == {"lab.hl7": yesterday}
        # Once the server holds today's file, a rerun finds it in place.
        (server.root / "drop" / "lab.hl7").write_bytes(today)
        result = await push_file(client, source, sent_dir=tmp_path / "sent")
    finally:
        await client.aclose()
    assert result.outcome == "present"
    assert (tmp_path / "sent" / "lab.hl7").read_bytes() == today


async def test_a_missing_remote_folder_is_named_with_what_to_do(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    source = local_file(tmp_path, 2)
    client = client_for(server, known_hosts, folder="nosuch")
    try:
        with pytest.raises(RemoteError) as info:
            await push_file(client, source)
    finally:
        await client.aclose()
    assert info.value.kind is RemoteErrorKind.NOT_FOUND
    message = str(info.value)
    assert "the folder 'nosuch' does not exist on sftp://lab@127.0.0.1:" in message
    assert "check the folder in the URL; nothing was uploaded" in message
    assert source.exists() and not (server.root / "nosuch").exists()


async def test_remote_destination_delivers_the_outbound_queue_as_files(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    client = client_for(server, known_hosts, folder="drop")
    destination = RemoteDestination(client)
    assert destination.name == f"sftp://lab@127.0.0.1:{server.port}/drop"
    messages = [batch_file([f"Q{i}"]) for i in range(3)]
    async with open_sqlite_store(tmp_path / "journal") as store:
        for data in messages:
            await store.enqueue(destination.name, data)
        assert await destination.deliver_pending(store) == 3
        assert await store.fetch_next(destination.name) is None
        await client.aclose()
    files = server.files("drop")
    assert sorted(files.values()) == sorted(messages)
    assert all(name.endswith(".hl7") and not name.startswith(".") for name in files)
    with contextlib.closing(sqlite3.connect(tmp_path / "journal" / "journal.sqlite3")) as db:
        assert db.execute("SELECT status, count(*) FROM outbound GROUP BY status").fetchall() == [
            ("sent", 3)
        ]


async def test_remote_destination_records_a_failed_attempt_and_keeps_the_message(
    tmp_path: Path, server: SFTPTestServer, known_hosts: Path
) -> None:
    client = client_for(server, known_hosts, folder="drop", retries=0)
    destination = RemoteDestination(client)
    server.stop()
    async with open_sqlite_store(tmp_path / "journal") as store:
        await store.enqueue(destination.name, batch_file(["Z1"]))
        assert await destination.deliver_pending(store) == 0
        await client.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "journal" / "journal.sqlite3")) as db:
        row = db.execute("SELECT status, attempts, last_error FROM outbound").fetchone()
    assert row[0] == "pending" and row[1] == 1 and "remote connection" in row[2]

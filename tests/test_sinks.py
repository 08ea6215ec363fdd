"""Batch and directory sinks (journal consumers), and the folder destination (drop side)."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from mllp_trio._batch import BatchTrailer, FileTrailer, Message, iter_events
from mllp_trio._client import open_mllp_client
from mllp_trio._hl7 import HL7Error, InboundMessage, PeerInfo
from mllp_trio._server import MLLPServer
from mllp_trio.store import InboundRecord, JournalProcessor, open_sqlite_store
from mllp_trio.store._files import make_private_dir
from mllp_trio.store._sinks import (
    BatchSink,
    BatchSinkConfig,
    DirectorySink,
    FolderDestination,
)
from mllp_trio.store._sqlite import SQLiteStore

from .conftest import StartServer
from .hl7_samples import make_message

PEER = PeerInfo(address="127.0.0.1:9")


async def refuse_bad(message: InboundMessage) -> None:
    if message.control_id.startswith("BAD"):
        raise HL7Error("unknown patient", code=204)


async def receive(store: SQLiteStore, *ids: str) -> None:
    """What the listener does with each message: the journal processor."""
    processor = JournalProcessor(store, refuse_bad)
    for control_id in ids:
        outcome = await processor(make_message(control_id=control_id), PEER)
        assert outcome.code in ("AA", "AE")


def contents(path: Path) -> tuple[list[str], list[int | None], list[int | None]]:
    """Control ids, BTS-1 and FTS-1 values of a batch file (read strictly: counts checked)."""
    ids, bts, fts = [], [], []
    for event in iter_events(path):
        if isinstance(event, Message):
            ids.append(event.raw.split(b"\r")[0].split(b"|")[9].decode())
        elif isinstance(event, BatchTrailer):
            bts.append(event.count)
        elif isinstance(event, FileTrailer):
            fts.append(event.count)
    return ids, bts, fts


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


async def test_batch_sink_rolls_by_count_with_correct_counts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with open_sqlite_store(tmp_path / "j") as store:
        await receive(store, "A1", "A2", "BAD3", "A4", "A5", "A6", "A7")
        sink = BatchSink(store, out, config=BatchSinkConfig(max_messages=3))
        await sink._start()
        await sink.step()
        # BAD3 was refused (AE): left out. Six accepted: two full files.
        assert visible(out) == ["batch-000000000001.hl7", "batch-000000000005.hl7"]
        assert contents(out / "batch-000000000001.hl7") == (["A1", "A2", "A4"], [3], [1])
        assert contents(out / "batch-000000000005.hl7") == (["A5", "A6", "A7"], [3], [1])
        await receive(store, "A8")
        await sink.step()
        assert len(list(out.iterdir())) == 3  # A8 waits in an open, hidden file
        assert visible(out) == ["batch-000000000001.hl7", "batch-000000000005.hl7"]
        await sink.aclose()
        assert contents(out / "batch-000000000008.hl7") == (["A8"], [1], [1])
        assert await store.sink_position("batch") == 8


async def test_batch_sink_rolls_by_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    size = len(make_message(control_id="S1"))
    async with open_sqlite_store(tmp_path / "j") as store:
        await receive(store, "S1", "S2", "S3")
        sink = BatchSink(store, out, config=BatchSinkConfig(max_bytes=2 * size, file_header=False))
        await sink._start()
        await sink.step()
        await sink.aclose()
        files = visible(out)
        assert [contents(out / f) for f in files] == [(["S1", "S2"], [2], []), (["S3"], [1], [])]


async def test_batch_sink_rolls_by_time_and_resumes_after_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    out = tmp_path / "out"
    async with open_sqlite_store(tmp_path / "j") as store:
        config = BatchSinkConfig(max_age=30, poll_interval=5)
        rolled = trio.Event()
        rolled_at: list[float] = []

        def on_file(path: Path) -> None:
            rolled_at.append(trio.current_time())
            rolled.set()

        async with trio.open_nursery() as nursery:
            sink = BatchSink(store, out, config=config, on_file=on_file)
            await nursery.start(sink.run)
            sent_at = trio.current_time()
            await receive(store, "T1", "T2")
            received_at = trio.current_time()  # the mock clock may move during commits
            sink.wake()
            await rolled.wait()
            # Not before the first message waited max_age, nor much after.
            assert rolled_at[0] - sent_at >= 30
            assert rolled_at[0] - received_at <= 30 + 5
            assert visible(out) == ["batch-000000000001.hl7"]
            await receive(store, "T3")
            sink.wake()
            nursery.cancel_scope.cancel()  # a stop, maybe with T3 in an open file
        again = BatchSink(store, out, config=config)
        await again._start()
        await again.step()
        await again.aclose()
        ids = [i for f in visible(out) for i in contents(out / f)[0]]
        assert ids == ["T1", "T2", "T3"]  # each once, nothing lost
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


async def test_a_message_still_in_its_handler_holds_the_sink_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    async with open_sqlite_store(tmp_path / "j") as store:
        await receive(store, "H1")
        # Journaled, answer not final yet (the handler is running).
        await store.commit_inbound(
            InboundRecord(data=make_message(control_id="H2"), peer="p", control_id="H2")
        )
        await receive(store, "H3")
        sink = BatchSink(store, out, config=BatchSinkConfig(max_messages=10))
        await sink._start()
        await sink.step()
        await sink.aclose()
        assert [contents(out / f)[0] for f in visible(out)] == [["H1"]]


async def test_directory_sink_writes_one_file_per_accepted_message(tmp_path: Path) -> None:
    out = tmp_path / "msgs"
    async with open_sqlite_store(tmp_path / "j") as store:
        await receive(store, "D1", "BAD2", "D/3")
        sink = DirectorySink(store, out)
        await trio.to_thread.run_sync(lambda: out.mkdir())
        await sink.step()
        assert visible(out) == ["000000000001-D1.hl7", "000000000003-D_3.hl7"]
        assert (out / "000000000001-D1.hl7").read_bytes() == make_message(control_id="D1")
        await receive(store, "D4")
        again = DirectorySink(store, out)
        again._scan = await store.sink_position("directory")
        await again.step()
        assert len(visible(out)) == 3


async def test_sink_files_and_folders_are_private_whatever_the_umask(tmp_path: Path) -> None:
    # Regression: under umask 000 the folder was 0777 and the files 0666.
    out = tmp_path / "msgs"
    old = os.umask(0)
    try:
        async with open_sqlite_store(tmp_path / "j") as store:
            await receive(store, "P1")
            sink = DirectorySink(store, out)
            await trio.to_thread.run_sync(make_private_dir, out)
            await sink.step()
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    (name,) = visible(out)
    assert stat.S_IMODE((out / name).stat().st_mode) == 0o600


def test_put_never_shows_a_partial_file_under_the_final_name(tmp_path: Path) -> None:
    """A watcher thread looks at the final name all along a large put."""
    source = tmp_path / "big.hl7"
    data = make_message() * 60_000  # about 8 MB, written in 1 MiB pieces
    source.write_bytes(data)
    target = tmp_path / "drop"
    target.mkdir()
    final = target / "big.hl7"
    sizes: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                sizes.add(final.stat().st_size)

    observer = threading.Thread(target=watch)
    observer.start()
    try:
        FolderDestination(directory=target).put_sync(source)
    finally:
        stop.set()
        observer.join()
    assert sizes <= {len(data)}
    assert final.read_bytes() == data
    assert [p.name for p in target.iterdir()] == ["big.hl7"]
    with pytest.raises(FileExistsError):
        FolderDestination(directory=target).put_sync(source)


async def test_put_with_done_marker(tmp_path: Path) -> None:
    source = tmp_path / "a.hl7"
    source.write_bytes(make_message())
    target = tmp_path / "drop"
    target.mkdir()
    await FolderDestination(directory=target, done_marker=".done").put(source, "b.hl7")
    assert visible(target) == ["b.hl7", "b.hl7.done"]


async def test_folder_destination_delivers_the_outbound_queue(tmp_path: Path) -> None:
    target = tmp_path / "drop"
    await trio.to_thread.run_sync(lambda: target.mkdir())
    destination = FolderDestination(directory=target)
    async with open_sqlite_store(tmp_path / "j") as store:
        for n in range(3):
            await store.enqueue(destination.name, make_message(control_id=f"Q{n}"))
        assert await destination.deliver_pending(store) == 3
        assert visible(target) == [f"{n:012d}.hl7" for n in (1, 2, 3)]
        stats = await store.outbound_stats()
        assert (stats.pending, stats.delivered) == (0, 3)


async def test_listener_with_a_batch_sink_end_to_end(
    tmp_path: Path, nursery: trio.Nursery, start_server: StartServer
) -> None:
    """A real listener over TCP; the sink writes the accepted messages, refused ones left out."""
    out = tmp_path / "out"
    files: list[Path] = []
    rolled = trio.Event()

    def on_file(path: Path) -> None:
        files.append(path)
        if len(files) == 2:
            rolled.set()

    async with open_sqlite_store(tmp_path / "j") as store:
        server = MLLPServer(processor=JournalProcessor(store, refuse_bad))
        port = await start_server(server)
        sink = BatchSink(store, out, config=BatchSinkConfig(max_messages=2), on_file=on_file)
        await nursery.start(sink.run)
        async with open_mllp_client("127.0.0.1", port) as client:
            for control_id in ("L1", "BAD2", "L3", "L4", "L5"):
                await client.send(make_message(control_id=control_id), raise_on_negative=False)
                sink.wake()
        with trio.fail_after(30):
            await rolled.wait()
        assert [contents(p) for p in files] == [(["L1", "L3"], [2], [1]), (["L4", "L5"], [2], [1])]
        nursery.cancel_scope.cancel()

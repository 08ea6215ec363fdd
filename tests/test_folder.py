"""The folder transport, pickup side: stability, exactly once, acknowledgement batches, folders."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from mllp_trio._batch import BatchHeader, FileHeader, Message, iter_events
from mllp_trio._hl7 import HL7Error, InboundMessage, Outcome, PeerInfo, reply_code
from mllp_trio.store import FileIdentity, JournalProcessor, open_sqlite_store
from mllp_trio.store._folder import FileReport, FolderConfig, FolderWatcher
from mllp_trio.store._sqlite import SQLiteStore

from .hl7_samples import make_message


def batch_file(ids: Sequence[str], *, header: bool = True) -> bytes:
    """A batch file (FHS, BHS, messages, BTS, FTS) with one message per control id."""
    body = b"".join(make_message(control_id=i) for i in ids)
    if not header:
        return body
    return (
        b"FHS|^~\\&|LAB|HOSP|EHR|CLINIC|20240131||lab.hl7||F001\r"
        b"BHS|^~\\&|LAB|HOSP|EHR|CLINIC|20240131||||B001\r" + body + b"BTS|%d\rFTS|1\r" % len(ids)
    )


class Recorder:
    """A handler that remembers what it was given and refuses chosen control ids."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.seen: list[str] = []
        self.refuse = set(refuse)

    async def __call__(self, message: InboundMessage) -> None:
        self.seen.append(message.control_id)
        if message.control_id in self.refuse:
            raise HL7Error("unknown patient", code=204)


@asynccontextmanager
async def watcher_for(
    tmp_path: Path, handler: Recorder, **config: object
) -> AsyncIterator[tuple[FolderWatcher, SQLiteStore]]:
    async with open_sqlite_store(tmp_path / "journal") as store:
        processor = JournalProcessor(store, handler)
        cfg = FolderConfig(**{"stable_seconds": 0, **config})  # type: ignore[arg-type]
        yield FolderWatcher(tmp_path / "inbox", store, processor, config=cfg), store


def ack_codes(path: Path) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of each acknowledgement in an acknowledgement batch."""
    out = []
    for event in iter_events(path):
        if isinstance(event, Message):
            msa = next(s for s in event.raw.split(b"\r") if s.startswith(b"MSA"))
            fields = msa.split(b"|")
            out.append((fields[1].decode(), fields[2].decode()))
    return out


def drop(inbox: Path, name: str, data: bytes) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(data)
    return path


async def test_file_with_one_refused_message_goes_to_done_with_its_ack_batch(
    tmp_path: Path,
) -> None:
    handler = Recorder(refuse=["M2"])
    async with watcher_for(tmp_path, handler) as (watcher, store):
        drop(watcher.inbox, "lab.hl7", batch_file(["M1", "M2", "M3"]))
        stats = await watcher.run(once=True)
        assert handler.seen == ["M1", "M2", "M3"]
        assert (stats.files_done, stats.files_error, stats.messages, stats.failed) == (1, 0, 3, 1)
        assert not (watcher.inbox / "lab.hl7").exists()
        assert (watcher.done_dir / "lab.hl7").read_bytes() == batch_file(["M1", "M2", "M3"])
        ack = watcher.done_dir / "lab.hl7.ack"
        assert ack_codes(ack) == [("AA", "M1"), ("AE", "M2"), ("AA", "M3")]
        events = list(iter_events(ack))  # counts checked by the strict reader
        fhs = next(e for e in events if isinstance(e, FileHeader)).header
        bhs = next(e for e in events if isinstance(e, BatchHeader)).header
        assert (fhs.reference_control_id, bhs.reference_control_id) == (b"F001", b"B001")
        assert (fhs.sending_application, fhs.receiving_application) == (b"EHR", b"LAB")
        assert await store.count() == 3


async def test_a_message_without_control_id_gets_an_AR_of_its_own_in_the_ack_batch(
    tmp_path: Path,
) -> None:
    # Regression: such a message was left out of the acknowledgement batch
    # (3 ACKs, BTS|3 for 4 messages) and the file reported done with exit 0.
    no_id = make_message(control_id="M2").replace(b"|M2|", b"||")
    data = batch_file(["M1", "M2", "M3"]).replace(make_message(control_id="M2"), no_id)
    handler = Recorder()
    async with watcher_for(tmp_path, handler) as (watcher, _store):
        drop(watcher.inbox, "lab.hl7", data)
        stats = await watcher.run(once=True)
        assert (stats.files_done, stats.messages, stats.failed) == (1, 3, 1)
        ack = watcher.done_dir / "lab.hl7.ack"
        assert ack_codes(ack) == [("AA", "M1"), ("AR", ""), ("AA", "M3")]
        assert b"message 2 of the file has no readable MSH-10" in ack.read_bytes()
        list(iter_events(ack))  # BTS/FTS counts agree (strict reader)


@pytest.mark.parametrize(
    ("mode", "refuse", "expected"),
    [
        ("errors", ["M2"], [("AE", "M2")]),
        ("none", [], []),
        ("all", [], [("AA", "M1"), ("AA", "M2"), ("AA", "M3")]),
    ],
)
async def test_ack_modes(
    tmp_path: Path, mode: str, refuse: list[str], expected: list[tuple[str, str]]
) -> None:
    async with watcher_for(tmp_path, Recorder(refuse=refuse), ack_mode=mode) as (watcher, _):
        drop(watcher.inbox, "lab.hl7", batch_file(["M1", "M2", "M3"]))
        await watcher.run(once=True)
        ack = watcher.done_dir / "lab.hl7.ack"
        assert ack_codes(ack) == expected
        assert b"BTS|%d\r" % len(expected) in ack.read_bytes()


async def test_malformed_file_goes_to_error_with_a_report_and_nothing_processed(
    tmp_path: Path,
) -> None:
    handler = Recorder()
    async with watcher_for(tmp_path, handler) as (watcher, store):
        bad = batch_file(["M1", "M2"]).replace(b"BTS|2", b"BTS|5")
        drop(watcher.inbox, "bad.hl7", bad)
        reports: list[FileReport] = []
        watcher._on_report = reports.append
        await watcher.run(once=True)
        assert handler.seen == []
        assert await store.count() == 0
        assert (watcher.error_dir / "bad.hl7").read_bytes() == bad
        text = (watcher.error_dir / "bad.hl7.error").read_text()
        assert "BTS" in text and "line" in text
        assert [r.outcome for r in reports] == ["error"]


async def test_plain_file_of_messages_and_name_collision_in_done(tmp_path: Path) -> None:
    handler = Recorder()
    async with watcher_for(tmp_path, handler) as (watcher, _):
        drop(watcher.inbox, "a.hl7", batch_file(["A1", "A2"], header=False))
        await watcher.run(once=True)
        drop(watcher.inbox, "a.hl7", batch_file(["A3"], header=False))
        await watcher.run(once=True)
        assert handler.seen == ["A1", "A2", "A3"]
        assert ack_codes(watcher.done_dir / "a.hl7.ack") == [("AA", "A1"), ("AA", "A2")]
        assert ack_codes(watcher.done_dir / "a.hl7.1.ack") == [("AA", "A3")]


async def test_a_file_still_being_written_waits_until_stable(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    handler = Recorder()
    async with watcher_for(tmp_path, handler, stable_seconds=5, poll_interval=1) as (watcher, _):
        picked = trio.Event()
        picked_at: list[float] = []

        def on_report(report: FileReport) -> None:
            picked_at.append(trio.current_time())
            picked.set()

        watcher._on_report = on_report
        path = drop(watcher.inbox, "slow.hl7", make_message(control_id="S1"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.run)
            for n in range(2, 8):  # a new message every 3 s: never 5 s unchanged
                await trio.sleep(3)
                assert handler.seen == []
                with path.open("ab") as f:
                    f.write(make_message(control_id=f"S{n}"))
                # A new mtime even on file systems with coarse timestamps.
                os.utime(path, ns=(n * 10**9, n * 10**9))
            last_write = trio.current_time()
            await picked.wait()
            assert picked_at[0] - last_write >= 5
            assert handler.seen == [f"S{n}" for n in range(1, 8)]
            nursery.cancel_scope.cancel()


async def test_done_marker_mode(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    handler = Recorder()
    async with watcher_for(tmp_path, handler, done_marker=".done") as (watcher, _):
        drop(watcher.inbox, "m.hl7", make_message(control_id="K1"))
        picked = trio.Event()
        watcher._on_report = lambda report: picked.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.run)
            await trio.sleep(60)
            assert handler.seen == []
            (watcher.inbox / "m.hl7.done").touch()
            await picked.wait()
            assert handler.seen == ["K1"]
            assert not (watcher.inbox / "m.hl7.done").exists()
            nursery.cancel_scope.cancel()


async def test_hidden_and_temporary_files_are_never_picked_up(tmp_path: Path) -> None:
    handler = Recorder()
    async with watcher_for(tmp_path, handler, pattern="*.hl7") as (watcher, _):
        drop(watcher.inbox, ".x.hl7", make_message(control_id="H1"))
        drop(watcher.inbox, ".x.hl7.1234.tmp", make_message(control_id="H2"))
        drop(watcher.inbox, "x.txt", make_message(control_id="H3"))
        stats = await watcher.run(once=True)
        assert handler.seen == [] and stats.files_done == 0


async def test_a_file_seen_again_after_a_restart_is_not_processed_twice(tmp_path: Path) -> None:
    """The journal knows the file: a crash after its messages, before its move, only moves it."""
    data = batch_file(["R1", "R2", "R3"])
    handler = Recorder()
    async with watcher_for(tmp_path, handler) as (watcher, store):
        path = drop(watcher.inbox, "r.hl7", data)
        st = path.stat()
        await watcher.run(once=True)
        # Put it back as it was, as if the move had never happened.
        (watcher.done_dir / "r.hl7").rename(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        (watcher.done_dir / "r.hl7.ack").unlink()
        second = FolderWatcher(watcher.inbox, store, watcher.processor, config=watcher.config)
        stats = await second.run(once=True)
        assert handler.seen == ["R1", "R2", "R3"]
        assert (stats.files_done, stats.messages) == (1, 0)
        assert ack_codes(watcher.done_dir / "r.hl7.ack") == [("AA", f"R{n}") for n in (1, 2, 3)]
        assert await store.count() == 3


async def test_resume_after_partial_progress_skips_recorded_and_dedups_the_rest(
    tmp_path: Path,
) -> None:
    """Progress recorded up to message 2, message 3 committed but not recorded: 4 and 5 run."""
    data = batch_file([f"P{n}" for n in range(1, 6)])
    handler = Recorder()
    async with watcher_for(tmp_path, handler, checkpoint_every=2) as (watcher, store):
        path = drop(watcher.inbox, "p.hl7", data)
        # First run: a processor that dies at message 4, as a crash would.
        calls = 0
        real = watcher.processor

        class Crash(Exception):
            pass

        async def dying(raw: bytes, peer: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 4:
                raise Crash
            return await real(raw, peer)  # type: ignore[arg-type]

        watcher.processor = dying  # type: ignore[assignment]
        with pytest.raises(Crash):
            await watcher.process_file("p.hl7")
        assert handler.seen == ["P1", "P2", "P3"]
        assert path.exists()
        second = FolderWatcher(watcher.inbox, store, real, config=watcher.config)
        await second.run(once=True)
        # P3 was journaled but not recorded: sent again, answered from the journal.
        assert handler.seen == ["P1", "P2", "P3", "P4", "P5"]
        assert await store.count() == 5
        codes = ack_codes(second.done_dir / "p.hl7.ack")
        assert codes == [("AA", f"P{n}") for n in range(1, 6)]


async def test_store_failure_defers_the_file_and_a_later_scan_finishes_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    handler = Recorder()
    fail = {"on": True}

    async def flaky(message: InboundMessage) -> None:
        if fail["on"] and message.control_id == "F2":
            raise RuntimeError("database of the application is down")
        await handler(message)

    async with watcher_for(tmp_path, handler, retry_interval=10) as (watcher, store):
        watcher.processor = JournalProcessor(store, flaky)
        drop(watcher.inbox, "f.hl7", batch_file(["F1", "F2", "F3"]))
        reports, waiting = await watcher.scan()
        assert [r.outcome for r in reports] == ["deferred"] and waiting == 1
        assert handler.seen == ["F1"]
        fail["on"] = False
        reports, _ = await watcher.scan()
        assert reports == []  # not before retry_interval
        await trio.sleep(10)
        reports, waiting = await watcher.scan()
        assert [r.outcome for r in reports] == ["done"] and waiting == 0
        assert handler.seen == ["F1", "F2", "F3"]
        assert ack_codes(watcher.done_dir / "f.hl7.ack") == [("AA", f"F{n}") for n in (1, 2, 3)]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="done_marker"):
        FolderConfig(done_marker="a/b")
    with pytest.raises(ValueError):
        FolderConfig(ack_mode="every")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FolderConfig(stable_seconds=-1)


def test_reply_code_helper_reads_acks() -> None:
    assert reply_code(b"MSH|^~\\&|\rMSA|AE|X\r") == "AE"


async def test_window_of_concurrent_messages_records_only_the_answered_prefix(
    tmp_path: Path,
) -> None:
    """Eight messages at once: a transient failure at 20 leaves 0-19 recorded, never a gap."""
    ids = [f"W{n:02d}" for n in range(40)]
    handler = Recorder(refuse=["W05", "W33"])
    fail = {"on": True}

    async def flaky(message: InboundMessage) -> None:
        await trio.sleep(0.001 * (hash(message.control_id) % 5))  # finish out of order
        if fail["on"] and message.control_id == "W20":
            raise RuntimeError("application database down")  # 207: retry later
        await handler(message)

    async with watcher_for(tmp_path, handler, window=8, checkpoint_every=3) as (watcher, store):
        watcher.processor = JournalProcessor(store, flaky)
        drop(watcher.inbox, "w.hl7", batch_file(ids))
        report = await watcher.process_file("w.hl7")
        assert report.outcome == "deferred" and "message 21" in (report.reason or "")
        path = watcher.inbox / "w.hl7"
        st = path.stat()
        progress = await store.open_file(
            FileIdentity(
                inbox=str(watcher.inbox),
                name="w.hl7",
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            )
        )
        assert not progress.created
        assert progress.next_seq <= 20
        recorded = [r.seq for r in await store.file_results(progress.file_id)]
        assert recorded == list(range(progress.next_seq))
        fail["on"] = False
        report = await watcher.process_file("w.hl7")
        assert report.outcome == "done" and report.failed == 2
        assert sorted(handler.seen) == sorted(ids)  # each delivered once
        codes = ack_codes(watcher.done_dir / "w.hl7.ack")
        assert [c for _, c in codes] == ids  # the acknowledgement batch in file order
        assert [c for c, i in codes if c != "AA"] == ["AE", "AE"]
        assert await store.count() == 40


@pytest.mark.parametrize("while_handling", ["G1", "G2"])
async def test_a_file_that_grows_while_processed_is_left_and_taken_whole_later(
    tmp_path: Path, while_handling: str
) -> None:
    """A writer appends after the file looked stable: while its first or its last message runs."""
    handler = Recorder()
    async with watcher_for(tmp_path, handler) as (watcher, store):
        path = drop(watcher.inbox, "g.hl7", batch_file(["G1", "G2"], header=False))
        real = watcher.processor

        async def appending(raw: bytes, peer: PeerInfo) -> Outcome:
            if while_handling.encode() in raw and not path.read_bytes().count(b"G3"):
                with path.open("ab") as f:
                    f.write(make_message(control_id="G3"))
                os.utime(path, ns=(1, 1))  # a new mtime even with coarse timestamps
            return await real(raw, peer)

        watcher.processor = appending
        report = await watcher.process_file("g.hl7")
        assert report.outcome == "deferred" and "changed" in (report.reason or "")
        assert path.exists() and not (watcher.done_dir / "g.hl7").exists()
        watcher.processor = real
        report = await watcher.process_file("g.hl7")
        assert report.outcome == "done" and report.messages == 3
        assert handler.seen == ["G1", "G2", "G3"]
        codes = ack_codes(watcher.done_dir / "g.hl7.ack")
        assert codes == [("AA", "G1"), ("AA", "G2"), ("AA", "G3")]
        assert await store.count() == 3


async def test_each_batch_of_a_file_gets_its_answering_batch(tmp_path: Path) -> None:
    data = (
        b"FHS|^~\\&|LAB|HOSP|||20240131||two.hl7||F9\r"
        b"BHS|^~\\&|LAB|HOSP|||20240131||||BA\r"
        + make_message(control_id="A1")
        + make_message(control_id="A2")
        + b"BTS|2\rBHS|^~\\&|LAB|HOSP|||20240131||||BB\r"
        + make_message(control_id="B1")
        + b"BTS|1\rFTS|2\r"
    )
    async with watcher_for(tmp_path, Recorder(refuse=["A2"])) as (watcher, _):
        drop(watcher.inbox, "two.hl7", data)
        await watcher.run(once=True)
        ack = watcher.done_dir / "two.hl7.ack"
        events = list(iter_events(ack))  # strict: BTS and FTS counts agree
        answered = [e.header.reference_control_id for e in events if isinstance(e, BatchHeader)]
        assert answered == [b"BA", b"BB"]
        assert ack_codes(ack) == [("AA", "A1"), ("AE", "A2"), ("AA", "B1")]
        assert ack.read_bytes().count(b"BTS|") == 2 and b"FTS|2\r" in ack.read_bytes()


async def test_a_file_without_messages_goes_to_error(tmp_path: Path) -> None:
    async with watcher_for(tmp_path, Recorder()) as (watcher, _):
        drop(watcher.inbox, "empty.hl7", b"FHS|^~\\&|LAB\rFTS|0\r")
        stats = await watcher.run(once=True)
        assert stats.files_error == 1
        assert "no HL7 message" in (watcher.error_dir / "empty.hl7.error").read_text()

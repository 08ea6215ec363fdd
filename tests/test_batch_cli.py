"""``mllp-trio batch``: check, split, build, and send over mutual TLS to the project's listener.

The listener runs in a thread of its own (its own ``trio.run``) on loopback
with trustme certificates; the command line runs in this thread through
``mllp_trio._cli.run``, except for the crash test, which kills a real
``mllp-trio batch send --queue`` process with SIGKILL mid-file.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

import mllp_trio
from mllp_trio._batch import (
    BatchHeader,
    FileHeader,
    HeaderFields,
    iter_events,
    match_acks,
    read_messages,
    write_batch,
)
from mllp_trio._cli import run
from mllp_trio._hl7 import read_msh, reply_code

from .tls_helpers import TLSMaterial

#: Upper bound on one subprocess step (a hang fails instead of blocking); not a speed assertion.
STEP_TIMEOUT = 60.0


def message(n: int) -> bytes:
    return b"MSH|^~\\&|LAB|NORTH|EHR|SOUTH|20240131||ORU^R01|M%04d|P|2.5.1\rPID|1||%d\r" % (n, n)


FHS = HeaderFields(sending_application="LAB", receiving_application="EHR", control_id="F1")
BHS = HeaderFields(sending_application="LAB", receiving_application="EHR", control_id="B1")


def batch_file(path: Path, count: int, *, newline: bytes = b"\r") -> Path:
    data = b"".join(
        write_batch((message(n) for n in range(count)), file_header=FHS, batch_header=BHS)
    )
    path.write_bytes(data.replace(b"\r", newline))
    return path


# ---------------------------------------------------------------- a listener in a thread


class ThreadListener:
    """The project's listener (MLLPServer) in a thread, with a handler that refuses some ids.

    Control ids ending in 7 get AR, in 3 AE (unless ``errors`` is False: the
    queue retries an AE until it gives up); every arrival is recorded.
    """

    def __init__(
        self,
        tls: TLSMaterial,
        store: Path | None = None,
        *,
        kill: int | None = None,
        errors: bool = True,
    ) -> None:
        self.errors = errors
        self.tls = tls
        self.store = store
        self.received: list[str] = []
        self.port = 0
        self.kill_after = kill
        self.victim: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, msg: mllp_trio.InboundMessage) -> None:
        control_id = msg.header.control_id
        self.received.append(control_id)
        if self.kill_after is not None and len(self.received) == self.kill_after:
            assert self.victim is not None
            self.victim.send_signal(signal.SIGKILL)  # mid-file, before this reply
            await trio.sleep(0.2)
        if control_id.endswith("3") and self.errors:
            raise mllp_trio.HL7Error("cannot file it", code=207)
        if control_id.endswith("7"):
            raise mllp_trio.HL7Reject("unknown patient", code=204)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        tls = self.tls.server_context()
        async with trio.open_nursery() as nursery:
            if self.store is not None:
                store = await nursery.start(_open_store, self.store, self._stop)
                server = mllp_trio.MLLPServer(
                    ssl_context=tls, processor=mllp_trio.store.JournalProcessor(store, self.handle)
                )
            else:
                server = mllp_trio.MLLPServer(self.handle, ssl_context=tls)
            listeners = await nursery.start(partial(server.serve, 0, host="127.0.0.1"))
            self.port = listeners[0].socket.getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def __enter__(self) -> ThreadListener:
        self._thread.start()
        self._ready.wait(STEP_TIMEOUT)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(STEP_TIMEOUT)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tls_args(self) -> list[str]:
        return [
            "--cert",
            str(self.tls.client_cert_file),
            "--key",
            str(self.tls.client_key_file),
            "--ca",
            str(self.tls.ca_file),
        ]


async def _open_store(
    path: Path, stop: trio.Event, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
) -> None:
    async with mllp_trio.store.open_sqlite_store(path) as store:
        task_status.started(store)
        await stop.wait()


@contextmanager
def listening(
    tls: TLSMaterial, store: Path | None = None, *, errors: bool = True
) -> Iterator[ThreadListener]:
    with ThreadListener(tls, store, errors=errors) as listener:
        yield listener


# ---------------------------------------------------------------- check


def test_check_well_formed_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = batch_file(tmp_path / "in.hl7", 3, newline=b"\r\n")
    assert run(["batch", "check", str(path)]) == 0
    assert f"{path}: well-formed: 3 message(s) (1 FHS, 1 BHS)" in capsys.readouterr().out


def test_check_names_line_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.hl7"
    path.write_bytes(b"BHS|^~\\&\n" + message(1).replace(b"\r", b"\n") + b"BTS|2\nFTS|1\n")
    assert run(["batch", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"{path}:4: BTS: BTS-1 says 2 messages" in captured.out
    assert "FTS" not in captured.out  # strict: the first problem only
    assert run(["batch", "check", "--lenient", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:4: BTS:" in out and f"{path}:5: FTS: FTS without FHS" in out


def test_check_finds_a_message_without_usable_msh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.hl7"
    path.write_bytes(message(1) + b"MSH|^~\\&|A|B|C|D|||ADT^A01||P|2.5\r")
    assert run(["batch", "check", str(path)]) == 1
    assert "bad.hl7:3: MSH: not an HL7 message (MSH-10" in capsys.readouterr().out


# ---------------------------------------------------------------- split and build


def test_split_per_message_and_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "in.hl7"
    writer_data = b"FHS|^~\\&\rBHS|^~\\&|||||||||B1\r" + message(1) + message(2) + b"BTS|2\r"
    writer_data += b"BHS|^~\\&|||||||||B2\r" + message(3) + b"BTS|1\rFTS|2\r"
    path.write_bytes(writer_data)
    assert run(["batch", "split", str(path)]) == 0
    pieces = sorted((tmp_path / "in.hl7.split").iterdir())
    assert [p.name for p in pieces] == ["in-000001.hl7", "in-000002.hl7", "in-000003.hl7"]
    assert [p.read_bytes() for p in pieces] == [message(1), message(2), message(3)]
    # A second run does not overwrite, unless --force.
    assert run(["batch", "split", str(path)]) == 1
    assert run(["batch", "split", "--force", str(path)]) == 0
    out = tmp_path / "batches"
    assert run(["batch", "split", "--per", "batch", "-o", str(out), str(path)]) == 0
    first, second = sorted(out.iterdir())
    assert first.read_bytes() == b"BHS|^~\\&|||||||||B1\r" + message(1) + message(2) + b"BTS|2\r"
    assert second.read_bytes() == b"BHS|^~\\&|||||||||B2\r" + message(3) + b"BTS|1\r"
    assert not list(tmp_path.glob("**/.*.part"))


def test_build_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "msgs"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.hl7").write_bytes(message(n).replace(b"\r", b"\n"))
    out = tmp_path / "out.hl7"
    args = ["--sending-application", "LAB", "--name", "nightly", "--control-id", "X1"]
    assert run(["batch", "build", str(folder), "-o", str(out), *args]) == 0
    events = list(iter_events(out))
    fhs = events[0]
    assert isinstance(fhs, FileHeader)
    assert (fhs.header.sending_application, fhs.header.name) == (b"LAB", b"nightly")
    assert fhs.header.control_id == b"X1"
    assert list(read_messages(out)) == [message(n) for n in range(3)]
    assert out.read_bytes().endswith(b"BTS|3\rFTS|1\r")
    assert run(["batch", "check", str(out)]) == 0
    capsys.readouterr()
    assert (
        run(
            ["batch", "build", "--no-file-header", "--no-batch-header", "-o", str(out), str(folder)]
        )
        == 0
    )
    assert out.read_bytes() == b"".join(message(n) for n in range(3))


def test_build_refuses_bad_values_and_no_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.hl7").write_bytes(message(1))
    assert run(["batch", "build", "--name", "a|b", str(tmp_path / "m.hl7")]) == 2
    assert "'--name'" in capsys.readouterr().err
    assert run(["batch", "build"]) == 2
    assert "no INPUTS" in capsys.readouterr().err
    (tmp_path / "junk.hl7").write_bytes(b"PID|1\r")
    out = tmp_path / "out.hl7"
    assert run(["batch", "build", "-o", str(out), str(tmp_path / "junk.hl7")]) == 1
    assert "junk.hl7:1: PID: a segment outside any message" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- send


def test_batch_send_over_mutual_tls_acknowledgement_batch_checked(
    tmp_path: Path, tls: TLSMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    path = batch_file(tmp_path / "night.hl7", 20, newline=b"\n")
    with listening(tls, tmp_path / "journal") as listener:
        code = run(["batch", "send", str(path), listener.target, *listener.tls_args()])
    captured = capsys.readouterr()
    assert code == 1  # some were refused
    sent_ids = [read_msh(m).control_id_raw for m in read_messages(path)]
    assert listener.received == [i.decode() for i in sent_ids]  # each once, in order
    ack_path = tmp_path / "night.hl7.ack"
    events = list(iter_events(ack_path))
    fhs, bhs = events[0], events[1]
    assert isinstance(fhs, FileHeader) and isinstance(bhs, BatchHeader)
    assert fhs.header.reference_control_id == b"F1"
    assert bhs.header.reference_control_id == b"B1"
    assert (bhs.header.sending_application, bhs.header.receiving_application) == (b"EHR", b"LAB")
    matched, stray = match_acks(read_messages(ack_path), sent_ids)
    assert not stray
    for one in matched:
        expected = {"3": "AE", "7": "AR"}.get(one.control_id.decode()[-1], "AA")
        assert one.code == expected, one
    assert ack_path.read_bytes().endswith(b"BTS|20\rFTS|1\r")
    # The refused ones are listed with their place in the file.
    assert "M0003 AE" in captured.out and "night.hl7:" in captured.out
    assert "M0007 AR" in captured.out and "M0001" not in captured.out
    assert "20 message(s)" in captured.err and "AA 16, AE 2, AR 2" in captured.err


def test_batch_send_errors_only_mode(tmp_path: Path, tls: TLSMaterial) -> None:
    path = batch_file(tmp_path / "in.hl7", 10)
    out = tmp_path / "answer.hl7"
    with listening(tls) as listener:
        args = ["--ack-out", str(out), "--ack-mode", "errors", "-q"]
        assert run(["batch", "send", str(path), listener.target, *listener.tls_args(), *args]) == 1
    acks = list(read_messages(out))
    assert [reply_code(a) for a in acks] == ["AE", "AR"]
    assert not (tmp_path / "in.hl7.ack").exists()


def test_batch_send_refuses_a_malformed_file_and_sends_nothing(
    tmp_path: Path, tls: TLSMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.hl7"
    path.write_bytes(b"BHS|^~\\&\r" + message(1) + message(2) + b"BTS|3\r")
    with listening(tls) as listener:
        assert run(["batch", "send", str(path), listener.target, *listener.tls_args()]) == 2
        assert listener.received == []
        err = capsys.readouterr().err
        assert "bad.hl7:6: BTS: BTS-1 says 3 messages" in err and "nothing sent" in err
        # --lenient sends the messages anyway.
        code = run(["batch", "send", "--lenient", str(path), listener.target, *listener.tls_args()])
        assert code == 0
        assert listener.received == ["M0001", "M0002"]


def test_batch_send_refuses_what_batch_check_refuses(
    tmp_path: Path, tls: TLSMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    # Regression: a message without MSH-10 failed `batch check` but `batch
    # send` skipped it and sent the others.
    path = tmp_path / "mixed.hl7"
    path.write_bytes(message(1) + b"MSH|^~\\&|A|B|C|D|||ADT^A01||P|2.5\r" + message(2))
    with listening(tls) as listener:
        assert run(["batch", "send", str(path), listener.target, *listener.tls_args()]) == 2
        assert listener.received == []
        err = capsys.readouterr().err
        assert "mixed.hl7:3: MSH: not an HL7 message (MSH-10" in err and "nothing sent" in err


def test_batch_send_queue_then_rerun_sends_nothing_again(
    tmp_path: Path, tls: TLSMaterial, capsys: pytest.CaptureFixture[str]
) -> None:
    path = batch_file(tmp_path / "in.hl7", 12)
    queue = ["--queue", "--store", str(tmp_path / "outbox")]
    with listening(tls, errors=False) as listener:
        args = ["batch", "send", str(path), listener.target, *listener.tls_args(), *queue]
        assert run(args) == 1
        assert sorted(listener.received) == [f"M{n:04d}" for n in range(12)]
        first = (tmp_path / "in.hl7.ack").read_bytes()
        (tmp_path / "in.hl7.ack").unlink()
        assert run(args) == 1
        assert len(listener.received) == 12  # nothing sent again
        assert "sent to" in capsys.readouterr().err
        again = (tmp_path / "in.hl7.ack").read_bytes()
        # The same ACKs, from the record.
        assert list(read_messages(path)) and _acks(first) == _acks(again)
        assert run([*args, "--again"]) == 1
        assert len(listener.received) == 24


def _acks(data: bytes) -> list[bytes]:
    return list(read_messages(io.BytesIO(data)))


def test_batch_send_queue_resumes_after_sigkill(tmp_path: Path, tls: TLSMaterial) -> None:
    path = batch_file(tmp_path / "in.hl7", 30)
    store = tmp_path / "outbox"
    with ThreadListener(tls, kill=12, errors=False) as listener:
        args = [
            "batch",
            "send",
            str(path),
            listener.target,
            *listener.tls_args(),
            "--queue",
            "--store",
            str(store),
            "-q",
        ]
        victim = subprocess.Popen(
            [sys.executable, "-m", "mllp_trio", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        listener.victim = victim
        try:
            assert victim.wait(STEP_TIMEOUT) == -signal.SIGKILL
        finally:
            if victim.poll() is None:
                victim.kill()
        assert len(listener.received) == 12
        assert not (tmp_path / "in.hl7.ack").exists()
        listener.kill_after = None
        assert run(args) == 1  # AR among them
    counts = Counter(listener.received)
    assert set(counts) == {f"M{n:04d}" for n in range(30)}  # nothing lost
    # Only the message in flight at the kill may go twice: the eleven
    # acknowledged before it are never resent.
    assert [cid for cid, n in counts.items() if n > 1] in ([], ["M0011"])
    assert all(counts[f"M{n:04d}"] == 1 for n in range(11))
    sent_ids = [read_msh(m).control_id_raw for m in read_messages(path)]
    matched, stray = match_acks(read_messages(tmp_path / "in.hl7.ack"), sent_ids)
    assert not stray
    # Every message sent by the rerun has its ACK; one delivered just before
    # the kill may lack it (delivered, its ACK not yet recorded).
    assert all(m.code for m in matched[11:])
    assert all(m.code in ("", "AA", "AR") for m in matched)
    assert os.path.exists(store / "journal.sqlite3")


async def test_store_queues_a_batch_chunk_once_across_a_crash(tmp_path: Path) -> None:
    # The chunk replayed after a crash (the rerun reads the file again from
    # its recorded progress) puts nothing in the queue twice.
    async with mllp_trio.store.open_sqlite_store(tmp_path) as store:
        record = await store.open_batch_send("h:1", "/in.hl7", "abc", 3)
        assert (record.next_seq, record.finished) == (0, False)
        await store.enqueue_batch(record.file_id, "h:1", [(1, message(1)), (2, message(2))], 3)
        again = await store.open_batch_send("h:1", "/in.hl7", "abc", 3)
        assert (again.file_id, again.next_seq) == (record.file_id, 3)
        items = [(1, message(1)), (2, message(2)), (3, message(3))]
        await store.enqueue_batch(record.file_id, "h:1", items, 4)
        assert (await store.outbound_stats()).pending == 3
        rows = await store.batch_send_rows(record.file_id)
        assert [(r.seq, r.status, r.code) for r in rows] == [
            (1, "pending", None),
            (2, "pending", None),
            (3, "pending", None),
        ]
        head = await store.fetch_next("h:1")
        assert head is not None and head.data == message(1)
        await store.mark_sent(head.message_id)
        await store.record_batch_answers([(head.message_id, "AA", b"ACK"), (999, "AA", None)])
        rows = await store.batch_send_rows(record.file_id, after_seq=0, limit=1)
        assert [(r.seq, r.status, r.code, r.ack) for r in rows] == [(1, "sent", "AA", b"ACK")]
        await store.finish_batch_send(record.file_id)
        assert (await store.open_batch_send("h:1", "/in.hl7", "abc", 3)).finished
        fresh = await store.open_batch_send("h:1", "/in.hl7", "abc", 3, again=True)
        assert fresh.file_id != record.file_id and fresh.next_seq == 0


def test_batch_send_bad_tls_files_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = batch_file(tmp_path / "in.hl7", 1)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    args = ["--cert", str(junk), "--key", str(junk), "--ca", str(junk)]
    assert run(["batch", "send", str(path), "127.0.0.1:9", *args]) == 2
    assert "TLS:" in capsys.readouterr().err
    assert not (tmp_path / "in.hl7.ack").exists()

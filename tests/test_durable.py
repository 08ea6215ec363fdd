"""Store before acknowledging: commit failures, duplicates, group commit, journal delivery, CLI."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ClientConfig, FramingConfig, ServerConfig
from mllp_trio._errors import DeliveryFailed
from mllp_trio._hl7 import HL7Error, InboundMessage, parse_reply
from mllp_trio._server import MLLPServer
from mllp_trio.proto._events import CommitNak, Message
from mllp_trio.store._base import (
    CommitResult,
    InboundRecord,
    MessageInfo,
    OutboundMessage,
    OutboundStats,
    StoredMessage,
    StoreError,
    StoreErrorKind,
    StoreStats,
)
from mllp_trio.store._journal import Delivery, JournalProcessor
from mllp_trio.store._sqlite import SQLiteStore, SQLiteStoreConfig, open_sqlite_store

from .conftest import StartServer
from .hl7_samples import make_message
from .raw_peer import RawPeer
from .store_helpers import Blocker

#: Appears in every test message; must never be printed by the store commands.
SECRET = "SECRETSURNAME^JANE"

DELIVERIES: list[Delivery] = ["before_ack", "after_commit"]


def journaled(
    handler: Any,
    store: Any,
    delivery: Delivery = "before_ack",
    *,
    config: ServerConfig | None = None,
) -> MLLPServer:
    """A listener that commits every message to ``store`` before answering."""
    hl7 = config.hl7 if config is not None else None
    processor = JournalProcessor(store, handler, delivery=delivery, config=hl7)
    return MLLPServer(processor=processor, config=config)


def journal_of(server: MLLPServer) -> JournalProcessor:
    assert isinstance(server.processor, JournalProcessor)
    return server.processor


def hl7(control_id: str, **kwargs: str) -> bytes:
    return make_message(control_id=control_id, patient_name=SECRET, **kwargs)


class FailingStore:
    """A MessageStore whose commits always fail, as a full disk would make them."""

    def __init__(self) -> None:
        self.commit_calls = 0

    @property
    def stats(self) -> StoreStats:
        return StoreStats()

    async def commit_inbound(
        self, record: InboundRecord, *, ack: bytes | None = None, delivered: bool = False
    ) -> CommitResult:
        self.commit_calls += 1
        await trio.lowlevel.checkpoint()
        raise StoreError("simulated: disk full", kind=StoreErrorKind.FULL)

    async def fetch_undelivered(
        self, limit: int = 100, *, after_id: int = 0
    ) -> list[StoredMessage]:
        await trio.lowlevel.checkpoint()
        return []

    # Nothing below may be reached when every commit fails.

    async def save_ack(self, message_id: int, ack: bytes, *, delivered: bool = False) -> None:
        raise AssertionError("save_ack after a failed commit")

    async def mark_delivered(self, message_id: int) -> None:
        raise AssertionError("mark_delivered after a failed commit")

    async def prune(self, *, now: datetime | None = None) -> int:
        raise NotImplementedError

    async def enqueue(self, destination: str, data: bytes) -> int:
        raise NotImplementedError

    async def fetch_next(self, destination: str) -> OutboundMessage | None:
        raise NotImplementedError

    async def pending_destinations(self) -> list[str]:
        raise NotImplementedError

    async def mark_attempt(self, message_id: int, error: str, next_attempt_at: datetime) -> None:
        raise NotImplementedError

    async def mark_sent(self, message_id: int) -> None:
        raise NotImplementedError

    async def mark_dead(self, message_id: int, reason: str) -> None:
        raise NotImplementedError

    async def requeue_dead(self, message_ids: Iterable[int] | None = None) -> int:
        raise NotImplementedError

    async def outbound_stats(self) -> OutboundStats:
        raise NotImplementedError

    async def count(self) -> int:
        raise NotImplementedError

    async def list_messages(self, limit: int = 100, offset: int = 0) -> Sequence[MessageInfo]:
        raise NotImplementedError

    async def export_message(self, message_id: int) -> bytes:
        raise NotImplementedError


class Recorder:
    """A handler that records what it was given; optional failures and a gate."""

    def __init__(self, *, fail_first: int = 0, gate: trio.Event | None = None) -> None:
        self.calls: list[InboundMessage] = []
        self.fail_first = fail_first
        self.gate = gate
        self._changed = trio.Event()

    async def __call__(self, message: InboundMessage) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.calls.append(message)
        self._changed.set()
        self._changed = trio.Event()
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("simulated handler failure")

    @property
    def control_ids(self) -> list[str]:
        return [m.control_id for m in self.calls]

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.calls) < count:
                await self._changed.wait()


async def wait_all_delivered(store: SQLiteStore) -> None:
    with trio.fail_after(10):
        while await store.fetch_undelivered():
            await trio.sleep(0.01)


async def send(port: int, data: bytes) -> bytes:
    """One message on a fresh connection; the raw reply."""
    async with open_mllp_client("127.0.0.1", port) as conn:
        return await conn.send_raw(data)


def code_of(reply: bytes, control_id: str) -> str:
    return str(parse_reply(reply, control_id, raise_on_negative=False).code)


# -- commit failures --------------------------------------------------------------


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize(("accept_ack", "expected"), [("", "AE"), ("AL", "CE")])
async def test_commit_failure_is_never_acknowledged_positively(
    start_server: StartServer, delivery: Delivery, accept_ack: str, expected: str
) -> None:
    store = FailingStore()
    handler = Recorder()
    port = await start_server(journaled(handler, store, delivery))
    message = hl7("F1", accept_ack=accept_ack, application_ack=accept_ack)
    async with open_mllp_client("127.0.0.1", port) as conn:
        reply = await conn.send(message, raise_on_negative=False)
    assert reply.code == expected
    assert [e.code for e in reply.errors] == ["207"]
    assert store.commit_calls == 1
    assert handler.calls == []  # nothing reaches the application unstored


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize("accept_ack", ["", "AL"])
async def test_commit_failure_is_a_commit_nak_in_release_2(
    start_server: StartServer, delivery: Delivery, accept_ack: str
) -> None:
    store = FailingStore()
    handler = Recorder()
    mllp2 = FramingConfig(framing="mllp2")
    server = journaled(handler, store, delivery, config=ServerConfig(framing=mllp2))
    port = await start_server(server)
    message = hl7("F2", accept_ack=accept_ack, application_ack=accept_ack)
    # By hand: the first thing back is a commit NAK, no HL7 reply.
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = RawPeer(tcp, mllp2.new_connection())
    try:
        await stream.send_event(Message(message))
        assert isinstance(await stream.receive_event(), CommitNak)
    finally:
        await stream.aclose()
    # Through the client: resent on every NAK, then reported as failed.
    config = ClientConfig(framing=mllp2, retries=2)
    async with open_mllp_client("127.0.0.1", port, config=config) as conn:
        with pytest.raises(DeliveryFailed):
            await conn.send(message)
    assert store.commit_calls == 1 + 3
    assert handler.calls == []
    assert server.stats.accepted_messages == 0


# -- duplicates ---------------------------------------------------------------------


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize("accept_ack", ["", "AL"])
async def test_duplicate_gets_the_identical_stored_ack(
    start_server: StartServer, tmp_path: Path, delivery: Delivery, accept_ack: str
) -> None:
    handler = Recorder()
    message = hl7("D1", accept_ack=accept_ack, application_ack=accept_ack)
    async with open_sqlite_store(tmp_path) as store:
        server = journaled(handler, store, delivery)
        port = await start_server(server)
        first = await send(port, message)
        await handler.wait_for(1)
        again = await send(port, message)
        third = await send(port, message)
        assert again == first  # byte for byte, MSH-7 and MSH-10 included
        assert third == first
        assert code_of(first, "D1") == ("CA" if accept_ack else "AA")
        # Nothing is left to deliver: the duplicates were never journaled.
        assert await journal_of(server).recover() == 0
        assert handler.control_ids == ["D1"]
        assert await store.count() == 1
        assert store.stats.duplicates == 2
        assert store.stats.records_committed == 1


async def test_duplicate_while_the_original_is_being_handled(
    start_server: StartServer, tmp_path: Path
) -> None:
    # A resend after an ACK timeout can arrive while the original's handler
    # still runs: it must wait for that answer, not run the handler again.
    gate = trio.Event()
    handler = Recorder(gate=gate)
    replies: list[bytes] = []

    async def send_one() -> None:
        replies.append(await send(port, hl7("P1")))

    async with open_sqlite_store(tmp_path) as store:
        port = await start_server(journaled(handler, store))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_one)
            with trio.fail_after(10):
                while store.stats.records_committed < 1:
                    await trio.sleep(0.01)
            nursery.start_soon(send_one)
            with trio.fail_after(10):
                while store.stats.duplicates < 1:
                    await trio.sleep(0.01)
            gate.set()
        assert len(replies) == 2
        assert replies[0] == replies[1]
        assert code_of(replies[0], "P1") == "AA"
        assert handler.control_ids == ["P1"]


async def test_duplicate_of_a_final_error_gets_the_same_error(
    start_server: StartServer, tmp_path: Path
) -> None:
    calls = 0

    async def refuse(message: InboundMessage) -> None:
        nonlocal calls
        calls += 1
        raise HL7Error("unknown patient", code=204)

    async with open_sqlite_store(tmp_path) as store:
        port = await start_server(journaled(refuse, store))
        first = await send(port, hl7("E1"))
        assert code_of(first, "E1") == "AE"
        assert await send(port, hl7("E1")) == first
        assert calls == 1
        assert await store.count() == 1


async def test_duplicate_after_a_passing_handler_failure_is_handled_again(
    start_server: StartServer, tmp_path: Path
) -> None:
    # AE 207 asks the sender to resend; the resend must reach the handler
    # (at least once), not be answered from the journal.
    handler = Recorder(fail_first=1)
    async with open_sqlite_store(tmp_path) as store:
        port = await start_server(journaled(handler, store))
        first = await send(port, hl7("R1"))
        assert code_of(first, "R1") == "AE"
        second = await send(port, hl7("R1"))
        assert code_of(second, "R1") == "AA"
        assert handler.control_ids == ["R1", "R1"]
        assert await store.count() == 1
        # Now final: a third copy is answered from the journal.
        assert await send(port, hl7("R1")) == second
        assert len(handler.calls) == 2


# -- group commit ---------------------------------------------------------------------


async def test_group_commit_over_many_connections(
    start_server: StartServer, tmp_path: Path
) -> None:
    clients, per_client = 32, 4
    codes: list[str] = []

    async def client(n: int) -> None:
        async with open_mllp_client("127.0.0.1", port) as conn:
            for i in range(per_client):
                reply = await conn.send(hl7(f"G{n:02d}-{i}"), raise_on_negative=False)
                codes.append(reply.code)

    async with open_sqlite_store(tmp_path) as store:
        port = await start_server(journaled(None, store))
        blocker = Blocker()
        async with trio.open_nursery() as nursery:
            await blocker.hold(store, nursery)
            for n in range(clients):
                nursery.start_soon(client, n)
            await trio.testing.wait_all_tasks_blocked()
            assert codes == []  # nothing is acknowledged before its commit
            blocker.release.set()
        stats = store.stats
        assert codes == ["AA"] * (clients * per_client)
        assert stats.records_committed == clients * per_client
        assert stats.max_batch_size > 1
        assert await store.count() == clients * per_client


# -- journal delivery: after_commit and recovery ------------------------------------------


async def test_after_commit_acknowledges_first_then_delivers_every_message(
    start_server: StartServer, tmp_path: Path
) -> None:
    gate = trio.Event()
    handler = Recorder(gate=gate)
    sent = [hl7(f"A{i}") for i in range(5)]
    async with open_sqlite_store(tmp_path) as store:
        port = await start_server(journaled(handler, store, "after_commit"))
        async with open_mllp_client("127.0.0.1", port) as conn:
            for data in sent:
                # AA while the handler is still held: acknowledged on commit.
                assert (await conn.send(data)).code == "AA"
        assert handler.calls == []
        gate.set()
        await handler.wait_for(len(sent))
        assert [m.raw for m in handler.calls] == sent
        await wait_all_delivered(store)
        assert len(handler.calls) == len(sent)


async def test_after_commit_retries_a_failing_handler(
    start_server: StartServer, tmp_path: Path
) -> None:
    handler = Recorder(fail_first=1)
    async with open_sqlite_store(tmp_path) as store:
        server = journaled(handler, store, "after_commit")
        journal_of(server).retry_interval = 0.05
        port = await start_server(server)
        assert code_of(await send(port, hl7("T1")), "T1") == "AA"
        await handler.wait_for(2)
        assert handler.control_ids == ["T1", "T1"]
        await wait_all_delivered(store)


async def test_after_commit_resumes_after_restart(tmp_path: Path) -> None:
    sent = [hl7(f"S{i}") for i in range(3)]

    async def stuck(message: InboundMessage) -> None:
        await trio.sleep_forever()

    async with open_sqlite_store(tmp_path) as store:
        server = journaled(stuck, store, "after_commit")
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            for data in sent:
                assert code_of(await send(port, data), read_id(data)) == "AA"
            server.shutdown()
        assert len(await store.fetch_undelivered()) == 3

    handler = Recorder()
    async with open_sqlite_store(tmp_path) as store, trio.open_nursery() as nursery:
        server = journaled(handler, store, "after_commit")
        await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
        await handler.wait_for(3)
        assert [m.raw for m in handler.calls] == sent
        await wait_all_delivered(store)
        server.shutdown()


async def test_before_ack_recovers_a_journaled_unhandled_message(
    start_server: StartServer, tmp_path: Path
) -> None:
    data = hl7("J1")
    handler = Recorder()
    async with open_sqlite_store(tmp_path) as store:
        # As if the process died between the commit and the handler.
        await store.commit_inbound(
            InboundRecord(
                data=data,
                peer="127.0.0.1:1",
                control_id="J1",
                sending_application="LAB^1.2.3^ISO",
                sending_facility="HOSP",
            )
        )
        server = journaled(handler, store)
        port = await start_server(server)
        # recover() runs before the listener reports itself started.
        assert [m.raw for m in handler.calls] == [data]
        assert await store.fetch_undelivered() == []
        # The sender's resend is now a duplicate: answered, not handled again.
        assert code_of(await send(port, data), "J1") == "AA"
        assert len(handler.calls) == 1
        assert await store.count() == 1


def read_id(data: bytes) -> str:
    return data.split(b"\r")[0].split(b"|")[9].decode()


# -- the command line ---------------------------------------------------------------------


async def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "mllp_trio", *map(str, args)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=cwd,
    )


async def journal_with(tmp_path: Path, messages: Sequence[bytes]) -> list[int]:
    ids: list[int] = []
    async with open_sqlite_store(tmp_path / "data") as store:
        for data in messages:
            result = await store.commit_inbound(
                InboundRecord(
                    data=data,
                    peer="127.0.0.1:4242",
                    control_id=read_id(data),
                    sending_application="LAB^1.2.3^ISO",
                    sending_facility="HOSP",
                )
            )
            ids.append(result.message_id)
    return ids


async def test_cli_store_count_list_export(tmp_path: Path) -> None:
    messages = [hl7("C1"), hl7("C2") + b"ZZZ|\xe9\xff\r"]
    ids = await journal_with(tmp_path, messages)
    store_dir = tmp_path / "data"

    count = await cli("store", "count", "--store", store_dir, cwd=tmp_path)
    assert count.returncode == 0, count.stderr
    assert count.stdout == b"2\n"

    listing = await cli("store", "list", "--store", store_dir, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    text = listing.stdout.decode()
    lines = text.splitlines()
    assert len(lines) == 2
    assert "C2" in lines[0] and "C1" in lines[1]  # newest first
    assert str(ids[0]) in lines[1]
    assert f"{len(messages[0])} bytes" in lines[1]
    assert "127.0.0.1:4242" in text
    for secret in (SECRET, "SECRETSURNAME", "12345^^^HOSP", "PID", "EVN"):
        assert secret not in text, f"message content {secret!r} printed by store list"

    for message_id, data in zip(ids, messages, strict=True):
        export = await cli("store", "export", str(message_id), "--store", store_dir, cwd=tmp_path)
        assert export.returncode == 0, export.stderr
        assert export.stdout == data

    missing = await cli("store", "export", "999", "--store", store_dir, cwd=tmp_path)
    assert missing.returncode != 0
    assert SECRET.encode() not in missing.stdout + missing.stderr


async def test_cli_store_requeue(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "out") as store:
        first = await store.enqueue("127.0.0.1:9", hl7("Q1"))
        second = await store.enqueue("127.0.0.1:9", hl7("Q2"))
        await store.mark_dead(first, "AR refused")
        await store.mark_dead(second, "AR refused")
    result = await cli("store", "requeue", str(first), "--store", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"requeued 1 dead letter(s)" in result.stdout
    result = await cli("store", "requeue", "--store", tmp_path / "out", cwd=tmp_path)
    assert b"requeued 1 dead letter(s)" in result.stdout
    async with open_sqlite_store(tmp_path / "out", config=SQLiteStoreConfig(read_only=True)) as s:
        stats = await s.outbound_stats()
        assert (stats.pending, stats.dead) == (2, 0)
        head = await s.fetch_next("127.0.0.1:9")
        assert head is not None
        assert head.message_id == first  # requeued letters keep their place


async def test_cli_listen_without_store_says_so(tmp_path: Path) -> None:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "mllp_trio",
            "listen",
            "--plaintext",
            "--no-store",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(20):
            while b"listening on" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, output
                output += chunk
        assert b"--no-store" in output
        assert b"without being stored" in output
        assert b"journal:" not in output
        # The signal handlers are in place once "listening on" is printed.
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0
        assert not (tmp_path / "mllp-data").exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- no handler: one transaction per message ---------------------------------------


@pytest.mark.parametrize("accept_ack", ["", "AL"])
async def test_without_handler_message_answer_and_delivery_are_one_transaction(
    start_server: StartServer, tmp_path: Path, accept_ack: str
) -> None:
    # Nothing runs between the commit and the answer, so the answer is built
    # first and journaled with the message, delivered: one fsync, not two.
    message = hl7("N1", accept_ack=accept_ack, application_ack=accept_ack)
    async with open_sqlite_store(tmp_path) as store:
        server = journaled(None, store)
        port = await start_server(server)
        first = await send(port, message)
        assert code_of(first, "N1") == ("CA" if accept_ack else "AA")
        assert store.stats.transactions == 1
        assert store.stats.records_committed == 1
        assert await store.fetch_undelivered() == []  # nothing left for recovery or retention
        (entry,) = await store.journal_after(0)
        assert entry.ack == first  # the answer sent, for duplicates and journal consumers
        again = await send(port, message)
        assert again == first  # byte for byte
        assert store.stats.duplicates == 1
        assert await store.count() == 1


async def test_without_handler_a_journaled_unanswered_message_gets_its_answer_saved(
    start_server: StartServer, tmp_path: Path
) -> None:
    # Journaled by an earlier run that died before answering (or whose
    # handler failed): the resend is answered AA and that answer is saved.
    data = hl7("N2")
    async with open_sqlite_store(tmp_path) as store:
        stored = await store.commit_inbound(
            InboundRecord(
                data=data,
                peer="127.0.0.1:1",
                control_id="N2",
                sending_application="LAB^1.2.3^ISO",
                sending_facility="HOSP",
            )
        )
        server = journaled(None, store)
        port = await start_server(server)  # recovery delivers it (to nobody)
        reply = await send(port, data)
        assert code_of(reply, "N2") == "AA"
        assert await store.fetch_undelivered() == []
        assert await store.count() == 1
        (entry,) = await store.journal_after(0)
        assert entry.message.message_id == stored.message_id


async def test_commit_delivered_marks_new_entries_only(tmp_path: Path) -> None:
    record = InboundRecord(
        data=hl7("N3"),
        peer="127.0.0.1:1",
        control_id="N3",
        sending_application="LAB",
        sending_facility="HOSP",
    )
    async with open_sqlite_store(tmp_path) as store:
        first = await store.commit_inbound(record, ack=b"A", delivered=True)
        assert (first.duplicate, first.delivered) == (False, True)
        assert await store.fetch_undelivered() == []
        (info,) = await store.list_messages()
        assert info.delivered_at is not None
        other = attrs.evolve(record, control_id="N4")
        second = await store.commit_inbound(other)
        assert second.delivered is False
        again = await store.commit_inbound(other, ack=b"B", delivered=True)
        # A duplicate is left as it is: its own answer and delivery stand.
        assert (again.duplicate, again.ack, again.delivered) == (True, None, False)
        assert [m.message_id for m in await store.fetch_undelivered()] == [second.message_id]

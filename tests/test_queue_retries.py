"""Issue 12, the sending queue: one layer owns retries, a deadline instead of a few attempts, flush.

Each test here failed before issue 12.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from mllp_trio._config import ClientConfig
from mllp_trio._server import MLLPServer
from mllp_trio.proto._events import EndOfStream, Message
from mllp_trio.store._queue import QueueConfig, QueuedSender, SendResult

from .conftest import StartServer
from .raw_peer import RawPeer
from .test_client import ack, control_id, start
from .test_sender import Destination, MemoryQueue, free_port, hl7


def queued(
    store: MemoryQueue, port: int, config: QueueConfig, client: ClientConfig | None = None
) -> QueuedSender:
    return QueuedSender(
        store,
        "127.0.0.1",
        port,
        client_config=client or ClientConfig(connect_timeout=5, ack_timeout=5),
        config=config,
    )


async def test_the_queue_owns_retries_one_transmission_per_attempt(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    async def never_answer(stream: RawPeer, number: int) -> None:
        while not isinstance(event := await stream.receive_event(), EndOfStream):
            server.received.append(event.data)  # type: ignore[union-attr]

    server, port = await start(nursery, "mllp", never_answer)
    store = MemoryQueue()
    # The client's own retries (2) would multiply the queue's 3 attempts.
    sender = queued(
        store,
        port,
        QueueConfig(max_attempts=3, backoff_base=0.5, backoff_cap=1.0),
        ClientConfig(ack_timeout=1, retries=2),
    )
    await sender.enqueue(hl7("N1"))
    report = await sender.deliver_pending()
    await sender.aclose()
    assert len(server.received) == 3
    assert (report.retried, report.dead) == (2, 1)


async def test_a_30_s_outage_is_waited_out_with_the_default_deadline(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    port = await free_port()
    store = MemoryQueue()
    sender = queued(store, port, QueueConfig(backoff_cap=8.0))
    await sender.enqueue(hl7("O1"))
    await sender.enqueue(hl7("O2"))
    results: list[SendResult] = []
    done = trio.Event()

    async def deliver() -> None:
        report = await sender.deliver_pending(on_result=results.append)
        assert (report.delivered, report.dead) == (2, 0)
        done.set()

    nursery.start_soon(deliver)
    await trio.sleep(30)
    dest = Destination()
    await nursery.start(partial(MLLPServer(dest).serve, port, host="127.0.0.1"))
    await done.wait()
    await sender.aclose()
    assert dest.received == ["O1", "O2"]
    outcomes = [r.outcome for r in results]
    assert outcomes[-2:] == ["delivered", "delivered"]
    assert set(outcomes[:-2]) == {"retry"} and len(outcomes) >= 6
    assert all(r.code == "ERROR" and "refused" in r.text.lower() for r in results[:-2])
    assert all(r.retry_in is not None and 0 <= r.retry_in <= 8.0 for r in results[:-2])


async def test_give_up_after_the_deadline_with_the_last_attempt_on_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    port = await free_port()
    store = MemoryQueue()
    sender = queued(store, port, QueueConfig(give_up_after=60, backoff_cap=16.0))
    await sender.enqueue(hl7("G1"))
    start_time = trio.current_time()
    report = await sender.deliver_pending()
    # Refused connections fail at once: the last attempt was at the deadline.
    assert trio.current_time() - start_time == pytest.approx(60, abs=1e-6)
    await sender.aclose()
    assert (report.delivered, report.dead) == (0, 1)
    assert all(t - start_time < 60 for _, t, _ in store.attempts)
    row = store.rows[1]
    assert row.status == "dead"
    assert row.dead_reason is not None and "in 60 s" in row.dead_reason


async def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="give_up_after"):
        QueueConfig(give_up_after=0)
    with pytest.raises(ValueError, match="max_attempts"):
        QueueConfig(max_attempts=0)
    with pytest.raises(ValueError, match="backoff_cap"):
        QueueConfig(backoff_cap=-1)


async def test_flush_requeues_this_destinations_dead_letters_and_sends_them(
    start_server: StartServer, autojump_clock: trio.abc.Clock
) -> None:
    dest = Destination({"F1": ["AR"]})
    port = await start_server(MLLPServer(dest))
    store = MemoryQueue()
    sender = queued(store, port, QueueConfig())
    await sender.enqueue(hl7("F1"))
    assert (await sender.deliver_pending()).dead == 1
    other = await store.enqueue("elsewhere:1", hl7("X9"))
    await store.mark_dead(other, "AR")
    # Nothing new to send: flush alone brings the dead letter back and delivers it.
    report = await sender.flush()
    await sender.aclose()
    assert (report.requeued, report.delivered, report.dead) == (1, 1, 0)
    assert dest.received == ["F1", "F1"]
    assert store.rows[other].status == "dead"  # another destination's: untouched


async def test_queue_through_a_server_that_closes_after_each_message(
    nursery: trio.Nursery,
) -> None:
    async def one_and_close(stream: RawPeer, number: int) -> None:
        message = await server.message(stream)
        await stream.send_event(Message(ack(control_id(message))))

    server, port = await start(nursery, "mllp", one_and_close)
    store = MemoryQueue()
    no_resend = ClientConfig(connect_timeout=5, ack_timeout=5, retries=0)
    sender = queued(store, port, QueueConfig(max_attempts=1), no_resend)
    for i in range(10):
        await sender.enqueue(hl7(f"H{i}"))
    report = await sender.deliver_pending()
    await sender.aclose()
    assert (report.delivered, report.retried, report.dead) == (10, 0, 0)
    assert len(server.received) == 10

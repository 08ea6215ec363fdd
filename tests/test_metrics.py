"""Prometheus metrics over HTTP after a known exchange: the counts are exact."""

from __future__ import annotations

from pathlib import Path

import trio

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ServerConfig
from mllp_trio._server import MLLPServer
from mllp_trio._service import LatencyHistogram, ListenerWatch, MetricsCollector
from mllp_trio.proto import MLLPConnection
from mllp_trio.proto._events import Message

from .hl7_samples import make_message
from .raw_peer import RawPeer
from .service_helpers import http_get, running_service, samples, scrape

L = (("listener", "test"),)


def label(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"listener": "test", **labels}.items()))


async def test_scrape_after_a_known_exchange_has_exact_counts(tmp_path: Path) -> None:
    config = ServerConfig(max_connections=1)
    async with running_service(tmp_path / "journal", config=config) as svc:
        # Three messages and one duplicate on a client connection.
        async with open_mllp_client("127.0.0.1", svc.port) as client:
            for cid in ("C1", "C2", "C3", "C1"):
                reply = await client.send_raw(make_message(control_id=cid))
                assert b"MSA|AA|" + cid.encode() in reply
        while svc.server.stats.active:
            await trio.sleep(0.001)
        # A raw peer: an empty frame (invalid), a frame without MSH (nothing
        # to answer), then a message whose reply proves both were processed.
        # Meanwhile a second connection is refused by the limit of one.
        stream = await trio.open_tcp_stream("127.0.0.1", svc.port)
        peer = RawPeer(stream, MLLPConnection())
        await peer.send_bytes(b"\x0b\x1c\x0d")
        await peer.send_event(Message(b"NOT HL7\r"))
        await peer.send_event(Message(make_message(control_id="C4")))
        reply = await peer.receive_event()
        assert isinstance(reply, Message) and b"MSA|AA|C4" in reply.data
        refused = await trio.open_tcp_stream("127.0.0.1", svc.port)
        assert await refused.receive_some(10) == b""  # closed at once
        await refused.aclose()
        await peer.aclose()
        while svc.server.stats.active:
            await trio.sleep(0.001)

        found = await scrape(svc.http_port)

    expected = {
        ("mllp_connections_accepted_total", L): 2,
        ("mllp_connections_active", L): 0,
        ("mllp_connections_refused_total", label(cause="connection_limit")): 1,
        ("mllp_connections_refused_total", label(cause="peer_limit")): 0,
        ("mllp_connections_refused_total", label(cause="not_allowed")): 0,
        ("mllp_messages_received_total", L): 6,
        ("mllp_messages_answered_total", label(code="AA")): 5,
        ("mllp_messages_answered_total", label(code="AE")): 0,
        ("mllp_messages_answered_total", label(code="AR")): 0,
        ("mllp_messages_answered_total", label(code="none")): 1,
        ("mllp_invalid_frames_total", L): 1,
        ("mllp_protocol_errors_total", L): 0,
        ("mllp_timeouts_total", label(kind="idle")): 0,
        ("mllp_buffered_bytes", L): 0,
        ("mllp_memory_budget_bytes", L): ServerConfig().memory_budget,
        ("mllp_connections_shed_total", L): 0,
        ("mllp_connections_struck_out_total", L): 0,
        ("mllp_ack_latency_seconds_count", L): 6,
        ("mllp_ack_latency_seconds_bucket", label(le="+Inf")): 6,
        ("mllp_journal_records_total", ()): 4,
        ("mllp_duplicates_total", ()): 1,
        ("mllp_journal_entries", (("state", "delivered"),)): 4,
        ("mllp_journal_entries", (("state", "undelivered"),)): 0,
        ("mllp_outbound_messages", (("state", "pending"),)): 0,
        ("mllp_dead_letters", ()): 0,
        ("mllp_outbound_attempts", ()): 0,
    }
    assert {key: found.get(key) for key in expected} == expected
    # Every journal write is in the group-size histogram: 5 commits (the
    # duplicate's lookup is a write request too); without a handler each
    # ACK is journaled with its message, not saved by a write of its own.
    transactions = found[("mllp_journal_commit_seconds_count", ())]
    assert transactions == found[("mllp_journal_group_size_count", ())] >= 1
    assert found[("mllp_journal_group_size_sum", ())] == 5
    assert found[("mllp_journal_size_bytes", ())] > 0
    # No label anywhere carries a control id or message content.
    values = {v for _, labels in found for _, v in labels}
    assert not {v for v in values if "C1" in v or "NOT HL7" in v or "DOE" in v}


async def test_endpoint_answers_health_and_unknown_paths(tmp_path: Path) -> None:
    async with running_service(tmp_path / "journal") as svc:
        assert await http_get(svc.http_port, "/healthz") == (200, "ok\n")
        assert await http_get(svc.http_port, "/readyz") == (200, "ready\n")
        status, body = await http_get(svc.http_port, "/nope")
        assert status == 404 and "/metrics" in body
        # Not HTTP at all: the endpoint answers 400 and stays up.
        stream = await trio.open_tcp_stream("127.0.0.1", svc.http_port)
        async with stream:
            await stream.send_all(b"\x0bMSH|garbage\x1c\r\n\r\n")
            assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 400")
        assert (await http_get(svc.http_port, "/healthz"))[0] == 200


def test_collector_serves_an_embedders_listener_without_a_store() -> None:
    # The library side: an application registers the collector in its own
    # registry; the numbers are the listener's own ServerStats.
    from prometheus_client import CollectorRegistry, generate_latest

    server = MLLPServer()
    server.stats.messages = 7
    server.stats.answered_by_code.update({"AA": 6, "XYZ": 1})
    watch = ListenerWatch("app", server, LatencyHistogram((0.1, float("inf"))))
    watch.attach()
    registry = CollectorRegistry()
    registry.register(MetricsCollector([watch]))
    found = samples(generate_latest(registry).decode())
    app = (("listener", "app"),)
    assert found[("mllp_messages_received_total", app)] == 7
    assert found[("mllp_messages_answered_total", (("code", "AA"), *app))] == 6
    # An ACK code outside table 0008 does not become a label of its own.
    assert found[("mllp_messages_answered_total", (("code", "other"), *app))] == 1
    assert server.on_answered is watch


async def test_buffered_bytes_show_a_partial_frame(tmp_path: Path) -> None:
    async with running_service(tmp_path / "journal") as svc:
        stream = await trio.open_tcp_stream("127.0.0.1", svc.port)
        partial = b"\x0b" + make_message(control_id="P1")[:100]
        await stream.send_all(partial)
        with trio.fail_after(30):  # a guard against a hang, not a measurement
            while (await scrape(svc.http_port))[("mllp_buffered_bytes", L)] == 0:
                await trio.sleep(0.01)
        found = await scrape(svc.http_port)
        await stream.aclose()
    # The frame reader holds the frame's content: at least the bytes after SB.
    assert len(partial) - 1 <= found[("mllp_buffered_bytes", L)] <= len(partial)

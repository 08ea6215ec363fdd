"""Hostile load: idle, trickling, junk and giant-frame connections, half-open TLS handshakes.

One well-behaved client keeps sending meanwhile. The assertions are on its
answers (every message AA) and on the listener's peak memory (tracemalloc,
in process), never on wall-clock time. The listener's own counters show that
each kind of hostile peer was dealt with: refused at the caps, closed by a
timeout, struck out, shed by the memory budget.
"""

from __future__ import annotations

import functools
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from fuzz.hostile import Attack, run_attack
from mllp_trio._config import FramingConfig, ServerConfig
from mllp_trio._server import MLLPServer
from mllp_trio._tls import ServerTLS

from .tls_helpers import TLSMaterial

MESSAGE = b"MSH|^~\\&|GOOD|H|EHR|C|20240101||ADT^A01|CTRLID|P|2.5\rPID|1||1^^^H^MR\r"
MiB = 1024 * 1024


@asynccontextmanager
async def listener(
    config: ServerConfig, ssl_context: ServerTLS | None = None
) -> AsyncIterator[tuple[int, MLLPServer]]:
    server = MLLPServer(config=config, ssl_context=ssl_context)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], server
        nursery.cancel_scope.cancel()


async def test_good_client_is_served_while_idle_trickling_and_junk_peers_hit_the_caps() -> None:
    config = ServerConfig(
        max_connections=40,
        max_connections_per_peer=40,
        idle_timeout=1.0,
        read_timeout=0.5,
        max_strikes=3,
    )
    attack = Attack(trickle=8, junk=8, idle=45, waves=2, messages=30)
    async with listener(config) as (port, server):
        result = await run_attack(port, attack, message=MESSAGE, pause=0.05)
    assert result.errors == []
    assert result.acked == attack.messages
    stats = server.stats
    assert stats.refused_by_cause["connection_limit"] > 0  # 61 hostile, cap 40
    assert stats.timeouts_by_kind["idle"] > 0  # idle peers
    assert stats.timeouts_by_kind["frame"] > 0  # trickling peers
    assert stats.struck_out > 0  # junk peers


async def test_good_client_is_served_while_giant_frames_exhaust_the_memory_budget() -> None:
    config = ServerConfig(framing=FramingConfig(max_message_size=1 * MiB), memory_budget=3 * MiB)
    # 12 open frames of 1 MiB would hold 12 MiB without the budget.
    attack = Attack(giant=12, giant_size=1 * MiB, waves=2, messages=30)
    tracemalloc.start()
    try:
        async with listener(config) as (port, server):
            tracemalloc.reset_peak()
            result = await run_attack(port, attack, message=MESSAGE)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.errors == []
    assert result.acked == attack.messages
    assert server.stats.shed_connections > 0
    # The budget, one read per connection, and the rest of the process (the
    # peers' own send buffers among it): well below the 12 MiB unbudgeted.
    assert peak < 3 * MiB + 13 * config.receive_size + 3 * MiB, peak


async def test_good_tls_client_is_served_while_handshakes_are_left_half_open(
    tls: TLSMaterial,
) -> None:
    config = ServerConfig(handshake_timeout=0.5, max_connections=20, max_connections_per_peer=20)
    attack = Attack(half_tls=12, idle=20, waves=2, messages=20)
    async with listener(config, ServerTLS(tls.server_config())) as (port, server):
        result = await run_attack(
            port, attack, message=MESSAGE, ssl_context=tls.client_context(), pause=0.05
        )
    assert result.errors == []
    assert result.acked == attack.messages
    assert server.stats.handshake_failures_by_reason["timeout"] > 0
    assert server.stats.refused_by_cause["connection_limit"] > 0

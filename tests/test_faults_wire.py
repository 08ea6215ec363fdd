"""Faults on the wire: a connection cut at every byte offset of a frame, then the client's retry.

Against the listener with the journal (``JournalProcessor`` over
``open_sqlite_store``), for MLLP release 1, release 2 and HLLP, plain TCP
(every offset, closed and reset) and TLS (sampled offsets of the TLS stream,
in the handshake and in the frame). After every cut and every retry:

* nothing partial is stored: each journal entry is a whole message, byte for byte;
* nothing uncommitted is acknowledged: a cut before the frame's last byte
  gets no AA and no commit ACK, and whatever was acknowledged is in the journal;
* exactly once: each message is in the journal once after the retry.
"""

from __future__ import annotations

import functools
import gc
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from fuzz.faults import (
    CutResult,
    acknowledged,
    check_journal,
    cut_plain,
    cut_tls,
    frame_for,
    offsets_of,
    retry,
    tls_flights,
)
from mllp_trio._config import FramingConfig, ServerConfig
from mllp_trio._server import MLLPServer
from mllp_trio._tls import ServerTLS
from mllp_trio.store import JournalProcessor, SQLiteStore, open_sqlite_store

from .tls_helpers import TLSMaterial

FRAMINGS = ["mllp", "mllp2", "hllp"]


def message(control_id: str) -> bytes:
    return f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|{control_id}|P|2.5\r".encode("ascii")


@asynccontextmanager
async def journaled_listener(
    directory: Path, framing: str, ssl_context: ServerTLS | None = None
) -> AsyncIterator[tuple[int, SQLiteStore, MLLPServer]]:
    config = ServerConfig(
        framing=FramingConfig(framing=framing),  # type: ignore[arg-type]
        max_connections_per_peer=1000,
        handshake_timeout=10,
    )
    async with open_sqlite_store(directory) as store:
        server = MLLPServer(
            processor=JournalProcessor(store), config=config, ssl_context=ssl_context
        )
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
            yield listeners[0].socket.getsockname()[1], store, server
            nursery.cancel_scope.cancel()


async def run_all(jobs: list[Callable[[], Awaitable[object]]], limit: int = 32) -> list[object]:
    """Run the jobs concurrently, at most ``limit`` at a time; results in order."""
    results: list[object] = [None] * len(jobs)
    gate = trio.Semaphore(limit)

    async def one(index: int) -> None:
        async with gate:
            results[index] = await jobs[index]()

    async with trio.open_nursery() as nursery:
        for index in range(len(jobs)):
            nursery.start_soon(one, index)
    return results


async def cut_and_retry(
    port: int,
    store: SQLiteStore,
    framing: str,
    cuts: list[tuple[int, bool]],
    cut: Callable[[bytes, int, bool], Awaitable[CutResult]],
    *,
    complete: int,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Cut a connection per ``(offset, reset)``, each for its own message, then retry them all.

    ``complete`` is the offset from which the whole frame has been written.
    """
    messages = {f"C{i:04d}": message(f"C{i:04d}") for i in range(len(cuts))}
    wires = {cid: frame_for(framing, raw) for cid, raw in messages.items()}
    ids = list(messages)
    results = await run_all(
        [
            functools.partial(cut, wires[cid], offset, reset)
            for cid, (offset, reset) in zip(ids, cuts, strict=True)
        ]
    )
    acked = []
    for cid, result in zip(ids, results, strict=True):
        assert isinstance(result, CutResult)
        if acknowledged(result.received):
            assert result.offset >= complete, f"ACK for a frame cut at {result.offset}"
            acked.append(cid)
    # What was acknowledged on a cut connection was committed before the answer.
    check = await check_journal(store, messages)
    assert not set(acked) & set(check.missing)
    codes = await run_all(
        [
            functools.partial(retry, port, framing, messages[cid], ssl_context=ssl_context)
            for cid in ids
        ]
    )
    assert set(codes) == {"AA"}
    check = await check_journal(store, messages)
    assert check.ok, check
    assert check.entries == len(messages)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_cut_at_every_offset_then_retry_stores_each_message_once(
    framing: str, tmp_path: Path
) -> None:
    wire = frame_for(framing, message("C0000"))
    cuts = [(offset, reset) for offset in offsets_of(wire) for reset in (False, True)]
    async with journaled_listener(tmp_path / "journal", framing) as (port, store, server):

        async def cut(wire: bytes, offset: int, reset: bool) -> CutResult:
            return await cut_plain(port, wire, offset, reset=reset)

        await cut_and_retry(port, store, framing, cuts, cut, complete=len(wire))
        # Complete frames cut before the answer were stored and acknowledged on
        # retry as duplicates; partial ones never reached the processor.
        assert server.stats.messages >= len(cuts)


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_tls_cut_in_the_handshake_and_the_frame_then_retry(
    framing: str, tmp_path: Path, tls: TLSMaterial
) -> None:
    client_context = tls.client_context()
    wire = frame_for(framing, message("C0000"))
    server_tls = ServerTLS(tls.server_config())
    async with journaled_listener(tmp_path / "journal", framing, server_tls) as (
        port,
        store,
        server,
    ):
        flights = await tls_flights(port, client_context, wire)
        assert 0 < flights.hello < flights.handshake < flights.total
        offsets = flights.offsets(inside_frame=2)
        cuts = [(offset, reset) for offset in offsets for reset in (False, True)]

        async def cut(wire: bytes, offset: int, reset: bool) -> CutResult:
            return await cut_tls(port, client_context, wire, offset, reset=reset)

        await cut_and_retry(
            port, store, framing, cuts, cut, complete=flights.total, ssl_context=client_context
        )
        # Cuts in the handshake cost their connection only.
        assert server.stats.handshake_failures > 0


async def test_reset_before_accept_leaves_no_unclosed_tls_socket(
    tls: TLSMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[sys.UnraisableHookArgs] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    server = MLLPServer(ssl_context=ServerTLS(tls.server_config()))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(server.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        # Blocking calls: the listener cannot accept before the reset arrives.
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        with trio.fail_after(10):
            while server.stats.accepted < 1 or server.stats.active:
                await trio.sleep(0.01)
        gc.collect()
        nursery.cancel_scope.cancel()
    assert [repr(u.exc_value) for u in unraisable] == []

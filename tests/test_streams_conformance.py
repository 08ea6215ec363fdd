"""The custom streams under trio's own conformance suites, over real loopback sockets.

``trio.testing.check_half_closeable_stream`` (LeanTCPStream) and
``check_two_way_stream`` (SSLSocketStream) check the ``trio.abc.Stream``
contract: which error after close or EOF, conflict detection, wake-up on
close, and that every call is a checkpoint.

One relaxation, and only for what ``LeanTCPStream`` documents: a
``send_all`` or ``receive_some`` that did not have to wait is a cancel point
but only every sixteenth such call is a schedule point (the fairness yield).
The suite's ``assert_checkpoints`` is swapped for one that still demands a
cancel point for those two methods, and the full checkpoint (cancel point
and schedule point) for every other call. ``SSLSocketStream`` runs the
suite unmodified.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trio.testing._check_streams as check_streams

from mllp_trio._io._sslsocket import SSLSocketStream
from mllp_trio._io._tcpstream import LeanTCPStream

from .tls_helpers import TLSMaterial, make_tls_material

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="clogging a connection reads Linux TCP_INFO"
)

# ---------------------------------------------------------------- loopback pairs


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected (client, server) pair of loopback TCP streams."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    try:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    finally:
        await listener.aclose()
    return client, server


def shrink_buffers(*streams: trio.SocketStream) -> None:
    """Small kernel buffers, so that clogging a connection fills less memory."""
    for stream in streams:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)


def tcp_unacked(sock: socket.socket) -> int:
    """Segments sent and not yet acknowledged (``tcpi_unacked`` of Linux ``TCP_INFO``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    unacked: int = struct.unpack_from("I", info, 8 + 4 * 4)[0]
    return unacked


async def clog(sock: socket.socket, fill: Callable[[], int]) -> None:
    """Fill one direction of a connection until the sender cannot write.

    A kernel refusal alone is not enough: a delayed ACK arriving later frees
    room in the send buffer. So fill, wait until every segment in flight is
    acknowledged, and repeat until a fill after that takes nothing: then
    the peer's window is shut and only the peer reading can open it. The
    socket is corked while filling: tiny segments would overrun the small
    receive buffer (counted in memory, not bytes) and sit unacknowledged
    until a retransmission.
    """
    with trio.fail_after(60):  # a watchdog against a hang, not a time limit
        while True:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            try:
                taken = fill()
            finally:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            await trio.sleep(0.005)
            while tcp_unacked(sock):
                await trio.sleep(0.005)
            if not taken:
                return


# ---------------------------------------------------------------- LeanTCPStream

#: Tasks whose current ``assert_checkpoints`` block ran a LeanTCPStream
#: ``send_all`` or ``receive_some``: the calls documented to skip the
#: schedule point when they did not have to wait.
_lean_io_tasks: set[trio.lowlevel.Task] = set()


class _RecordingLeanTCPStream(LeanTCPStream):
    """LeanTCPStream noting which task ran a call that may skip the schedule point."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        _lean_io_tasks.add(trio.lowlevel.current_task())
        await super().send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        _lean_io_tasks.add(trio.lowlevel.current_task())
        return await super().receive_some(max_bytes)


@contextlib.contextmanager
def _lean_assert_checkpoints() -> Iterator[None]:
    """``assert_checkpoints`` with LeanTCPStream's documented relaxation."""
    __tracebackhide__ = True
    task = trio.lowlevel.current_task()
    _lean_io_tasks.discard(task)
    cancel_points = task._cancel_points
    schedule_points = task._schedule_points
    yield
    relaxed = task in _lean_io_tasks
    _lean_io_tasks.discard(task)
    assert task._cancel_points != cancel_points, "no cancel point"
    if not relaxed:
        assert task._schedule_points != schedule_points, "no schedule point"


@pytest.fixture
def lean_checkpoint_rule(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run trio's conformance checks with the relaxed checkpoint rule."""
    monkeypatch.setattr(check_streams, "assert_checkpoints", _lean_assert_checkpoints)
    yield
    _lean_io_tasks.clear()


async def lean_pair() -> tuple[LeanTCPStream, LeanTCPStream]:
    client, server = await tcp_pair()
    shrink_buffers(client, server)
    return _RecordingLeanTCPStream(client), _RecordingLeanTCPStream(server)


def fill_raw(sock: socket.socket) -> int:
    """Send until the kernel refuses more; returns how many bytes it took."""
    sent = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sent += sock.send(b"\0" * 65536)
    return sent


async def clogged_lean_pair() -> tuple[LeanTCPStream, LeanTCPStream]:
    left, right = await lean_pair()
    await clog(left.socket, lambda: fill_raw(left.socket))
    await clog(right.socket, lambda: fill_raw(right.socket))
    return left, right


@pytest.mark.usefixtures("lean_checkpoint_rule")
async def test_lean_tcp_stream_is_a_half_closeable_stream() -> None:
    await trio.testing.check_half_closeable_stream(lean_pair, clogged_lean_pair)


@pytest.mark.usefixtures("lean_checkpoint_rule")
async def test_the_relaxation_covers_exactly_the_documented_skip() -> None:
    left, right = await lean_pair()
    async with left, right:
        # A send that did not wait is a cancel point but no schedule point:
        # trio's own rule fails it, the relaxed one accepts it.
        with pytest.raises(AssertionError), trio.testing.assert_checkpoints():
            await left.send_all(b"x")
        with _lean_assert_checkpoints():
            await left.send_all(b"x")
        with _lean_assert_checkpoints():
            assert await right.receive_some(2) == b"xx"
    # The relaxed rule is not a no-op: it wants a cancel point always ...
    with pytest.raises(AssertionError, match="no cancel point"), _lean_assert_checkpoints():
        pass
    # ... and a schedule point from any other method.
    with pytest.raises(AssertionError, match="no schedule point"), _lean_assert_checkpoints():
        await trio.lowlevel.checkpoint_if_cancelled()


# ---------------------------------------------------------------- SSLSocketStream


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls_material(Path(tmp_path_factory.mktemp("tls")))


async def ssl_pair(
    material: TLSMaterial, version: ssl.TLSVersion, *, shrink: bool = False
) -> tuple[SSLSocketStream, SSLSocketStream]:
    tcp_client, tcp_server = await tcp_pair()
    if shrink:
        shrink_buffers(tcp_client, tcp_server)
    client_ctx = material.client_context()
    client_ctx.minimum_version = client_ctx.maximum_version = version
    client = SSLSocketStream(tcp_client, client_ctx, server_hostname="localhost")
    server = SSLSocketStream(tcp_server, material.server_context(), server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    # TLS 1.3 session tickets travel after the handshake: a round trip makes
    # sure they are read, so later writes meet only application data.
    await client.send_all(b"?")
    assert await server.receive_some(1) == b"?"
    await server.send_all(b"!")
    assert await client.receive_some(1) == b"!"
    return client, server


class _SSLFiller:
    """Writes records straight through the ``ssl.SSLSocket`` under a stream until refused.

    Whole 4 KiB records while ``select`` reports room (with a send buffer
    over three records, that guarantees the kernel takes each whole), then
    one-byte records. When the kernel takes only part of one, OpenSSL keeps
    the rest and the next write must retry it: this filler retries with the
    same byte, and the stream's next ``send_all`` finishes it as the first
    byte of its own data (OpenSSL allows any retry at least as long). The
    conformance suite never looks at what a clogged stream delivers.
    """

    def __init__(self, stream: SSLSocketStream) -> None:
        self.sock = stream.ssl_object
        self.partial = False

    def fill(self) -> int:
        taken = 0
        while not self.partial and select.select([], [self.sock], [], 0)[1]:
            taken += self.sock.write(b"\0" * 4096)
        self.partial = True
        with contextlib.suppress(ssl.SSLWantWriteError):
            while True:
                taken += self.sock.write(b"\0")
        return taken


async def clog_ssl(stream: SSLSocketStream) -> None:
    await clog(stream.ssl_object, _SSLFiller(stream).fill)


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
async def test_ssl_socket_stream_is_a_two_way_stream(material: TLSMaterial, version: str) -> None:
    tls_version = ssl.TLSVersion[version]

    async def make() -> tuple[SSLSocketStream, SSLSocketStream]:
        return await ssl_pair(material, tls_version)

    async def make_clogged() -> tuple[SSLSocketStream, SSLSocketStream]:
        left, right = await ssl_pair(material, tls_version, shrink=True)
        await clog_ssl(left)
        await clog_ssl(right)
        return left, right

    await trio.testing.check_two_way_stream(make, make_clogged)

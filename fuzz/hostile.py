"""Hostile peers against a listener, and one well-behaved client measured meanwhile.

Used by ``tests/test_hostile_load.py`` (small) and the robustness report.
Each hostile peer opens a connection and misbehaves until the listener
closes it or the attack ends:

* idle: connects and sends nothing;
* trickle: opens a frame and sends one byte at a time (slowloris);
* junk: sends an HTTP request and then bytes without frame markers;
* giant: opens a frame and sends up to ``giant_size`` bytes without ending it;
* half_tls: sends half a TLS ClientHello and waits.

The good client connects first (its connection is open before the caps
fill up) and sends messages one by one; its latencies are recorded.
"""

from __future__ import annotations

import contextlib
import math
import random
import ssl
from collections import Counter

import attrs
import trio

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ClientConfig
from mllp_trio._errors import MLLPError

__all__ = ["Attack", "AttackResult", "client_hello", "percentile", "run_attack"]

#: How long a hostile peer waits between two sends.
_PAUSE = 0.05
_CHUNK = 64 * 1024


@attrs.frozen(kw_only=True)
class Attack:
    """How many hostile peers of each kind, and for how long.

    Attributes:
        idle: Connections that send nothing.
        trickle: Connections that open a frame and send a byte per pause.
        junk: Connections that send bytes without frame markers.
        giant: Connections that open a frame of ``giant_size`` bytes and never end it.
        giant_size: Bytes each giant frame sends.
        half_tls: Connections that send half a TLS ClientHello (TLS listeners).
        waves: Times each peer reconnects after the listener closed it.
        messages: Messages the good client sends during the attack.
    """

    idle: int = 0
    trickle: int = 0
    junk: int = 0
    giant: int = 0
    giant_size: int = 1 << 20
    half_tls: int = 0
    waves: int = 1
    messages: int = 20


@attrs.define
class AttackResult:
    """What happened: the good client's answers and latencies, and the peers' fates."""

    codes: Counter[str] = attrs.Factory(Counter)
    latencies: list[float] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    #: Hostile connections by fate: "closed" by the listener, "open" when the attack ended.
    peers: Counter[str] = attrs.Factory(Counter)

    @property
    def acked(self) -> int:
        """Messages of the good client answered AA."""
        return self.codes["AA"]


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def client_hello(context: ssl.SSLContext) -> bytes:
    """The ClientHello a client with ``context`` sends first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def _hold(stream: trio.SocketStream, stop: trio.Event) -> str:
    """Wait until the listener closes the connection ("closed") or the attack ends ("open")."""
    async with trio.open_nursery() as nursery:
        fate = "open"

        async def watch() -> None:
            nonlocal fate
            try:
                while await stream.receive_some(_CHUNK):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            fate = "closed"
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await stop.wait()
        nursery.cancel_scope.cancel()
    return fate


async def _peer(kind: str, port: int, attack: Attack, hello: bytes, stop: trio.Event) -> str:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return "refused"
    rng = random.Random(id(stream))
    fate = "closed"
    try:
        async with trio.open_nursery() as nursery:

            async def misbehave() -> None:
                if kind == "trickle":
                    await stream.send_all(b"\x0bMSH|")
                    while True:
                        await trio.sleep(_PAUSE)
                        await stream.send_all(b"x")
                elif kind == "junk":
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: listener\r\n\r\n")
                    while True:
                        await trio.sleep(_PAUSE)
                        junk = rng.randbytes(256).replace(b"\x0b", b"").replace(b"\x1c", b"")
                        await stream.send_all(junk)
                elif kind == "giant":
                    await stream.send_all(b"\x0bMSH|^~\\&|")
                    left = attack.giant_size
                    while left > 0:
                        await stream.send_all(b"x" * min(_CHUNK, left))
                        left -= _CHUNK
                elif kind == "half_tls":
                    await stream.send_all(hello[: len(hello) // 2])

            async def send_then_rest() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await misbehave()

            nursery.start_soon(send_then_rest)
            fate = await _hold(stream, stop)
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
    return fate


async def run_attack(
    port: int,
    attack: Attack,
    *,
    message: bytes,
    ssl_context: ssl.SSLContext | None = None,
    client_config: ClientConfig | None = None,
    pause: float = 0.02,
) -> AttackResult:
    """Run the hostile peers against ``port`` while the good client sends ``attack.messages``.

    ``message`` is a template whose control id ``CTRLID`` is replaced per message.
    """
    result = AttackResult()
    stop = trio.Event()
    hello = client_hello(ssl_context) if ssl_context is not None and attack.half_tls else b""
    config = client_config or ClientConfig(retries=0)
    async with open_mllp_client(
        "127.0.0.1", port, ssl_context=ssl_context, server_hostname="localhost", config=config
    ) as client:
        # The good client's connection is open before the hostile ones arrive.
        await client.send(message.replace(b"CTRLID", b"WARMUP"), raise_on_negative=False)

        async def waves(kind: str) -> None:
            for _ in range(attack.waves):
                if stop.is_set():
                    return
                fate = await _peer(kind, port, attack, hello, stop)
                result.peers[f"{kind}:{fate}"] += 1

        async with trio.open_nursery() as nursery:
            # The idle flood comes last, so that it meets the caps after the
            # others got in (a refusal is what the caps are for).
            for kind in ("trickle", "junk", "giant", "half_tls", "idle"):
                for _ in range(getattr(attack, kind)):
                    nursery.start_soon(waves, kind)
                await trio.sleep(0.05)
            await trio.sleep(pause * 5)  # let the hostile connections open first
            for number in range(attack.messages):
                control_id = b"GOOD%05d" % number
                start = trio.current_time()
                try:
                    reply = await client.send(
                        message.replace(b"CTRLID", control_id), raise_on_negative=False
                    )
                except MLLPError as exc:
                    result.errors.append(type(exc).__name__)
                else:
                    result.codes[str(reply.code)] += 1
                    result.latencies.append(trio.current_time() - start)
                await trio.sleep(pause)
            stop.set()
    return result

"""Micro-benchmark: SSLSocketStream vs trio.SSLStream as the TLS server stream.

Request/response ping-pong over mutual TLS on loopback: each of N concurrent
connections sends a ~1 KB request ending in MLLP's end-of-block and waits for
a ~200 B reply. The server runs in a subprocess (one per contender, started
once); the client is the same asyncio TLS client for both. Contenders are
measured interleaved (A B A B ...) and the median messages/s is reported.

Run: python benchmarks/tls_stream.py [--rounds 5] [--seconds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

END = b"\x1c\r"
CONTENDERS = ("SSLSocketStream", "trio.SSLStream")


# ---------------------------------------------------------------- server side


def serve(kind: str, certs: Path, reply_size: int) -> None:
    import trio

    from mllp_trio._io._sslsocket import SSLSocketStream

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "server.pem")
    ctx.load_verify_locations(certs / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    reply = b"\x0b" + b"A" * (reply_size - 3) + END

    async def handler(tcp: trio.SocketStream) -> None:
        stream: SSLSocketStream | trio.SSLStream[trio.SocketStream]
        if kind == "SSLSocketStream":
            stream = SSLSocketStream(tcp, ctx, server_side=True)
        else:
            stream = trio.SSLStream(tcp, ctx, server_side=True)
        try:
            with trio.fail_after(10):
                await stream.do_handshake()
            buf = b""
            while True:
                data = await stream.receive_some()
                if not data:
                    break
                buf += data
                # One reply per complete request, like an MLLP ACK.
                while (end := buf.find(END)) >= 0:
                    buf = buf[end + 2 :]
                    await stream.send_all(reply)
        except (trio.BrokenResourceError, trio.TooSlowError):
            pass
        finally:
            await stream.aclose()

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(listeners[0].socket.getsockname()[1], flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            # Stop when the parent closes our stdin.
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------- client side


async def run_client(port: int, ctx: ssl.SSLContext, args: argparse.Namespace) -> float:
    request = b"\x0b" + b"R" * (args.request_size - 3) + END
    counts = [0] * args.connections
    measuring = False
    stop = False

    async def connection(i: int) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        try:
            while not stop:
                writer.write(request)
                await reader.readuntil(END)
                if measuring:
                    counts[i] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    tasks = [asyncio.create_task(connection(i)) for i in range(args.connections)]
    await asyncio.sleep(args.warmup)
    measuring = True
    start = time.perf_counter()
    await asyncio.sleep(args.seconds)
    measuring = False
    elapsed = time.perf_counter() - start
    stop = True
    await asyncio.gather(*tasks)
    return sum(counts) / elapsed


def client_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(certs / "client.pem")
    return ctx


def write_certs(directory: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    client = ca.issue_cert("bench-client.example")
    client.private_key_and_cert_chain_pem.write_to_path(str(directory / "client.pem"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--request-size", type=int, default=1024)
    parser.add_argument("--reply-size", type=int, default=200)
    parser.add_argument("--serve", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve(args.serve, args.certs, args.reply_size)
        return

    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        write_certs(certs)
        servers: dict[str, tuple[subprocess.Popen[str], int]] = {}
        try:
            for kind in CONTENDERS:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        *("--serve", kind, "--certs", str(certs)),
                        *("--reply-size", str(args.reply_size)),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert proc.stdout is not None
                servers[kind] = (proc, int(proc.stdout.readline()))

            ctx = client_context(certs)
            print(
                f"{args.connections} connections, {args.request_size} B request / "
                f"{args.reply_size} B reply, mTLS (TLS 1.3), asyncio client, "
                f"{args.rounds} rounds x {args.seconds:g} s, interleaved"
            )
            results: dict[str, list[float]] = {kind: [] for kind in CONTENDERS}
            for round_no in range(1, args.rounds + 1):
                line = []
                for kind in CONTENDERS:
                    rate = asyncio.run(run_client(servers[kind][1], ctx, args))
                    results[kind].append(rate)
                    line.append(f"{kind} {rate:9.0f}/s")
                print(f"round {round_no}: " + "   ".join(line), flush=True)
        finally:
            for proc, _port in servers.values():
                assert proc.stdin is not None
                proc.stdin.close()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    medians = {kind: statistics.median(rates) for kind, rates in results.items()}
    for kind in CONTENDERS:
        lo, hi = min(results[kind]), max(results[kind])
        print(f"{kind:16} median {medians[kind]:9.0f} msg/s  (min {lo:.0f}, max {hi:.0f})")
    ratio = medians[CONTENDERS[0]] / medians[CONTENDERS[1]]
    print(f"ratio SSLSocketStream / trio.SSLStream: {ratio:.2f}x")


if __name__ == "__main__":
    main()

"""The ``mllp-trio`` command line, built only on the public API."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, Literal, NoReturn

import trio

import mllp_trio
from mllp_trio._devcerts import DevCertPaths, DevCertsExist, ensure_dev_certs, write_dev_certs

DEFAULT_PORT = 2575  # IANA's hl7 port
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CERTS = Path("certs")
DEFAULT_STORE = Path("mllp-data")
DEFAULT_OUTBOX = Path("mllp-outbox")

log = logging.getLogger("mllp_trio.cli")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or DEFAULT_HOST, int(port)


def _add_common(p: argparse.ArgumentParser, *, server: bool) -> None:
    tls = p.add_argument_group("TLS (mutual TLS by default)")
    tls.add_argument(
        "--cert", type=Path, help="PEM certificate (default: development one in certs/)"
    )
    tls.add_argument("--key", type=Path, help="PEM private key (default: development one)")
    tls.add_argument("--ca", type=Path, help="PEM CA bundle to verify the peer (default: dev CA)")
    tls.add_argument(
        "--certs-dir",
        type=Path,
        default=DEFAULT_CERTS,
        help="development certificates folder (default: certs/)",
    )
    tls.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS at all: only behind a VPN or SSH tunnel (loudly warned)",
    )
    tls.add_argument(
        "--tls-stream",
        choices=("ssl-socket", "trio"),
        default="ssl-socket",
        help="TLS implementation: non-blocking ssl.SSLSocket (default, faster) or trio.SSLStream",
    )
    if server:
        tls.add_argument("--crl", type=Path, help="PEM CRL file checked for client certificates")
        tls.add_argument(
            "--allow",
            action="append",
            default=[],
            metavar="IDENTITY",
            help="allowed client (DNS:, IP:, URI:, email:, CN:, sha256:, or a name); repeatable",
        )
        tls.add_argument(
            "--no-client-cert",
            action="store_true",
            help="do not require client certificates (server-only TLS)",
        )
    else:
        tls.add_argument("--server-hostname", help="name the server certificate must carry")
        tls.add_argument(
            "--no-check-hostname", action="store_true", help="do not check the server name"
        )
    p.add_argument("--host", default=None, help=f"address (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=None, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument(
        "--framing",
        choices=("mllp", "mllp2", "hllp"),
        default="mllp",
        help="framing (default mllp)",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=mllp_trio.proto.DEFAULT_MAX_MESSAGE_SIZE,
        help="bytes (default 16 MiB)",
    )
    p.add_argument("--handshake-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument(
        "--retries", type=int, default=2, help="resends after a NAK or timeout (default 2)"
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="default INFO",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mllp-trio``."""
    parser = argparse.ArgumentParser(
        prog="mllp-trio", description="HL7 v2 over MLLP, MLLP release 2 and HLLP, with mutual TLS."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    listen = sub.add_parser(
        "listen", help="run a listener (mutual TLS on 127.0.0.1:2575 by default)"
    )
    _add_common(listen, server=True)
    listen.add_argument("--max-connections", type=int, default=1000, help="in total (default 1000)")
    listen.add_argument(
        "--max-connections-per-peer", type=int, default=100, help="per address (default 100)"
    )
    listen.add_argument(
        "--idle-timeout", type=float, default=300.0, help="seconds between messages (default 300)"
    )
    listen.add_argument(
        "--read-timeout", type=float, default=30.0, help="seconds for a started frame (default 30)"
    )
    listen.add_argument(
        "--write-timeout", type=float, default=30.0, help="seconds to write a reply (default 30)"
    )
    listen.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds for in-flight messages on shutdown (default 10)",
    )
    listen.add_argument(
        "--ack-timeout",
        type=float,
        default=30.0,
        help="seconds the peer has to commit our reply (release 2)",
    )
    listen.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_STORE,
        help="journal folder: every message is stored before it is acknowledged "
        "(default mllp-data/)",
    )
    listen.add_argument(
        "--no-store", action="store_true", help="keep no journal (stateless relays, benchmarks)"
    )
    listen.add_argument(
        "--delivery",
        choices=("before_ack", "after_commit"),
        default="before_ack",
        help="with a store: handle before acknowledging (default), or acknowledge on commit",
    )

    send = sub.add_parser("send", help="send messages from files or stdin, print each reply")
    send.add_argument("target", type=_host_port, metavar="HOST:PORT")
    send.add_argument(
        "files", nargs="*", type=Path, metavar="FILE", help="message files (default: stdin)"
    )
    _add_common(send, server=False)
    send.add_argument(
        "--ack-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for each reply (default 30)",
    )
    send.add_argument(
        "--queue",
        action="store_true",
        help="enqueue durably first, then deliver with retries and backoff",
    )
    send.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_OUTBOX,
        help="queue folder for --queue (default mllp-outbox/)",
    )

    store = sub.add_parser(
        "store", help="look into a journal or queue (metadata only, never content)"
    )
    store.add_argument("action", choices=("count", "list", "export", "requeue"))
    store.add_argument(
        "ids",
        nargs="*",
        type=int,
        metavar="ID",
        help="export: the message id; requeue: the dead letters (default: all)",
    )
    store.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help="store folder (default mllp-data/)"
    )
    store.add_argument("--limit", type=int, default=50, help="list: how many, newest first")
    store.add_argument(
        "--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )

    certs = sub.add_parser("certs", help="write development certificates (never for production)")
    certs.add_argument("directory", nargs="?", type=Path, default=DEFAULT_CERTS)
    certs.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _framing(args: argparse.Namespace) -> mllp_trio.FramingConfig:
    return mllp_trio.FramingConfig(framing=args.framing, max_message_size=args.max_message_size)


def _tls_stream(args: argparse.Namespace) -> Literal["ssl_socket", "trio"]:
    return "ssl_socket" if args.tls_stream == "ssl-socket" else "trio"


# --- listen ----------------------------------------------------------------------------


def _server_tls(args: argparse.Namespace) -> mllp_trio.ServerTLS | None:
    if args.plaintext:
        log.warning(
            "PLAINTEXT MODE: messages travel unencrypted and clients are not authenticated. "
            "Use it only behind a VPN or an SSH tunnel."
        )
        return None
    cert, key, ca = args.cert, args.key, args.ca
    if cert is None:
        paths, created = ensure_dev_certs(args.certs_dir)
        if created:
            print(f"created development certificates in {paths.directory}/ (not for production)")
        cert, key = paths.server_cert, paths.server_key
        ca = ca or paths.ca
    return mllp_trio.ServerTLS(
        mllp_trio.ServerTLSConfig(
            cert_file=cert,
            key_file=key,
            ca_file=ca,
            crl_file=args.crl,
            allow=tuple(args.allow),
            require_client_cert=not args.no_client_cert,
        )
    )


async def _listen(args: argparse.Namespace) -> None:
    tls = _server_tls(args)
    config = mllp_trio.ServerConfig(
        framing=_framing(args),
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        read_timeout=args.read_timeout,
        write_timeout=args.write_timeout,
        max_connections=args.max_connections,
        max_connections_per_peer=args.max_connections_per_peer,
        shutdown_grace=args.shutdown_grace,
        retries=args.retries,
        ack_timeout=args.ack_timeout,
        tls_stream=_tls_stream(args),
    )
    async with AsyncExitStack() as stack:
        processor = None
        if args.no_store:
            print(
                "running without a journal (--no-store): "
                "messages are acknowledged without being stored",
                flush=True,
            )
        else:
            store = await stack.enter_async_context(mllp_trio.store.open_sqlite_store(args.store))
            print(f"journal: {args.store}/ (messages are stored before they are acknowledged)")
            processor = mllp_trio.store.JournalProcessor(
                store, None, config=config.hl7, delivery=args.delivery
            )
        server = mllp_trio.MLLPServer(ssl_context=tls, config=config, processor=processor)
        await _serve_until_signal(server, args, tls)


async def _serve_until_signal(
    server: mllp_trio.MLLPServer, args: argparse.Namespace, tls: mllp_trio.ServerTLS | None
) -> None:
    host = args.host or DEFAULT_HOST
    port = DEFAULT_PORT if args.port is None else args.port
    # The signal handlers go in before "listening on" is printed: a supervisor
    # that signals as soon as it reads that line must not kill the process.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(server.serve, port, host=host))
            where = ", ".join(_sockname(listener) for listener in listeners)
            mode = (
                "plaintext"
                if tls is None
                else ("mutual TLS" if tls.config.require_client_cert else "TLS")
            )
            print(f"listening on {where} ({args.framing}, {mode}); Ctrl-C stops", flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        server.reload_tls()
                    except mllp_trio.MLLPError as exc:
                        log.error("certificate reload failed, keeping the old ones: %s", exc)
                    continue
                print("shutting down (in-flight messages get the grace period)", flush=True)
                server.shutdown()
                break


def _sockname(listener: Any) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- send ------------------------------------------------------------------------------


def split_messages(data: bytes) -> list[bytes]:
    """Split file content into messages: each starts at an ``MSH`` segment.

    Segments may end in CR, LF or CRLF; they are normalised to CR. Blank
    lines are dropped.
    """
    segments = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    messages: list[list[bytes]] = []
    for segment in segments:
        if not segment.strip():
            continue
        if segment.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return [b"\r".join(m) + b"\r" for m in messages]


def _client_tls(args: argparse.Namespace) -> Any:
    if args.plaintext:
        return None
    paths = DevCertPaths.in_directory(args.certs_dir)
    cert = args.cert or (paths.client_cert if paths.client_cert.exists() else None)
    key = args.key or (paths.client_key if args.cert is None and cert is not None else None)
    ca = args.ca or (paths.ca if paths.ca.exists() else None)
    return mllp_trio.ClientTLSConfig(
        ca_file=ca, cert_file=cert, key_file=key, check_hostname=not args.no_check_hostname
    ).build_context()


async def _send(args: argparse.Namespace) -> int:
    host, port = args.target
    if args.host:
        host = args.host
    if args.port is not None:
        port = args.port
    if args.files:
        messages = [m for f in args.files for m in split_messages(f.read_bytes())]
    else:
        messages = split_messages(sys.stdin.buffer.read())
    if not messages:
        print("no messages to send", file=sys.stderr)
        return 2
    config = mllp_trio.ClientConfig(
        framing=_framing(args),
        handshake_timeout=args.handshake_timeout,
        ack_timeout=args.ack_timeout,
        retries=args.retries,
        tls_stream=_tls_stream(args),
    )
    if args.queue:
        return await _send_queued(args, host, port, messages, config)
    failures = 0
    async with mllp_trio.open_mllp_client(
        host,
        port,
        ssl_context=_client_tls(args),
        server_hostname=args.server_hostname,
        config=config,
    ) as conn:
        for message in messages:
            try:
                control_id = mllp_trio.read_msh(message).control_id
            except mllp_trio.MLLPError as exc:
                print(f"? skipped: not an HL7 message ({exc})")
                failures += 1
                continue
            try:
                reply = await conn.send(message, raise_on_negative=False)
            except mllp_trio.MLLPError as exc:
                print(f"{control_id} ERROR {exc}")
                failures += 1
                continue
            text = f" {reply.text}" if reply.text else ""
            print(f"{control_id} {reply.code}{text}", flush=True)
            if not reply.accepted:
                failures += 1
    return 1 if failures else 0


async def _send_queued(
    args: argparse.Namespace,
    host: str,
    port: int,
    messages: list[bytes],
    config: mllp_trio.ClientConfig,
) -> int:
    async with mllp_trio.store.open_sqlite_store(args.store) as store:
        sender = mllp_trio.store.QueuedSender(
            store,
            host,
            port,
            ssl_context=_client_tls(args),
            server_hostname=args.server_hostname,
            client_config=config,
            config=mllp_trio.store.QueueConfig(max_attempts=args.retries + 1, backoff_cap=30.0),
        )
        try:
            for message in messages:
                try:
                    await sender.enqueue(message)
                except mllp_trio.MSHError as exc:
                    print(f"? skipped: not an HL7 message ({exc})")
            print(f"queued {len(messages)} message(s) in {args.store}/", flush=True)
            report = await sender.deliver_pending()
        finally:
            await sender.aclose()
    for control_id, code, text in report.replies:
        print(f"{control_id} {code}{' ' + text if text else ''}")
    print(f"delivered {report.delivered}, dead letters {report.dead}")
    return 1 if report.dead else 0


# --- store -----------------------------------------------------------------------------


async def _store(args: argparse.Namespace) -> int:
    read_only = args.action != "requeue"
    if not args.store.is_dir():
        print(f"mllp-trio: no store at {args.store}/", file=sys.stderr)
        return 1
    config = mllp_trio.store.SQLiteStoreConfig(read_only=read_only)
    async with mllp_trio.store.open_sqlite_store(args.store, config=config) as store:
        if args.action == "count":
            print(await store.count())
        elif args.action == "list":
            for info in await store.list_messages(limit=args.limit):
                delivered = "delivered" if info.delivered_at else "undelivered"
                print(
                    f"{info.message_id}\t{info.received_at.isoformat()}\t{info.peer}\t"
                    f"{info.sending_application}|{info.sending_facility}\t{info.control_id}\t"
                    f"{info.size} bytes\t{delivered}"
                )
        elif args.action == "export":
            if len(args.ids) != 1:
                print("mllp-trio: store export takes exactly one message id", file=sys.stderr)
                return 2
            sys.stdout.buffer.write(await store.export_message(args.ids[0]))
            sys.stdout.buffer.flush()
        else:
            count = await store.requeue_dead(args.ids or None)
            print(f"requeued {count} dead letter(s)")
    return 0


# --- certs -----------------------------------------------------------------------------


def _certs(args: argparse.Namespace) -> int:
    try:
        paths = write_dev_certs(args.directory, overwrite=args.force)
    except DevCertsExist as exc:
        print(f"{exc} (use --force to replace them)", file=sys.stderr)
        return 1
    print(f"wrote development certificates (not for production) to {paths.directory}/:")
    for path in (
        paths.ca,
        paths.server_cert,
        paths.server_key,
        paths.client_cert,
        paths.client_key,
    ):
        print(f"  {path}")
    return 0


def _run(command: Any, args: argparse.Namespace) -> Any:
    """``trio.run(command, args)``, with a lone error out of a nursery unwrapped.

    The listener runs in nurseries, so "address already in use" arrives in
    an exception group; ``main`` reports it like any other error.
    """
    try:
        return trio.run(command, args)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if isinstance(error, BaseExceptionGroup):
            raise
        raise error from None


def _describe(exc: BaseException) -> str:
    # trio wraps ssl.SSLError without repeating its text: show both.
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``mllp-trio``."""
    parser = build_parser()
    # argparse matches "send HOST:PORT" and an empty FILE list at once, so a
    # file named after an option ("send H:P --plaintext a.hl7") would be
    # refused: collect such leftovers as files.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "send" or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.files = [*args.files, *map(Path, extra)]
    _setup_logging(getattr(args, "log_level", "INFO"))
    try:
        if args.command == "listen":
            _run(_listen, args)
            code = 0
        elif args.command == "send":
            code = _run(_send, args)
        elif args.command == "store":
            code = _run(_store, args)
        else:
            code = _certs(args)
    except mllp_trio.MLLPError as exc:
        print(f"mllp-trio: {exc}", file=sys.stderr)
        code = 1
    except OSError as exc:
        print(f"mllp-trio: {exc}", file=sys.stderr)
        code = 1
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        # A failed TLS handshake while connecting: report it, not a traceback.
        print(f"mllp-trio: connection failed: {_describe(exc)}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)

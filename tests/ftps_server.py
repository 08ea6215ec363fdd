"""A real FTPS (or plain FTP) server for tests: pyftpdlib in a background thread.

``FTPTestServer`` listens on 127.0.0.1 (port 0 unless told), serves one user
whose home folder is a local directory, and records every data connection
(was it TLS, did it resume the control connection's TLS session) so that
tests can assert on the server's side of the transfer. It can be stopped
from any thread, also from inside a client's transfer callback, and started
again on the same port: "the server goes away mid-download".

Variants, all by constructor argument: explicit TLS (``AUTH TLS``, the
default), implicit TLS (TLS from the first byte), plain FTP; a server that
requires TLS session reuse on the data channel (as vsftpd's
``require_ssl_reuse``); one that requires a client certificate; one without
MLSD (old servers); throttled transfers; a TLS version ceiling.

pyftpdlib configures TLS through class attributes, so each server gets its
own handler subclasses, and its own IOLoop (the default one is global).
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import attrs
import trustme
from OpenSSL import SSL
from OpenSSL._util import lib as _openssl_lib

from .tls_helpers import write_leaf

with warnings.catch_warnings():
    # pyftpdlib imports asyncore and asynchat, deprecated on Python 3.11
    # (and provided by pyasyncore/pyasynchat on 3.12+).
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import (
        FTPHandler,
        ThrottledDTPHandler,
        TLS_DTPHandler,
        TLS_FTPHandler,
    )
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

__all__ = ["DataChannel", "FTPTestServer", "TLSFiles", "make_tls_files"]

# A handler on the pyftpdlib logger means "logging is configured": without
# it pyftpdlib's first loop would set up logging to stderr on its own.
logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)

USER = "batch"
PASSWORD = "s3cret-batch-pass"

TLSMode = Literal["explicit", "implicit", "none"]


@attrs.frozen(kw_only=True)
class TLSFiles:
    """Certificate files of a test FTPS server and the CA its clients trust."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(
    folder: Path,
    ca: trustme.CA | None = None,
    *,
    names: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> TLSFiles:
    """Write a server certificate for ``names`` (from ``ca``, or a new CA) and the CA."""
    ca = ca or trustme.CA()
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = write_leaf(ca.issue_cert(*names), folder, "ftps-server")
    ca_file = folder / "ftps-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TLSFiles(ca=ca_file, cert=cert, key=key)


@attrs.define
class DataChannel:
    """One data connection as the server saw it.

    Attributes:
        secure: TLS was started on it (the client had sent ``PROT P``).
        established: The TLS handshake completed.
        reused: The TLS session resumed the control connection's (only
            meaningful when ``established``).
        tls_version: The negotiated protocol (``TLSv1.3``...).
    """

    secure: bool
    established: bool = False
    reused: bool = False
    tls_version: str | None = None


class FTPTestServer:
    """A pyftpdlib server on 127.0.0.1 in a background thread (see the module docstring).

    Args:
        root: The user's home folder (created if missing).
        tls: ``"explicit"`` (AUTH TLS required on the control and the data
            channel), ``"implicit"`` or ``"none"`` (plain FTP).
        tls_files: The server certificate and key (required unless plain).
        client_ca: When given, a client certificate chaining to this CA file
            is required.
        require_session_reuse: Refuse (522) a TLS data connection that does
            not resume the control connection's session.
        mlsd: Offer MLSD/MLST; False plays an old server (NLST, SIZE, MDTM).
        rate: Bytes per second of each transfer, both ways (0: no limit).
        max_tls: Highest TLS version the server accepts (``SSL.TLS1_2_VERSION``...).
        perm: The user's pyftpdlib permissions (default: everything; ``"elr"``
            is read-only).
        password: The password of user ``batch``.
        port: Port to listen on; 0 picks a free one (kept across restarts).
    """

    def __init__(
        self,
        root: Path,
        *,
        tls: TLSMode = "explicit",
        tls_files: TLSFiles | None = None,
        client_ca: Path | None = None,
        require_session_reuse: bool = False,
        mlsd: bool = True,
        rate: int = 0,
        max_tls: int | None = None,
        perm: str = "elradfmwMT",
        password: str = PASSWORD,
        port: int = 0,
    ) -> None:
        if tls != "none" and tls_files is None:
            raise ValueError("an FTPS server needs tls_files")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.tls = tls
        self.port = port
        self.data_channels: list[DataChannel] = []
        #: Every command the server was given, as ``"VERB argument"`` (PASS
        #: without its argument), in order, across restarts.
        self.commands: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._perm = perm
        self._password = password
        self._handler = self._make_handler(
            tls_files, client_ca, require_session_reuse, mlsd, rate, max_tls
        )
        self._server: Any = None
        self._dtp: type[Any] | None = self._handler.dtp_handler
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> FTPTestServer:
        """Listen (on the same port as before after a stop) and serve in a thread."""
        if self._thread is not None:
            raise RuntimeError("already running")
        server = FTPServer((self.host, self.port), self._handler, ioloop=IOLoop())
        self._server = server
        self.port = server.address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"ftp-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection at once (from any thread but the server's)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("the FTP server thread did not stop")
        self._thread = None
        self._server = None

    def restart(self) -> None:
        """Stop if running, then listen again on the same port."""
        self.stop()
        self.start()

    def set_rate(self, rate: int) -> None:
        """Change the throttle of transfers that start from now on (0: no limit)."""
        if self._dtp is not None and hasattr(self._dtp, "read_limit"):
            self._dtp.read_limit = self._dtp.write_limit = rate

    def __enter__(self) -> FTPTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        server = self._server
        try:
            while not self._stopping.is_set():
                server.serve_forever(timeout=0.01, blocking=False, handle_exit=False)
        finally:
            server.close_all()

    def files(self, folder: str) -> dict[str, bytes]:
        """The regular files in ``folder`` of the served tree, by name."""
        base = self.root / folder
        if not base.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sorted(base.iterdir()) if p.is_file()}

    def url(self, folder: str = "") -> str:
        scheme = "ftp" if self.tls == "none" else "ftps"
        return f"{scheme}://{USER}@{self.host}:{self.port}/{folder}"

    # -- handler classes -------------------------------------------------

    def _make_handler(
        self,
        tls_files: TLSFiles | None,
        client_ca: Path | None,
        require_session_reuse: bool,
        mlsd: bool,
        rate: int,
        max_tls: int | None,
    ) -> type[Any]:
        authorizer = DummyAuthorizer()
        authorizer.add_user(USER, self._password, homedir=str(self.root), perm=self._perm)
        owner = self
        base_handler = FTPHandler if self.tls == "none" else TLS_FTPHandler

        root = str(self.root.resolve())

        def process_command(handler: Any, cmd: str, *args: Any, **kwargs: Any) -> None:
            # pyftpdlib hands over paths as local ones: shown as the client sees them.
            arg = args[0] if args and isinstance(args[0], str) else None
            if arg is not None and arg.startswith(root):
                arg = arg[len(root) :] or "/"
            shown = cmd if cmd == "PASS" or not arg else f"{cmd} {arg}"
            with owner._lock:
                owner.commands.append(shown)
            base_handler.process_command(handler, cmd, *args, **kwargs)

        attributes: dict[str, Any] = {
            "authorizer": authorizer,
            "banner": "mllp-trio test FTP server",
            "process_command": process_command,
        }
        if not mlsd:
            commands = dict(base_handler.proto_cmds)
            del commands["MLSD"], commands["MLST"]
            attributes["proto_cmds"] = commands

        if self.tls == "none" or tls_files is None:
            attributes["on_connect"] = lambda handler: owner._count_connection()
            if rate:
                attributes["dtp_handler"] = type(
                    "ThrottledDTP",
                    (ThrottledDTPHandler,),
                    {"read_limit": rate, "write_limit": rate},
                )
            return type("PlainHandler", (FTPHandler,), attributes)

        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate_chain_file(str(tls_files.cert))
        context.use_privatekey_file(str(tls_files.key))
        context.set_options(SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_COMPRESSION)
        # A session id context lets the server cache (and so resume)
        # sessions, also when it verifies client certificates.
        context.set_session_id(b"mllp-trio-ftps-tests")
        if max_tls is not None:
            context.set_max_proto_version(max_tls)
        if client_ca is not None:
            context.load_verify_locations(str(client_ca))
            context.set_verify(
                SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                lambda conn, cert, errno, depth, ok: bool(ok),
            )

        dtp_bases: tuple[type[Any], ...] = (TLS_DTPHandler,)
        dtp_attributes: dict[str, Any] = {}
        if rate:
            dtp_bases = (TLS_DTPHandler, ThrottledDTPHandler)
            dtp_attributes.update(read_limit=rate, write_limit=rate)

        def dtp_init(handler: Any, sock: Any, cmd_channel: Any) -> None:
            super(dtp, handler).__init__(sock, cmd_channel)
            handler.record = DataChannel(secure=bool(handler._ssl_requested))
            with owner._lock:
                owner.data_channels.append(handler.record)

        def dtp_established(handler: Any) -> None:
            connection = handler.socket
            record: DataChannel = handler.record
            record.established = True
            record.reused = bool(_openssl_lib.SSL_session_reused(connection._ssl))
            record.tls_version = connection.get_protocol_version_name()
            if require_session_reuse and not record.reused:
                # What vsftpd (require_ssl_reuse) answers, and one reply only:
                # close() sends _resp.
                handler._resp = (
                    "522 SSL connection failed: session reuse required",
                    logging.getLogger("pyftpdlib").info,
                )
                handler.close()

        dtp_attributes.update(__init__=dtp_init, handle_ssl_established=dtp_established)
        dtp = type("RecordingTLSDTP", dtp_bases, dtp_attributes)

        attributes.update(
            ssl_context=context,
            tls_control_required=True,
            tls_data_required=True,
            dtp_handler=dtp,
        )
        if self.tls == "implicit":

            def handle(handler: Any) -> None:
                # Implicit FTPS: TLS from the first byte; the greeting is
                # queued and goes out once the handshake is done.
                handler.secure_connection(handler.ssl_context)
                TLS_FTPHandler.handle(handler)

            attributes["handle"] = handle
        attributes["on_connect"] = lambda handler: owner._count_connection()
        return type("TLSHandler", (TLS_FTPHandler,), attributes)

    def _count_connection(self) -> None:
        with self._lock:
            self.connections += 1


def main() -> None:
    """``python -m tests.ftps_server ROOT [--port N] [--implicit | --plain]``: serve until Ctrl-C.

    For trying ``batch pull``/``batch push`` over FTPS by hand and for the
    measurements in docs/remote.md: user ``batch``, the password in
    ``MLLP_TRIO_REMOTE_PASSWORD`` (default ``s3cret-batch-pass``), data
    connections required to resume the control connection's TLS session (as
    vsftpd does); a new CA each start, written to ``--tls-dir``/ftps-ca.pem
    (give it to ``--ca``).
    """
    import argparse
    import os
    import time

    parser = argparse.ArgumentParser(prog="python -m tests.ftps_server")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=2121)
    parser.add_argument("--tls-dir", type=Path, default=Path("ftps-tls"))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--implicit", action="store_true", help="implicit TLS")
    mode.add_argument("--plain", action="store_true", help="plain FTP, no TLS")
    args = parser.parse_args()
    tls: TLSMode = "none" if args.plain else "implicit" if args.implicit else "explicit"
    files = None if args.plain else make_tls_files(args.tls_dir)
    server = FTPTestServer(
        args.root,
        tls=tls,
        tls_files=files,
        require_session_reuse=not args.plain,
        password=os.environ.get("MLLP_TRIO_REMOTE_PASSWORD", PASSWORD),
        port=args.port,
    )
    server.start()
    trust = f" (CA in {files.ca})" if files is not None else ""
    print(f"serving {args.root}/ at {server.url('')}{trust}; Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

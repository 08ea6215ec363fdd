"""The FTPS backend (and plain FTP, only when asked for): ftplib as it is.

``ftplib.FTP_TLS`` from the standard library speaks explicit FTPS (``AUTH
TLS``); two things it lacks are added here and kept small:

- **TLS session reuse on the data channel.** vsftpd (``require_ssl_reuse``,
  its default), FileZilla Server and others refuse a data connection whose
  TLS session is not the control connection's (so that a third party cannot
  slip in a data connection of its own). ``ftplib`` opens a fresh session
  each time; :class:`_FTPS` resumes the control connection's.
- **Implicit TLS** (TLS from the first byte, usually port 990), which
  ``ftplib`` does not have: the control socket is wrapped before the
  server's greeting is read.

Security is on by default: certificate and hostname verification (the
options' CA file or the system's trust store), TLS 1.2 or later, the data
channel always protected (``PROT P``), passive mode. Every failure becomes a
:class:`RemoteError`; no ftplib, socket or ssl exception leaves this module.
"""

from __future__ import annotations

import calendar
import contextlib
import ftplib
import posixpath
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, NoReturn

from mllp_trio.store._remote._base import (
    RemoteEntry,
    RemoteError,
    RemoteErrorKind,
    RemoteOptions,
    RemoteSession,
    RemoteTarget,
)

__all__ = ["FTPSession", "connect_ftp"]

#: Bytes per read and write on the data channel (ftplib's default is 8 KiB,
#: which costs a system call and a TLS record per 8 KiB).
_BLOCK = 64 * 1024

#: Seconds a close waits for the answer to QUIT, at most.
_QUIT_TIMEOUT = 5.0

#: TLS alert reasons (OpenSSL's names) meaning the server refused our client
#: certificate, or wanted one and got none.
_CLIENT_CERT_REASONS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)

#: TLS failures no retry cures: no common protocol version or cipher, or
#: the server is not speaking TLS where we expect it (implicit against
#: explicit).
_HANDSHAKE_REFUSED_REASONS = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_VERSION_NUMBER",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "NO_SHARED_CIPHER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
    }
)


class _DataSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` whose ``unwrap`` (ftplib's TLS shutdown after a transfer) cannot fail.

    A server may close a data connection without a TLS close_notify, and
    under TLS 1.3 with a resumed session it may do so while its session
    tickets are still arriving: ``unwrap`` then raises
    ``SHUTDOWN_WHILE_IN_INIT`` (seen on an empty listing about one time in
    four). Whether the transfer was complete is the control connection's
    reply to say (ftplib reads it right after), and the puller compares the
    downloaded size with the listing; a failed shutdown says nothing more.
    """

    def unwrap(self) -> socket.socket:
        try:
            return super().unwrap()
        except (ssl.SSLError, OSError):
            return self


class _FTPS(ftplib.FTP_TLS):
    """``FTP_TLS`` with data-channel session reuse and optional implicit TLS."""

    def __init__(self, *, context: ssl.SSLContext, timeout: float, implicit: bool) -> None:
        context.sslsocket_class = _DataSSLSocket
        super().__init__(context=context, timeout=timeout)
        self._implicit = implicit

    def connect(
        self,
        host: str = "",
        port: int = 0,
        timeout: float = -999,
        source_address: tuple[str, int] | None = None,
    ) -> str:
        if not self._implicit:
            return super().connect(host, port, timeout, source_address)
        # Implicit FTPS: ftplib.FTP.connect with the socket wrapped before
        # the greeting is read. login() then skips AUTH TLS (it sees an
        # SSLSocket already).
        if host:
            self.host = host
        if port > 0:
            self.port = port
        if timeout != -999:
            self.timeout = timeout
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self.context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        # FTP_TLS.ntransfercmd without a fresh TLS session: resume the
        # control connection's, which servers with require_ssl_reuse demand.
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            control = self.sock
            session = control.session if isinstance(control, ssl.SSLSocket) else None
            try:
                conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
            except BaseException:
                conn.close()
                raise
        return conn, size


def _tls_context(options: RemoteOptions) -> ssl.SSLContext:
    """The client TLS context: verification on, the options' CA and client certificate."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(options.ca) if options.ca else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise RemoteError(
            f"cannot load the CA file {options.ca} (--ca): {_reason(exc)}",
            kind=RemoteErrorKind.TRUST,
        ) from None
    # create_default_context already sets CERT_REQUIRED and check_hostname;
    # said again so that no later edit can loosen them by accident.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if options.tls_minimum == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    if options.cert is not None:
        try:
            context.load_cert_chain(
                str(options.cert), str(options.key) if options.key is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise RemoteError(
                f"cannot load the client certificate {options.cert} (--cert"
                f"{', --key' if options.key else ''}): {_reason(exc)}",
                kind=RemoteErrorKind.AUTH,
            ) from None
    return context


def connect_ftp(target: RemoteTarget, options: RemoteOptions) -> RemoteSession:
    """Open a session on an FTPS server (or a plain FTP one, when allowed).

    Args:
        target: The server; ``target.scheme`` is ``"ftps"`` or ``"ftp"``.
        options: How to connect and whom to trust. ``ftp`` needs
            ``options.insecure_plain_ftp``.

    Returns:
        A logged-in session (passive mode, binary transfers, ``PROT P`` for FTPS).

    Raises:
        RemoteError: ``REFUSED`` for ``ftp`` without ``insecure_plain_ftp``
            or a server without TLS; ``TRUST`` for a certificate that fails
            verification; ``AUTH`` for refused credentials or client
            certificate; ``CONNECTION`` when the server cannot be reached.
    """
    if target.scheme == "ftp":
        if not options.insecure_plain_ftp:
            raise RemoteError(
                f"refusing plain FTP to {target.host}:{target.port}: it sends the password "
                "and the patient data unencrypted; use ftps://, or pass --insecure-plain-ftp "
                "inside a trusted network only",
                kind=RemoteErrorKind.REFUSED,
            )
        ftp: ftplib.FTP = ftplib.FTP(timeout=options.timeout)
    elif target.scheme == "ftps":
        ftp = _FTPS(
            context=_tls_context(options),
            timeout=options.timeout,
            implicit=options.implicit_tls,
        )
    else:
        raise ValueError(f"connect_ftp takes ftps:// and ftp:// targets, not {target.scheme}://")
    session = FTPSession(ftp, target, options)
    try:
        session._open()
    except BaseException:
        session.close()
        raise
    return session


def _reason(exc: BaseException) -> str:
    """A short, human reason for ``exc`` (no traceback, no patient data)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or exc)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, ftplib.Error):
        return str(exc).strip()
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text or type(exc).__name__


class FTPSession:
    """A :class:`RemoteSession` over one ftplib connection (FTPS or plain FTP).

    Made by :func:`connect_ftp`; blocking, one call at a time (see
    :mod:`mllp_trio.store._remote._base`).
    """

    def __init__(self, ftp: ftplib.FTP, target: RemoteTarget, options: RemoteOptions) -> None:
        self._ftp = ftp
        self._target = target
        self._options = options
        self._where = f"{target.scheme}://{target.host}:{target.port}"
        self._closed = False
        # None until the first listing tells whether the server has MLSD.
        self._mlsd: bool | None = None
        # Calls under way (a close from another thread must not send QUIT).
        self._active = 0

    # -- connecting ------------------------------------------------------

    def _open(self) -> None:
        ftp = self._ftp
        with self._errors("connect"):
            try:
                ftp.connect(self._target.host, self._target.port)
            except TimeoutError:
                if ftp.sock is None or self._options.implicit_tls or self._target.scheme == "ftp":
                    raise
                raise RemoteError(
                    f"{self._where}: the server took the connection but sent no greeting in "
                    f"{self._options.timeout:g} s (--timeout); if it speaks implicit FTPS "
                    "(TLS from the first byte, port 990 style), use --implicit-tls",
                    kind=RemoteErrorKind.CONNECTION,
                ) from None
        user = self._target.username or "anonymous"
        password = self._options.password if self._options.password is not None else ""
        if isinstance(ftp, _FTPS):
            if not self._options.implicit_tls:
                with self._errors("AUTH TLS"):
                    try:
                        ftp.auth()
                    except ftplib.error_perm as exc:
                        raise RemoteError(
                            f"{self._where}: the server does not offer TLS (AUTH TLS: "
                            f"{_reason(exc)}); is it a plain FTP server, or implicit FTPS "
                            "(--implicit-tls)?",
                            kind=RemoteErrorKind.REFUSED,
                        ) from None
            with self._errors("login"):
                try:
                    ftp.login(user, password, secure=False)
                except (ssl.SSLEOFError, EOFError, ConnectionResetError):
                    # Under TLS 1.3 the server checks our client certificate
                    # after the client's side of the handshake is done, so a
                    # refusal shows as the connection ending at the first
                    # command (some servers send no alert saying why).
                    raise RemoteError(
                        f"{self._where}: the server ended the connection right after the "
                        "TLS handshake, before answering the login: most likely it refused "
                        "our TLS client certificate, or wanted one; check --cert and --key",
                        kind=RemoteErrorKind.AUTH,
                    ) from None
            with self._errors("PROT P"):
                ftp.prot_p()
        else:
            with self._errors("login"):
                ftp.login(user, password)
        ftp.set_pasv(True)
        with self._errors("TYPE I"):
            ftp.voidcmd("TYPE I")

    # -- errors ----------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn anything ftplib, ssl or socket raise into a :class:`RemoteError`."""
        self._active += 1
        try:
            yield
        except RemoteError:
            raise
        except _LocalError as exc:
            # The local file failed (disk full...), in the middle of a
            # transfer: the connection is in an unknown state, so the
            # session must be dropped (a transient kind does that) and the
            # operation tried again later.
            raise RemoteError(
                f"{self._where}: {doing} failed on the local side: {_reason(exc.error)}",
                kind=RemoteErrorKind.CONNECTION,
            ) from None
        except (ftplib.Error, OSError, EOFError, ValueError, AttributeError) as exc:
            if self._closed:
                # Closed from another thread under this call (ftplib then
                # meets its own file attribute set to None).
                raise RemoteError(
                    f"{self._where}: {doing} stopped: the session was closed",
                    kind=RemoteErrorKind.CONNECTION,
                ) from None
            if isinstance(exc, AttributeError):
                raise
            self._fail(doing, exc)
        finally:
            self._active -= 1

    def _fail(self, doing: str, exc: BaseException) -> NoReturn:
        where = self._where
        reason = _reason(exc)
        kind = RemoteErrorKind.CONNECTION
        if isinstance(exc, ssl.SSLCertVerificationError):
            hint = (
                "the certificate is not for this host name: connect by the name it was issued for"
                # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
                if exc.verify_code in (62, 64)
                else "if the server's CA is a private one, pass its certificate with --ca FILE"
            )
            raise RemoteError(
                f"{where}: the server's TLS certificate failed verification ({reason}) "
                f"during {doing}; {hint}",
                kind=RemoteErrorKind.TRUST,
            ) from None
        if isinstance(exc, ssl.SSLError) and exc.reason in _CLIENT_CERT_REASONS:
            raise RemoteError(
                f"{where}: the server refused our TLS client certificate during {doing} "
                f"({reason}); check --cert and --key",
                kind=RemoteErrorKind.AUTH,
            ) from None
        if isinstance(exc, ssl.SSLError) and exc.reason in _HANDSHAKE_REFUSED_REASONS:
            client_cert = (
                ", or a TLS client certificate (--cert, --key)"
                if self._options.cert is None
                else ""
            )
            raise RemoteError(
                f"{where}: TLS failed during {doing} ({reason}); the server may need "
                "another --tls-min, explicit rather than implicit TLS (--implicit-tls)"
                f"{client_cert}",
                kind=RemoteErrorKind.REFUSED,
            ) from None
        if isinstance(exc, ftplib.Error):
            code = str(exc)[:3]
            if code == "530":
                kind = RemoteErrorKind.AUTH
            elif code.startswith("5") and _says_not_found(code, reason):
                kind = RemoteErrorKind.NOT_FOUND
            elif code.startswith("5") or not code.startswith("4"):
                # Permanent replies, and replies ftplib could not make sense of.
                kind = RemoteErrorKind.REFUSED
            # 4xx (421 closing, 425/426 data connection, 450 busy...) are
            # "transient negative completion" replies: CONNECTION, retried.
        elif isinstance(exc, ValueError):
            # ftplib raises ValueError for a few malformed replies and paths.
            kind = RemoteErrorKind.REFUSED
        if isinstance(exc, TimeoutError):
            reason = f"no progress in {self._options.timeout:g} s (--timeout)"
        hint = ""
        if kind is RemoteErrorKind.AUTH and doing == "login":
            user = self._target.username or "anonymous"
            hint = (
                f"; check the user name ({user!r}, in the URL) and the password "
                "(--password-env/--password-file)"
            )
        raise RemoteError(f"{where}: {doing} failed: {reason}{hint}", kind=kind) from None

    # -- the RemoteSession methods --------------------------------------

    def list_files(self, folder: str) -> list[RemoteEntry]:
        """Return the regular files directly in ``folder`` (MLSD, else NLST+SIZE+MDTM)."""
        if self._mlsd is not False:
            try:
                entries = self._list_mlsd(folder)
            except _NoMLSD:
                self._mlsd = False
            else:
                self._mlsd = True
                return entries
        return self._list_nlst(folder)

    def _list_mlsd(self, folder: str) -> list[RemoteEntry]:
        ftp = self._ftp
        if self._mlsd is None:
            # Ask for the facts we read; a server without OPTS MLST sends
            # its defaults, which normally include them.
            with self._errors("OPTS MLST"), contextlib.suppress(ftplib.error_perm):
                ftp.sendcmd("OPTS MLST type;size;modify;")
        entries: list[RemoteEntry] = []
        with self._errors(f"listing {folder or '.'}"):
            try:
                listing = list(ftp.mlsd(folder))
            except ftplib.error_perm as exc:
                if str(exc)[:3] in ("500", "502", "504"):
                    raise _NoMLSD from None
                raise
        for name, facts in listing:
            if facts.get("type", "").lower() != "file" or "/" in name:
                continue
            size_fact = facts.get("size")
            if size_fact is not None and size_fact.isdigit():
                size = int(size_fact)
            else:
                found = self.size(posixpath.join(folder, name))
                if found is None:
                    continue
                size = found
            entries.append(RemoteEntry(name=name, size=size, mtime=_ftp_time(facts.get("modify"))))
        return entries

    def _list_nlst(self, folder: str) -> list[RemoteEntry]:
        ftp = self._ftp
        with self._errors(f"listing {folder or '.'}"):
            try:
                names = ftp.nlst(folder) if folder else ftp.nlst()
            except ftplib.error_temp as exc:
                # Some servers answer an empty folder with "450 No files found".
                if "no files" in str(exc).lower():
                    return []
                raise
        entries: list[RemoteEntry] = []
        for listed in names:
            name = posixpath.basename(listed.rstrip("/"))
            if name in ("", ".", ".."):
                continue
            path = posixpath.join(folder, name)
            size = self.size(path)
            if size is None:
                continue  # a folder, or gone since the listing
            mtime: float | None = None
            with self._errors(f"MDTM {path}"), contextlib.suppress(ftplib.error_perm):
                mtime = _ftp_time(ftp.sendcmd(f"MDTM {path}")[4:].strip())
            entries.append(RemoteEntry(name=name, size=size, mtime=mtime))
        return entries

    def download(self, path: str, local: BinaryIO, *, offset: int = 0) -> int:
        """Write ``path``'s bytes from ``offset`` on to ``local`` (REST + RETR)."""
        written = 0

        def write(data: bytes) -> None:
            nonlocal written
            try:
                local.write(data)
            except OSError as exc:
                raise _LocalError(exc) from exc
            written += len(data)

        with self._errors(f"download of {path}"):
            self._ftp.retrbinary(f"RETR {path}", write, blocksize=_BLOCK, rest=offset or None)
        return written

    def upload(self, local: BinaryIO, path: str, *, offset: int = 0) -> int:
        """Write ``local``'s bytes from ``offset`` on to ``path`` (STOR, or APPE to resume)."""
        sent = 0

        def count(data: bytes) -> None:
            nonlocal sent
            sent += len(data)

        try:
            local.seek(offset)
        except OSError as exc:
            raise _LocalError(exc) from exc
        source = _LocalReader(local)
        # APPE rather than REST + STOR: servers agree on what APPE means,
        # while REST before STOR is optional (RFC 3659) and some ignore it.
        command = f"APPE {path}" if offset > 0 else f"STOR {path}"
        with self._errors(f"upload of {path}"):
            self._ftp.storbinary(command, source, blocksize=_BLOCK, callback=count)
        return sent

    def size(self, path: str) -> int | None:
        """Return ``path``'s size (SIZE), or ``None`` when it does not exist."""
        ftp = self._ftp
        with self._errors(f"SIZE {path}"):
            # Listings switch to ASCII; many servers refuse SIZE in ASCII mode.
            ftp.voidcmd("TYPE I")
            try:
                reply = ftp.sendcmd(f"SIZE {path}")
            except ftplib.error_perm as exc:
                if str(exc)[:3] == "550":
                    return None
                raise
        try:
            return int(reply[3:].strip())
        except ValueError:
            raise RemoteError(
                f"{self._where}: SIZE {path} answered {reply[:60]!r}",
                kind=RemoteErrorKind.REFUSED,
            ) from None

    def rename(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target``; refused if ``target`` exists."""
        # Check-then-act: FTP's RNTO may silently replace an existing file
        # and FTP has no "rename unless it exists". Another client creating
        # ``target`` between the SIZE and the RNTO is not caught; the
        # folders we write to are ours (temporary names, done/, error/).
        if self.size(target) is not None:
            raise RemoteError(
                f"{self._where}: cannot rename {source} to {target}: {target} exists",
                kind=RemoteErrorKind.REFUSED,
            )
        with self._errors(f"rename of {source} to {target}"):
            self._ftp.rename(source, target)

    def delete(self, path: str) -> None:
        """Remove ``path`` (DELE); a file already gone is not an error."""
        with self._errors(f"delete of {path}"):
            try:
                self._ftp.delete(path)
            except ftplib.error_perm as exc:
                if str(exc)[:3] != "550":
                    raise
                # 550 is both "no such file" and "not allowed": only the
                # first is success, so look.
                if self.size(path) is not None:
                    raise RemoteError(
                        f"{self._where}: delete of {path} refused: {_reason(exc)}",
                        kind=RemoteErrorKind.REFUSED,
                    ) from None

    def makedirs(self, folder: str) -> None:
        """Create ``folder`` and its parents (MKD each part; existing ones are fine)."""
        parts = [part for part in folder.split("/") if part not in ("", ".")]
        prefix = "/" if folder.startswith("/") else ""
        for index in range(len(parts)):
            path = prefix + "/".join(parts[: index + 1])
            with self._errors(f"MKD {path}"):
                try:
                    self._ftp.mkd(path)
                except ftplib.error_perm as exc:
                    if str(exc)[:3] != "550" or not self._is_folder(path):
                        raise

    def _is_folder(self, path: str) -> bool:
        ftp = self._ftp
        home = ftp.pwd()
        try:
            ftp.cwd(path)
        except ftplib.error_perm:
            return False
        ftp.cwd(home)
        return True

    def close(self) -> None:
        """Send QUIT and close the connection; safe to call twice.

        Also from another thread while a call is still running in this
        session (an abandoned worker thread): then no QUIT (a server answers
        it only once the transfer is over), the control connection is shut
        down at once, and the running call fails.
        """
        if self._closed:
            return
        self._closed = True
        ftp = self._ftp
        sock = ftp.sock
        if sock is not None and not self._active:
            # QUIT is a courtesy: a hung server must not hold the close up.
            with contextlib.suppress(ftplib.Error, OSError, EOFError, ValueError):
                sock.settimeout(min(self._options.timeout, _QUIT_TIMEOUT))
                ftp.quit()
        elif sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            ftp.close()

    def __enter__(self) -> FTPSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


#: Words of a 5xx reply that mean "no such file or folder". FTP has one
#: code, 550, for "not found" and "not allowed" alike, and some servers use
#: others (pyftpdlib: "501 No such directory" to MLSD).
_NOT_FOUND_WORDS = ("no such", "not found", "not exist", "n't exist", "cannot find")
_REFUSED_WORDS = ("permission", "denied", "exists", "not allowed")


def _says_not_found(code: str, reason: str) -> bool:
    text = reason.lower()
    if any(word in text for word in _NOT_FOUND_WORDS):
        return True
    return code == "550" and not any(word in text for word in _REFUSED_WORDS)


class _LocalError(Exception):
    """Reading or writing the local file failed (not the server, not the network)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _LocalReader:
    """``local`` for ftplib's ``storbinary``, its read errors told apart from the network's."""

    def __init__(self, local: BinaryIO) -> None:
        self._local = local

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._local.read(size)
        except OSError as exc:
            raise _LocalError(exc) from exc


class _NoMLSD(Exception):
    """The server has no MLSD: list with NLST, SIZE and MDTM."""


def _ftp_time(value: str | None) -> float | None:
    """Seconds since the epoch from an MLSD/MDTM time (``YYYYMMDDHHMMSS[.sss]``, UTC)."""
    if not value:
        return None
    whole, _, fraction = value.partition(".")
    try:
        parsed = time.strptime(whole, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    seconds = float(calendar.timegm(parsed))
    if fraction.isdigit():
        seconds += int(fraction) / 10 ** len(fraction)
    return seconds

"""The Trio client: one connection that sends messages and waits for their replies."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from mllp_trio._config import ClientConfig, tls_stream_factory
from mllp_trio._errors import (
    ConnectError,
    ConnectionClosedError,
    MLLPError,
    MLLPTimeoutError,
    TLSHandshakeError,
    TLSRefusedError,
)
from mllp_trio._hl7 import (
    AckReply,
    ControlIdMismatch,
    acknowledged_id,
    normalise_segments,
    parse_reply,
    read_msh,
    resolve_charset,
)
from mllp_trio._io._sslsocket import SSLSocketStream
from mllp_trio._io._stream import MLLPStream, gave_up
from mllp_trio._io._tcpstream import LeanTCPStream
from mllp_trio._io._watchdog import Expiry, Watchdog
from mllp_trio.proto._events import EndOfStream, Message
from mllp_trio.proto._exchange import DeliveryFailure, Rejected, Resend

__all__ = ["MLLPClient", "open_mllp_client"]

log = logging.getLogger("mllp_trio.client")

#: What a failing socket or TLS stream raises; mapped to our own errors.
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


#: Control ids of earlier messages remembered per connection, to recognise
#: a late copy of their replies; longer ids are not remembered.
_EARLIER: Final = 64
_EARLIER_ID_SIZE: Final = 199
#: Seconds to read what arrived on an idle connection before replacing it.
_IDLE_READ_TIMEOUT: Final = 1.0
# A TLS connection closed unused this soon after its handshake was refused
# (a listener checks its allow list at once; idle timeouts are far longer).
_REFUSAL_WINDOW: Final = 1.0


class _Lost(Exception):
    """The exchange timed out or the connection ended: resend on a new connection.

    Carries the error to raise if no attempt is left, and whether the peer
    closed without a byte in answer (``silent``).
    """

    def __init__(self, error: MLLPError, *, silent: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.silent = silent


class MLLPClient:
    """A sending connection to an HL7 listener.

    Use :func:`open_mllp_client` to get one. Send one message at a time
    (concurrent calls wait their turn); each call returns when the reply has
    arrived. If a call is cancelled or times out mid-exchange, the
    connection is replaced before the next message, never reused out of
    step; so is a connection that received a reply for no message of ours
    (:class:`ControlIdMismatch`). A late copy of the reply to an earlier
    message on the same connection is dropped. A connection the peer closed
    while it sat idle is replaced before the next message, without counting
    as a retry. Every failure is an :class:`MLLPError`: transport failures
    come as :class:`ConnectError`, :class:`TLSHandshakeError` (and
    :class:`TLSRefusedError`, never retried), :class:`ConnectionClosedError`
    and :class:`MLLPTimeoutError`.

    Args:
        host: The listener's address.
        port: The listener's port.
        ssl_context: ``None`` for plain TCP, else a client context.
        server_hostname: Name to check the server certificate against
            (default: ``host``).
        config: Framing, timeouts, retries, charsets and socket options.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.config = config if config is not None else ClientConfig()
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname if server_hostname is not None else host
        self._tls_stream = tls_stream_factory(self.config.tls_stream)
        self._stream: MLLPStream | None = None
        self._lock = trio.StrictFIFOLock()
        # Direct mode: each exchange's deadlines go on its own cancel scope.
        self._watchdog = Watchdog(trio.CancelScope(), poll=None)
        # Per connection: the socket to look at while idle, and the control
        # ids sent (for late copies of their replies).
        self._idle_check: _IdleCheck | None = None
        self._earlier: deque[bytes] = deque(maxlen=_EARLIER)
        # Whether the current connection has carried a whole exchange: only
        # then can an unanswered close be the idle-close race.
        self._carried = False
        self._connected_at = 0.0
        self._answered = False

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    async def connect(self) -> None:
        """Open the connection (and finish the TLS handshake) if it is not open.

        Raises:
            ConnectError: The connection was refused, or the host is unknown or unreachable.
            TLSRefusedError: The TLS handshake failed for good (certificate
                refused on either side, no common protocol, not a TLS server).
            TLSHandshakeError: The TLS handshake failed otherwise.
            MLLPTimeoutError: Connecting or the handshake took too long.
        """
        if self._stream is not None and not self._stream.broken:
            return
        await self._close_stream()
        config = self.config
        watchdog = self._watchdog
        with trio.CancelScope() as scope:
            watchdog.retarget(scope)
            watchdog.arm(config.connect_timeout, Expiry.CONNECT)
            try:
                tcp = await trio.open_tcp_stream(
                    self.host, self.port, local_address=config.local_address
                )
            except OSError as exc:
                raise ConnectError(f"cannot connect to {self._where}: {_reason(exc)}") from None
        if watchdog.check() is not None:
            raise MLLPTimeoutError(
                f"connecting to {self._where} timed out after {config.connect_timeout:g} s"
            )
        if config.keepalive is not None:
            _set_keepalive(tcp.socket, config.keepalive)
        idle_check = _IdleCheck(tcp.socket.fileno())
        transport: trio.abc.Stream = tcp
        if self._ssl_context is not None:
            tls = await self._tls_stream(
                tcp, self._ssl_context, self._server_hostname, server_side=False
            )
            with trio.CancelScope() as scope:
                watchdog.retarget(scope)
                watchdog.arm(config.handshake_timeout, Expiry.HANDSHAKE)
                try:
                    await tls.do_handshake()
                except (*_TRANSPORT_ERRORS, ssl.SSLError) as exc:
                    await trio.aclose_forcefully(tls)
                    # The TLS reason stays attached (trio wraps ssl.SSLError).
                    cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
                    raise _handshake_error(exc, self._where) from cause
                except BaseException:
                    await trio.aclose_forcefully(tls)
                    raise
            if watchdog.check() is not None:
                await trio.aclose_forcefully(tls)
                raise MLLPTimeoutError(
                    f"TLS handshake with {self._where} timed out after "
                    f"{config.handshake_timeout:g} s (is it a TLS listener?)"
                )
            transport = tls
        else:
            transport = LeanTCPStream(tcp)
        self._stream = MLLPStream(
            transport,
            config.framing.new_exchange(retries=config.retries),
            watchdog,
            receive_size=config.receive_size,
        )
        self._idle_check = idle_check
        self._earlier.clear()
        self._carried = False
        self._connected_at = trio.current_time()

    async def aclose(self) -> None:
        """Close the connection."""
        await self._close_stream()

    async def _close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._idle_check = None
            await trio.aclose_forcefully(stream.transport)

    async def send(self, message: bytes | str, *, raise_on_negative: bool = True) -> AckReply:
        """Send an HL7 message and return its parsed acknowledgement.

        Segments may be separated by CR, LF or CRLF; they are sent as CR.
        A ``str`` is encoded in the character set its MSH-18 names (or
        ``config.default_charset`` when blank, ``config.charset_override``
        when set). The reply must acknowledge this message's MSH-10 (compared
        as the same characters, whatever the charsets).

        Args:
            message: The HL7 message.
            raise_on_negative: Raise for AE/AR/CE/CR (default); else return them.

        Raises:
            ApplicationError: AE. ApplicationReject: AR. CommitError: CE.
            CommitReject: CR (all :class:`NegativeAcknowledgement`).
            ControlIdMismatch: MSA-2 names neither this message nor an
                earlier one; the connection is closed (it is out of step).
            InvalidReply: The reply is not an acknowledgement.
            MLLPError: as :meth:`send_raw`.
        """
        config = self.config
        data = self._normalise(message)
        expected = read_msh(data).control_id_raw
        await self._acquire()
        try:
            reply = await self._send_locked(data, expected)
            try:
                return parse_reply(
                    reply,
                    expected,
                    raise_on_negative=raise_on_negative,
                    default_charset=config.default_charset,
                    charset_override=config.charset_override,
                )
            except ControlIdMismatch:
                # Not our reply and not a late one: the connection is out of step.
                await self._close_stream()
                raise
        finally:
            self._lock.release()

    async def send_raw(self, data: bytes) -> bytes:
        """Send one frame and return the reply frame's bytes, unparsed.

        Retries, up to ``config.retries`` times in all: a commit NAK or a
        commit ACK that does not come in time (release 2), or a NAK block
        (HLLP), resends on the same connection; a reply that does not come in
        time or a closed connection resends on a new one. A connection found
        closed before sending, or closed without a byte in answer after it
        sat idle, is replaced once without counting as a retry.

        Raises:
            MLLPTimeoutError: No reply in time, on every attempt.
            DeliveryFailed: The peer NAKed every attempt.
            ConnectionClosedError: The peer closed the connection every time.
            TLSRefusedError: The TLS peer refused us (or we it) for good: never retried.
            ConnectError, TLSHandshakeError: The connection could not be opened.
        """
        await self._acquire()
        try:
            return await self._send_locked(data, None)
        finally:
            self._lock.release()

    async def _acquire(self) -> None:
        # Callers wait their turn in order; the uncontended path takes the
        # lock without a scheduler round trip (the exchange checkpoints anyway).
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    def _normalise(self, message: bytes | str) -> bytes:
        if isinstance(message, bytes):
            return normalise_segments(message)
        config = self.config
        text = message.replace("\r\n", "\r").replace("\n", "\r")
        header = read_msh(text.encode("ascii", "replace"))
        charset = resolve_charset(
            header.charset,
            repetition_separator=header.repetition_separator.decode("ascii") or "~",
            default=config.default_charset,
            override=config.charset_override,
        )
        return text.encode(charset.codec)

    async def _send_locked(self, data: bytes, expected: bytes | None) -> bytes:
        retries = self.config.retries
        used = 0
        free_reconnect = True
        while True:
            # A connection opened before this attempt may have sat idle
            # (even one never used: open_mllp_client connects at once).
            reused = self._stream is not None
            if reused and self._idle_input() and not await self._idle_input_usable():
                # The peer closed (or wrote) while we were idle: replace the
                # connection before sending; not a retry.
                log.info("%s closed the idle connection; reconnecting", self._where)
                await self._close_stream()
                reused = False
            await self.connect()
            stream = self._stream
            assert stream is not None
            carried = self._carried
            try:
                reply = await self._exchange(stream, data, retries - used, expected)
            except _Lost as exc:
                await self._close_stream()
                if exc.silent and reused and carried and free_reconnect:
                    # Closed unanswered after an earlier exchange on the same
                    # connection: most likely closed while idle, just before
                    # we wrote (a fresh connection gets no such benefit of the
                    # doubt: retries=N still means at most N+1 copies there).
                    free_reconnect = False
                    log.info("%s; resending on a new connection", exc.error)
                    continue
                if exc.silent and not carried and self._ssl_context is not None and used == 0:
                    raise _refused_after_handshake(self._where) from None
                used += max(stream.exchange.attempts, 1)
                if used > retries:
                    raise exc.error from None
                log.info("%s; resending on a new connection", exc.error)
            except BaseException:
                # Cancelled or failed mid-exchange: a late reply could
                # arrive, so this connection is out of step for good.
                await self._close_stream()
                raise
            else:
                if expected is not None and len(expected) <= _EARLIER_ID_SIZE:
                    self._earlier.append(expected)
                self._carried = True
                return reply

    async def _read_idle_input(self) -> bool:
        """Read what arrived while idle; whether the connection is still usable.

        Raises:
            TLSRefusedError: A TLS alert refusing us arrived (under TLS 1.3
                the server checks our certificate after our side of the
                handshake is over), or a TLS connection never used yet was
                closed within moments of its handshake (how a listener
                refuses a client not on its allow list).
        """
        stream = self._stream
        assert stream is not None
        transport = stream.transport
        if isinstance(transport, SSLSocketStream):
            # The default TLS stream can look without waiting: TLS 1.3
            # session tickets are records without application data, not a
            # reason to replace the connection.
            try:
                data = transport.ssl_object.recv(self.config.receive_size)
            except ssl.SSLWantReadError:
                return True
            except (ssl.SSLError, OSError) as exc:
                self._refused_while_idle(exc)
                return False
            if not data:
                self._refused_while_idle(None)
            return False
        # It is there already: the bound only guards against a partial record.
        with trio.move_on_after(_IDLE_READ_TIMEOUT):
            try:
                await transport.receive_some(self.config.receive_size)
            except _TRANSPORT_ERRORS as exc:
                self._refused_while_idle(exc)
        return False

    async def _idle_input_usable(self) -> bool:
        try:
            return await self._read_idle_input()
        except TLSRefusedError:
            await self._close_stream()
            raise

    def _refused_while_idle(self, exc: BaseException | None) -> None:
        """Raise :class:`TLSRefusedError` if what ended an idle connection is a refusal."""
        refused = _tls_refusal(exc) if exc is not None else None
        if (
            refused is None
            and self._ssl_context is not None
            and not self._carried
            and trio.current_time() - self._connected_at < _REFUSAL_WINDOW
        ):
            refused = (
                "the server closed the connection right after the TLS handshake: it "
                "probably refused our client certificate (not on its allow list, or not "
                "one it accepts); ask its operator"
            )
        if refused is not None:
            raise TLSRefusedError(f"TLS connection to {self._where}: {refused}")

    def _idle_input(self) -> bool:
        """Whether anything (bytes, EOF, reset) arrived while the connection sat idle."""
        check = self._idle_check
        return check is not None and check.readable()

    async def _exchange(
        self, stream: MLLPStream, data: bytes, retries: int, expected: bytes | None
    ) -> bytes:
        config = self.config
        exchange = stream.exchange
        watchdog = self._watchdog
        self._answered = False  # any event from the peer for this message
        try:
            with trio.CancelScope() as scope:
                watchdog.retarget(scope)
                await stream.send_all(
                    exchange.send(Message(data), retries=retries), timeout=config.write_timeout
                )
                if exchange.framing == "mllp2":
                    try:
                        await stream.await_commit(
                            "message",
                            ack_timeout=config.ack_timeout,
                            write_timeout=config.write_timeout,
                        )
                    except ConnectionClosedError as exc:
                        silent = exchange.attempts <= 1 and not exchange.buffered
                        raise _Lost(self._closed(str(exc)), silent=silent) from None
                    self._answered = True
                return await self._await_reply(stream, expected)
        except _TRANSPORT_ERRORS as exc:
            refused = _tls_refusal(exc)
            if refused is not None:
                raise TLSRefusedError(f"TLS connection to {self._where}: {refused}") from None
            raise _Lost(
                ConnectionClosedError(f"{self._where}: connection lost ({_reason(exc)})"),
                silent=not self._answered and not exchange.buffered,
            ) from None
        expired = watchdog.check()
        what = (
            f"no reply within {config.ack_timeout:g} s" if expired is Expiry.ACK else str(expired)
        )
        raise _Lost(MLLPTimeoutError(f"{self._where}: {what}"))

    async def _await_reply(self, stream: MLLPStream, expected: bytes | None) -> bytes:
        config = self.config
        exchange = stream.exchange
        # The ACK deadline goes on the exchange's scope: when it passes, the
        # exchange is over (a late reply would be out of step: new connection).
        deadline = trio.current_time() + config.ack_timeout
        earlier = self._earlier
        rejected = 0
        while True:
            event = await stream.receive_event(deadline=deadline, reason=Expiry.ACK)
            if type(event) is Message:
                # Release 2: we hold the reply now; commit it.
                await stream.send_all(exchange.commit(), timeout=config.write_timeout)
                if expected is not None and earlier:
                    acked = acknowledged_id(event.data)
                    if acked is not None and acked != expected and acked in earlier:
                        # A late copy of the reply to an earlier message.
                        log.warning("%s: dropped a second reply to an earlier message", self._where)
                        continue
                return event.data
            if not isinstance(event, EndOfStream):
                self._answered = True
            if type(event) is Resend:
                log.info("%s: message NAKed (%s); resending", self._where, event.reason)
                await stream.send_all(event.data, timeout=config.write_timeout)
                deadline = trio.current_time() + config.ack_timeout
            elif type(event) is DeliveryFailure:
                raise gave_up(event, "message")
            elif type(event) is Rejected:
                # A damaged copy of the reply: the answer asks for it again,
                # a few times; every block failing means the framings differ.
                rejected += 1
                if rejected > config.retries + 1 or (
                    exchange.framing == "hllp" and not event.answer
                ):
                    # (An HLLP block left unanswered is a NAK block we cannot
                    # verify: the server refused ours, and we cannot tell why.)
                    raise _Lost(
                        ConnectionClosedError(
                            f"{self._where}: {rejected} blocks from the server in a row failed "
                            f"our check (last: {event.reason}); do both sides use the same "
                            "framing settings (HLLP checksum, --hllp-checksum)?"
                        )
                    )
                log.warning("%s: invalid frame: %s", self._where, event.reason)
                await stream.send_all(event.answer, timeout=config.write_timeout)
            elif isinstance(event, EndOfStream):
                raise _Lost(
                    self._closed("connection closed before the reply"),
                    silent=not self._answered,
                )

    def _closed(self, what: str) -> ConnectionClosedError:
        return ConnectionClosedError(f"{self._where}: {what}")


class _IdleCheck:
    """Looks, without waiting, whether a socket has anything to read.

    While a connection sits between exchanges the peer has nothing to say:
    readable means it closed (EOF or reset) or wrote out of turn.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll: select.poll | None = None
        if hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN | select.POLLPRI)

    def readable(self) -> bool:
        try:
            if self._poll is not None:
                return bool(self._poll.poll(0))
            ready, _, _ = select.select([self._fd], [], [], 0)
            return bool(ready)
        except (OSError, ValueError):
            return True  # a socket we cannot look at is no socket to reuse


def _set_keepalive(sock: trio.socket.SocketType, idle: float) -> None:
    """TCP keepalive: probes after ``idle`` seconds of silence, where the OS allows tuning."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    seconds = max(1, round(idle))
    for name, value in (
        ("TCP_KEEPIDLE", seconds),
        ("TCP_KEEPALIVE", seconds),  # macOS spells TCP_KEEPIDLE so
        ("TCP_KEEPINTVL", max(1, min(seconds, 75))),
        ("TCP_KEEPCNT", 5),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            # An OS that refuses the tuning keeps its defaults.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


# OpenSSL reasons of a TLS failure that a retry cannot fix, with what they mean.
_PERMANENT_TLS: Final[dict[str, str]] = {
    "CERTIFICATE_VERIFY_FAILED": "we do not trust the server's certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust our client certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server refused our client certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the server refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the server says our client certificate is revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says our client certificate has expired",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate",
    "TLSV1_ALERT_ACCESS_DENIED": "the server denied us access",
    "TLSV1_ALERT_DECRYPT_ERROR": "the server could not verify our key (wrong key?)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "the server refused the handshake (it may require a client certificate, "
        "or share no cipher with us)"
    ),
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common with the server",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common with the server",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version in common with the server",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY": "no cipher in common with the server",
    "NO_SHARED_CIPHER": "no cipher in common with the server",
    "NO_CIPHERS_AVAILABLE": "no cipher in common with the server",
    "WRONG_VERSION_NUMBER": (
        "the server did not answer in TLS: is it a plaintext listener? "
        "(connect without TLS: --plaintext)"
    ),
    "HTTP_REQUEST": "the server did not answer in TLS",
    "PACKET_LENGTH_TOO_LONG": (
        "the server did not answer in TLS: is it a plaintext listener? "
        "(connect without TLS: --plaintext)"
    ),
    "RECORD_LAYER_FAILURE": (
        "the server did not answer in TLS: is it a plaintext listener? "
        "(connect without TLS: --plaintext)"
    ),
}


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    cause: BaseException | None = exc
    for _ in range(3):
        if isinstance(cause, ssl.SSLError):
            return cause
        if cause is None:
            return None
        cause = cause.__cause__ or cause.__context__
    return None


def _tls_refusal(exc: BaseException) -> str | None:
    """What a TLS failure that a retry cannot fix means, or ``None`` for any other failure."""
    error = _ssl_cause(exc)
    if error is None or not error.reason:
        return None
    meaning = _PERMANENT_TLS.get(error.reason)
    if meaning is None:
        return None
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        meaning = f"{meaning}: {error.verify_message}"
    return meaning


def _handshake_error(exc: BaseException, where: str) -> TLSHandshakeError:
    refused = _tls_refusal(exc)
    if refused is not None:
        return TLSRefusedError(f"TLS handshake with {where} failed: {refused}")
    error = _ssl_cause(exc)
    eof = isinstance(error, ssl.SSLEOFError) or (
        error is None and isinstance(exc, trio.BrokenResourceError | ConnectionError)
    )
    if error is not None and error.reason == "UNEXPECTED_EOF_WHILE_READING":
        eof = True
    if eof:
        return TLSHandshakeError(
            f"TLS handshake with {where} failed: the server closed the connection "
            "during the handshake; it may be a plaintext listener (connect without "
            "TLS: --plaintext) or have refused the connection"
        )
    return TLSHandshakeError(f"TLS handshake with {where} failed: {_reason(exc)}")


def _refused_after_handshake(where: str) -> TLSRefusedError:
    return TLSRefusedError(
        f"TLS connection to {where}: the server closed it without answering the first "
        "message: it probably refused our client certificate (not on its allow list, "
        "or not one it accepts); ask its operator"
    )


def _reason(exc: BaseException) -> str:
    """A one-line reason for a transport failure (trio wraps ``ssl.SSLError``)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]  # trio's "all attempts to connect failed"
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return f"{cause.reason}: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return str(cause.reason)
    if isinstance(cause, OSError) and cause.errno is not None:
        # trio's strerror is "Error connecting to ('h', p): ..."; the caller
        # names the address already.
        return os.strerror(cause.errno)
    text = getattr(cause, "strerror", None) or str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


@asynccontextmanager
async def open_mllp_client(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    config: ClientConfig | None = None,
) -> AsyncIterator[MLLPClient]:
    """Connect to an HL7 listener; close the connection on exit.

    Example::

        async with open_mllp_client("127.0.0.1", 2575, ssl_context=ctx) as client:
            ack = await client.send(message)

    Args:
        host: The listener's address.
        port: The listener's port.
        ssl_context: ``None`` for plain TCP, else a client context (see
            :func:`client_ssl_context`).
        server_hostname: Name the server certificate must carry (default ``host``).
        config: Framing, timeouts, retries, charsets and socket options.

    Raises:
        ConnectError, TLSHandshakeError, MLLPTimeoutError: The connection
            could not be opened.
    """
    client = MLLPClient(
        host, port, ssl_context=ssl_context, server_hostname=server_hostname, config=config
    )
    await client.connect()
    try:
        yield client
    finally:
        await client.aclose()

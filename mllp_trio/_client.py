"""The Trio client: one connection that sends messages and waits for their replies."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from mllp_trio._config import ClientConfig, tls_stream_factory
from mllp_trio._errors import (
    ConnectError,
    ConnectionClosedError,
    MLLPError,
    MLLPTimeoutError,
    TLSHandshakeError,
)
from mllp_trio._hl7 import AckReply, normalise_segments, parse_reply, read_msh, resolve_charset
from mllp_trio._io._stream import MLLPStream, gave_up
from mllp_trio._io._tcpstream import LeanTCPStream
from mllp_trio._io._watchdog import Expiry, Watchdog
from mllp_trio.proto._events import EndOfStream, Message
from mllp_trio.proto._exchange import DeliveryFailure, Rejected, Resend

__all__ = ["MLLPClient", "open_mllp_client"]

log = logging.getLogger("mllp_trio.client")

#: What a failing socket or TLS stream raises; mapped to our own errors.
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Lost(Exception):
    """The exchange timed out or the connection ended: resend on a new connection.

    Carries the error to raise if no attempt is left.
    """

    def __init__(self, error: MLLPError) -> None:
        super().__init__(str(error))
        self.error = error


class MLLPClient:
    """A sending connection to an HL7 listener.

    Use :func:`open_mllp_client` to get one. Send one message at a time
    (concurrent calls wait their turn); each call returns when the reply has
    arrived. If a call is cancelled or times out mid-exchange, the
    connection is replaced before the next message, never reused out of step.
    Every failure is an :class:`MLLPError`: transport failures come as
    :class:`ConnectError`, :class:`TLSHandshakeError`,
    :class:`ConnectionClosedError` and :class:`MLLPTimeoutError`.

    Args:
        host: The listener's address.
        port: The listener's port.
        ssl_context: ``None`` for plain TCP, else a client context.
        server_hostname: Name to check the server certificate against
            (default: ``host``).
        config: Framing, timeouts and retries.
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

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    async def connect(self) -> None:
        """Open the connection (and finish the TLS handshake) if it is not open.

        Raises:
            ConnectError: The connection was refused, or the host is unknown or unreachable.
            TLSHandshakeError: The TLS handshake failed.
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
                tcp = await trio.open_tcp_stream(self.host, self.port)
            except OSError as exc:
                raise ConnectError(f"cannot connect to {self._where}: {_reason(exc)}") from None
        if watchdog.check() is not None:
            raise MLLPTimeoutError(f"connecting to {self._where} timed out")
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
                    raise TLSHandshakeError(
                        f"TLS handshake with {self._where} failed: {_reason(exc)}"
                    ) from cause
                except BaseException:
                    await trio.aclose_forcefully(tls)
                    raise
            if watchdog.check() is not None:
                await trio.aclose_forcefully(tls)
                raise MLLPTimeoutError(f"TLS handshake with {self._where} timed out")
            transport = tls
        else:
            transport = LeanTCPStream(tcp)
        self._stream = MLLPStream(
            transport,
            config.framing.new_exchange(retries=config.retries),
            watchdog,
            receive_size=config.receive_size,
        )

    async def aclose(self) -> None:
        """Close the connection."""
        await self._close_stream()

    async def _close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await trio.aclose_forcefully(stream.transport)

    async def send(self, message: bytes | str, *, raise_on_negative: bool = True) -> AckReply:
        """Send an HL7 message and return its parsed acknowledgement.

        Segments may be separated by CR, LF or CRLF; they are sent as CR.
        A ``str`` is encoded in the character set its MSH-18 names.

        Args:
            message: The HL7 message.
            raise_on_negative: Raise for AE/AR/CE/CR (default); else return them.

        Raises:
            ApplicationError: AE. ApplicationReject: AR. CommitError: CE.
            CommitReject: CR (all :class:`NegativeAcknowledgement`).
            ControlIdMismatch: MSA-2 is not the MSH-10 we sent.
            InvalidReply: The reply is not an acknowledgement.
            MLLPError: as :meth:`send_raw`.
        """
        data = _normalise(message)
        header = read_msh(data)
        reply = await self.send_raw(data)
        return parse_reply(reply, header.control_id, raise_on_negative=raise_on_negative)

    async def send_raw(self, data: bytes) -> bytes:
        """Send one frame and return the reply frame's bytes, unparsed.

        Retries, up to ``config.retries`` times in all: a commit NAK or a
        commit ACK that does not come in time (release 2), or a NAK block
        (HLLP), resends on the same connection; a reply that does not come in
        time or a closed connection resends on a new one.

        Raises:
            MLLPTimeoutError: No reply in time, on every attempt.
            DeliveryFailed: The peer NAKed every attempt.
            ConnectionClosedError: The peer closed the connection every time.
            ConnectError, TLSHandshakeError: The connection could not be opened.
        """
        # Callers wait their turn in order; the uncontended path takes the
        # lock without a scheduler round trip (the exchange checkpoints anyway).
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            return await self._send_locked(data)
        finally:
            self._lock.release()

    async def _send_locked(self, data: bytes) -> bytes:
        retries = self.config.retries
        used = 0
        while True:
            await self.connect()
            stream = self._stream
            assert stream is not None
            try:
                return await self._exchange(stream, data, retries - used)
            except _Lost as exc:
                used += max(stream.exchange.attempts, 1)
                await self._close_stream()
                if used > retries:
                    raise exc.error from None
                log.info("%s; resending on a new connection", exc.error)
            except BaseException:
                # Cancelled or failed mid-exchange: a late reply could
                # arrive, so this connection is out of step for good.
                await self._close_stream()
                raise

    async def _exchange(self, stream: MLLPStream, data: bytes, retries: int) -> bytes:
        config = self.config
        exchange = stream.exchange
        watchdog = self._watchdog
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
                        raise _Lost(self._closed(str(exc))) from None
                return await self._await_reply(stream)
        except _TRANSPORT_ERRORS as exc:
            raise _Lost(
                ConnectionClosedError(f"{self._where}: connection lost ({_reason(exc)})")
            ) from None
        expired = watchdog.check()
        what = "timed out waiting for the reply" if expired is Expiry.ACK else str(expired)
        raise _Lost(MLLPTimeoutError(f"{self._where}: {what}"))

    async def _await_reply(self, stream: MLLPStream) -> bytes:
        config = self.config
        exchange = stream.exchange
        # The ACK deadline goes on the exchange's scope: when it passes, the
        # exchange is over (a late reply would be out of step: new connection).
        deadline = trio.current_time() + config.ack_timeout
        while True:
            event = await stream.receive_event(deadline=deadline, reason=Expiry.ACK)
            if type(event) is Message:
                # Release 2: we hold the reply now; commit it.
                await stream.send_all(exchange.commit(), timeout=config.write_timeout)
                return event.data
            if type(event) is Resend:
                log.info("%s: message NAKed (%s); resending", self._where, event.reason)
                await stream.send_all(event.data, timeout=config.write_timeout)
                deadline = trio.current_time() + config.ack_timeout
            elif type(event) is DeliveryFailure:
                raise gave_up(event, "message")
            elif type(event) is Rejected:
                # A damaged copy of the reply: the answer asks for it again.
                log.warning("%s: invalid frame: %s", self._where, event.reason)
                await stream.send_all(event.answer, timeout=config.write_timeout)
            elif isinstance(event, EndOfStream):
                raise _Lost(self._closed("connection closed before the reply"))

    def _closed(self, what: str) -> ConnectionClosedError:
        return ConnectionClosedError(f"{self._where}: {what}")


def _reason(exc: BaseException) -> str:
    """A one-line reason for a transport failure (trio wraps ``ssl.SSLError``)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]  # trio's "all attempts to connect failed"
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return f"{cause.reason}: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return str(cause.reason)
    text = getattr(cause, "strerror", None) or str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _normalise(message: bytes | str) -> bytes:
    if isinstance(message, str):
        text = message.replace("\r\n", "\r").replace("\n", "\r")
        header = read_msh(text.encode("ascii", "replace"))
        charset = resolve_charset(
            header.charset,
            repetition_separator=header.repetition_separator.decode("ascii") or "~",
            default="UNICODE UTF-8",
        )
        return text.encode(charset.codec)
    return normalise_segments(message)


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
        config: Framing, timeouts and retries.

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

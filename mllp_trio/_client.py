"""The Trio client: one connection that sends messages and waits for their replies."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from mllp_trio._config import ClientConfig
from mllp_trio._errors import (
    ConnectionClosedError,
    DeliveryFailed,
    MLLPError,
    MLLPTimeoutError,
)
from mllp_trio._hl7._ack import AckReply, parse_reply
from mllp_trio._hl7._charsets import resolve_charset
from mllp_trio._hl7._msh import read_msh
from mllp_trio._hl7._pipeline import normalise_segments
from mllp_trio._io._stream import MLLPStream, _Lock
from mllp_trio._io._tcpstream import LeanTCPStream
from mllp_trio._io._tlsstream import TLSStreamFactory, ssl_socket_stream
from mllp_trio.proto._events import (
    BadBlock,
    CommitAck,
    CommitNak,
    EndOfStream,
    HLLPNak,
    InvalidFrame,
    Message,
)

__all__ = ["MLLPClient", "open_mllp_connection"]

log = logging.getLogger("mllp_trio.client")


class _Refused(Exception):
    """The peer NAKed the block at the transport level (resend on this connection)."""


class _Lost(Exception):
    """The exchange timed out or the connection ended (resend on a new connection).

    Carries the error to raise if no attempt is left.
    """

    def __init__(self, error: MLLPError) -> None:
        super().__init__(str(error))
        self.error = error


class MLLPClient:
    """A sending connection to an HL7 listener.

    Use :func:`open_mllp_connection` to get one. Send one message at a time
    (concurrent calls wait their turn); each call returns when the reply has
    arrived. If a call is cancelled or times out mid-exchange, the
    connection is replaced before the next message, never reused out of step.

    Args:
        host: The listener's address.
        port: The listener's port.
        ssl_context: ``None`` for plain TCP, else a client context.
        server_hostname: Name to check the server certificate against
            (default: ``host``).
        config: Framing, timeouts and retries.
        tls_stream: How to wrap the TCP stream in TLS.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        config: ClientConfig | None = None,
        tls_stream: TLSStreamFactory = ssl_socket_stream,
    ) -> None:
        self.host = host
        self.port = port
        self.config = config if config is not None else ClientConfig()
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname if server_hostname is not None else host
        self._tls_stream = tls_stream
        self._stream: MLLPStream | None = None
        self._lock = _Lock()

    async def connect(self) -> None:
        """Open the connection (and finish the TLS handshake) if it is not open.

        Raises:
            MLLPTimeoutError: Connecting or the handshake took too long.
            OSError: The connection was refused.
            trio.BrokenResourceError: The TLS handshake failed.
        """
        if self._stream is not None and not self._stream.broken:
            return
        await self._close_stream()
        config = self.config
        with trio.move_on_after(config.connect_timeout) as scope:
            tcp = await trio.open_tcp_stream(self.host, self.port)
        if scope.cancelled_caught:
            raise MLLPTimeoutError(f"connecting to {self.host}:{self.port} timed out")
        transport: trio.abc.Stream = tcp
        if self._ssl_context is not None:
            tls = await self._tls_stream(
                tcp, self._ssl_context, self._server_hostname, server_side=False
            )
            try:
                with trio.fail_after(config.handshake_timeout):
                    await tls.do_handshake()
            except trio.TooSlowError:
                await trio.aclose_forcefully(tls)
                raise MLLPTimeoutError(
                    f"TLS handshake with {self.host}:{self.port} timed out"
                ) from None
            except BaseException:
                await trio.aclose_forcefully(tls)
                raise
            transport = tls
        elif config.lean_tcp:
            transport = LeanTCPStream(tcp)
        self._stream = MLLPStream(
            transport, config.framing.new_connection(), receive_size=config.receive_size
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
            MLLPTimeoutError, DeliveryFailed, ConnectionClosedError: as :meth:`send_raw`.
        """
        data = _normalise(message)
        header = read_msh(data)
        reply = await self.send_raw(data)
        return parse_reply(reply, header.control_id, raise_on_negative=raise_on_negative)

    async def send_raw(self, data: bytes) -> bytes:
        """Send one frame and return the reply frame's bytes, unparsed.

        Retries, up to ``config.retries`` times: a commit NAK (release 2) or
        NAK block (HLLP) resends on the same connection; a timeout or a
        closed connection resends on a new one.

        Raises:
            MLLPTimeoutError: No reply in time, on every attempt.
            DeliveryFailed: The peer NAKed every attempt.
            ConnectionClosedError: The peer closed the connection every time.
        """
        async with self._lock:
            attempts = self.config.retries + 1
            for attempt in range(1, attempts + 1):
                await self.connect()
                assert self._stream is not None
                try:
                    return await self._exchange(self._stream, data)
                except _Refused as exc:
                    if attempt == attempts:
                        raise DeliveryFailed(
                            f"{self.host}:{self.port} refused the message {attempts} time(s): {exc}"
                        ) from None
                    log.info("message NAKed by %s:%s; resending", self.host, self.port)
                except (_Lost, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    await self._close_stream()
                    error = (
                        exc.error
                        if isinstance(exc, _Lost)
                        else self._closed(str(exc) or type(exc).__name__)
                    )
                    if attempt == attempts:
                        raise error from None
                    log.info("%s; resending on a new connection", error)
            raise AssertionError("unreachable")

    async def _exchange(self, stream: MLLPStream, data: bytes) -> bytes:
        config = self.config
        # One cancel scope for the whole exchange, its deadline moved per
        # phase: the write gets write_timeout; under release 2 the commit
        # ACK and then the reply each get ack_timeout.
        phase = "writing the message"
        with trio.CancelScope(deadline=trio.current_time() + config.write_timeout) as timer:
            await stream.send_event(Message(data))
            if config.framing.framing == "mllp2":
                phase = "waiting for the commit acknowledgement"
                timer.deadline = trio.current_time() + config.ack_timeout
                await self._await_commit(stream)
            phase = "waiting for the reply"
            timer.deadline = trio.current_time() + config.ack_timeout
            return await self._await_reply(stream)
        raise _Lost(MLLPTimeoutError(f"{self.host}:{self.port}: timed out {phase}"))

    def _closed(self, what: str) -> ConnectionClosedError:
        return ConnectionClosedError(f"{self.host}:{self.port}: {what}")

    async def _await_commit(self, stream: MLLPStream) -> None:
        event = await stream.receive_event()
        if isinstance(event, CommitNak):
            raise _Refused("commit NAK")
        if isinstance(event, EndOfStream):
            raise _Lost(self._closed("connection closed before the commit acknowledgement"))
        if not isinstance(event, CommitAck):
            raise _Lost(
                self._closed(f"expected a commit acknowledgement, got {type(event).__name__}")
            )

    async def _await_reply(self, stream: MLLPStream) -> bytes:
        while True:
            event = await stream.receive_event()
            if isinstance(event, Message):
                if self.config.framing.framing == "mllp2":
                    await stream.send_event(CommitAck())
                return event.data
            if isinstance(event, HLLPNak):
                raise _Refused(f"NAK block, reason {event.reason.value}")
            if isinstance(event, BadBlock):
                # Our copy of their reply was damaged: ask for it again.
                await stream.send_event(event.nak)
            elif isinstance(event, InvalidFrame):
                log.warning("invalid frame from %s:%s: %s", self.host, self.port, event.reason)
            elif isinstance(event, EndOfStream):
                raise _Lost(self._closed("connection closed before the reply"))


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
async def open_mllp_connection(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    config: ClientConfig | None = None,
    tls_stream: TLSStreamFactory = ssl_socket_stream,
) -> AsyncIterator[MLLPClient]:
    """Connect to an HL7 listener; close the connection on exit.

    Example::

        async with open_mllp_connection("127.0.0.1", 2575, ssl_context=ctx) as conn:
            ack = await conn.send(message)

    Args:
        host: The listener's address.
        port: The listener's port.
        ssl_context: ``None`` for plain TCP, else a client context (see
            :func:`client_ssl_context`).
        server_hostname: Name the server certificate must carry (default ``host``).
        config: Framing, timeouts and retries.
        tls_stream: How to wrap the TCP stream in TLS.
    """
    client = MLLPClient(
        host,
        port,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        config=config,
        tls_stream=tls_stream,
    )
    await client.connect()
    try:
        yield client
    finally:
        await client.aclose()

"""The Trio listener: accepting connections, TLS, limits, and the per-message loop."""

from __future__ import annotations

import errno
import logging
import math
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs
import trio

from mllp_trio._config import ServerConfig, tls_stream_factory
from mllp_trio._errors import (
    DeliveryFailed,
    LocalProtocolError,
    MLLPError,
    MLLPTimeoutError,
    RemoteProtocolError,
)
from mllp_trio._hl7 import (
    RETRY_LATER_CODE,
    AckCode,
    ClientIdentity,
    ErrorInfo,
    Handler,
    HL7Config,
    InboundMessage,
    Outcome,
    PeerInfo,
    acknowledge,
    admit,
    build_ack,
    handler_failed,
    handler_returned,
    respond,
)
from mllp_trio._io._budget import MemoryBudget
from mllp_trio._io._stream import Junk, MLLPStream, gave_up
from mllp_trio._io._tcpstream import LeanTCPStream
from mllp_trio._io._tlsstream import close_with_notify, linger_after_alert, send_pending_alert
from mllp_trio._io._watchdog import Expiry, Watchdog
from mllp_trio._tls import ClientNotAllowed, ServerTLS, identity_from_ssl
from mllp_trio.proto._events import EndOfStream, Message, trusted_message
from mllp_trio.proto._exchange import DeliveryFailure, Exchange, Rejected, Resend
from mllp_trio.proto._mllp import MLLPConnection

__all__ = ["AnswerObserver", "HL7Processor", "MLLPServer", "Processor", "ServerStats", "serve_mllp"]

log = logging.getLogger("mllp_trio.server")

#: Accept errors that mean "out of resources for now": wait and retry,
#: as trio.serve_listeners does.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class Processor(Protocol):
    """The per-message pipeline a listener runs: raw message in, what to answer out.

    The default, :class:`HL7Processor`, answers through the HL7 layer;
    ``mllp_trio.store.JournalProcessor`` commits each message to a journal
    first. Write your own to insert steps of your own.
    """

    async def __call__(self, raw: bytes, peer: PeerInfo) -> Outcome:
        """Process one inbound message; never raises for anything the message contains."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work while the listener serves (recovery, delivery).

        Call ``task_status.started()`` once the listener may accept
        connections; returning is fine when there is nothing more to do.
        """
        ...


async def _accept_all(message: InboundMessage) -> None:
    """Default handler: accept every message (AA)."""


class HL7Processor:
    """The default pipeline: the HL7 layer answers, nothing is stored.

    Args:
        handler: The application's handler (default: accept everything).
        config: HL7 rules.
    """

    def __init__(self, handler: Handler | None = None, *, config: HL7Config | None = None) -> None:
        self.handler: Handler = handler if handler is not None else _accept_all
        self.config = config if config is not None else HL7Config()

    async def __call__(self, raw: bytes, peer: PeerInfo) -> Outcome:
        """Answer one message through :func:`respond`."""
        return await respond(raw, peer=peer, handler=self.handler, config=self.config)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing runs in the background."""
        task_status.started()


def _committed(outcome: Outcome) -> bool:
    """Whether a release 2 commit ACK may answer the message: it was taken for good.

    Taken: the handler (or the journal) decided for good (AA, or a final
    AE), or it was an acknowledgement, which is never answered. Not taken: a
    frame without a readable MSH, a message refused before processing (AR),
    a passing failure (``outcome.transient``: the sender should send it again).
    """
    if outcome.header is not None and outcome.header.is_ack:
        return True
    return outcome.message is not None and not outcome.transient


@attrs.define(kw_only=True)
class ServerStats:
    """Counters of one listener since it started.

    Attributes:
        accepted: Connections accepted.
        active: Connections open now.
        refused_limit: Connections closed at once for exceeding a connection limit.
        handshake_failures: TLS handshakes that failed or timed out.
        refused_clients: Verified TLS clients refused by the allow list.
        messages: Messages received.
        accepted_messages: Messages answered positively (AA/CA).
        invalid_frames: Frames rejected by the framing layer.
        protocol_errors: Connections closed for a framing violation.
        timeouts: Connections closed by a timeout.
        refused_by_cause: Connections refused, by cause (``connection_limit``,
            ``peer_limit``, ``not_allowed``).
        handshake_failures_by_reason: Failed TLS handshakes, by reason (the
            OpenSSL reason in lower case, ``timeout``, ``connection_lost``).
        answered_by_code: Messages answered, by MSA-1 code (``none`` when
            nothing could be answered).
        timeouts_by_kind: Timeouts, by deadline (``handshake``, ``idle``,
            ``frame``, ``write``, ``ack``, ``other``).
        shed_connections: Connections closed to keep within the memory budget.
        struck_out: Connections closed for bad input (too many strikes, or
            another protocol such as TLS or HTTP on the port).
    """

    accepted: int = 0
    active: int = 0
    refused_limit: int = 0
    handshake_failures: int = 0
    refused_clients: int = 0
    messages: int = 0
    accepted_messages: int = 0
    invalid_frames: int = 0
    protocol_errors: int = 0
    timeouts: int = 0
    refused_by_cause: Counter[str] = attrs.Factory(Counter)
    handshake_failures_by_reason: Counter[str] = attrs.Factory(Counter)
    answered_by_code: Counter[str] = attrs.Factory(Counter)
    timeouts_by_kind: Counter[str] = attrs.Factory(Counter)
    shed_connections: int = 0
    struck_out: int = 0


#: Called after each answered message with the peer, the outcome and the
#: seconds from the complete frame to the answer written (release 2: to the
#: peer's commit of it). Set ``MLLPServer.on_answered`` to observe messages.
AnswerObserver = Callable[[PeerInfo, Outcome, float], None]


@attrs.define(eq=False)
class _Connection:
    scope: trio.CancelScope
    transport: trio.abc.Stream  # what to close at the end (TLS or lean wrapper)
    idle: bool = True
    stream: MLLPStream | None = None
    identity: ClientIdentity | None = None
    shed_bytes: int = 0  # what it held when the memory budget shed it

    @property
    def between_messages(self) -> bool:
        # Waiting for a message, and none of it has arrived yet.
        return self.idle and (self.stream is None or not self.stream.exchange.buffered)


class MLLPServer:
    """An HL7 listener: MLLP release 1 or 2, or HLLP, over TCP or TLS.

    Args:
        handler: ``async def handle(message: InboundMessage) -> None | bytes``
            (or a :class:`Router`). Returning ``None`` answers AA; returning
            bytes sends them verbatim as the reply; raising :class:`HL7Error`
            or :class:`HL7Reject` answers AE or AR; any other exception
            answers AE 207 and is logged without message content. The
            default accepts everything.
        ssl_context: ``None`` for plain TCP; an ``ssl.SSLContext``; or a
            :class:`ServerTLS`, which adds the client allow list and reloading.
        config: Limits, timeouts, framing and HL7 rules.
        processor: Replaces the per-message pipeline (default:
            :class:`HL7Processor` with ``handler`` and ``config.hl7``). To
            store every message before it is acknowledged, pass
            ``mllp_trio.store.JournalProcessor(store, handler)``; the
            handler then goes to the processor, not here.
        on_application_ack: Enhanced acknowledgement mode: called with the
            :class:`Outcome` whenever MSH-16 asks for an application
            acknowledgement (``outcome.application_ack``), after the accept
            acknowledgement went out; it travels on a separate connection to
            the sender's own listener, e.g. through a :class:`QueuedSender`.
            Without it, application acknowledgements are not sent.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        ssl_context: ssl.SSLContext | ServerTLS | None = None,
        config: ServerConfig | None = None,
        processor: Processor | None = None,
        on_application_ack: Callable[[Outcome], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config if config is not None else ServerConfig()
        if processor is not None and handler is not None:
            raise ValueError(
                "pass the handler to the processor, not to the listener as well: "
                "MLLPServer(processor=JournalProcessor(store, handler))"
            )
        self._tls = ssl_context
        self._tls_stream = tls_stream_factory(self.config.tls_stream)
        self.processor: Processor = (
            processor if processor is not None else HL7Processor(handler, config=self.config.hl7)
        )
        self._on_application_ack = on_application_ack
        self.stats = ServerStats()
        #: Metrics and the per-message log line; None costs nothing per message.
        self.on_answered: AnswerObserver | None = None
        self.listeners: list[trio.SocketListener] = []
        self._per_peer: Counter[str] = Counter()
        self._connections: set[_Connection] = set()
        self._shutdown = trio.Event()
        self._draining = False
        self._all_closed = trio.Event()
        self._all_closed.set()
        #: Bytes held by the receive buffers of every connection
        #: (``budget.used``) against ``config.memory_budget`` (``budget.limit``).
        self.budget = MemoryBudget(self.config.memory_budget)

    @property
    def buffered_bytes(self) -> int:
        """Bytes the receive buffers of all connections hold now (a gauge)."""
        return self.budget.used

    # --- lifecycle ---------------------------------------------------------------

    async def serve(
        self,
        port: int,
        *,
        host: str | None = None,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (every address when ``host`` is None) until shut down.

        Reports the listeners through ``task_status``, so
        ``await nursery.start(server.serve, 0)`` works with port 0.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        await self.serve_listeners(
            listeners, handler_nursery=handler_nursery, task_status=task_status
        )

    async def serve_listeners(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve connections from ``listeners`` until :meth:`shutdown` or cancellation."""
        self.listeners = list(listeners)
        try:
            async with trio.open_nursery() as nursery:
                connections = handler_nursery if handler_nursery is not None else nursery
                # Accepting runs in its own nursery so that shutdown can stop
                # it (and wait for it) before the listeners are closed.
                async with trio.open_nursery() as accepting:
                    # The processor's background work (a journal's recovery of
                    # messages left from before a crash) starts before accepting.
                    await accepting.start(self.processor.run)
                    for listener in self.listeners:
                        accepting.start_soon(self._accept_loop, listener, connections)
                    task_status.started(self.listeners)
                    await self._shutdown.wait()
                    accepting.cancel_scope.cancel()
                for listener in self.listeners:
                    await listener.aclose()
                await self._drain()
        finally:
            # Cancelled rather than shut down: the sockets must be released all the same.
            for listener in self.listeners:
                await trio.aclose_forcefully(listener)

    def shutdown(self) -> None:
        """Stop gracefully: stop accepting, finish in-flight messages, then close.

        Idle connections close at once; a connection in the middle of a
        message gets ``config.shutdown_grace`` seconds to answer it before it
        is cancelled. The serving call returns when all are closed.
        """
        self._shutdown.set()

    async def _drain(self) -> None:
        self._draining = True
        for conn in list(self._connections):
            if conn.between_messages:
                conn.scope.cancel()
        with trio.move_on_after(self.config.shutdown_grace):
            await self._all_closed.wait()
        for conn in list(self._connections):
            conn.scope.cancel()
        await self._all_closed.wait()

    def reload_tls(self) -> None:
        """Re-read certificate, key, CA, CRL and allow-list files (a :class:`ServerTLS` only).

        New connections use them; open connections are undisturbed.

        Raises:
            TLSConfigError: A file is unusable; the previous files stay in use.
            MLLPError: The listener was not given a :class:`ServerTLS`.
        """
        if not isinstance(self._tls, ServerTLS):
            raise MLLPError("reload_tls() needs the listener to be given a ServerTLS")
        self._tls.reload()
        log.info("TLS certificates reloaded; new connections use them")

    # --- connections ----------------------------------------------------------------

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    log.error("accept failed (%s); retrying in 100 ms", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            host, address = _peer_address(stream)
            if self.stats.active >= self.config.max_connections:
                cause = "connection_limit"
            elif self._per_peer[host] >= self.config.max_connections_per_peer:
                cause = "peer_limit"
            else:
                cause = ""
            if cause:
                self.stats.refused_limit += 1
                self.stats.refused_by_cause[cause] += 1
                log.warning("connection from %s refused: connection limit reached", address)
                await trio.aclose_forcefully(stream)
                continue
            # Counted before the task starts, so the next accept sees it.
            self._count_open(host)
            log.debug("connection from %s accepted", address)
            nursery.start_soon(self._run_connection, stream, host, address)

    async def handle_stream(self, stream: trio.abc.Stream, address: str = "memory") -> None:
        """Serve one already-open stream (a memory stream in tests, say) until it ends.

        The connection limits do not apply; TLS does, if configured.
        """
        self._count_open(address)
        await self._run_connection(stream, address, address)

    def _count_open(self, host: str) -> None:
        # Undone in _run_connection's ``finally``.
        self._per_peer[host] += 1
        self.stats.accepted += 1
        self.stats.active += 1
        if self._all_closed.is_set():
            self._all_closed = trio.Event()

    async def _run_connection(self, stream: trio.abc.Stream, host: str, address: str) -> None:
        conn = _Connection(trio.CancelScope(), transport=stream)
        self._connections.add(conn)
        config = self.config
        # One task per connection keeps every deadline (handshake, idle,
        # read, write): cheaper than a cancel scope per read and write.
        watchdog = Watchdog(conn.scope, poll=config.shortest_timeout)
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watchdog.run)
                    try:
                        await self._serve_connection(stream, address, conn, watchdog)
                    except Exception as exc:
                        self._connection_failed(exc, address)
                    finally:
                        nursery.cancel_scope.cancel()
            if conn.shed_bytes:
                self.stats.shed_connections += 1
                log.warning(
                    "closing connection from %s: memory budget of %d bytes reached; "
                    "it held one of the largest partial messages (%d bytes)",
                    address,
                    self.budget.limit,
                    conn.shed_bytes,
                )
            elif watchdog.expired is not None:
                self.stats.timeouts_by_kind[watchdog.expired.name.lower()] += 1
                if watchdog.expired is Expiry.HANDSHAKE:
                    self.stats.handshake_failures += 1
                    self.stats.handshake_failures_by_reason["timeout"] += 1
                    log.warning("TLS handshake with %s timed out", address)
                else:
                    self.stats.timeouts += 1
                    log.info("closing connection from %s: %s", address, watchdog.expired)
        finally:
            await trio.aclose_forcefully(conn.transport)
            self._connections.discard(conn)
            self._per_peer[host] -= 1
            if not self._per_peer[host]:
                del self._per_peer[host]
            self.stats.active -= 1
            log.debug("connection from %s closed", address)
            if not self._connections:
                self._all_closed.set()

    async def _serve_connection(
        self, stream: trio.abc.Stream, address: str, conn: _Connection, watchdog: Watchdog
    ) -> None:
        """Run one connection; ``conn.transport`` is what to close afterwards."""
        if self._draining:
            return
        identity = None
        if self._tls is not None:
            watchdog.arm(self.config.handshake_timeout, Expiry.HANDSHAKE)
            accepted = await self._handshake(stream, address, conn)
            watchdog.disarm()
            if not accepted:
                return
            identity = conn.identity
        elif isinstance(stream, trio.SocketStream):
            conn.transport = LeanTCPStream(stream)
        transport = conn.transport
        peer = PeerInfo(address=address, identity=identity)
        budget = self.budget
        mstream = MLLPStream(
            transport,
            self.config.framing.new_exchange(retries=self.config.retries),
            watchdog,
            receive_size=self.config.receive_size,
            budget=budget,
        )

        def shed() -> None:
            conn.shed_bytes = budget.held_by(mstream)
            conn.scope.cancel()

        budget.register(mstream, shed)
        warnings = _WarningLimit(address)
        try:
            await self._serve_messages(mstream, peer, conn, warnings)
        finally:
            budget.release(mstream)
            conn.stream = None
            warnings.flush()

    def _connection_failed(self, exc: Exception, address: str) -> None:
        if isinstance(exc, RemoteProtocolError):
            self.stats.protocol_errors += 1
            log.warning("closing connection from %s: protocol error: %s", address, exc)
        elif isinstance(exc, DeliveryFailed):
            log.warning("closing connection from %s: %s", address, exc)
        elif isinstance(exc, MLLPTimeoutError):
            self.stats.timeouts += 1
            self.stats.timeouts_by_kind["other"] += 1
            log.info("closing connection from %s: %s", address, exc)
        elif isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
            log.info("connection from %s lost: %s", address, type(exc).__name__)
        elif isinstance(exc, MLLPError):
            log.warning("closing connection from %s: %s", address, exc)
        else:
            # One bad connection never takes the listener down.
            log.error(
                "unexpected error on connection from %s; connection closed",
                address,
                exc_info=exc,
            )

    async def _handshake(self, stream: trio.abc.Stream, address: str, conn: _Connection) -> bool:
        """Run the TLS handshake and the allow list; False when the client is refused."""
        assert self._tls is not None
        tls = self._tls
        context = tls.context if isinstance(tls, ServerTLS) else tls
        wrapped = await self._tls_stream(stream, context)
        conn.transport = wrapped
        try:
            # Bounded by the connection's watchdog (handshake_timeout).
            await wrapped.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            self.stats.handshake_failures += 1
            self.stats.handshake_failures_by_reason[_tls_reason_label(exc)] += 1
            log.warning("TLS handshake with %s failed: %s", address, _tls_reason(exc))
            await send_pending_alert(wrapped)
            await linger_after_alert(wrapped)
            return False
        try:
            if isinstance(tls, ServerTLS):
                conn.identity = tls.authorize(wrapped)
            else:
                conn.identity = identity_from_ssl(wrapped)
        except ClientNotAllowed as exc:
            self.stats.refused_clients += 1
            self.stats.refused_by_cause["not_allowed"] += 1
            log.warning("TLS client %s refused: %s", address, exc.reason)
            await close_with_notify(wrapped)
            return False
        return True

    # --- messages -----------------------------------------------------------------

    async def _serve_messages(
        self, stream: MLLPStream, peer: PeerInfo, conn: _Connection, warnings: _WarningLimit
    ) -> None:
        config = self.config
        exchange = stream.exchange
        write_timeout = config.write_timeout
        read_timeout = config.read_timeout
        idle = config.idle_timeout
        conn.stream = stream
        # Bad inputs in a row that got no answer (docs/bad-input.md).
        strikes = 0
        max_strikes = math.inf if config.max_strikes is None else config.max_strikes
        # Only a delivered message restarts the idle deadline: junk, rejected
        # frames and NAKs keep no connection open.
        # The clock itself: trio.current_time() reaches it through three calls.
        now = trio.lowlevel.current_clock().current_time
        idle_deadline = math.inf if idle is None else now() + idle
        processor = self.processor
        # The default pipeline is called straight (one coroutine less per message).
        hl7 = processor if type(processor) is HL7Processor else None
        # Release 1's fast path: a request/response peer sends one clean frame
        # per read, so once nothing received is waiting (``clean``) the loop
        # reads, takes a lone frame and writes the framed answer itself; any
        # other read goes on through stream.receive_event, which applies
        # every rule (junk, frame deadline, memory budget, strikes).
        release1 = exchange.framing == "mllp"
        connection = exchange.connection
        receive_frame = connection.receive_frame if isinstance(connection, MLLPConnection) else None
        send_bytes = connection.send_bytes if isinstance(connection, MLLPConnection) else None
        transport = stream.transport
        receive_some = transport.receive_some
        receive_size = config.receive_size
        watchdog = stream.watchdog
        budget = self.budget
        limit = budget.limit
        debug = log.isEnabledFor(logging.DEBUG)  # once per connection, not per message
        clean = False  # the first read always takes the careful path (TLS, junk)
        # Enum members as locals: on Python 3.11 a read through the class is slow.
        idle_expiry, write_expiry = Expiry.IDLE, Expiry.WRITE
        while not self._draining:
            conn.idle = True
            raw: bytes | None = None
            if clean and (limit is None or budget.used < limit):
                assert receive_frame is not None
                # The idle deadline, armed without a call (Watchdog: after a
                # disarm the connection's scope is the target).
                watchdog.deadline, watchdog.reason = idle_deadline, idle_expiry
                data = await receive_some(receive_size)
                watchdog.deadline = math.inf
                if type(data) is not bytes:  # memory streams give bytearray
                    data = bytes(data)
                raw = receive_frame(data)
                if raw is None:
                    event = await stream.receive_event(
                        deadline=idle_deadline,
                        reason=idle_expiry,
                        read_timeout=read_timeout,
                        report_junk=True,
                        fed=data,
                    )
                    clean = exchange.settled
            else:
                event = await stream.receive_event(
                    deadline=idle_deadline,
                    reason=idle_expiry,
                    read_timeout=read_timeout,
                    report_junk=True,
                )
                clean = release1 and exchange.settled
            conn.idle = False
            strike = ""
            if raw is not None or type(event) is Message:
                if raw is None:
                    assert isinstance(event, Message)
                    raw = event.data
                self.stats.messages += 1
                if debug:
                    log.debug("frame of %d bytes from %s", len(raw), peer.address)
                observer = self.on_answered
                started = now() if observer is not None else 0.0
                if hl7 is not None:
                    # respond(), stage by stage (one coroutine less).
                    admitted = admit(raw, peer=peer, config=hl7.config)
                    if type(admitted) is Outcome:
                        outcome = admitted
                    else:
                        assert isinstance(admitted, InboundMessage)
                        # run_handler(), inline (one coroutine less).
                        try:
                            result = await hl7.handler(admitted)
                        except Exception as exc:
                            verdict = handler_failed(exc, admitted, hl7.config)
                        else:
                            verdict = handler_returned(result, admitted)
                        outcome = acknowledge(admitted, verdict)
                else:
                    outcome = await processor(raw, peer)
                if outcome.accepted:
                    self.stats.accepted_messages += 1
                reply = outcome.reply
                if outcome.header is None and reply is None:
                    warnings.warning(
                        "message of %d bytes from %s has no readable control id: "
                        "it cannot be answered",
                        len(raw),
                        peer.address,
                    )
                if release1:
                    if reply is not None:
                        assert send_bytes is not None
                        try:
                            framed = send_bytes(reply)
                        except LocalProtocolError:
                            framed = self._framed(exchange, outcome, peer)  # logs, answers AE
                        if framed:
                            # Straight to the transport under the write deadline
                            # (a failed write ends the connection).
                            if write_timeout is not None:
                                watchdog.deadline = now() + write_timeout
                                watchdog.reason = write_expiry
                            await transport.send_all(framed)
                            watchdog.deadline = math.inf
                    elif outcome.header is None:
                        # No readable control id: nothing can be correlated.
                        strike = "a message without a readable control id"
                elif exchange.framing == "mllp2":
                    # A commit ACK means "committed": anything else gets a
                    # commit NAK, and the sender resends it.
                    if not _committed(outcome):
                        await stream.send_all(exchange.refuse(), timeout=write_timeout)
                    else:
                        await stream.send_all(exchange.commit(), timeout=write_timeout)
                        if reply is not None:
                            framed = self._framed(exchange, outcome, peer)
                            if framed:
                                await self._reply_release2(stream, framed)
                elif reply is not None:
                    await stream.send_all(
                        self._framed(exchange, outcome, peer), timeout=write_timeout
                    )
                elif outcome.header is None:
                    strike = "a message without a readable control id"
                self.stats.answered_by_code[outcome.code or "none"] += 1
                if observer is not None:
                    observer(peer, outcome, now() - started)
                if outcome.application_ack is not None and self._on_application_ack is not None:
                    await self._on_application_ack(outcome)
                if idle is not None:
                    idle_deadline = now() + idle
            elif type(event) is Rejected:
                self.stats.invalid_frames += 1
                warnings.warning("frame from %s rejected: %s", peer.address, event.reason)
                await stream.send_all(event.answer, timeout=write_timeout)
                if not event.answer:  # release 1 has no way to say so
                    strike = f"a rejected frame ({event.reason})"
            elif type(event) is Junk:
                if event.blank:
                    continue
                if event.first:
                    self._not_mllp(event, peer)
                    return
                warnings.warning(
                    "%d byte(s) outside any frame from %s discarded", event.size, peer.address
                )
                strike = f"{event.size} byte(s) outside any frame"
            elif type(event) is Resend:
                log.info("peer %s NAKed our reply (%s); resending", peer.address, event.reason)
                await stream.send_all(event.data, timeout=write_timeout)
            elif type(event) is DeliveryFailure:
                raise gave_up(event, "reply")
            elif isinstance(event, EndOfStream):
                return
            # Delivered cannot come here: the commit wait below consumes it.
            if not strike:
                strikes = 0
                continue
            strikes += 1
            if strikes >= max_strikes:
                self.stats.struck_out += 1
                log.warning(
                    "closing connection from %s: %d bad inputs in a row got no answer (last: %s)",
                    peer.address,
                    strikes,
                    strike,
                )
                return

    def _not_mllp(self, junk: Junk, peer: PeerInfo) -> None:
        """Log why a connection whose first bytes are outside any frame is closed at once."""
        self.stats.struck_out += 1
        if junk.head[:2] == b"\x16\x03" and self._tls is None:
            # A TLS record (handshake) header: the client expects TLS here.
            log.warning(
                "closing connection from %s: a TLS client connected to a plaintext port "
                "(its first bytes are a TLS ClientHello); configure TLS on both sides or neither",
                peer.address,
            )
        else:
            log.warning(
                "closing connection from %s: the peer does not speak MLLP "
                "(its first %d byte(s) hold no start-of-block byte)",
                peer.address,
                junk.size,
            )

    def _framed(self, exchange: Exchange, outcome: Outcome, peer: PeerInfo) -> bytes:
        """The reply framed, or an AE 207 when the framing cannot carry it.

        The HL7 layer keeps 0x0B and 0x1C out of every acknowledgement; a
        framing configured with other bytes may still refuse one. Answering
        AE beats closing: a closed connection makes the sender resend the
        same message for ever.
        """
        reply = outcome.reply
        assert reply is not None
        try:
            # Non-empty bytes pass Message's checks by construction: the
            # framing refuses any end byte in them (check_outgoing).
            message = trusted_message(reply) if reply and type(reply) is bytes else Message(reply)
            return exchange.send(message)
        except LocalProtocolError as exc:
            log.error(
                "reply to control id %r from %s cannot be framed (%s); answering AE 207",
                outcome.control_id,
                peer.address,
                exc,
            )
            if outcome.header is None:
                return b""
            fallback = build_ack(outcome.header, AckCode.AE, error=ErrorInfo(code=RETRY_LATER_CODE))
            return exchange.send(Message(fallback))

    async def _reply_release2(self, stream: MLLPStream, framed: bytes) -> None:
        """Send the framed reply and wait for its commit; resend on NAK or ACK timeout."""
        config = self.config
        await stream.send_all(framed, timeout=config.write_timeout)
        await stream.await_commit(
            "reply",
            ack_timeout=config.ack_timeout,
            write_timeout=config.write_timeout,
            read_timeout=config.read_timeout,
        )


class _WarningLimit:
    """Warnings of one connection, rate limited: a flood becomes one summary line.

    The first ``burst`` warnings of each ``window`` seconds are logged; the
    rest are counted and summarised when the window ends (at the next
    warning) or the connection closes.
    """

    def __init__(self, address: str, *, burst: int = 10, window: float = 10.0) -> None:
        self._address = address
        self._burst = burst
        self._window = window
        self._start = -math.inf
        self._count = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = trio.current_time()
        if now - self._start >= self._window:
            self.flush(now)
            self._start, self._count = now, 0
        self._count += 1
        if self._count <= self._burst:
            log.warning(msg, *args)
        else:
            self._suppressed += 1

    def flush(self, now: float | None = None) -> None:
        """Log the summary of the warnings held back, if any."""
        if self._suppressed:
            elapsed = (trio.current_time() if now is None else now) - self._start
            log.warning(
                "... and %s more warnings from %s in %.1f s",
                f"{self._suppressed:,}",
                self._address,
                elapsed,
            )
            self._suppressed = 0


def _peer_address(stream: trio.abc.Stream) -> tuple[str, str]:
    sock: Any = getattr(stream, "socket", None)
    if sock is None:
        return "unknown", "unknown"
    try:
        name = sock.getpeername()
    except OSError:
        return "unknown", "unknown"
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(name), str(name)


def _tls_reason_label(exc: BaseException) -> str:
    """A bounded metric label for a failed handshake: no peer-chosen text."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or "ssl_error"
        return reason.lower() if reason.replace("_", "").isalnum() else "ssl_error"
    return "connection_lost"


def _tls_reason(exc: BaseException) -> str:
    # trio wraps ssl.SSLError in BrokenResourceError: show the TLS reason.
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        # The reason alone reads the same for a revoked and an unknown certificate.
        return f"{cause.reason}: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause)
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


async def serve_mllp(
    handler: Handler | None,
    port: int,
    *,
    host: str | None = None,
    ssl_context: ssl.SSLContext | ServerTLS | None = None,
    config: ServerConfig | None = None,
    processor: Processor | None = None,
    on_application_ack: Callable[[Outcome], Awaitable[None]] | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for HL7 messages on ``port`` until cancelled; never returns.

    ``await nursery.start(serve_mllp, handler, 0)`` returns the listeners,
    so port 0 works (``listeners[0].socket.getsockname()[1]``). Takes what
    :class:`MLLPServer` takes; use that class directly for graceful
    shutdown, certificate reload and statistics.

    Args:
        handler: The application's handler, or ``None`` to accept everything
            (or when ``processor`` carries it).
        port: TCP port (2575 is IANA's hl7 port; 0 picks a free one).
        host: Address to bind; ``None`` binds every address.
        ssl_context: ``None`` for plain TCP, an ``ssl.SSLContext`` or a :class:`ServerTLS`.
        config: Limits, timeouts, framing, HL7 rules.
        processor: The per-message pipeline, e.g.
            ``mllp_trio.store.JournalProcessor(store, handler)`` to commit
            every message before acknowledging it (see :class:`MLLPServer`).
        on_application_ack: Enhanced mode: receives application acknowledgements.
        handler_nursery: Nursery to run connections in (default: an internal one).
        task_status: Receives the list of listeners once listening.
    """
    server = MLLPServer(
        handler,
        ssl_context=ssl_context,
        config=config,
        processor=processor,
        on_application_ack=on_application_ack,
    )
    await server.serve(port, host=host, handler_nursery=handler_nursery, task_status=task_status)

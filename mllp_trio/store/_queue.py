"""The durable sending queue: enqueue locally, deliver in order with retries and dead letters."""

from __future__ import annotations

import logging
import math
import random
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import attrs
import trio

from mllp_trio._client import MLLPClient
from mllp_trio._config import ClientConfig
from mllp_trio._errors import MLLPError, TLSRefusedError
from mllp_trio._hl7 import (
    AckReply,
    CharsetError,
    MSHError,
    is_rejection,
    normalise_segments,
    read_msh,
    resolve_charset,
)
from mllp_trio._io._waker import Waker
from mllp_trio.store._base import MessageStore, OutboundMessage, backoff_delay

__all__ = ["QueueConfig", "QueuedSender", "SendReport", "SendResult"]

log = logging.getLogger("mllp_trio.sender")


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attr.name} must be 0 or more, got {value!r}")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attr.name} must be positive, got {value!r}")


def _optional_attempts(_inst: object, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attr.name} must be 1 or more (or None), got {value!r}")


@attrs.frozen(kw_only=True)
class QueueConfig:
    """How the sending queue retries.

    The queue owns retries: each attempt is one transmission (the client's
    own ``retries`` are not used under the queue). A message that keeps
    failing is retried, with exponential backoff and jitter up to
    ``backoff_cap``, until ``give_up_after`` seconds have passed since its
    first failure (or ``max_attempts`` attempts, when set); then it becomes
    a dead letter.

    Attributes:
        give_up_after: Seconds from a message's first failed attempt after
            which it becomes a dead letter (86 400, one day: a long outage
            does not lose anything); ``None`` retries for ever. The clock
            starts at the first failure seen by this process: after a
            restart a message gets the whole deadline again. The last
            attempt is made at the deadline.
        max_attempts: Attempts before a message becomes a dead letter, or
            ``None`` (default): only ``give_up_after`` counts.
        backoff_base: Seconds of the first retry delay, doubled each time,
            with full jitter (1.0).
        backoff_cap: The longest retry delay in seconds (300). A destination
            that comes back is tried again within this time.
        poll_interval: Seconds between looks at an empty queue (1.0); an
            ``enqueue`` in the same process wakes the sender at once.
    """

    give_up_after: float | None = attrs.field(default=86400.0, validator=_positive)
    max_attempts: int | None = attrs.field(default=None, validator=_optional_attempts)
    backoff_base: float = attrs.field(default=1.0, validator=_non_negative)
    backoff_cap: float = attrs.field(default=300.0, validator=_positive)
    poll_interval: float = attrs.field(default=1.0, validator=_positive)


#: What one attempt came to: ``"delivered"`` (AA/CA), ``"dead"`` (AR/CR, or
#: out of time or attempts) or ``"retry"`` (it will be tried again).
SendOutcome = Literal["delivered", "dead", "retry"]


@attrs.frozen(kw_only=True)
class SendResult:
    """One attempt to deliver a queued message, as it happens (for progress displays).

    Attributes:
        message_id: The queue id.
        control_id: MSH-10 of the message (``"?"`` if unreadable).
        outcome: ``"delivered"``, ``"dead"`` or ``"retry"``.
        code: MSA-1 of the reply, or ``"ERROR"`` when there was none.
        text: MSA-3 of the reply (may be empty), or the error. Not in the repr.
        attempts: Attempts made for this message so far, this one included.
        retry_in: Seconds until the next attempt (``"retry"`` only).
        reply: The parsed reply, when one came (ERR segments and all).
    """

    message_id: int
    control_id: str
    outcome: SendOutcome
    code: str
    text: str = attrs.field(repr=False)
    attempts: int
    retry_in: float | None = None
    reply: AckReply | None = attrs.field(default=None, repr=False)


@attrs.define(kw_only=True)
class SendReport:
    """What one :meth:`QueuedSender.deliver_pending` run did.

    Attributes:
        delivered: Messages acknowledged positively.
        dead: Messages moved to the dead letters (AR/CR, or out of time or attempts).
        retried: Failed attempts that will be retried.
        requeued: Dead letters made pending again by :meth:`QueuedSender.flush`.
        replies: ``(control id, MSA-1 code, MSA-3 text)`` per final answer,
            in delivery order (for the command line).
    """

    delivered: int = 0
    dead: int = 0
    retried: int = 0
    requeued: int = 0
    replies: list[tuple[str, str, str]] = attrs.field(factory=list)


#: Called with each :class:`SendResult` as it happens.
OnResult = Callable[[SendResult], object]


class QueuedSender:
    """Delivers a store's outbound queue for one destination, at least once, in order.

    ``enqueue`` returns once the message is committed locally; :meth:`run`
    delivers for ever (or :meth:`deliver_pending` until the queue is empty,
    :meth:`flush` after requeueing the dead letters). A connection failure,
    timeout, AE/CE or commit NAK is retried with exponential backoff and
    jitter, within ``QueueConfig.give_up_after``; AR/CR, or running out of
    time (or ``max_attempts``), move the message to the dead letters, from
    which ``requeue_dead`` or :meth:`flush` bring it back. A TLS refusal
    that cannot succeed (:class:`TLSRefusedError`) is not retried: the
    message stays pending and :meth:`deliver_pending` raises. The queue
    survives restarts: it lives in the store.

    The queue owns retries: the client it drives makes one transmission per
    attempt (``client_config.retries`` is not used).

    Args:
        store: Where the queue lives.
        host: The destination listener.
        port: Its port.
        ssl_context: ``None`` for plain TCP, else a client context.
        server_hostname: Name the server certificate must carry.
        client_config: Framing, timeouts, charsets and socket options.
        config: Deadline, attempts and backoff.
    """

    def __init__(
        self,
        store: MessageStore,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        client_config: ClientConfig | None = None,
        config: QueueConfig | None = None,
    ) -> None:
        self.store = store
        self.destination = f"{host}:{port}"
        self.config = config if config is not None else QueueConfig()
        # One layer owns retries: the queue (with its backoff and deadline).
        client_config = attrs.evolve(client_config or ClientConfig(), retries=0)
        self._client = MLLPClient(
            host,
            port,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            config=client_config,
        )
        self._waker = Waker()
        self._rng = random.Random()
        # Queue id -> Trio time of its next attempt. Waits within one process
        # follow the Trio clock (a wall-clock jump neither stalls nor rushes
        # them, and tests can use a mock clock); the store's wall-clock
        # ``next_attempt_at`` is the fallback after a restart.
        self._retry_at: dict[int, float] = {}
        # Queue id -> Trio time of its first failure in this process (the
        # give_up_after clock).
        self._first_failure: dict[int, float] = {}

    async def enqueue(self, message: bytes) -> int:
        """Commit ``message`` to the queue; return its queue id.

        Segments separated by LF or CRLF are normalised to CR first.

        Raises:
            StoreError: It was not committed.
            MSHError: It is not an HL7 message.
        """
        data = normalise_segments(message)
        read_msh(data)  # refuse what the peer could never acknowledge
        message_id = await self.store.enqueue(self.destination, data)
        self._waker.wake()
        return message_id

    async def aclose(self) -> None:
        """Close the connection to the destination."""
        await self._client.aclose()

    async def run(
        self,
        *,
        on_result: OnResult | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver the queue for ever; never returns.

        A TLS refusal that cannot succeed is logged as an error and tried
        again after ``backoff_cap`` seconds (the peer's configuration may
        change); the message stays pending meanwhile.

        Args:
            on_result: Called with each attempt's :class:`SendResult`.
            task_status: For ``nursery.start``.
        """
        task_status.started()
        try:
            while True:
                head = await self.store.fetch_next(self.destination)
                if head is None:
                    await self._waker.sleep(self.config.poll_interval)
                    continue
                delay = self._delay(head)
                if delay > 0:
                    await self._waker.sleep(delay)
                    continue
                try:
                    await self._attempt(head, SendReport(), on_result)
                except TLSRefusedError as exc:
                    log.error("%s; trying again in %.0f s", exc, self.config.backoff_cap)
                    await self._waker.sleep(self.config.backoff_cap)
        finally:
            with trio.CancelScope(shield=True):
                await self._client.aclose()

    async def deliver_pending(self, *, on_result: OnResult | None = None) -> SendReport:
        """Deliver until the queue for this destination is empty; return what happened.

        Waits out retry delays, so it returns only when every message was
        delivered or became a dead letter.

        Args:
            on_result: Called with each attempt's :class:`SendResult`, as it happens.

        Raises:
            TLSRefusedError: The destination refused us for good (or we it);
                the message stays pending: fix the configuration and flush.
            StoreError: The store failed.
        """
        report = SendReport()
        while True:
            head = await self.store.fetch_next(self.destination)
            if head is None:
                return report
            delay = self._delay(head)
            if delay > 0:
                await trio.sleep(delay)
            await self._attempt(head, report, on_result)

    async def flush(
        self, *, requeue_dead: bool = True, on_result: OnResult | None = None
    ) -> SendReport:
        """Send what is queued for this destination, without a new message.

        Dead letters of this destination are made pending again first
        (unless ``requeue_dead`` is False), then everything pending is
        delivered as by :meth:`deliver_pending`.

        Args:
            requeue_dead: Requeue this destination's dead letters first (default).
            on_result: Called with each attempt's :class:`SendResult`.

        Returns:
            The report; ``requeued`` counts the dead letters brought back.

        Raises:
            TLSRefusedError, StoreError: As :meth:`deliver_pending`.
        """
        requeued = 0
        if requeue_dead:
            requeued = await self.store.requeue_dead(destination=self.destination)
        report = await self.deliver_pending(on_result=on_result)
        report.requeued = requeued
        return report

    def _delay(self, head: OutboundMessage) -> float:
        """Seconds until ``head`` may be sent (zero or less: now)."""
        at = self._retry_at.get(head.message_id)
        if at is not None:
            return at - trio.current_time()
        return (head.next_attempt_at - datetime.now(UTC)).total_seconds()

    async def _attempt(
        self, head: OutboundMessage, report: SendReport, on_result: OnResult | None
    ) -> None:
        control_id = _control_id(head.data, self._client.config)
        message_id = head.message_id
        attempts = head.attempts + 1
        try:
            reply: AckReply | None = await self._client.send(head.data, raise_on_negative=False)
            error = None
        except TLSRefusedError as exc:
            # Retrying cannot help: the message stays pending, untouched by
            # the deadline, until the configuration is fixed.
            self._retry_at.pop(message_id, None)
            await self.store.mark_attempt(message_id, str(exc), datetime.now(UTC))
            raise
        except (MLLPError, OSError, trio.BrokenResourceError) as exc:
            # Our own errors say what happened; others need their kind.
            text = str(exc)
            reply = None
            error = text if isinstance(exc, MLLPError) and text else f"{type(exc).__name__}: {text}"
        self._retry_at.pop(message_id, None)
        if reply is not None and reply.accepted:
            await self.store.mark_sent(message_id)
            self._first_failure.pop(message_id, None)
            report.delivered += 1
            report.replies.append((control_id, reply.code, reply.text))
            _notify(on_result, message_id, control_id, "delivered", reply, "", attempts)
            return
        if reply is not None and is_rejection(reply.code):
            await self._dead(message_id, f"{reply.code} {reply.text}".strip())
            report.dead += 1
            report.replies.append((control_id, reply.code, reply.text))
            log.warning("control id %r rejected (%s): dead letter", control_id, reply.code)
            _notify(on_result, message_id, control_id, "dead", reply, "", attempts)
            return
        if reply is not None:
            error = f"{reply.code} {reply.text}".strip()
        assert error is not None
        now = trio.current_time()
        first = self._first_failure.setdefault(message_id, now)
        left = math.inf
        if self.config.give_up_after is not None:
            left = first + self.config.give_up_after - now
        max_attempts = self.config.max_attempts
        if left <= 0 or (max_attempts is not None and attempts >= max_attempts):
            spent = (
                f"{attempts} attempts"
                if left > 0
                else f"{attempts} attempts in {now - first:.0f} s"
            )
            await self._dead(message_id, f"{spent}; last: {error}")
            report.dead += 1
            report.replies.append((control_id, reply.code if reply else "ERROR", error))
            log.warning("control id %r failed %d times: dead letter", control_id, attempts)
            _notify(on_result, message_id, control_id, "dead", reply, error, attempts)
            return
        delay = backoff_delay(
            head.attempts,
            base=self.config.backoff_base,
            cap=self.config.backoff_cap,
            rng=self._rng,
        )
        delay = min(delay, left)  # the last attempt falls on the deadline
        await self.store.mark_attempt(
            message_id, error, datetime.now(UTC) + timedelta(seconds=delay)
        )
        self._retry_at[message_id] = now + delay
        report.retried += 1
        log.info("control id %r not delivered (%s); retry in %.1f s", control_id, error, delay)
        _notify(on_result, message_id, control_id, "retry", reply, error, attempts, delay)

    async def _dead(self, message_id: int, reason: str) -> None:
        await self.store.mark_dead(message_id, reason)
        self._first_failure.pop(message_id, None)


def _notify(
    on_result: OnResult | None,
    message_id: int,
    control_id: str,
    outcome: SendOutcome,
    reply: AckReply | None,
    error: str,
    attempts: int,
    retry_in: float | None = None,
) -> None:
    if on_result is None:
        return
    on_result(
        SendResult(
            message_id=message_id,
            control_id=control_id,
            outcome=outcome,
            code=reply.code if reply is not None else "ERROR",
            text=reply.text if reply is not None else error,
            attempts=attempts,
            retry_in=retry_in,
            reply=reply,
        )
    )


def _control_id(data: bytes, config: ClientConfig) -> str:
    """MSH-10 for reports and logs, read in the message's charset."""
    try:
        header = read_msh(data)
    except MSHError:
        return "?"
    try:
        codec = resolve_charset(
            header.charset,
            repetition_separator=header.repetition_separator.decode("latin-1"),
            default=config.default_charset,
            override=config.charset_override,
        ).codec
    except CharsetError:
        return header.control_id
    return header.unescape(header.control_id_raw.decode(codec, "replace"), codec=codec)

"""The durable sending queue: enqueue locally, deliver in order with retries and dead letters."""

from __future__ import annotations

import logging
import random
import ssl
from datetime import UTC, datetime, timedelta

import attrs
import trio

from mllp_trio._client import MLLPClient
from mllp_trio._config import ClientConfig
from mllp_trio._errors import MLLPError
from mllp_trio._hl7 import AckReply, MSHError, is_rejection, normalise_segments, read_msh
from mllp_trio._io._waker import Waker
from mllp_trio.store._base import MessageStore, OutboundMessage, backoff_delay

__all__ = ["QueueConfig", "QueuedSender", "SendReport"]

log = logging.getLogger("mllp_trio.sender")


@attrs.frozen(kw_only=True)
class QueueConfig:
    """How the sending queue retries.

    Attributes:
        max_attempts: Attempts before a message becomes a dead letter (10).
        backoff_base: Seconds of the first retry delay, doubled each time,
            with full jitter (1.0).
        backoff_cap: The longest retry delay in seconds (300).
        poll_interval: Seconds between looks at an empty queue (1.0); an
            ``enqueue`` in the same process wakes the sender at once.
    """

    max_attempts: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    poll_interval: float = 1.0


@attrs.define(kw_only=True)
class SendReport:
    """What one :meth:`QueuedSender.deliver_pending` run did.

    Attributes:
        delivered: Messages acknowledged positively.
        dead: Messages moved to the dead letters (AR/CR, or out of attempts).
        retried: Failed attempts that will be retried.
        replies: ``(control id, MSA-1 code, MSA-3 text)`` per final answer,
            in delivery order (for the command line).
    """

    delivered: int = 0
    dead: int = 0
    retried: int = 0
    replies: list[tuple[str, str, str]] = attrs.field(factory=list)


class QueuedSender:
    """Delivers a store's outbound queue for one destination, at least once, in order.

    ``enqueue`` returns once the message is committed locally; :meth:`run`
    delivers for ever (or :meth:`deliver_pending` until the queue is empty).
    A connection failure, timeout, AE/CE or commit NAK is retried with
    exponential backoff and jitter; AR/CR, or ``max_attempts`` failures,
    move the message to the dead letters, from which ``requeue_dead``
    brings it back. The queue survives restarts: it lives in the store.

    Args:
        store: Where the queue lives.
        host: The destination listener.
        port: Its port.
        ssl_context: ``None`` for plain TCP, else a client context.
        server_hostname: Name the server certificate must carry.
        client_config: Framing, timeouts and per-attempt retries.
        config: Attempts and backoff.
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver the queue for ever; never returns."""
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
                await self._attempt(head, SendReport())
        finally:
            with trio.CancelScope(shield=True):
                await self._client.aclose()

    async def deliver_pending(self) -> SendReport:
        """Deliver until the queue for this destination is empty; return what happened.

        Waits out retry delays, so it returns only when every message was
        delivered or became a dead letter.
        """
        report = SendReport()
        while True:
            head = await self.store.fetch_next(self.destination)
            if head is None:
                return report
            delay = self._delay(head)
            if delay > 0:
                await trio.sleep(delay)
            await self._attempt(head, report)

    def _delay(self, head: OutboundMessage) -> float:
        """Seconds until ``head`` may be sent (zero or less: now)."""
        at = self._retry_at.get(head.message_id)
        if at is not None:
            return at - trio.current_time()
        return (head.next_attempt_at - datetime.now(UTC)).total_seconds()

    async def _attempt(self, head: OutboundMessage, report: SendReport) -> None:
        control_id = _control_id(head.data)
        try:
            reply: AckReply | None = await self._client.send(head.data, raise_on_negative=False)
            error = None
        except (MLLPError, OSError, trio.BrokenResourceError) as exc:
            reply, error = None, f"{type(exc).__name__}: {exc}"
        attempts = head.attempts + 1
        self._retry_at.pop(head.message_id, None)
        if reply is not None and reply.accepted:
            await self.store.mark_sent(head.message_id)
            report.delivered += 1
            report.replies.append((control_id, reply.code, reply.text))
            return
        if reply is not None and is_rejection(reply.code):
            await self.store.mark_dead(head.message_id, f"{reply.code} {reply.text}".strip())
            report.dead += 1
            report.replies.append((control_id, reply.code, reply.text))
            log.warning("control id %r rejected (%s): dead letter", control_id, reply.code)
            return
        if reply is not None:
            error = f"{reply.code} {reply.text}".strip()
        assert error is not None
        if attempts >= self.config.max_attempts:
            await self.store.mark_dead(head.message_id, f"{attempts} attempts; last: {error}")
            report.dead += 1
            report.replies.append((control_id, reply.code if reply else "ERROR", error))
            log.warning("control id %r failed %d times: dead letter", control_id, attempts)
            return
        delay = backoff_delay(
            attempts - 1,
            base=self.config.backoff_base,
            cap=self.config.backoff_cap,
            rng=self._rng,
        )
        await self.store.mark_attempt(
            head.message_id, error, datetime.now(UTC) + timedelta(seconds=delay)
        )
        self._retry_at[head.message_id] = trio.current_time() + delay
        report.retried += 1
        log.info("control id %r not delivered (%s); retry in %.1f s", control_id, error, delay)


def _control_id(data: bytes) -> str:
    try:
        return read_msh(data).control_id
    except MSHError:
        return "?"

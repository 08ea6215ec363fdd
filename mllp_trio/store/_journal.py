"""Store before acknowledging: the durable per-message pipeline and journal delivery."""

from __future__ import annotations

import logging
from typing import Final, Literal, cast

import attrs
import trio

from mllp_trio._hl7 import (
    RETRY_LATER_CODE,
    Disposition,
    Handler,
    HL7Config,
    HL7Error,
    HL7Refusal,
    InboundMessage,
    MSHError,
    Outcome,
    PeerInfo,
    Verdict,
    acknowledge,
    admit,
    is_negative,
    prepare_message,
    read_msh,
    refuse,
    reply_code,
    run_handler,
)
from mllp_trio._io._waker import Waker
from mllp_trio.store._base import CommitResult, InboundRecord, MessageStore, StoreError
from mllp_trio.store._sqlite import SQLiteStore

__all__ = ["Delivery", "JournalProcessor"]

log = logging.getLogger("mllp_trio.durable")

#: ``"before_ack"``: the handler runs before the acknowledgement, which
#: reflects it. ``"after_commit"``: acknowledge once committed, hand the
#: message to the handler from the journal afterwards.
Delivery = Literal["before_ack", "after_commit"]

_STORE_FAILED_TEXT = "message could not be stored; send it again"

#: The verdict of the default handler, known before it runs.
_ACCEPT: Final = Verdict(disposition=Disposition.ACCEPT)


async def _accept_all(message: InboundMessage) -> None:
    """Default handler: accept every message (AA)."""


def _field_text(value: bytes) -> str:
    return value.decode("latin-1")


@attrs.define(eq=False)
class _InHand:
    """A journal entry whose handler is running now, and its final answer once known."""

    done: trio.Event = attrs.field(factory=trio.Event)
    final: bool = False
    reply: bytes | None = attrs.field(default=None, repr=False)


class JournalProcessor:
    """The listener's per-message pipeline with a journal: nothing acknowledged is lost.

    Every message that passes the HL7 rules is committed to ``store`` before
    any positive acknowledgement (AA/CA, or a release 2 commit ACK) leaves.
    If the commit fails the answer is AE/CE 207 (release 2: commit NAK).
    A message whose (MSH-3, MSH-4, MSH-10) is already journaled is answered
    with the stored acknowledgement and not handed to the handler again.

    Args:
        store: The journal.
        handler: The application's handler.
        config: HL7 rules.
        delivery: ``"before_ack"`` (default): commit, run the handler, answer
            as it decided, save the answer. ``"after_commit"``: commit with an
            AA already built, answer at once, and run the handler from the
            journal in :meth:`run_delivery` (at least once, resuming after a
            restart).
        retry_interval: Seconds before journal delivery retries a message
            whose handler failed (after_commit mode), and between polls.
    """

    def __init__(
        self,
        store: MessageStore,
        handler: Handler | None = None,
        *,
        config: HL7Config | None = None,
        delivery: Delivery = "before_ack",
        retry_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.handler: Handler = handler if handler is not None else _accept_all
        self.config = config if config is not None else HL7Config()
        self.delivery: Delivery = delivery
        self.retry_interval = retry_interval
        self._waker = Waker()
        # The SQLite store journals an accepted message from its fields
        # (no record or result objects per message); any other store, or a
        # subclass that may override commit_inbound, goes through the protocol.
        self._sqlite = store if type(store) is SQLiteStore else None
        # Journal id -> the handler run in progress for it (before_ack mode).
        self._in_hand: dict[int, _InHand] = {}

    async def __call__(self, raw: bytes, peer: PeerInfo) -> Outcome:
        """Process one inbound message; the listener sends what the outcome says."""
        message = admit(raw, peer=peer, config=self.config)
        if isinstance(message, Outcome):
            return message
        if self.delivery == "after_commit":
            return await self._commit_then_ack(message, peer)
        if self.handler is _accept_all:
            return await self._commit_accepted(message, peer)
        return await self._commit_handle_ack(message, peer)

    def _record(self, message: InboundMessage, peer: PeerInfo) -> InboundRecord:
        header = message.header
        identity = peer.identity
        return InboundRecord(
            data=message.raw,
            peer=peer.address,
            tls_identity=None if identity is None else identity.subject,
            control_id=header.control_id,
            sending_application=_field_text(header.sending_application),
            sending_facility=_field_text(header.sending_facility),
        )

    async def _commit_then_ack(self, message: InboundMessage, peer: PeerInfo) -> Outcome:
        outcome = acknowledge(message, Verdict(disposition=Disposition.ACCEPT))
        try:
            result = await self.store.commit_inbound(self._record(message, peer), ack=outcome.reply)
        except StoreError as exc:
            return self._store_failed(message, exc)
        if result.duplicate:
            return self._duplicate(message, result.ack, outcome)
        self._waker.wake()
        return outcome

    async def _commit_accepted(self, message: InboundMessage, peer: PeerInfo) -> Outcome:
        # No handler: the answer is AA (CA) whatever happens, so the message,
        # its answer and its delivery are one transaction, one fsync, where a
        # handler needs two (its answer is known only after the commit).
        outcome = acknowledge(message, _ACCEPT)
        answer = outcome.reply if outcome.reply is not None else b""
        try:
            if self._sqlite is not None:
                header = message.header
                identity = peer.identity
                found = await self._sqlite._journal_accepted(
                    message.raw,
                    peer.address,
                    None if identity is None else identity.subject,
                    header.control_id,
                    header.sending_application.decode("latin-1"),
                    header.sending_facility.decode("latin-1"),
                    answer,
                )
                if type(found) is int:
                    return outcome
                result = cast(CommitResult, found)
            else:
                result = await self.store.commit_inbound(
                    self._record(message, peer), ack=answer, delivered=True
                )
        except StoreError as exc:
            return self._store_failed(message, exc)
        if not result.duplicate:
            return outcome
        if result.ack is not None or result.delivered:
            return self._duplicate(message, result.ack, outcome)
        # Journaled earlier without a final answer (its handler failed, or
        # the process died): this is its answer now.
        try:
            await self.store.save_ack(result.message_id, answer, delivered=True)
        except StoreError as exc:
            log.error("could not save the answer to control id %r: %s", message.control_id, exc)
        return outcome

    async def _commit_handle_ack(self, message: InboundMessage, peer: PeerInfo) -> Outcome:
        try:
            result = await self.store.commit_inbound(self._record(message, peer))
        except StoreError as exc:
            return self._store_failed(message, exc)
        if result.duplicate:
            running = self._in_hand.get(result.message_id)
            if running is not None:
                # A resend (after an ACK timeout, say) while the original's
                # handler still runs: answer what the original is answered.
                await running.done.wait()
                if running.final:
                    fresh = acknowledge(message, Verdict(disposition=Disposition.ACCEPT))
                    return self._duplicate(message, running.reply, fresh)
            elif result.ack is not None or result.delivered:
                fresh = acknowledge(message, Verdict(disposition=Disposition.ACCEPT))
                return self._duplicate(message, result.ack, fresh)
        # New, or journaled earlier without a final answer (its handler failed
        # or the process died): run the handler now.
        in_hand = self._in_hand[result.message_id] = _InHand()
        try:
            verdict = await run_handler(self.handler, message, config=self.config)
            outcome = acknowledge(message, verdict)
            if not verdict.transient:
                answer = outcome.reply if outcome.reply is not None else b""
                in_hand.final, in_hand.reply = True, answer
                try:
                    await self.store.save_ack(result.message_id, answer, delivered=True)
                except StoreError as exc:
                    # The message is journaled and handled; only its answer
                    # for later duplicates is missing, so the reply still goes out.
                    log.error(
                        "could not save the answer to control id %r: %s", message.control_id, exc
                    )
        finally:
            if self._in_hand.get(result.message_id) is in_hand:
                del self._in_hand[result.message_id]
            in_hand.done.set()
        return outcome

    def _duplicate(self, message: InboundMessage, stored: bytes | None, fresh: Outcome) -> Outcome:
        # DEBUG: every message already has its INFO line (the service log).
        log.debug(
            "duplicate of control id %r from %s answered without delivery",
            message.control_id,
            message.peer.address,
        )
        if not stored:
            return fresh
        code = reply_code(stored)
        return attrs.evolve(
            fresh,
            reply=stored,
            code=code or fresh.code,
            accepted=not is_negative(code),
        )

    def _store_failed(self, message: InboundMessage, exc: StoreError) -> Outcome:
        log.error("control id %r not stored (%s); answering AE/CE 207", message.control_id, exc)
        # A refusal, not a handler verdict: in enhanced mode ``acknowledge``
        # would answer CA ("safely stored"), which is exactly what failed.
        # ``refuse`` gives AE, or CE in enhanced mode, never a positive code.
        return refuse(
            message.header, HL7Error(_STORE_FAILED_TEXT, code=RETRY_LATER_CODE), config=self.config
        )

    def wake(self) -> None:
        """Tell :meth:`run_delivery` that new messages are waiting."""
        self._waker.wake()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The listener's background work: recovery, then delivery from the journal.

        ``before_ack``: messages journaled just before a crash, whose handler
        never finished, reach the handler before the listener accepts
        connections. ``after_commit``: the journal is delivered for ever.
        """
        if self.delivery == "after_commit":
            await self.run_delivery(task_status=task_status)
            return
        recovered = await self.recover()
        if recovered:
            log.info("delivered %d journaled message(s) left from before the start", recovered)
        task_status.started()

    async def recover(self) -> int:
        """Hand every journaled but undelivered message to the handler once.

        Used at start-up: a message committed just before a crash, whose
        handler never finished, is delivered now. Returns how many were
        delivered.
        """
        delivered = 0
        after = 0
        while True:
            batch = await self.store.fetch_undelivered(100, after_id=after)
            if not batch:
                return delivered
            for stored in batch:
                after = stored.message_id
                if await self._deliver(stored.message_id, stored.data, stored.info.peer):
                    delivered += 1

    async def run_delivery(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver journaled messages to the handler for ever (after_commit mode).

        At least once: a message whose handler fails is retried after
        ``retry_interval``; a restart resumes with what was not delivered.
        """
        task_status.started()
        while True:
            try:
                await self.recover()
            except StoreError as exc:
                # A passing storage fault must not take the listener down with
                # this task: the messages stay journaled, try again later.
                log.error("journal delivery paused for %.1f s: %s", self.retry_interval, exc)
            await self._waker.sleep(self.retry_interval)

    async def _deliver(self, message_id: int, raw: bytes, address: str) -> bool:
        peer = PeerInfo(address=address)
        try:
            header = read_msh(raw)
            message = prepare_message(raw, header, peer=peer, config=self.config)
        except (MSHError, HL7Refusal) as exc:
            log.error("journal entry %d is no longer readable: %s", message_id, exc)
            await self.store.mark_delivered(message_id)
            return False
        verdict = await run_handler(self.handler, message, config=self.config)
        if verdict.transient:
            return False
        await self.store.mark_delivered(message_id)
        return True

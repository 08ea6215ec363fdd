"""The exchange rules above the framing, sans-IO: commit wait, NAK, resend, ACK timeout.

Framing (:class:`MLLPConnection`, :class:`HLLPConnection`) says what the bytes
are; :class:`Exchange` says what each side must do about them, the same for
a listener and a client:

- MLLP release 2: every content block is answered by a commit ACK or NAK.
  The receiver commits only content it has committed to safe storage
  (:meth:`Exchange.commit`) and NAKs the rest (:meth:`Exchange.refuse`); an
  invalid frame is NAKed at once. The sender resends its block on a NAK or
  when no commit acknowledgement came in time (:meth:`Exchange.timeout`), up
  to the retry count, then fails.
- HLLP: a block that fails verification is answered with a NAK block at
  once; the sender resends its last data block on a NAK block, up to the
  retry count. A data block from the peer settles our last one.
- MLLP release 1 has no transport acknowledgements: only the framing applies.

No clock lives here: the I/O layer keeps the deadline and calls
:meth:`Exchange.timeout` when it passes.
"""

from __future__ import annotations

from typing import Literal

import attrs

from mllp_trio._errors import LocalProtocolError
from mllp_trio.proto._events import (
    NEED_DATA,
    BadBlock,
    CommitAck,
    CommitNak,
    EndOfStream,
    HLLPNak,
    InvalidFrame,
    Message,
    NeedData,
)
from mllp_trio.proto._hllp import HLLPConnection
from mllp_trio.proto._mllp import MLLPConnection

__all__ = [
    "Delivered",
    "DeliveryFailure",
    "Exchange",
    "ExchangeEvent",
    "Rejected",
    "Resend",
]


@attrs.frozen
class Delivered:
    """Release 2: the peer committed our outstanding block (commit ACK)."""


@attrs.frozen
class Resend:
    """Write ``data`` again: the peer NAKed our block or did not commit it in time.

    Attributes:
        data: The framed block, ready to write.
        attempt: Which sending this is (2 for the first resend).
        reason: Why, for logs.
    """

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    attempt: int
    reason: str


@attrs.frozen
class DeliveryFailure:
    """Our block was refused or went unacknowledged on every attempt: give up.

    Attributes:
        attempts: How many times it was sent.
        reason: The last refusal, for logs and errors.
    """

    attempts: int
    reason: str


@attrs.frozen
class Rejected:
    """A frame from the peer was refused; nothing is delivered.

    Attributes:
        reason: What was wrong, for logs (never message content).
        answer: Bytes the rules require in answer (a release 2 commit NAK, an
            HLLP NAK block); empty under release 1. Write them.
    """

    reason: str
    answer: bytes


#: What :meth:`Exchange.next_event` returns besides :data:`NEED_DATA`.
ExchangeEvent = Message | Delivered | Resend | DeliveryFailure | Rejected | EndOfStream


class Exchange:
    """Reliable delivery on one connection, for either side.

    Args:
        connection: The framing state machine; the exchange owns it from now on.
        retries: Times a block is resent after a NAK or an acknowledgement
            timeout before :class:`DeliveryFailure` (default 2, as Mirth).
    """

    def __init__(self, connection: MLLPConnection | HLLPConnection, *, retries: int = 2) -> None:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self.connection = connection
        self.retries = retries
        self.framing: Literal["mllp", "mllp2", "hllp"] = (
            "hllp"
            if isinstance(connection, HLLPConnection)
            else "mllp2"
            if connection.mllp2
            else "mllp"
        )
        self._pending: Message | None = None  # our block that may still be NAKed
        self._pending_bytes = b""
        self._attempt = 0
        self._budget = retries

    @property
    def awaiting_commit(self) -> bool:
        """Release 2: our block awaits its commit acknowledgement."""
        return self.framing == "mllp2" and self._pending is not None

    @property
    def attempts(self) -> int:
        """How many times our latest block has been sent."""
        return self._attempt

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return self.connection.buffered

    @property
    def settled(self) -> bool:
        """Whether nothing received is waiting: no bytes buffered, no event ready.

        The next event then needs more bytes from the peer: a reader may read
        before asking :meth:`next_event`.
        """
        connection = self.connection
        if connection.buffered:
            return False
        # Frames split out of an earlier read and not yet returned as events.
        if isinstance(connection, MLLPConnection):
            return not connection._events and not connection._frames
        return not connection._events

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed."""
        self.connection.receive_data(data)

    def send(self, message: Message, *, retries: int | None = None) -> bytes:
        """Return the bytes of a content block; remember it for resends.

        Args:
            message: The content.
            retries: Resends allowed for this block (default: the exchange's).

        Raises:
            LocalProtocolError: The framing refuses the block now (release 2:
                a block still awaits its commit, or a received one awaits ours).
        """
        data = self.connection.send(message)
        if self.framing != "mllp":
            self._pending, self._pending_bytes = message, data
            self._attempt = 1
            self._budget = self.retries if retries is None else retries
        return data

    def commit(self) -> bytes:
        """Release 2: the commit ACK for the content block just delivered (else ``b""``).

        Call it only once the content is committed to safe storage.
        """
        if self.framing != "mllp2":
            return b""
        return self.connection.send(CommitAck())  # type: ignore[arg-type]

    def refuse(self) -> bytes:
        """Release 2: the commit NAK for content that could not be committed (else ``b""``)."""
        if self.framing != "mllp2":
            return b""
        return self.connection.send(CommitNak())  # type: ignore[arg-type]

    def timeout(self) -> Resend | DeliveryFailure:
        """The acknowledgement of our block did not come in time: resend it or give up.

        Release 2: no commit ACK/NAK. HLLP: no answer (neither a data block nor
        a NAK block).

        Raises:
            LocalProtocolError: Nothing of ours is outstanding.
        """
        if self._pending is None:
            raise LocalProtocolError("timeout(): no block of ours awaits an acknowledgement")
        return self._retry("no acknowledgement in time", late=True)

    def next_event(self) -> ExchangeEvent | NeedData:
        """Return the next event, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: The peer broke the framing or the release 2
                sequence; close the connection.
        """
        event = self.connection.next_event()
        kind = type(event)
        if kind is Message:
            if self.framing == "hllp":
                self._pending = None  # a data block answers ours
            return event  # type: ignore[return-value]
        if event is NEED_DATA or kind is EndOfStream:
            return event  # type: ignore[return-value]
        if kind is CommitAck:
            self._pending = None
            return Delivered()
        if kind is CommitNak:
            return self._retry("commit NAK", late=False)
        if kind is HLLPNak:
            assert isinstance(event, HLLPNak)
            if self._pending is None:
                return DeliveryFailure(
                    0, f"NAK block ({event.reason.value}) with nothing to resend"
                )
            return self._retry(f"NAK block, reason {event.reason.value}", late=False)
        if kind is BadBlock:
            assert isinstance(event, BadBlock)
            if not event.answer:
                return Rejected(event.detail, b"")
            nak = self.connection.send(event.nak)  # type: ignore[arg-type]
            return Rejected(f"{event.detail} (NAK {event.reason.value})", nak)
        assert isinstance(event, InvalidFrame)
        # Release 2: the peer waits for a commit acknowledgement of this frame.
        return Rejected(event.reason, self.refuse())

    def _retry(self, reason: str, *, late: bool) -> Resend | DeliveryFailure:
        message = self._pending
        if message is None or self._attempt > self._budget:
            attempts, self._pending = self._attempt, None
            return DeliveryFailure(attempts, reason)
        self._attempt += 1
        if self.framing == "mllp2":
            # After a NAK the block is sent anew; after a timeout it still
            # awaits one acknowledgement and a late one is tolerated.
            connection = self.connection
            assert isinstance(connection, MLLPConnection)
            data = connection.resend(message) if late else connection.send(message)
        else:
            data = self._pending_bytes
        return Resend(data, self._attempt, reason)

"""One load connection's exchanges: send a message, read its reply, judge the reply.

:func:`judge_ack` checks an acknowledgement against the message it answers:
an MSH first, an MSA segment, an MSA-1 code of HL7 table 0008 and MSA-2
equal to the MSH-10 sent. Release 1 runs through :class:`MLLPSession`, a
lean frame reader over a reused buffer (the hot path of the harness);
release 2 and HLLP run through the sans-IO :class:`~mllp_trio.proto.Exchange`
in :class:`ExchangeSession`, which handles commit ACK/NAK, NAK blocks and
resends exactly as the project's own client does.
"""

from __future__ import annotations

from typing import Final

from mllp_trio._load._messages import Template
from mllp_trio._load._transport import Transport
from mllp_trio.proto import (
    NEED_DATA,
    Delivered,
    DeliveryFailure,
    EndOfStream,
    FramingConfig,
    Message,
    Rejected,
    RemoteProtocolError,
    Resend,
)

__all__ = [
    "ACK_CODES",
    "BAD_FRAMING",
    "CONNECTION_LOST",
    "NAK",
    "NOT_AN_ACK",
    "OK_CODES",
    "RECONNECT",
    "WRONG_CONTROL_ID",
    "ExchangeSession",
    "MLLPSession",
    "Session",
    "judge_ack",
    "new_session",
]

#: Outcome kinds besides the ACK codes.
WRONG_CONTROL_ID: Final = "wrong_control_id"
NOT_AN_ACK: Final = "not_an_ack"
BAD_FRAMING: Final = "bad_framing"
CONNECTION_LOST: Final = "connection_lost"
NAK: Final = "nak"
#: Acknowledgement codes (HL7 table 0008) and those that mean success.
ACK_CODES: Final = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
OK_CODES: Final = frozenset({"AA", "CA"})
#: Outcomes after which the connection cannot be trusted: close it, open another.
RECONNECT: Final = frozenset({BAD_FRAMING, CONNECTION_LOST, NAK})

_CODES: Final = {code.encode("ascii"): code for code in ACK_CODES}
_SB: Final = 0x0B
_EB: Final = 0x1C
_CR: Final = 0x0D


def judge_ack(data: bytes | bytearray, start: int, end: int, control_id: bytes | None) -> str:
    """The outcome of the reply in ``data[start:end]`` to the message sent with ``control_id``.

    Returns the MSA-1 code (``"AA"``, ``"AE"``...), or :data:`WRONG_CONTROL_ID`
    when MSA-2 is another message's id, or :data:`NOT_AN_ACK` when the
    reply has no MSH, no MSA, or an MSA-1 outside table 0008. A
    ``control_id`` of ``None`` skips the MSA-2 check (a peer with a canned ACK).
    """
    if end - start < 8 or data[start : start + 3] != b"MSH":
        return NOT_AN_ACK
    separator = data[start + 3]
    found = data.find(b"\rMSA", start, end)
    if found < 0:
        found = data.find(b"\nMSA", start, end)
        if found < 0:
            return NOT_AN_ACK
    field = found + 4
    if field >= end or data[field] != separator:
        return NOT_AN_ACK
    stop = end
    for terminator in (b"\r", b"\n"):
        at = data.find(terminator, field, stop)
        if at >= 0:
            stop = at
    fields = bytes(data[field + 1 : stop]).split(bytes((separator,)), 2)
    code = _CODES.get(fields[0])
    if code is None:
        return NOT_AN_ACK
    if control_id is not None and (len(fields) < 2 or fields[1] != control_id):
        return WRONG_CONTROL_ID
    return code


class MLLPSession:
    """MLLP release 1: ``SB message EB CR`` out, one reply frame in, read in place.

    Bytes before the start byte, an end byte not followed by CR and a reply
    over the size limit are :data:`BAD_FRAMING`; a reply that arrives
    after the next message was sent is judged against that message (and is
    a :data:`WRONG_CONTROL_ID`), as it would be in any real client.
    """

    __slots__ = ("_buffer", "_filled", "_limit", "_start", "_transport", "_view", "resends")

    def __init__(self, transport: Transport, *, max_message_size: int) -> None:
        self._transport = transport
        self._buffer = bytearray(1 << 16)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._filled = 0
        self._limit = max_message_size + 3
        self.resends = 0

    async def exchange(self, template: Template, control_id: bytes, expected: bytes | None) -> str:
        """Send ``template`` with ``control_id`` as MSH-10; judge the reply against ``expected``."""
        await self._transport.send_all(template.frame(control_id))
        buffer = self._buffer
        scan = self._start + 1
        while True:
            start, filled = self._start, self._filled
            if filled > start:
                if buffer[start] != _SB:
                    return BAD_FRAMING
                end = buffer.find(_EB, scan, filled)
                if end >= 0:
                    if end + 1 < filled:
                        if buffer[end + 1] != _CR:
                            return BAD_FRAMING
                        outcome = judge_ack(buffer, start + 1, end, expected)
                        self._start = end + 2
                        if self._start == filled:
                            self._start = self._filled = 0
                        return outcome
                else:
                    scan = filled
                if filled - start > self._limit:
                    return BAD_FRAMING
            if self._filled == len(buffer):
                scan = self._make_room(scan)
            received = await self._transport.receive_into(self._view[self._filled :])
            if not received:
                return CONNECTION_LOST
            self._filled += received

    def _make_room(self, scan: int) -> int:
        start, filled = self._start, self._filled
        buffer = self._buffer
        if start:
            buffer[: filled - start] = buffer[start:filled]
            self._start, self._filled = 0, filled - start
            return scan - start
        self._view.release()
        buffer.extend(bytes(len(buffer)))
        self._view = memoryview(buffer)
        return scan

    async def aclose(self) -> None:
        """Close the connection."""
        self._view.release()
        await self._transport.aclose()


class ExchangeSession:
    """MLLP release 2 or HLLP through the sans-IO exchange of :mod:`mllp_trio.proto`.

    Release 2: the commit ACK of our message, then the application ACK, which
    gets our commit ACK. A commit NAK or an HLLP NAK block resends the
    message (counted in :attr:`resends`) up to the retry count, then the
    outcome is :data:`NAK`. A frame the exchange rejects is answered as the
    rules require and the outcome is :data:`BAD_FRAMING`.
    """

    __slots__ = ("_buffer", "_exchange", "_transport", "_view", "resends")

    def __init__(self, transport: Transport, framing: FramingConfig, *, retries: int) -> None:
        self._transport = transport
        self._exchange = framing.new_exchange(retries=retries)
        self._buffer = bytearray(1 << 16)
        self._view = memoryview(self._buffer)
        self.resends = 0

    async def exchange(self, template: Template, control_id: bytes, expected: bytes | None) -> str:
        """Send ``template`` with ``control_id`` as MSH-10; judge the reply against ``expected``."""
        exchange = self._exchange
        try:
            await self._transport.send_all(exchange.send(Message(template.message(control_id))))
            committed = exchange.framing != "mllp2"
            outcome: str | None = None
            while True:
                event = exchange.next_event()
                if event is NEED_DATA:
                    received = await self._transport.receive_into(self._view)
                    exchange.receive_data(self._view[:received] if received else b"")
                elif isinstance(event, Message):
                    commit = exchange.commit()
                    if commit:
                        await self._transport.send_all(commit)
                    data = event.data
                    outcome = judge_ack(data, 0, len(data), expected)
                elif isinstance(event, Delivered):
                    committed = True
                elif isinstance(event, Resend):
                    self.resends += 1
                    await self._transport.send_all(event.data)
                elif isinstance(event, DeliveryFailure):
                    return NAK
                elif isinstance(event, Rejected):
                    if event.answer:
                        await self._transport.send_all(event.answer)
                    return BAD_FRAMING
                elif isinstance(event, EndOfStream):
                    return CONNECTION_LOST
                if outcome is not None and committed:
                    return outcome
        except RemoteProtocolError:
            return BAD_FRAMING

    async def aclose(self) -> None:
        """Close the connection."""
        self._view.release()
        await self._transport.aclose()


Session = MLLPSession | ExchangeSession


def new_session(transport: Transport, framing: FramingConfig, *, retries: int) -> Session:
    """The session for ``framing``: the lean reader for release 1, the exchange otherwise."""
    if framing.framing == "mllp":
        return MLLPSession(transport, max_message_size=framing.max_message_size)
    return ExchangeSession(transport, framing, retries=retries)

"""The handler contract: what the application receives, returns and raises.

The library user writes ``async def handle(message: InboundMessage) -> None |
bytes`` (:data:`Handler`), or registers several on a :class:`Router`.
Returning ``None`` accepts the message, bytes are sent verbatim as the
reply, and :class:`HL7Error` or :class:`HL7Reject` refuse it with a table
0357 code. The pipeline that turns this into acknowledgements is ``_pipeline``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

import attrs
import hl7

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._ack import AckCode, ErrorInfo
from mllp_trio._hl7._charsets import Charset, decode_text
from mllp_trio._hl7._config import message_type_pattern
from mllp_trio._hl7._msh import MSHInfo, normalise_segments
from mllp_trio._hl7._peer import PeerInfo
from mllp_trio._hl7._policy import RETRY_LATER_CODE

__all__ = [
    "HL7Error",
    "HL7Refusal",
    "HL7Reject",
    "Handler",
    "InboundMessage",
    "Router",
]


# --- Refusals a handler (or a rule) raises ---------------------------------------


class HL7Refusal(MLLPError):
    """Base of the exceptions that answer a message with an error acknowledgement.

    The ``text`` goes to the sender in the ERR segment (MSA-3 before v2.5);
    mllp_trio never logs it.

    Args:
        text: Free text for the sender; empty sends the code's standard text.
        code: HL7 table 0357 error code (ERR-3). The default, 207
            (application internal error), is the one the library reads as a
            passing failure that the sender should retry later.
        location: ``(segment id, sequence, field)`` of the faulty field, or ``None``.

    Raises:
        ValueError: ``code`` is not a table 0357 error code.
    """

    #: The original-mode acknowledgement code this refusal produces.
    ack_code: ClassVar[AckCode]

    def __init__(
        self,
        text: str = "",
        *,
        code: int = RETRY_LATER_CODE,
        location: tuple[str, int, int] | None = None,
    ) -> None:
        super().__init__(text)
        self.error = ErrorInfo(code=code, text=text, location=location)


class HL7Error(HL7Refusal):
    """Answer AE (CE in enhanced mode before acceptance): the content is in error.

    Example: ``raise HL7Error("unknown patient identifier", code=204)``.
    """

    ack_code = AckCode.AE


class HL7Reject(HL7Refusal):
    """Answer AR (CR in enhanced mode before acceptance): refused without processing.

    Example: ``raise HL7Reject("try again later", code=206)``.
    """

    ack_code = AckCode.AR


# --- The message handed to the application ------------------------------------------


@attrs.frozen(kw_only=True)
class InboundMessage:
    """One received HL7 message, as given to a handler.

    Decoding and full parsing happen on first access and are cached.

    Attributes:
        raw: The message bytes exactly as received. Not in the repr.
        header: The MSH fields read from the raw bytes.
        peer: Who sent it (address, TLS identity).
        charset: The character set the message is read in.
    """

    raw: bytes = attrs.field(repr=False)
    header: MSHInfo
    peer: PeerInfo
    charset: Charset
    _decoded: str | None = attrs.field(default=None, alias="text", repr=False)

    @functools.cached_property
    def text(self) -> str:
        """The message decoded per its charset, segments terminated by CR.

        Raises:
            CharsetError: The bytes are invalid in :attr:`charset` (only
                possible for a message not built by :func:`prepare_message`).
        """
        if self._decoded is not None:
            return self._decoded
        return decode_text(normalise_segments(self.raw), self.charset)

    @functools.cached_property
    def parsed(self) -> hl7.Message:
        """The message parsed by ``hl7.parse`` (slow: only when asked)."""
        return hl7.parse(self.text)

    @property
    def control_id(self) -> str:
        """MSH-10, unescaped."""
        return self.header.control_id

    @property
    def message_type(self) -> str:
        """``"CODE^EVENT"``, e.g. ``"ADT^A01"``."""
        return self.header.message_type

    @property
    def message_code(self) -> str:
        """MSH-9.1, e.g. ``"ADT"``."""
        return self.header.message_code

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, e.g. ``"A01"``."""
        return self.header.trigger_event


#: What the library user writes: ``None`` answers AA (CA), bytes are sent verbatim.
Handler = Callable[[InboundMessage], Awaitable[bytes | None]]
_H = TypeVar("_H", bound=Handler)


# --- Routing -------------------------------------------------------------------------


class Router:
    """Dispatch messages to handlers by MSH-9 message code and trigger event.

    The router is itself a handler::

        router = Router()

        @router.route("ADT^A01")
        async def admit(message: InboundMessage) -> None: ...

        @router.route("ORU^*")
        async def results(message: InboundMessage) -> None: ...

        @router.default
        async def other(message: InboundMessage) -> None: ...

    Lookup order: exact ``CODE^EVENT``, then ``CODE^*``, then ``*^EVENT``,
    then ``*``, then the default. Without a match the message gets AR 201
    when its code has routes for other events, else AR 200.
    """

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self._default: Handler | None = None

    def add(self, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for a pattern such as ``"ADT^A01"``, ``"ORU^*"`` or ``"ORU"``.

        Raises:
            ValueError: The pattern is invalid or already registered.
        """
        key = message_type_pattern(pattern)
        if key in self._routes:
            raise ValueError(f"a handler is already registered for {pattern!r}")
        self._routes[key] = handler

    def route(self, pattern: str) -> Callable[[_H], _H]:
        """Decorator form of :meth:`add`."""

        def register(handler: _H) -> _H:
            self.add(pattern, handler)
            return handler

        return register

    def default(self, handler: _H) -> _H:
        """Register (or decorate) the handler for messages no route matches."""
        self._default = handler
        return handler

    def resolve(self, message_code: str, trigger_event: str) -> Handler:
        """Return the handler for a message type.

        Raises:
            HL7Reject: Nothing matches (code 200 or 201).
        """
        code, event = message_code.upper(), trigger_event.upper()
        for key in ((code, event), (code, "*"), ("*", event), ("*", "*")):
            found = self._routes.get(key)
            if found is not None:
                return found
        if self._default is not None:
            return self._default
        if any(c == code for c, _ in self._routes):
            raise HL7Reject(
                f"event {trigger_event!r} is not supported for {message_code!r}",
                code=201,
                location=("MSH", 1, 9),
            )
        raise HL7Reject(
            f"message type {message_code!r} is not supported", code=200, location=("MSH", 1, 9)
        )

    async def __call__(self, message: InboundMessage) -> bytes | None:
        """Run the matching handler (raising :class:`HL7Reject` when none)."""
        return await self.resolve(message.message_code, message.trigger_event)(message)

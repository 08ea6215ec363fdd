"""The handler contract and the pipeline from one inbound HL7 message to its acknowledgements.

The library user writes ``async def handle(message: InboundMessage) -> None |
bytes`` (or registers several on a :class:`Router`). :func:`respond` runs one
message through every stage; the stages are public too, so that the server
can insert its own steps (duplicate check, commit to store) between them::

    header = read_msh(raw)                      # MSHError -> refuse_unreadable()
    if header.is_ack: incoming_ack(...)         # ACKs are never acknowledged
    check_rules(header, config)                 # HL7Refusal -> refuse()
    message = prepare_message(raw, header, ...) # HL7Refusal -> refuse()
    verdict = await run_handler(handler, message, config=config)
    outcome = acknowledge(message, verdict)

Acknowledgement modes: original mode (MSH-15 and MSH-16 empty) answers
AA/AE/AR on the connection. Enhanced mode (either valued) answers the accept
acknowledgement CA/CE/CR on the connection as MSH-15 asks and builds the
application acknowledgement AA/AE/AR as MSH-16 asks, returned in
:attr:`Outcome.application_ack` for the caller to deliver on a separate
connection. An empty MSH-15 or MSH-16 in enhanced mode, or a value outside
table 0155, is read as ``AL`` (always): sending an unwanted ACK is harmless,
withholding a wanted one stalls the sender.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Final, TypeVar

import attrs
import hl7

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._ack import AckCode, ErrorInfo, build_ack, new_control_id
from mllp_trio._hl7._charsets import Charset, CharsetError, codec_for, decode_text, resolve_charset
from mllp_trio._hl7._msh import MSHError, MSHInfo, read_msh
from mllp_trio._hl7._peer import PeerInfo

__all__ = [
    "Disposition",
    "HL7Config",
    "HL7Error",
    "HL7Refusal",
    "HL7Reject",
    "Handler",
    "InboundMessage",
    "Outcome",
    "Router",
    "Verdict",
    "acknowledge",
    "admit",
    "check_rules",
    "incoming_ack",
    "normalise_segments",
    "prepare_message",
    "refuse",
    "refuse_unreadable",
    "respond",
    "run_handler",
]

logger = logging.getLogger("mllp_trio.hl7")

_VERSION_2X: Final = re.compile(r"2\.\d+(\.\d+)*")


# --- Refusals a handler (or a rule) raises ---------------------------------------


class HL7Refusal(MLLPError):
    """Base of the exceptions that answer a message with an error acknowledgement.

    The ``text`` goes to the sender in the ERR segment (MSA-3 before v2.5);
    mllp_trio never logs it.

    Args:
        text: Free text for the sender; empty sends the code's standard text.
        code: HL7 table 0357 error code (ERR-3), e.g. 207.
        location: ``(segment id, sequence, field)`` of the faulty field, or ``None``.

    Raises:
        ValueError: ``code`` is not a table 0357 error code.
    """

    #: The original-mode acknowledgement code this refusal produces.
    ack_code: ClassVar[AckCode]

    def __init__(
        self, text: str = "", *, code: int = 207, location: tuple[str, int, int] | None = None
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


# --- Configuration ---------------------------------------------------------------


def _pattern(value: str) -> tuple[str, str]:
    # MSH-9.3 (the message structure) plays no part in routing: drop it.
    code, _, rest = value.strip().upper().partition("^")
    event = rest.partition("^")[0]
    if not code:
        raise ValueError(f"invalid message type pattern {value!r}")
    return code, event or "*"


def _patterns(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple("^".join(_pattern(v)) for v in items)


def _strings(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple(v.strip() for v in items)


def _valid_charset(_inst: object, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        try:
            codec_for(value)
        except CharsetError as exc:
            raise ValueError(f"{attr.name}: {exc}") from None


@attrs.frozen(kw_only=True)
class HL7Config:
    """What the HL7 layer accepts and how it reads messages.

    Attributes:
        message_types: MSH-9 patterns accepted, e.g. ``("ADT^A01", "ORU^*")``
            (``"ORU"`` means ``"ORU^*"``, ``"*"`` everything); ``None`` (the
            default) accepts all. Others get AR 200, or 201 when the message
            code is accepted with other events.
        processing_ids: MSH-11.1 values accepted, e.g. ``("P",)``; ``None``
            (default) accepts all. Others get AR 202.
        versions: MSH-12.1 values accepted, e.g. ``("2.3", "2.5.1")``;
            ``None`` (default) accepts any ``2.x``. Others get AR 203.
        default_charset: Character set of messages whose MSH-18 is blank.
            Default ``"UNICODE UTF-8"``: plain ASCII (the standard's default)
            decodes the same, today's senders that leave MSH-18 blank mostly
            send UTF-8, and a Latin-1 message then fails loudly (AE 102)
            instead of turning names into mojibake. Set ``"8859/1"`` for
            legacy feeds.
        charset_override: When set, MSH-18 is ignored and every message is
            read in this character set (for senders that mislabel it).
        strict_segment_terminators: When False (default), LF and CRLF between
            segments are accepted and normalised to CR in
            :attr:`InboundMessage.text`; when True such a message gets AE 100.
        log_exception_text: When False (default), a handler's unexpected
            exception is logged as its type and the line that raised it,
            since exception texts often quote patient data; True logs the
            full traceback with the text.
    """

    message_types: tuple[str, ...] | None = attrs.field(default=None, converter=_patterns)
    processing_ids: tuple[str, ...] | None = attrs.field(default=None, converter=_strings)
    versions: tuple[str, ...] | None = attrs.field(default=None, converter=_strings)
    default_charset: str = attrs.field(default="UNICODE UTF-8", validator=_valid_charset)
    charset_override: str | None = attrs.field(default=None, validator=_valid_charset)
    strict_segment_terminators: bool = False
    log_exception_text: bool = False


# --- The message handed to the application ------------------------------------------


def normalise_segments(raw: bytes) -> bytes:
    """Turn LF and CRLF segment terminators into CR (HL7's own).

    Safe on bytes in every supported charset: 0x0A and 0x0D never occur
    inside a multibyte character of UTF-8, GB 18030, Big5, EUC-KR or ISO 2022.
    """
    if 0x0A not in raw:  # the usual case, found at memchr speed
        return raw
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


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
        key = _pattern(pattern)
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


# --- Stages ----------------------------------------------------------------------


def check_rules(header: MSHInfo, config: HL7Config) -> None:
    """Check message type, processing id and version against the configuration.

    Raises:
        HL7Reject: With code 200/201 (MSH-9), 202 (MSH-11), 101/203 (MSH-12).
    """
    if config.message_types is not None:
        code, event = header.message_code.upper(), header.trigger_event.upper()
        pats = _split_patterns(config.message_types)
        if not any(pc in (code, "*") and pe in (event, "*") for pc, pe in pats):
            known = any(pc in (code, "*") for pc, _ in pats)
            raise HL7Reject(
                f"message type {header.message_type!r} is not accepted",
                code=201 if known else 200,
                location=("MSH", 1, 9),
            )
    if config.processing_ids is not None and header.processing_id not in config.processing_ids:
        raise HL7Reject(
            f"processing id {header.processing_id!r} is not accepted",
            code=202,
            location=("MSH", 1, 11),
        )
    version = header.version_id
    if not version:
        raise HL7Reject("MSH-12 (version id) is empty", code=101, location=("MSH", 1, 12))
    supported = _is_2x(version) if config.versions is None else version in config.versions
    if not supported:
        raise HL7Reject(f"version {version!r} is not accepted", code=203, location=("MSH", 1, 12))


@functools.lru_cache(maxsize=16)
def _split_patterns(patterns: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    # Split once per configuration, not once per message.
    return tuple(tuple(p.split("^")) for p in patterns)


@functools.lru_cache(maxsize=256)
def _is_2x(version: str) -> bool:
    return _VERSION_2X.fullmatch(version) is not None


def _charset(header: MSHInfo, config: HL7Config) -> Charset:
    msh18 = header.charset_raw
    # Long values (padding, repeated extensions) bypass the cache: keys stay small.
    resolve = _charset_of if len(msh18) <= 64 else _charset_of.__wrapped__
    return resolve(
        msh18, header.repetition_separator, config.default_charset, config.charset_override
    )


# Keyed by the raw bytes, so that the usual message (MSH-18 seen before)
# costs one lookup; errors are not cached and are raised anew each time.
@functools.lru_cache(maxsize=256)
def _charset_of(msh18: bytes, rep_sep: bytes, default: str, override: str | None) -> Charset:
    return resolve_charset(
        msh18.decode("latin-1"),
        repetition_separator=rep_sep.decode("latin-1"),
        default=default,
        override=override,
    )


def prepare_message(
    raw: bytes, header: MSHInfo, *, peer: PeerInfo, config: HL7Config
) -> InboundMessage:
    """Check segment terminators, decode the message, and wrap it for the handler.

    Raises:
        HL7Error: Strict mode and LF found (code 100), unknown or refused
            MSH-18 (103), bytes invalid in the charset (102).
    """
    if b"\n" in raw:
        if config.strict_segment_terminators:
            offset = raw.index(b"\n")
            raise HL7Error(
                f"segments must be terminated by CR alone; LF found at offset {offset}",
                code=100,
            )
        raw_text = normalise_segments(raw)
    else:
        raw_text = raw
    try:
        charset = _charset(header, config)
    except CharsetError as exc:
        raise HL7Error(str(exc), code=exc.code, location=("MSH", 1, 18)) from exc
    try:
        text = decode_text(raw_text, charset)
    except CharsetError as exc:
        raise HL7Error(str(exc), code=exc.code) from exc
    return InboundMessage(raw=raw, header=header, peer=peer, charset=charset, text=text)


class Disposition(enum.Enum):
    """How the application disposed of a message."""

    ACCEPT = "accept"
    """Processed: AA."""
    ERROR = "error"
    """Processing failed: AE."""
    REJECT = "reject"
    """Refused: AR."""


@attrs.frozen(kw_only=True)
class Verdict:
    """The result of running the handler.

    Attributes:
        disposition: Accept, error or reject.
        error: The ERR reason for error and reject.
        reply: Bytes the handler returned, to send verbatim instead of a
            built acknowledgement. Not in the repr.
    """

    disposition: Disposition
    error: ErrorInfo | None = None
    reply: bytes | None = attrs.field(default=None, repr=False)


_INTERNAL_ERROR: Final = ErrorInfo(code=207)
# Verdicts are frozen: the common ones are shared.
_ACCEPTED: Final = Verdict(disposition=Disposition.ACCEPT)
_INTERNAL_FAILURE: Final = Verdict(disposition=Disposition.ERROR, error=_INTERNAL_ERROR)


def _log_exception(exc: Exception, control_id: str, config: HL7Config) -> None:
    if config.log_exception_text:
        logger.error("handler failed for control id %r", control_id, exc_info=exc)
        return
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    logger.error(
        "handler raised %s.%s at %s for control id %r (text not logged: patient data)",
        type(exc).__module__,
        type(exc).__qualname__,
        where,
        control_id,
    )


async def run_handler(handler: Handler, message: InboundMessage, *, config: HL7Config) -> Verdict:
    """Call the handler and turn its result or exception into a :class:`Verdict`.

    ``None`` is acceptance; bytes are a verbatim reply; :class:`HL7Error` and
    :class:`HL7Reject` choose AE or AR with their code; any other exception
    is AE 207, logged without its text unless
    :attr:`HL7Config.log_exception_text`. Cancellation propagates.
    """
    try:
        result = await handler(message)
    except HL7Refusal as exc:
        logger.info(
            "handler answered %s %d for control id %r",
            exc.ack_code,
            exc.error.code,
            message.control_id,
        )
        kind = Disposition.ERROR if exc.ack_code == AckCode.AE else Disposition.REJECT
        return Verdict(disposition=kind, error=exc.error)
    except Exception as exc:
        _log_exception(exc, message.control_id, config)
        return _INTERNAL_FAILURE
    if result is None:
        return _ACCEPTED
    if isinstance(result, bytes | bytearray | memoryview):
        return Verdict(disposition=Disposition.ACCEPT, reply=bytes(result))
    logger.error(
        "handler returned %s for control id %r; expected None or bytes",
        type(result).__qualname__,
        message.control_id,
    )
    return _INTERNAL_FAILURE


# --- Outcomes -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Outcome:
    """What to do after one inbound message.

    Attributes:
        reply: Bytes to send back on this connection, or ``None``.
        accepted: Whether the message was taken (AA, or CA in enhanced mode);
            drives the MLLP release 2 commit ACK versus NAK.
        code: MSA-1 of the reply (in enhanced mode the accept code, even when
            MSH-15 suppresses sending it); empty when there is nothing to answer.
        control_id: The inbound MSH-10, when readable.
        application_ack: Enhanced mode: the application acknowledgement to
            deliver on a separate connection, when MSH-16 asks for one.
        application_code: Enhanced mode: its code (AA/AE/AR), even when
            MSH-16 suppresses sending it.
        error: The reason of a negative code.
        header: The inbound MSH, when readable.
        message: The inbound message, when it got as far as decoding.
    """

    reply: bytes | None = attrs.field(repr=False)
    accepted: bool
    code: str
    control_id: str | None
    application_ack: bytes | None = attrs.field(default=None, repr=False)
    application_code: str | None = None
    error: ErrorInfo | None = None
    header: MSHInfo | None = None
    message: InboundMessage | None = None


def _wanted(condition: str, success: bool) -> bool:
    # Table 0155. Empty or unknown reads as AL (see module docstring).
    if condition == "NE":
        return False
    if condition == "ER":
        return not success
    if condition == "SU":
        return success
    return True


def _ack_codec(header: MSHInfo, config: HL7Config) -> str:
    try:
        return _charset(header, config).codec
    except CharsetError:
        return "ascii"


def _refusal_outcome(
    header: MSHInfo,
    code: AckCode,
    error: ErrorInfo,
    *,
    config: HL7Config,
    now: datetime | None,
    new_id: Callable[[], str],
) -> Outcome:
    if header.enhanced_mode:
        code = AckCode.CR if code == AckCode.AR else AckCode.CE
        send = _wanted(header.accept_ack_type, success=False)
    else:
        send = True
    logger.info("answering %s %d to control id %r", code, error.code, header.control_id)
    reply = None
    if send:
        reply = build_ack(
            header,
            code,
            error=error,
            codec=_ack_codec(header, config),
            now=now,
            control_id=new_id(),
        )
    return Outcome(
        reply=reply,
        accepted=False,
        code=code,
        control_id=header.control_id,
        error=error,
        header=header,
    )


def refuse(
    header: MSHInfo,
    refusal: HL7Refusal,
    *,
    config: HL7Config,
    now: datetime | None = None,
    new_id: Callable[[], str] = new_control_id,
) -> Outcome:
    """Answer a message refused before the handler (rules, charset, terminators).

    Original mode: AE or AR. Enhanced mode: CE or CR when MSH-15 asks for
    it, and no application acknowledgement (the message was never accepted).

    Args:
        header: The inbound MSH.
        refusal: The error raised by :func:`check_rules` or :func:`prepare_message`.
        config: The configuration (for the ACK's charset).
        now: MSH-7 of the ACK, for tests.
        new_id: Source of the ACK's MSH-10, for tests.
    """
    return _refusal_outcome(
        header, refusal.ack_code, refusal.error, config=config, now=now, new_id=new_id
    )


def refuse_unreadable(
    exc: MSHError,
    *,
    size: int,
    config: HL7Config,
    now: datetime | None = None,
    new_id: Callable[[], str] = new_control_id,
) -> Outcome:
    """Answer a message whose MSH could not be read.

    With MSH-10 readable: AR (CR in enhanced mode) with the error's table
    0357 code. Without: no reply at all, ``accepted=False``, and a warning
    log line with the size.

    Args:
        exc: The error from :func:`read_msh`.
        size: The message's size in bytes, for the log.
        config: The configuration (for the ACK's charset).
        now: MSH-7 of the ACK, for tests.
        new_id: Source of the ACK's MSH-10, for tests.
    """
    error = ErrorInfo(code=exc.code, text=str(exc))
    if exc.header is None:
        logger.warning("dropping a %d-byte message without a readable MSH: %s", size, exc)
        return Outcome(reply=None, accepted=False, code="", control_id=None, error=error)
    return _refusal_outcome(exc.header, AckCode.AR, error, config=config, now=now, new_id=new_id)


def incoming_ack(raw: bytes, header: MSHInfo, *, peer: PeerInfo, config: HL7Config) -> Outcome:
    """The outcome for a received ACK message: never acknowledged, never given to the handler.

    ``accepted`` is True (an MLLP release 2 commit ACK still answers it) and
    :attr:`Outcome.message` carries it, undecoded, for whoever awaits
    application acknowledgements; ``message`` is ``None`` if its charset is unknown.
    """
    try:
        charset = _charset(header, config)
    except CharsetError:
        message = None
    else:
        message = InboundMessage(raw=raw, header=header, peer=peer, charset=charset)
    return Outcome(
        reply=None,
        accepted=True,
        code="",
        control_id=header.control_id,
        header=header,
        message=message,
    )


_NEGATIVE_CODES: Final = frozenset({"AE", "AR", "CE", "CR"})
# Enum members as module constants: reading them off the class costs a
# metaclass lookup each time, on the hot path.
_ACCEPT: Final = Disposition.ACCEPT
_ERROR: Final = Disposition.ERROR
_AA: Final = AckCode.AA
_AE: Final = AckCode.AE
_AR: Final = AckCode.AR
_CA: Final = AckCode.CA
_MSA_CODE: Final = re.compile(rb"(?:^|[\r\n])MSA[^A-Za-z0-9\r\n]([A-Z]{2})(?![A-Za-z0-9])")


def _peek_code(reply: bytes) -> str:
    match = _MSA_CODE.search(reply)
    return match.group(1).decode("ascii") if match else ""


def acknowledge(
    message: InboundMessage,
    verdict: Verdict,
    *,
    now: datetime | None = None,
    new_id: Callable[[], str] = new_control_id,
) -> Outcome:
    """Build the acknowledgement(s) of a message the handler has run on.

    Original mode: the reply is AA, AE or AR (or the handler's bytes).
    Enhanced mode: the reply is CA as MSH-15 asks, and the application
    acknowledgement AA/AE/AR (or the handler's bytes) as MSH-16 asks.
    Handler bytes count by their MSA-1 (read with a quick scan; empty when
    absent): accepted unless AE, AR, CE or CR.

    Args:
        message: The inbound message.
        verdict: The handler's result from :func:`run_handler`.
        now: MSH-7 of the ACKs, for tests.
        new_id: Source of the ACKs' MSH-10, for tests.
    """
    header = message.header
    codec = message.charset.codec
    error = verdict.error
    app_ack = verdict.reply
    if app_ack is not None:
        app_code: str = _peek_code(app_ack)
    else:
        disposition = verdict.disposition
        if disposition is _ACCEPT:
            app_code = _AA
        elif disposition is _ERROR:
            app_code = _AE
        else:
            app_code = _AR
    success = app_code not in _NEGATIVE_CODES
    if not header.enhanced_mode:
        if app_ack is None:
            app_ack = build_ack(
                header, app_code, error=error, codec=codec, now=now, control_id=new_id()
            )
        return Outcome(
            reply=app_ack,
            accepted=success,
            code=app_code,
            control_id=header.control_id,
            error=error,
            header=header,
            message=message,
        )
    reply = None
    if _wanted(header.accept_ack_type, success=True):
        reply = build_ack(header, _CA, codec=codec, now=now, control_id=new_id())
    if not _wanted(header.application_ack_type, success=success):
        app_ack = None
    elif app_ack is None:
        app_ack = build_ack(
            header, app_code, error=error, codec=codec, now=now, control_id=new_id()
        )
    return Outcome(
        reply=reply,
        accepted=True,
        code=_CA,
        control_id=header.control_id,
        application_ack=app_ack,
        application_code=app_code,
        error=error,
        header=header,
        message=message,
    )


async def respond(
    raw: bytes,
    *,
    peer: PeerInfo,
    handler: Handler,
    config: HL7Config,
    now: datetime | None = None,
    new_id: Callable[[], str] = new_control_id,
) -> Outcome:
    """Run one inbound message through every stage and return what to answer.

    Read MSH, skip ACKs, check the rules, decode, call the handler, build
    the acknowledgement(s). Never raises for anything the message contains.

    Args:
        raw: The message bytes from one frame.
        peer: Who sent it.
        handler: The application's handler (or a :class:`Router`).
        config: What to accept and how to read it.
        now: MSH-7 of the ACKs, for tests; the current time when ``None``.
        new_id: Source of the ACKs' MSH-10, for tests.
    """
    admitted = admit(raw, peer=peer, config=config, now=now, new_id=new_id)
    if isinstance(admitted, Outcome):
        return admitted
    verdict = await run_handler(handler, admitted, config=config)
    return acknowledge(admitted, verdict, now=now, new_id=new_id)


def admit(
    raw: bytes,
    *,
    peer: PeerInfo,
    config: HL7Config,
    now: datetime | None = None,
    new_id: Callable[[], str] = new_control_id,
) -> InboundMessage | Outcome:
    """The stages before the handler: read MSH, skip ACKs, check the rules, decode.

    Returns the message to hand to the handler, or the :class:`Outcome`
    that already answers it (unreadable, an ACK, refused by the rules).
    """
    try:
        header = read_msh(raw)
    except MSHError as exc:
        return refuse_unreadable(exc, size=len(raw), config=config, now=now, new_id=new_id)
    if header.is_ack:
        return incoming_ack(raw, header, peer=peer, config=config)
    try:
        check_rules(header, config)
        return prepare_message(raw, header, peer=peer, config=config)
    except HL7Refusal as exc:
        return refuse(header, exc, config=config, now=now, new_id=new_id)

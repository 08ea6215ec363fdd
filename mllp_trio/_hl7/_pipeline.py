"""The pipeline from one inbound HL7 message to its acknowledgements.

:func:`respond` runs one message through every stage; the stages are public
too, so that the server can insert its own steps (duplicate check, commit to
store) between them::

    header = read_msh(raw)                      # MSHError -> refuse_unreadable()
    if header.is_ack: incoming_ack(...)         # ACKs are never acknowledged
    check_rules(header, config)                 # HL7Refusal -> refuse()
    message = prepare_message(raw, header, ...) # HL7Refusal -> refuse()
    verdict = await run_handler(handler, message, config=config)
    outcome = acknowledge(message, verdict)

(:func:`admit` is the first four lines.) Acknowledgement modes: original
mode (MSH-15 and MSH-16 empty) answers AA/AE/AR on the connection. Enhanced
mode (either valued) answers the accept acknowledgement CA/CE/CR on the
connection as MSH-15 asks and builds the application acknowledgement
AA/AE/AR as MSH-16 asks, returned in :attr:`Outcome.application_ack` for the
caller to deliver on a separate connection. An empty MSH-15 or MSH-16 in
enhanced mode, or a value outside table 0155, is read as ``AL`` (always):
sending an unwanted ACK is harmless, withholding a wanted one stalls the
sender.
"""

from __future__ import annotations

import enum
import logging
import re
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Final

import attrs

from mllp_trio._hl7._ack import AckCode, ErrorInfo, build_ack, framing_safe, new_control_id
from mllp_trio._hl7._charsets import Charset, CharsetError, decode_text, message_charset
from mllp_trio._hl7._config import HL7Config
from mllp_trio._hl7._handler import Handler, HL7Error, HL7Refusal, HL7Reject, InboundMessage
from mllp_trio._hl7._msh import MSHError, MSHInfo, normalise_segments, read_msh
from mllp_trio._hl7._peer import PeerInfo
from mllp_trio._hl7._policy import NEGATIVE_CODES, RETRY_LATER_CODE, is_transient
from mllp_trio._hl7._reply import reply_code

__all__ = [
    "Disposition",
    "Outcome",
    "Verdict",
    "acknowledge",
    "admit",
    "check_rules",
    "incoming_ack",
    "prepare_message",
    "refuse",
    "refuse_unreadable",
    "respond",
    "run_handler",
]

logger = logging.getLogger("mllp_trio.hl7")

_VERSION_2X: Final = re.compile(r"2\.\d+(\.\d+)*")
# The published 2.x versions, which the pattern above accepts: the usual
# MSH-12 is found here without running it.
_KNOWN_2X: Final = frozenset(
    {"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"}
    | {"2.8.1", "2.8.2", "2.9", "2.9.1"}
)


# --- Stages ----------------------------------------------------------------------


def check_rules(header: MSHInfo, config: HL7Config) -> None:
    """Check message type, processing id and version against the configuration.

    Raises:
        HL7Reject: With code 200/201 (MSH-9), 202 (MSH-11), 101/203 (MSH-12).
    """
    if config.message_types is not None:
        code, event = header.message_code.upper(), header.trigger_event.upper()
        # The configuration keeps every pattern as "CODE^EVENT".
        patterns = [p.split("^") for p in config.message_types]
        if not any(pc in (code, "*") and pe in (event, "*") for pc, pe in patterns):
            known = any(pc in (code, "*") for pc, _ in patterns)
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
    if config.versions is None:
        supported = version in _KNOWN_2X or _VERSION_2X.fullmatch(version) is not None
    else:
        supported = version in config.versions
    if not supported:
        raise HL7Reject(f"version {version!r} is not accepted", code=203, location=("MSH", 1, 12))


def _charset(header: MSHInfo, config: HL7Config) -> Charset:
    return message_charset(header, default=config.default_charset, override=config.charset_override)


def prepare_message(
    raw: bytes, header: MSHInfo, *, peer: PeerInfo, config: HL7Config
) -> InboundMessage:
    """Check segment terminators, decode the message, and wrap it for the handler.

    Raises:
        HL7Error: Strict mode and LF found (code 100), unknown or refused
            MSH-18 (103), bytes invalid in the charset (102).
    """
    if 0x0A in raw:  # LF; an int needle is memchr, a bytes one costs a TypeError first
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
    return _inbound(raw, header, peer, charset, text)


_new_object = object.__new__
# The records below are frozen attrs classes: their generated __init__ sets
# each slot through object.__setattr__ (a type check and a lookup per field).
# The pipeline builds two per message, so it sets the slots directly, through
# their descriptors, as trusted_message does for frames. The profile of the
# listener put 2.4 us per message in these constructors (issue 14).
_set_raw, _set_header, _set_peer, _set_charset, _set_decoded = (
    InboundMessage.__dict__[name].__set__
    for name in ("raw", "header", "peer", "charset", "_decoded")
)


def _inbound(
    raw: bytes, header: MSHInfo, peer: PeerInfo, charset: Charset, text: str | None
) -> InboundMessage:
    # InboundMessage(raw=..., header=..., peer=..., charset=..., text=...), field for field.
    message: InboundMessage = _new_object(InboundMessage)
    _set_raw(message, raw)
    _set_header(message, header)
    _set_peer(message, peer)
    _set_charset(message, charset)
    _set_decoded(message, text)
    return message


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

    @property
    def transient(self) -> bool:
        """Whether the handler failed for a passing reason: run it again later.

        True for an error or reject with table 0357 code 207 (a plain
        exception in the handler, or ``HL7Error()`` without a code); every
        other answer is final.
        """
        return self.disposition is not Disposition.ACCEPT and is_transient(self.error)


_INTERNAL_ERROR: Final = ErrorInfo(code=RETRY_LATER_CODE)
# Verdicts are frozen: the common ones are shared.
_ACCEPTED: Final = Verdict(disposition=Disposition.ACCEPT)
# Enum members read per message, as module constants: on Python 3.11 reading
# a member through its class costs more than a property call.
_DISPOSITION_ACCEPT: Final = Disposition.ACCEPT
_AA: Final = AckCode.AA
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

    ``None`` is acceptance; bytes are a verbatim reply (AE 207 instead when
    they hold a framing byte, 0x0B or 0x1C); :class:`HL7Error` and
    :class:`HL7Reject` choose AE or AR with their code; any other exception
    is AE 207, logged without its text unless
    :attr:`HL7Config.log_exception_text`. Cancellation propagates.
    """
    try:
        result = await handler(message)
    except Exception as exc:
        return handler_failed(exc, message, config)
    return _ACCEPTED if result is None else handler_returned(result, message)


def handler_failed(exc: Exception, message: InboundMessage, config: HL7Config) -> Verdict:
    """The :class:`Verdict` of a handler that raised ``exc`` (see :func:`run_handler`)."""
    if isinstance(exc, HL7Refusal):
        logger.info(
            "handler answered %s %d for control id %r",
            exc.ack_code,
            exc.error.code,
            message.control_id,
        )
        kind = Disposition.ERROR if exc.ack_code == AckCode.AE else Disposition.REJECT
        return Verdict(disposition=kind, error=exc.error)
    _log_exception(exc, message.control_id, config)
    return _INTERNAL_FAILURE


def handler_returned(result: object, message: InboundMessage) -> Verdict:
    """The :class:`Verdict` of a handler that returned ``result`` (see :func:`run_handler`)."""
    if result is None:
        return _ACCEPTED
    if isinstance(result, bytes | bytearray | memoryview):
        reply = bytes(result)
        if not framing_safe(reply):
            # It could never be sent, and a journal would replay it to every resend.
            logger.error(
                "handler reply for control id %r holds a framing byte (0x0B or 0x1C); "
                "answering AE 207 instead",
                message.control_id,
            )
            return _INTERNAL_FAILURE
        return Verdict(disposition=Disposition.ACCEPT, reply=reply)
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

    @property
    def transient(self) -> bool:
        """Whether processing failed for a passing reason: the sender should resend it.

        True when the reason is table 0357 code 207 (the handler or the store
        failed); refusals by rule, charset or the handler's own code are
        final. In enhanced mode this holds for an AE 207 application
        acknowledgement even though the accept acknowledgement is CA.
        """
        return is_transient(self.error)


(
    _set_reply,
    _set_accepted,
    _set_code,
    _set_control_id,
    _set_application_ack,
    _set_application_code,
    _set_error,
    _set_outcome_header,
    _set_message,
) = (
    Outcome.__dict__[name].__set__
    for name in (
        "reply",
        "accepted",
        "code",
        "control_id",
        "application_ack",
        "application_code",
        "error",
        "header",
        "message",
    )
)


def _outcome(
    reply: bytes | None,
    accepted: bool,
    code: str,
    control_id: str | None,
    application_ack: bytes | None,
    application_code: str | None,
    error: ErrorInfo | None,
    header: MSHInfo | None,
    message: InboundMessage | None,
) -> Outcome:
    # Outcome(...) with every field given, without the frozen __init__ (see _inbound).
    outcome: Outcome = _new_object(Outcome)
    _set_reply(outcome, reply)
    _set_accepted(outcome, accepted)
    _set_code(outcome, code)
    _set_control_id(outcome, control_id)
    _set_application_ack(outcome, application_ack)
    _set_application_code(outcome, application_code)
    _set_error(outcome, error)
    _set_outcome_header(outcome, header)
    _set_message(outcome, message)
    return outcome


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
    0357 code. Without: no reply at all, ``accepted=False``, and an info
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
        # INFO: the listener warns once per connection and rate-limits (a flood
        # of such messages must not flood the log).
        logger.info("dropping a %d-byte message without a readable MSH: %s", size, exc)
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
        app_code: str = reply_code(app_ack)
    elif verdict.disposition is _DISPOSITION_ACCEPT:
        app_code = _AA
    elif verdict.disposition is Disposition.ERROR:
        app_code = AckCode.AE
    else:
        app_code = AckCode.AR
    success = app_code not in NEGATIVE_CODES
    if not header.enhanced_mode:
        if app_ack is None:
            app_ack = build_ack(
                header,
                app_code,
                error=error,
                codec=codec,
                now=now,
                # build_ack draws our own ids itself, as bytes (one call less).
                control_id=None if new_id is new_control_id else new_id(),
            )
        return _outcome(
            app_ack, success, app_code, header.control_id, None, None, error, header, message
        )
    reply = None
    accept_code = AckCode.CA  # taken: the application's answer goes in application_ack
    if _wanted(header.accept_ack_type, success=True):
        reply = build_ack(header, accept_code, codec=codec, now=now, control_id=new_id())
    if not _wanted(header.application_ack_type, success=success):
        app_ack = None
    elif app_ack is None:
        app_ack = build_ack(
            header, app_code, error=error, codec=codec, now=now, control_id=new_id()
        )
    return _outcome(
        reply, True, accept_code, header.control_id, app_ack, app_code, error, header, message
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

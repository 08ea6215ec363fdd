"""What the HL7 layer accepts and how it reads messages: :class:`HL7Config`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from mllp_trio._hl7._charsets import CharsetError, codec_for

__all__ = ["HL7Config", "message_type_pattern"]


def message_type_pattern(value: str) -> tuple[str, str]:
    """Read an MSH-9 pattern such as ``"ADT^A01"``, ``"ORU^*"`` or ``"ORU"``.

    Args:
        value: The pattern; case and MSH-9.3 (the message structure, which
            plays no part in routing) are ignored.

    Returns:
        ``(code, event)`` in upper case, ``"*"`` for a wildcard or a missing event.

    Raises:
        ValueError: The pattern has no message code.
    """
    code, _, rest = value.strip().upper().partition("^")
    event = rest.partition("^")[0]
    if not code:
        raise ValueError(f"invalid message type pattern {value!r}")
    return code, event or "*"


def _patterns(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple("^".join(message_type_pattern(v)) for v in items)


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

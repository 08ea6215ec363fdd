"""Service logs: one content-free line per message, and JSON lines for log shippers.

Content-free: the per-message line carries the peer, the TLS identity, the
message type, the control id (unless turned off), the ACK code and the
latency; never a byte of the message body. The header values a sender
chooses are cut short and stripped of control characters, so that a
sender can neither forge log lines nor smuggle a body into them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final

from mllp_trio._hl7 import Outcome, PeerInfo

__all__ = ["HideControlIds", "JSONFormatter", "MessageLog", "configure_logging"]

#: The per-message lines' logger: filter or route it on its own.
MESSAGE_LOGGER: Final = "mllp_trio.messages"

#: Fields of a JSON line, always present: time, level, logger, message.
#: Event fields (``peer``, ``control_id``...) are added at the top level.
_RESERVED: Final = frozenset({"time", "level", "logger", "message"})
_MAX_FIELD: Final = 64
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def clean(value: str, limit: int = _MAX_FIELD) -> str:
    """A sender-chosen header value made safe for one log line."""
    if len(value) > limit:
        value = value[:limit] + "..."
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else "?" for c in value)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, event fields.

    ``time`` is UTC in RFC 3339 with milliseconds. Event fields come from
    the ``fields`` dict passed as ``extra={"fields": {...}}``. An exception
    adds ``exc_type`` and ``traceback``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a JSON line (without the newline)."""
        stamp = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in _RESERVED:
                    data[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            data["exc_type"] = record.exc_info[0].__name__
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


_CONTROL_ID: Final = re.compile(r"control id (%[-#0 +]*\d*(?:\.\d+)?[a-z])")
_PLACEHOLDER: Final = re.compile(r"%.")


class HideControlIds(logging.Filter):
    """Replace the control id in every record that names one (``control id %r``).

    The library's messages that carry MSH-10 all say ``control id %r``;
    with ``--log-no-control-ids`` that argument becomes ``<hidden>``, so that
    the per-message line is not the only one to leave it out.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact, then let the record through."""
        msg = record.msg
        if isinstance(msg, str) and isinstance(record.args, tuple) and "control id %" in msg:
            args = list(record.args)
            for match in _CONTROL_ID.finditer(msg):
                before = _PLACEHOLDER.findall(msg[: match.start(1)])
                index = sum(1 for p in before if p != "%%")
                if index < len(args):
                    args[index] = "<hidden>"
            record.args = tuple(args)
        return True


def configure_logging(
    level: str = "INFO",
    fmt: str = "text",
    stream: IO[str] | None = None,
    *,
    control_ids: bool = True,
) -> None:
    """Send every log record to ``stream`` (default stderr) as text or JSON lines.

    Args:
        level: A level name (``DEBUG`` shows connection life cycle and framing).
        fmt: ``text`` or ``json``.
        stream: Where to write.
        control_ids: False hides MSH-10 in every line (:class:`HideControlIds`).

    Raises:
        ValueError: An unknown level or format.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; use text or json")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    if not control_ids:
        handler.addFilter(HideControlIds())
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    # The library's loggers follow the level, whatever set theirs before.
    logging.getLogger("mllp_trio").setLevel(numeric)


class MessageLog:
    """Writes the INFO line of each answered message (an observer of the listener).

    Args:
        listener: The listener's name in the line (its address).
        control_ids: Include MSH-10; off for sites where control ids count
            as identifying (``--log-no-control-ids``).
    """

    def __init__(self, listener: str, *, control_ids: bool = True) -> None:
        self.listener = listener
        self.control_ids = control_ids
        self._log = logging.getLogger(MESSAGE_LOGGER)

    def __call__(self, peer: PeerInfo, outcome: Outcome, latency: float) -> None:
        """Log one answered message, if INFO is on."""
        if not self._log.isEnabledFor(logging.INFO):
            return
        header = outcome.header
        fields: dict[str, Any] = {
            "event": "message",
            "listener": self.listener,
            "peer": peer.address,
            "identity": None if peer.identity is None else clean(peer.identity.subject, 256),
            "message_type": None if header is None else clean(header.message_type),
            "ack": outcome.code or None,
            "latency_ms": round(latency * 1000, 3),
        }
        if self.control_ids:
            cid = outcome.control_id
            fields["control_id"] = None if cid is None else clean(cid)
        text = " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items() if k != "event")
        self._log.info("message %s", text, extra={"fields": fields})

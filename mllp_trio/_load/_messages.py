"""The messages a load run sends: templates whose MSH-10 is replaced per send.

Every message sent gets a control id of its own (``<run tag><sequence>``,
at most 20 characters, the HL7 length of MSH-10 up to v2.6), so that a
listener with duplicate detection never answers a rerun from its journal
and every ACK can be matched to its message by MSA-2. The run tag is
random per run.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable
from typing import Final

import attrs

__all__ = ["ControlIds", "Template", "TemplateError", "generate_messages", "make_templates"]

_SB: Final = b"\x0b"
_TRAILER: Final = b"\x1c\r"
_TAG_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ"


class TemplateError(ValueError):
    """A message cannot be sent by the load generator (the text says why, never the content)."""


@attrs.frozen(kw_only=True)
class Template:
    """One message, split around its MSH-10 so that a new control id costs one join.

    Attributes:
        head: The bytes up to and including the separator before MSH-10.
        tail: The bytes after MSH-10, to the end of the message.
        framed_head: ``head`` with the MLLP start byte before it.
        framed_tail: ``tail`` with the MLLP end bytes after it.
    """

    head: bytes = attrs.field(repr=False)
    tail: bytes = attrs.field(repr=False)
    framed_head: bytes = attrs.field(repr=False)
    framed_tail: bytes = attrs.field(repr=False)

    @classmethod
    def from_message(cls, data: bytes) -> Template:
        """Split ``data`` (an HL7 message starting with MSH) around MSH-10.

        Raises:
            TemplateError: No MSH segment first, no MSH-10 field, or bytes
                that MLLP cannot frame.
        """
        if data[:3] != b"MSH" or len(data) < 8:
            raise TemplateError("the message does not start with an MSH segment")
        if b"\x1c\r" in data or b"\x0b" in data:
            raise TemplateError("the message contains MLLP framing bytes (0x0B or 0x1C 0x0D)")
        separator = data[3:4]
        segment_end = len(data)
        for terminator in (b"\r", b"\n"):
            found = data.find(terminator)
            if 0 <= found < segment_end:
                segment_end = found
        position = 3  # MSH-1 is the separator itself; MSH-10 follows the 9th
        for _ in range(8):
            position = data.find(separator, position + 1, segment_end)
            if position < 0:
                raise TemplateError("the MSH segment has no MSH-10 (message control id) field")
        start = position + 1
        end = data.find(separator, start, segment_end)
        end = segment_end if end < 0 else end
        head, tail = data[:start], data[end:]
        return cls(head=head, tail=tail, framed_head=_SB + head, framed_tail=tail + _TRAILER)

    def message(self, control_id: bytes) -> bytes:
        """The message with ``control_id`` as MSH-10."""
        return b"".join((self.head, control_id, self.tail))

    def frame(self, control_id: bytes) -> bytes:
        """The MLLP frame (``SB message EB CR``) with ``control_id`` as MSH-10."""
        return b"".join((self.framed_head, control_id, self.framed_tail))

    @property
    def size(self) -> int:
        """The message size in bytes, without MSH-10."""
        return len(self.head) + len(self.tail)


def make_templates(messages: Iterable[bytes]) -> list[Template]:
    """Templates of ``messages``, in order.

    Raises:
        TemplateError: A message cannot be used; the text says which (by position).
    """
    out = []
    for number, data in enumerate(messages, 1):
        try:
            out.append(Template.from_message(data))
        except TemplateError as exc:
            raise TemplateError(f"message {number}: {exc}") from None
    if not out:
        raise TemplateError("no messages")
    return out


class ControlIds:
    """Unique control ids for one run: a random tag and a sequence number."""

    __slots__ = ("_next", "tag")

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or "".join(secrets.choice(_TAG_ALPHABET) for _ in range(6))
        self._next = 0

    def next(self) -> bytes:
        """The next control id (ASCII, at most 20 characters)."""
        self._next += 1
        return f"{self.tag}{self._next}".encode("ascii")


_FAMILY = ("SMITH", "JONES", "GARCIA", "MULLER", "ROSSI", "DUBOIS", "NOVAK", "SATO", "KIM")
_GIVEN = ("ANNA", "JOHN", "MARIA", "PETER", "LUCIA", "OMAR", "YUKI", "ELENA", "NOAH")
_TESTS = (
    ("2345-7", "GLUCOSE", "mg/dL", "70-99"),
    ("718-7", "HEMOGLOBIN", "g/dL", "12.0-17.5"),
    ("2951-2", "SODIUM", "mmol/L", "135-145"),
)


def _message(rng: random.Random, message_type: str, size: int, index: int) -> bytes:
    event = message_type.split("^")[1] if "^" in message_type else ""
    segments = [
        f"MSH|^~\\&|MLLP_TRIO_BENCH|LOAD|RECEIVER|FACILITY|20240101{index % 24:02d}0000||"
        f"{message_type}|0|P|2.5",
    ]
    if event:
        segments.append(f"EVN|{event}|20240101120000")
    segments.append(
        f"PID|1||{100000 + index}^^^BENCH^MR||{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}||"
        f"19{rng.randint(30, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}|{rng.choice('MF')}"
    )
    if message_type.startswith("ADT"):
        segments.append(f"PV1|1|I|W{rng.randint(1, 9)}^{rng.randint(100, 499)}^1")
    else:
        segments.append(f"OBR|1|ORD{index:08d}||24323-8^METABOLIC PANEL^LN")
    length = sum(len(s) + 1 for s in segments)
    set_id = 1
    while length < size:
        code, name, unit, ref = rng.choice(_TESTS)
        obx = f"OBX|{set_id}|NM|{code}^{name}^LN||{rng.uniform(1, 150):.1f}|{unit}|{ref}|N|||F"
        room = size - length - 1
        if len(obx) > room:
            obx = f"NTE|{set_id}||" + "X" * max(0, room - 8 - len(str(set_id)))
        segments.append(obx)
        length += len(obx) + 1
        set_id += 1
    return ("\r".join(segments) + "\r").encode("ascii")


def generate_messages(
    message_type: str = "ADT^A01", size: int = 1024, variants: int = 16
) -> list[bytes]:
    """Synthetic messages (made-up patients) of about ``size`` bytes, deterministic.

    Args:
        message_type: MSH-9, such as ``ADT^A01`` or ``ORU^R01``.
        size: Target size in bytes (never below the few segments every message has).
        variants: How many different messages (sent in turn).
    """
    if variants < 1:
        raise ValueError(f"variants must be at least 1, got {variants}")
    rng = random.Random(20240101)
    return [_message(rng, message_type, size, index) for index in range(variants)]

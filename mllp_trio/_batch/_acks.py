"""Acknowledgement batches (HL7 v2 chapter 2): the answer file to a batch, and reading it back.

An acknowledgement batch answers a batch file with the per-message ACKs
(built by ``_hl7``'s :func:`~mllp_trio._hl7.build_ack` on the receiving side,
or received over MLLP by a sender) wrapped in FHS/BHS/BTS/FTS:

* each answering header swaps the parties of the header it answers (its
  sending application and facility are the original's receiving ones and
  the other way round, as MSH-3 to MSH-6 of an ACK), gets the time now and a
  new control id, and carries the original's control id in field 12
  (FHS-12 = FHS-11, BHS-12 = BHS-11): :func:`answer_header`;
* :class:`AckMode` says which ACKs go in: every one, the negative ones only,
  or none (``BTS|0``: all accepted).

Reading back, :func:`match_acks` pairs each ACK with the sent message its
MSA-2 names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime

import attrs

from mllp_trio._batch._segments import HeaderFields
from mllp_trio._batch._writer import BatchWriter
from mllp_trio._hl7 import acknowledged_id, hl7_timestamp, is_negative, new_control_id, reply_code

__all__ = ["AckBatchWriter", "AckMode", "MatchedAck", "answer_header", "match_acks"]


class AckMode(enum.StrEnum):
    """Which acknowledgements an acknowledgement batch holds."""

    ALL = "all"
    """One ACK per message, in the order of the messages."""
    ERRORS = "errors"
    """The negative ACKs only (AE, AR, CE, CR): a message without one was accepted."""
    NONE = "none"
    """No ACK: ``BTS|0`` says every message was accepted. A negative ACK is
    still written (an answer never hides an error), so this differs from
    :attr:`ERRORS` only in intent."""


def answer_header(
    original: HeaderFields | None,
    *,
    now: datetime | None = None,
    control_id: str | None = None,
) -> HeaderFields:
    """The FHS or BHS fields answering ``original``.

    Args:
        original: The header answered, or ``None`` when the batch had none
            (the answer then names no parties and refers to nothing).
        now: Field 7 (for tests); the current time when ``None``.
        control_id: Field 11 (for tests); a new id when ``None``.

    Returns:
        Parties swapped (3/4 <-> 5/6), field 7 now, field 11 new, field 12 =
        the original's field 11; separators and the name (field 9) kept.
    """
    own_id = control_id if control_id is not None else new_control_id()
    stamp = hl7_timestamp(now)
    if original is None:
        return HeaderFields(date_time=stamp, control_id=own_id)
    return HeaderFields(
        field_separator=original.field_separator,
        encoding_characters=original.encoding_characters,
        sending_application=original.receiving_application,
        sending_facility=original.receiving_facility,
        receiving_application=original.sending_application,
        receiving_facility=original.sending_facility,
        date_time=stamp,
        name=original.name,
        control_id=own_id,
        reference_control_id=original.control_id,
    )


class AckBatchWriter:
    """Writes the acknowledgement batch answering a batch file, part by part, as bytes.

    Call :meth:`file_header` and :meth:`batch_header` as the original's FHS
    and BHS go by (with ``None`` when it had none: a batch is always
    written, so that ``BTS`` can say how many ACKs it holds), :meth:`ack`
    for each message's acknowledgement, and :meth:`close` at the end.

    Args:
        mode: Which ACKs to write.
        now: The time of the answering headers (for tests).

    Attributes:
        acks: How many ACKs were given.
        negatives: How many of them were negative.
        written: How many were written.
    """

    def __init__(self, *, mode: AckMode = AckMode.ALL, now: datetime | None = None) -> None:
        self.mode = AckMode(mode)
        self._now = now
        self._writer = BatchWriter()
        self._batch_open = False
        self.acks = 0
        self.negatives = 0
        self.written = 0

    def file_header(self, original: HeaderFields | None) -> bytes:
        """The FHS answering the original's FHS (``None``: the original had none)."""
        return self._writer.file_header(answer_header(original, now=self._now))

    def batch_header(self, original: HeaderFields | None) -> bytes:
        """The BHS answering the original's BHS (closing the previous answering batch)."""
        self._batch_open = True
        return self._writer.batch_header(answer_header(original, now=self._now))

    def ack(self, raw: bytes) -> bytes:
        """One message's acknowledgement: its bytes if the mode keeps it, else ``b""``.

        Opens an answering batch first if none is open.
        """
        out = b"" if self._batch_open else self.batch_header(None)
        self.acks += 1
        negative = is_negative(reply_code(raw))
        self.negatives += negative
        if self.mode is AckMode.ALL or negative:
            self.written += 1
            out += self._writer.message(raw)
        return out

    def close(self) -> bytes:
        """The trailers (an empty answering batch first if none was written)."""
        out = b"" if self._batch_open else self.batch_header(None)
        return out + self._writer.close()


@attrs.frozen
class MatchedAck:
    """The answer to one sent message, found in an acknowledgement batch.

    Attributes:
        control_id: MSH-10 of the sent message, raw.
        code: MSA-1 of its ACK; ``""`` when the batch holds none for it,
            which in an errors-only or empty answer means accepted.
        ack: The ACK's bytes, or ``None``. Not shown in the repr.
    """

    control_id: bytes
    code: str
    ack: bytes | None = attrs.field(repr=False)

    @property
    def accepted(self) -> bool:
        """Whether the message was accepted (a positive ACK, or none in the answer)."""
        return not is_negative(self.code)


def match_acks(
    acks: Iterable[bytes], control_ids: Iterable[bytes]
) -> tuple[list[MatchedAck], list[bytes]]:
    """Pair the ACKs of an acknowledgement batch with the messages sent, by MSA-2.

    Args:
        acks: The ACKs read from the acknowledgement batch (e.g. the
            messages :func:`~mllp_trio._batch.read_messages` yields).
        control_ids: MSH-10 of each sent message, raw, in sending order.

    Returns:
        One :class:`MatchedAck` per sent message, in sending order; and the
        ACKs that answer none of them: first those without MSA or repeating
        an MSA-2 already seen, then those naming no sent message.
    """
    by_id: dict[bytes, bytes] = {}
    stray: list[bytes] = []
    for raw in acks:
        target = acknowledged_id(raw)
        if target is None or target in by_id:
            stray.append(raw)
        else:
            by_id[target] = raw
    matched: list[MatchedAck] = []
    for control_id in control_ids:
        ack = by_id.pop(control_id, None)
        matched.append(MatchedAck(control_id, reply_code(ack) if ack else "", ack))
    stray.extend(by_id.values())  # what is left answered nothing that was sent
    return matched, stray

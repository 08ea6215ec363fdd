"""The batch envelope segments: FHS/BHS headers, BTS/FTS trailers, and the batch error.

FHS and BHS share MSH's layout of fields 1 to 12 (SPEC section 4): 3 and 4
the sender, 5 and 6 the receiver, 7 the date and time, 9 the file or batch
name, 11 its control id, 12 the control id of the file or batch it answers.
The fields stay raw bytes, as read: a batch file has no charset of its own
(each message names its own in MSH-18), and an acknowledgement batch echoes
them byte for byte.
"""

from __future__ import annotations

from typing import Final

import attrs

from mllp_trio._errors import MLLPError

__all__ = ["BatchError", "HeaderFields", "parse_trailer_count", "split_trailer"]

#: The segment ids of the batch envelope, as bytes.
FHS: Final = b"FHS"
BHS: Final = b"BHS"
BTS: Final = b"BTS"
FTS: Final = b"FTS"
MSH: Final = b"MSH"


class BatchError(MLLPError):
    """A batch file breaks the batch rules: the line, the segment and the reason.

    Raised by the reader in strict mode; in lenient mode the same objects are
    collected as warnings and reading goes on.

    Attributes:
        line: The 1-based line (segment) number where the problem was found;
            LF, CR and CRLF each end one line.
        segment: The segment id concerned (``"BTS"``, ``"FHS"``, ``"MSH"``...).
        reason: What is wrong, without the line and segment.
    """

    def __init__(self, reason: str, *, line: int, segment: str) -> None:
        super().__init__(f"line {line}: {segment}: {reason}")
        self.line = line
        self.segment = segment
        self.reason = reason


def _bytes_field(value: bytes | str) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


@attrs.frozen(kw_only=True)
class HeaderFields:
    r"""The fields of an FHS or BHS segment, raw bytes (escape sequences intact).

    Strings given to the constructor are encoded as Latin-1. Field values
    must not contain the separators or line breaks (they are written as
    given).

    Attributes:
        field_separator: FHS-1 / BHS-1 (default ``|``).
        encoding_characters: FHS-2 / BHS-2 (default ``^~\&``).
        sending_application: FHS-3 / BHS-3.
        sending_facility: FHS-4 / BHS-4.
        receiving_application: FHS-5 / BHS-5.
        receiving_facility: FHS-6 / BHS-6.
        date_time: FHS-7 / BHS-7, creation date and time.
        security: FHS-8 / BHS-8.
        name: FHS-9 / BHS-9, the file or batch name, id or type.
        comment: FHS-10 / BHS-10.
        control_id: FHS-11 / BHS-11, the file or batch control id.
        reference_control_id: FHS-12 / BHS-12, the control id of the file or
            batch this one answers (in an acknowledgement batch).
        extra: Fields 13 and beyond, as read.
    """

    field_separator: bytes = attrs.field(default=b"|", converter=_bytes_field)
    encoding_characters: bytes = attrs.field(default=b"^~\\&", converter=_bytes_field)
    sending_application: bytes = attrs.field(default=b"", converter=_bytes_field)
    sending_facility: bytes = attrs.field(default=b"", converter=_bytes_field)
    receiving_application: bytes = attrs.field(default=b"", converter=_bytes_field)
    receiving_facility: bytes = attrs.field(default=b"", converter=_bytes_field)
    date_time: bytes = attrs.field(default=b"", converter=_bytes_field)
    security: bytes = attrs.field(default=b"", converter=_bytes_field)
    name: bytes = attrs.field(default=b"", converter=_bytes_field)
    comment: bytes = attrs.field(default=b"", converter=_bytes_field)
    control_id: bytes = attrs.field(default=b"", converter=_bytes_field)
    reference_control_id: bytes = attrs.field(default=b"", converter=_bytes_field)
    extra: tuple[bytes, ...] = ()

    @field_separator.validator
    def _check_separator(self, _attr: object, value: bytes) -> None:
        if len(value) != 1 or value.isalnum() or value in b"\r\n":
            raise ValueError("field_separator must be one punctuation byte")

    def fields(self) -> tuple[bytes, ...]:
        """Fields 2 to 12 and beyond, in order (field 1 is the separator itself)."""
        return (
            self.encoding_characters,
            self.sending_application,
            self.sending_facility,
            self.receiving_application,
            self.receiving_facility,
            self.date_time,
            self.security,
            self.name,
            self.comment,
            self.control_id,
            self.reference_control_id,
            *self.extra,
        )

    def to_segment(self, kind: bytes) -> bytes:
        """The segment (``kind`` is ``b"FHS"`` or ``b"BHS"``), without a terminator.

        Trailing empty fields are left out, as HL7 writers usually do.
        """
        values = list(self.fields())
        while len(values) > 1 and not values[-1]:
            values.pop()
        return kind + self.field_separator + self.field_separator.join(values)

    @classmethod
    def from_segment(cls, line: bytes) -> HeaderFields:
        """Read the fields of one FHS or BHS line (no terminator).

        The caller has checked that byte 3 is a punctuation byte.
        """
        fs = line[3:4]
        parts = line.split(fs)
        # parts[0] is the segment id, parts[1] field 2: field n is parts[n - 1].
        values = parts[1:] + [b""] * (12 - len(parts))
        return cls(
            field_separator=fs,
            encoding_characters=values[0] or b"^~\\&",
            sending_application=values[1],
            sending_facility=values[2],
            receiving_application=values[3],
            receiving_facility=values[4],
            date_time=values[5],
            security=values[6],
            name=values[7],
            comment=values[8],
            control_id=values[9],
            reference_control_id=values[10],
            extra=tuple(values[11:]),
        )

    def __repr__(self) -> str:
        # Applications and facilities can name people; show the identifiers only.
        return f"HeaderFields(name={self.name!r}, control_id={self.control_id!r})"


def split_trailer(line: bytes) -> tuple[bytes, ...]:
    """The fields of a BTS or FTS line; ``fields[n]`` is field n (``fields[0]`` the id)."""
    if len(line) <= 3:
        return (line,)
    return tuple(line.split(line[3:4]))


def parse_trailer_count(fields: tuple[bytes, ...]) -> int | None:
    """BTS-1 or FTS-1 as an int; ``None`` when empty.

    Raises:
        ValueError: The field is not a whole number.
    """
    raw = fields[1].strip() if len(fields) > 1 else b""
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError("is not a whole number")
    return int(raw)

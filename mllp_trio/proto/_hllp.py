"""The sans-IO HLLP connection: data and NAK blocks with block size and checksum."""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from mllp_trio._errors import LocalProtocolError, RemoteProtocolError
from mllp_trio.proto._events import (
    NEED_DATA,
    BadBlock,
    EndOfStream,
    HLLPNak,
    InvalidFrame,
    Message,
    NakReason,
    NeedData,
    trusted_message,
)
from mllp_trio.proto._framing import FrameReader, FramingStats, Oversize

__all__ = [
    "HLLP_MAX_DATA",
    "Checksum",
    "HLLPConnection",
    "oracle_checksum",
    "sum_checksum",
    "xor_checksum",
]

#: A checksum function: given the bytes from the start byte through the last
#: data byte, and the five block-size digits, return a value from 0 to 998.
Checksum = Callable[[bytes, bytes], int]

#: The block size field has five digits and counts 5 header bytes.
HLLP_MAX_DATA: Final = 99999 - 5
_NO_CHECKSUM: Final = b"999"
# t(1) vv(2) CR(1) before the data; ccccc(5) xxx(3) after it.
_HEADER: Final = 4
_TRAILER: Final = 8
# _FOLD[k] keeps the low 2**k bytes of an integer (up to 4 KiB; larger on demand).
_FOLD: Final = [(1 << (8 << k)) - 1 for k in range(13)]
# 256-byte pieces: their byte sum (at most 65 280) never wraps adler32's modulus.
_SUM_PIECE: Final = 256


def _xor(data: bytes | bytearray | memoryview) -> int:
    """XOR of every byte, at C speed.

    The bytes become integers (``int.from_bytes`` is the only per-byte pass),
    which are folded in halves: the two halves of the data first (two
    conversions, no big shift), then halves of the integer down to 8 bytes,
    then three small-integer steps. A Python loop over the bytes costs ten
    times more; each big-integer operation has a fixed cost, so the fewer
    the better.
    """
    n = len(data)
    if n > 8:
        k = (n - 1).bit_length() - 1  # 2**k < n <= 2**(k + 1)
        half = 1 << k
        value = int.from_bytes(data[:half], "little") ^ int.from_bytes(data[half:], "little")
        while k > 3:
            k -= 1
            mask = _FOLD[k] if k < len(_FOLD) else (1 << (8 << k)) - 1
            value = (value >> (8 << k)) ^ (value & mask)
    else:
        value = int.from_bytes(data, "little")
    value ^= value >> 32
    value ^= value >> 16
    value ^= value >> 8
    return value & 0xFF


def _sum(data: bytes | bytearray | memoryview) -> int:
    """Sum of every byte, at C speed: zlib's adler32 sums bytes (modulo 65 521).

    Summed in pieces small enough never to reach the modulus, so the result
    is exact; ``sum(data)`` makes one Python integer per byte.
    """
    with memoryview(data) as view:
        return sum(
            zlib.adler32(view[i : i + _SUM_PIECE], 0) & 0xFFFF
            for i in range(0, len(view), _SUM_PIECE)
        )


def xor_checksum(block: bytes, count: bytes) -> int:
    """The standard HLLP checksum (HL7 text, VistA): XOR of SB through the last data byte."""
    return _xor(block)


def oracle_checksum(block: bytes, count: bytes) -> int:
    """The Oracle/Sun adapter variant: XOR of SB through the last block-size digit."""
    return _xor(block) ^ _xor(count)


def sum_checksum(block: bytes, count: bytes) -> int:
    """The "BCC" sum variant: the byte sum of SB through the last data byte, modulo 256.

    Modulo 256 keeps the value in the 000-255 range the field documents.
    """
    return _sum(block) % 256


class HLLPConnection:
    """One end of an HLLP (hybrid lower layer protocol) connection, sans-IO.

    Same shape as :class:`MLLPConnection`. Received data blocks come out as
    :class:`Message`, NAK blocks as :class:`HLLPNak`, and blocks that fail
    verification as :class:`BadBlock`, whose ``nak`` is the NAK block to send
    back (reason ``C`` for a wrong byte count, ``X`` for a wrong checksum,
    ``B`` for data over the size limit, ``G`` for anything else). The
    checksum ``999`` means "not computed" and is accepted.

    Args:
        protocol_id: The two digits sent after the block type (``"23"``, the
            HL7 text; VistA uses ``"21"``). Any two digits are accepted on receive.
        checksum: The checksum function: :func:`xor_checksum` (default),
            :func:`oracle_checksum`, :func:`sum_checksum`, or your own.
        send_checksum: Compute the checksum on send; if False send ``999``.
        strict: As for :class:`MLLPConnection`.
        max_message_size: Largest data part accepted and sent (default and
            maximum 99 994 bytes, the most a five-digit block size can count).
        start_byte: Start-of-block byte (default ``0x0B``).
        end_byte: End-of-block byte (default ``0x1C``).
        trailer_byte: Byte after the end byte (default ``0x0D``).
        accept_missing_trailer: As for :class:`MLLPConnection`.
    """

    def __init__(
        self,
        *,
        protocol_id: str = "23",
        checksum: Checksum = xor_checksum,
        send_checksum: bool = True,
        strict: bool = False,
        max_message_size: int = HLLP_MAX_DATA,
        start_byte: int = 0x0B,
        end_byte: int = 0x1C,
        trailer_byte: int = 0x0D,
        accept_missing_trailer: bool = False,
    ) -> None:
        if len(protocol_id) != 2 or not protocol_id.isdigit() or not protocol_id.isascii():
            raise ValueError(f"protocol_id must be two digits, got {protocol_id!r}")
        if not 0 < max_message_size <= HLLP_MAX_DATA:
            raise ValueError(f"max_message_size must be between 1 and {HLLP_MAX_DATA}")
        self._reader = FrameReader(
            start_byte=start_byte,
            end_byte=end_byte,
            trailer_byte=trailer_byte,
            strict=strict,
            accept_missing_trailer=accept_missing_trailer,
            max_size=max_message_size + _HEADER + _TRAILER,
            oversize="skip",
            wrap=self._parse_block,
        )
        self._max_data = max_message_size
        self._vv = protocol_id.encode("ascii")
        self._sb = bytes((start_byte,))
        self._eb = bytes((end_byte,))
        self._cr = bytes((trailer_byte,))
        self._crc = trailer_byte
        self._end = bytes((end_byte, trailer_byte))
        self._checksum = checksum
        self._send_checksum = send_checksum
        # The built-in checksums are computed over the data alone and
        # corrected for the few bytes around it, so that no block is copied
        # just to be checksummed (the XOR of a concatenation is the XOR of
        # its parts, the sum the sum of its parts).
        builtins: dict[Checksum, str] = {
            xor_checksum: "xor",
            oracle_checksum: "oracle",
            sum_checksum: "sum",
        }
        self._builtin = builtins.get(checksum)
        self._heads = {kind: self._sb + kind + self._vv + self._cr for kind in (b"D", b"N")}
        self._head_xor = {kind: _xor(head) for kind, head in self._heads.items()}
        self._head_sum = {kind: sum(head) for kind, head in self._heads.items()}
        self._events: deque[Any] = deque()
        self._error: RemoteProtocolError | None = None

    @property
    def stats(self) -> FramingStats:
        """What the receiver has discarded so far."""
        return self._reader.stats

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as events."""
        return self._reader.buffered

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed."""
        self._check_usable()
        self._reader.feed(data)

    def next_event(
        self,
    ) -> Message | HLLPNak | BadBlock | InvalidFrame | EndOfStream | NeedData:
        """Return the next event, or :data:`NEED_DATA` if more bytes are needed.

        Raises:
            RemoteProtocolError: The peer broke the framing beyond repair
                (strict mode faults); the connection is unusable afterwards.
        """
        if self._events:
            return self._events.popleft()  # type: ignore[no-any-return]
        self._check_usable()
        try:
            items = self._reader.extract()
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        if not items:
            return EndOfStream() if self._reader.eof else NEED_DATA
        for item in items:
            if type(item) is Oversize:
                item = BadBlock(NakReason.TOO_LONG, f"block of {item.size} bytes is too long")
            elif type(item) is InvalidFrame:
                item = BadBlock(NakReason.OTHER, item.reason)
            self._events.append(item)
        return self._events.popleft()  # type: ignore[no-any-return]

    def _parse_block(self, body: bytes) -> Message | HLLPNak | BadBlock:
        # body: t vv CR data ccccc xxx (everything between SB and EB).
        size = len(body)
        if size < _HEADER + _TRAILER + 1:
            return BadBlock(NakReason.OTHER, f"block of {size} bytes is too short")
        kind = body[0]
        if (kind != 0x44 and kind != 0x4E) or body[3] != self._crc or not body[1:3].isdigit():
            return BadBlock(NakReason.OTHER, "malformed block header")
        trailer = body[-_TRAILER:]
        if not trailer.isdigit():  # bytes.isdigit: ASCII digits only
            return BadBlock(NakReason.OTHER, "block size or checksum field is not decimal")
        count = int(trailer[:5])
        if count != size - _HEADER - _TRAILER + 5:
            return BadBlock(
                NakReason.BYTE_COUNT,
                f"block size field says {count}, block has {size - _HEADER - _TRAILER + 5}",
            )
        check = trailer[5:]
        if check != _NO_CHECKSUM:
            expected = self._expected(body, trailer)
            if int(check) != expected:
                detail = f"checksum {int(check)}, computed {expected}"
                if kind == 0x4E:  # N: never NAK a NAK
                    return BadBlock(NakReason.CHECKSUM, f"NAK block with {detail}", answer=False)
                return BadBlock(NakReason.CHECKSUM, detail)
        if kind == 0x44:  # D
            return trusted_message(body[_HEADER:-_TRAILER])
        if size != _HEADER + _TRAILER + 1:
            return BadBlock(NakReason.OTHER, "NAK block must carry exactly one reason byte")
        try:
            return HLLPNak(chr(body[_HEADER]))
        except ValueError:
            return HLLPNak(NakReason.OTHER)

    def _expected(self, body: bytes, trailer: bytes) -> int:
        """The checksum of a received block (``body``: between SB and EB; its last 8 bytes)."""
        builtin = self._builtin
        if builtin == "xor":  # SB through the last data byte
            return _xor(body) ^ _xor(trailer) ^ self._sb[0]
        if builtin == "oracle":  # SB through the last block-size digit
            return _xor(body) ^ _xor(trailer[5:]) ^ self._sb[0]
        if builtin == "sum":
            return (_sum(body) - _sum(trailer) + self._sb[0]) % 256
        return self._checksum(self._sb + body[:-_TRAILER], trailer[:5])

    def send(self, event: Message | HLLPNak) -> bytes:
        """Return the bytes of a data block (for a :class:`Message`) or a NAK block.

        Raises:
            LocalProtocolError: The data cannot be framed (framing bytes
                inside) or is longer than ``max_message_size``.
        """
        self._check_usable()
        if type(event) is Message:
            data = event.data
            # Checked here, not by the reader, whose limit also counts the
            # block header and trailer: send what a receiver with the same
            # setting accepts, not 12 bytes more.
            if len(data) > self._max_data:
                raise LocalProtocolError(
                    f"message of {len(data)} bytes exceeds max_message_size ({self._max_data})"
                )
            if self._sb in data or self._eb in data:
                raise LocalProtocolError(
                    "message data contains the start-of-block or end-of-block byte; "
                    "it cannot be framed"
                )
            kind = b"D"
        elif type(event) is HLLPNak:
            data = event.reason.value.encode("ascii")
            kind = b"N"
        else:
            raise LocalProtocolError(f"HLLPConnection cannot send {type(event).__name__}")
        head = self._heads[kind]
        count = b"%05d" % (len(data) + 5)
        if not self._send_checksum:
            check = _NO_CHECKSUM
        else:
            builtin = self._builtin
            if builtin == "xor":
                value = self._head_xor[kind] ^ _xor(data)
            elif builtin == "oracle":
                value = self._head_xor[kind] ^ _xor(data) ^ _xor(count)
            elif builtin == "sum":
                value = (self._head_sum[kind] + _sum(data)) % 256
            else:
                value = self._checksum(head + data, count)
                if not 0 <= value <= 998:
                    raise LocalProtocolError(f"checksum function returned {value}, not 0-998")
            check = b"%03d" % value
        return b"".join((head, data, count, check, self._end))

    def _check_usable(self) -> None:
        if self._error is not None:
            raise LocalProtocolError(
                f"connection unusable after an earlier protocol error: {self._error}"
            )

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
    _new_object,
    _set_message_data,
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
# 256-byte pieces: their byte sum (at most 65 280) never wraps adler32's modulus.
_SUM_PIECE: Final = 256
_from_bytes: Final = int.from_bytes
# Data this long is converted in two halves (two slices cost less than the
# big shift they replace); shorter data in one piece.
_SPLIT: Final = 4096


def _fold_plan(size: int) -> tuple[tuple[int, int, int], ...]:
    """The steps that fold an integer of at most ``size`` bytes (a power of two) to 2 bytes.

    Each step ``(s1, s2, mask)`` halves twice: ``v ^= v >> s1`` leaves the
    XOR of the two halves in the low half (junk above it), ``v ^= v >> s2``
    does it again, and one mask then drops the junk: 5 big-integer
    operations per two halvings instead of 6.
    """
    steps = []
    while size > 2:
        size >>= 1
        if size > 2:
            steps.append((size << 3, size << 2, (1 << (size << 2)) - 1))
            size >>= 1
        else:  # one halving left: the second shift is past the end (v >> s2 == 0)
            steps.append((size << 3, 1 << 24, (1 << (size << 3)) - 1))
    return tuple(steps)


# _PLANS[k] folds an integer of at most 2**k bytes (the block size field
# caps blocks at 100 KB, 2**17 bytes; larger custom data is planned on demand).
_PLANS: Final = [_fold_plan(1 << k) for k in range(18)]
# _XOR16[v]: the XOR of the two bytes of v.
_XOR16: Final = bytes((i & 0xFF) ^ (i >> 8) for i in range(1 << 16))


def _xor(data: bytes | bytearray | memoryview) -> int:
    """XOR of every byte, at C speed.

    The bytes become an integer (``int.from_bytes`` is the only per-byte
    pass), folded in halves down to two bytes by a precomputed plan, then a
    table gives the last step. Each big-integer operation has a fixed cost
    that outweighs its per-digit work at message sizes, so the fold keeps
    their count down; a Python loop over the bytes costs ten times more.
    """
    n = len(data)
    if n > _SPLIT:
        k = (n - 1).bit_length() - 1  # 2**k < n <= 2**(k + 1)
        half = 1 << k
        value = _from_bytes(data[:half], "little") ^ _from_bytes(data[half:], "little")
    else:
        value = _from_bytes(data, "little")
        k = (n - 1).bit_length() if n > 2 else 0
    for s1, s2, mask in _PLANS[k] if k < len(_PLANS) else _fold_plan(1 << k):
        value ^= value >> s1
        value = (value ^ (value >> s2)) & mask
    return _XOR16[value]


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


def _reader_item(item: Any) -> Any:
    """A reader's refusal as the HLLP event that answers it; other items as they are."""
    if type(item) is Oversize:
        return BadBlock(NakReason.TOO_LONG, f"block of {item.size} bytes is too long")
    if type(item) is InvalidFrame:
        return BadBlock(NakReason.OTHER, item.reason)
    return item


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
        # _parse_block's fast path: every valid data block header (any two
        # digits) with the XOR of SB and itself; it verifies the standard
        # checksum itself, the other checksums go through _parse_careful.
        self._data_heads = {
            head: _xor(self._sb + head) for head in (b"D%02d" % vv + self._cr for vv in range(100))
        }
        self._fast_xor = self._builtin == "xor"
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
        events = self._events
        if events:  # the hot path: blocks already split out
            return events.popleft()  # type: ignore[no-any-return]
        self._check_usable()
        reader = self._reader
        # Only the reader's own refusals (InvalidFrame, Oversize) need
        # converting, and each of them moves one of these counters: when
        # neither moved, every item came from _parse_block as it is.
        refused = reader.rejected_frames + reader.dropped_partials
        try:
            items = reader.extract()
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        if not items:
            return EndOfStream() if reader.eof else NEED_DATA
        if reader.rejected_frames + reader.dropped_partials != refused:
            items = [_reader_item(item) for item in items]
        if len(items) > 1:
            events.extend(items)
            return events.popleft()  # type: ignore[no-any-return]
        return items[0]  # type: ignore[no-any-return]

    def _parse_block(self, body: bytes) -> Message | HLLPNak | BadBlock:
        """Turn a block's content (t vv CR data ccccc xxx, between SB and EB) into its event.

        The common case, a data block with the standard checksum (or 999)
        whose every check passes, is settled here with as few operations as
        possible; anything else, including every fault, is decided by
        :meth:`_parse_careful`, so the verdicts have one source.
        """
        size = len(body)
        trailer = body[-_TRAILER:]
        # The XOR of SB and a valid data block header (None: not one).
        head = self._data_heads.get(body[:_HEADER])
        if head is not None and size > _HEADER + _TRAILER and trailer.isdigit():
            # The checksum field, if the block size field is right (the
            # size counts 5 header bytes besides the data: size - 7).
            check = int(trailer) - (size - 7) * 1000
            data = body[_HEADER:-_TRAILER]
            if check == 999 or (0 <= check < 256 and self._fast_xor and _xor(data) ^ head == check):
                # trusted_message inline (a call costs as much as a check here).
                message: Message = _new_object(Message)
                _set_message_data(message, data)
                return message
        return self._parse_careful(body)

    def _parse_careful(self, body: bytes) -> Message | HLLPNak | BadBlock:
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
            message: Message = _new_object(Message)
            _set_message_data(message, body[_HEADER:-_TRAILER])
            return message
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
            # Integer needles: bytes.__contains__ finds one faster than a
            # one-byte bytes needle (measured 5x on 1 KB, Python 3.11).
            if self._sb[0] in data or self._eb[0] in data:
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
        size = len(data) + 5
        if not self._send_checksum:
            value = 999  # "not computed"
        else:
            builtin = self._builtin
            if builtin == "xor":
                value = self._head_xor[kind] ^ _xor(data)
            elif builtin == "oracle":
                value = self._head_xor[kind] ^ _xor(data) ^ _xor(b"%05d" % size)
            elif builtin == "sum":
                value = (self._head_sum[kind] + _sum(data)) % 256
            else:
                value = self._checksum(head + data, b"%05d" % size)
                if not 0 <= value <= 998:
                    raise LocalProtocolError(f"checksum function returned {value}, not 0-998")
        # Block size and checksum fields in one formatting operation.
        return b"".join((head, data, b"%05d%03d" % (size, value), self._end))

    def _check_usable(self) -> None:
        if self._error is not None:
            raise LocalProtocolError(
                f"connection unusable after an earlier protocol error: {self._error}"
            )

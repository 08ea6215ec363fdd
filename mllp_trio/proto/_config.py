"""Framing settings, and the factory of sans-IO connections they describe."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from mllp_trio.proto._exchange import Exchange
from mllp_trio.proto._framing import DEFAULT_MAX_MESSAGE_SIZE
from mllp_trio.proto._hllp import (
    HLLP_MAX_DATA,
    Checksum,
    HLLPConnection,
    oracle_checksum,
    sum_checksum,
    xor_checksum,
)
from mllp_trio.proto._mllp import MLLPConnection

__all__ = ["Framing", "FramingConfig", "HLLPChecksum"]

#: ``"mllp"`` (release 1), ``"mllp2"`` (release 2, commit ACK/NAK) or ``"hllp"``.
Framing = Literal["mllp", "mllp2", "hllp"]
_FRAMINGS = ("mllp", "mllp2", "hllp")

#: The HLLP checksum variant: ``"xor"`` (HL7 text, VistA), ``"oracle"`` (the
#: Oracle/Sun adapter: the XOR also covers the block-size digits) or ``"sum"``
#: (byte sum modulo 256).
HLLPChecksum = Literal["xor", "oracle", "sum"]
_CHECKSUMS: dict[str, Checksum] = {
    "xor": xor_checksum,
    "oracle": oracle_checksum,
    "sum": sum_checksum,
}


def _protocol_id(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    if len(value) != 2 or not value.isascii() or not value.isdigit():
        raise ValueError(f"{attr.name} must be two digits (23, or 21 for VistA), got {value!r}")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attr.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class FramingConfig:
    """How messages are framed on the wire.

    Attributes:
        framing: ``"mllp"`` (release 1, default), ``"mllp2"`` (release 2 with
            commit ACK/NAK) or ``"hllp"``.
        strict: Refuse bytes between frames and start bytes inside a frame
            (default False: discard and count them, as most engines do).
        max_message_size: Largest message accepted, in bytes (default 16 MiB;
            HLLP is capped at 99 994 by its five-digit block size). A larger
            frame closes the connection (MLLP) or is NAKed with ``B`` (HLLP).
        accept_missing_trailer: Accept frames ending with the end byte alone.
        hllp_protocol_id: The two digits HLLP blocks carry (default ``"23"``;
            VistA uses ``"21"``). Any two digits are accepted on receive.
        hllp_checksum: The HLLP checksum variant (see :data:`HLLPChecksum`;
            default ``"xor"``). Blocks with another variant's checksum are
            NAKed with ``X``; the checksum ``999`` is always accepted.
        hllp_send_checksum: Compute the checksum of the blocks we send
            (default True); False sends ``999``, "not computed".
    """

    framing: Framing = attrs.field(default="mllp", validator=attrs.validators.in_(_FRAMINGS))
    strict: bool = False
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive)
    accept_missing_trailer: bool = False
    hllp_protocol_id: str = attrs.field(default="23", validator=_protocol_id)
    hllp_checksum: HLLPChecksum = attrs.field(
        default="xor", validator=attrs.validators.in_(tuple(_CHECKSUMS))
    )
    hllp_send_checksum: bool = True

    def new_connection(self) -> MLLPConnection | HLLPConnection:
        """A fresh sans-IO connection with these settings."""
        if self.framing == "hllp":
            return HLLPConnection(
                protocol_id=self.hllp_protocol_id,
                checksum=_CHECKSUMS[self.hllp_checksum],
                send_checksum=self.hllp_send_checksum,
                strict=self.strict,
                max_message_size=min(self.max_message_size, HLLP_MAX_DATA),
                accept_missing_trailer=self.accept_missing_trailer,
            )
        return MLLPConnection(
            mllp2=self.framing == "mllp2",
            strict=self.strict,
            max_message_size=self.max_message_size,
            accept_missing_trailer=self.accept_missing_trailer,
        )

    def new_exchange(self, *, retries: int) -> Exchange:
        """A fresh :class:`Exchange` (delivery rules) over a new connection."""
        return Exchange(self.new_connection(), retries=retries)

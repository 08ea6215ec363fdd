"""Listener and client settings: frozen, keyword-only, with documented defaults."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from mllp_trio._hl7._pipeline import HL7Config
from mllp_trio.proto._framing import DEFAULT_MAX_MESSAGE_SIZE
from mllp_trio.proto._hllp import HLLP_MAX_DATA, HLLPConnection
from mllp_trio.proto._mllp import MLLPConnection

__all__ = ["ClientConfig", "Framing", "FramingConfig", "ServerConfig"]

#: ``"mllp"`` (release 1), ``"mllp2"`` (release 2, commit ACK/NAK) or ``"hllp"``.
Framing = Literal["mllp", "mllp2", "hllp"]
_FRAMINGS = ("mllp", "mllp2", "hllp")


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attr.name} must be positive, got {value!r}")


def _optional_positive(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attr.name} must be positive or None, got {value!r}")


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
        hllp_protocol_id: The two digits HLLP blocks carry (default ``"23"``).
    """

    framing: Framing = attrs.field(default="mllp", validator=attrs.validators.in_(_FRAMINGS))
    strict: bool = False
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive)
    accept_missing_trailer: bool = False
    hllp_protocol_id: str = "23"

    def new_connection(self) -> MLLPConnection | HLLPConnection:
        """A fresh sans-IO connection with these settings."""
        if self.framing == "hllp":
            return HLLPConnection(
                protocol_id=self.hllp_protocol_id,
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


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Settings of a listener.

    Attributes:
        framing: Framing of every connection (default: MLLP release 1).
        hl7: What the HL7 layer accepts and how it reads messages.
        handshake_timeout: Seconds a client has to finish the TLS handshake (10).
        idle_timeout: Seconds a connection may wait between messages before
            it is closed (300; ``None`` waits for ever).
        read_timeout: Seconds a started frame has to arrive completely (30).
        write_timeout: Seconds a reply has to be written (30).
        max_connections: Simultaneous connections in total (1000); excess
            connections are closed at once, not queued.
        max_connections_per_peer: Simultaneous connections from one address (100).
        shutdown_grace: Seconds in-flight messages get to finish on a
            graceful shutdown before they are cancelled (10).
        retries: Times a reply is resent when the peer NAKs it (HLLP NAK
            block, release 2 commit NAK) before the connection is closed (2).
        receive_size: Bytes asked of the transport per read (64 KiB).
        lean_tcp: Drive plain TCP sockets directly (:class:`LeanTCPStream`:
            no scheduler round trip when the socket is ready) instead of
            through ``trio.SocketStream`` (True).
    """

    framing: FramingConfig = attrs.field(factory=FramingConfig)
    hl7: HL7Config = attrs.field(factory=HL7Config)
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float | None = attrs.field(default=300.0, validator=_optional_positive)
    read_timeout: float = attrs.field(default=30.0, validator=_positive)
    write_timeout: float = attrs.field(default=30.0, validator=_positive)
    max_connections: int = attrs.field(default=1000, validator=_positive)
    max_connections_per_peer: int = attrs.field(default=100, validator=_positive)
    shutdown_grace: float = attrs.field(default=10.0, validator=_positive)
    retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    receive_size: int = attrs.field(default=65536, validator=_positive)
    lean_tcp: bool = True

    @property
    def shortest_timeout(self) -> float:
        """The shortest of the connection timeouts (the watchdog's polling bound)."""
        timeouts = [self.handshake_timeout, self.read_timeout, self.write_timeout]
        if self.idle_timeout is not None:
            timeouts.append(self.idle_timeout)
        return min(timeouts)


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Settings of a sending connection.

    Attributes:
        framing: Framing of the connection (default: MLLP release 1).
        connect_timeout: Seconds to open the TCP connection (10).
        handshake_timeout: Seconds to finish the TLS handshake (10).
        ack_timeout: Seconds to wait for the reply to a message (30); for
            release 2, for the commit ACK and then again for the reply.
        write_timeout: Seconds a message has to be written (30).
        retries: Times a message is resent after a commit NAK (release 2),
            a NAK block (HLLP) or an ACK timeout, before giving up (2, as
            Mirth). A timeout resends on a new connection: the old one is
            out of step.
        receive_size: Bytes asked of the transport per read (64 KiB).
        lean_tcp: Drive plain TCP sockets directly instead of through
            ``trio.SocketStream`` (True).
    """

    framing: FramingConfig = attrs.field(factory=FramingConfig)
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    ack_timeout: float = attrs.field(default=30.0, validator=_positive)
    write_timeout: float = attrs.field(default=30.0, validator=_positive)
    retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    receive_size: int = attrs.field(default=65536, validator=_positive)
    lean_tcp: bool = True

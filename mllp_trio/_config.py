"""Listener and client settings: frozen, keyword-only, with documented defaults."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from mllp_trio._hl7 import CharsetError, HL7Config, codec_for
from mllp_trio._io._tlsstream import TLSStreamFactory, ssl_socket_stream, trio_ssl_stream
from mllp_trio.proto._config import Framing, FramingConfig

__all__ = [
    "ClientConfig",
    "Framing",
    "FramingConfig",
    "ServerConfig",
    "TLSStreamKind",
    "tls_stream_factory",
]

#: How TLS records are handled: ``"ssl_socket"`` (a non-blocking
#: ``ssl.SSLSocket`` driven from Trio, records in C; the default) or
#: ``"trio"`` (``trio.SSLStream`` over a memory BIO).
TLSStreamKind = Literal["ssl_socket", "trio"]
_TLS_STREAMS = ("ssl_socket", "trio")


def tls_stream_factory(kind: TLSStreamKind) -> TLSStreamFactory:
    """The function that wraps a TCP stream in TLS for ``kind``."""
    return ssl_socket_stream if kind == "ssl_socket" else trio_ssl_stream


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attr.name} must be positive, got {value!r}")


def _valid_charset(_inst: object, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        try:
            codec_for(value)
        except CharsetError as exc:
            raise ValueError(f"{attr.name}: {exc}") from None


def _optional_positive(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attr.name} must be positive or None, got {value!r}")


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
            block, release 2 commit NAK) or, under release 2, does not
            commit it within ``ack_timeout``, before the connection is closed (2).
        ack_timeout: Release 2: seconds the peer has to commit our reply
            before it is resent (30).
        receive_size: Bytes asked of the transport per read (64 KiB).
        tls_stream: How TLS records are handled (``"ssl_socket"``, default,
            or ``"trio"``); see :data:`TLSStreamKind`.
        memory_budget: Bytes the receive buffers of all connections may hold
            together (128 MiB, room for eight messages of the default
            16 MiB maximum size; ``None``: no budget). When it is reached,
            the connections holding the largest partial messages are closed
            first and reads pause until the total is under it again. At
            least ``framing.max_message_size`` plus ``receive_size``.
        max_strikes: Bad inputs in a row that get no answer (a rejected
            frame under release 1, a message without a readable control id,
            bytes outside frames) before the connection is closed (3;
            ``None``: never). See docs/bad-input.md.
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
    ack_timeout: float = attrs.field(default=30.0, validator=_positive)
    receive_size: int = attrs.field(default=65536, validator=_positive)
    tls_stream: TLSStreamKind = attrs.field(
        default="ssl_socket", validator=attrs.validators.in_(_TLS_STREAMS)
    )
    memory_budget: int | None = attrs.field(default=128 * 1024 * 1024, validator=_optional_positive)
    max_strikes: int | None = attrs.field(default=3, validator=_optional_positive)

    def __attrs_post_init__(self) -> None:
        # A receive buffer holds up to the largest message plus one read.
        budget = self.memory_budget
        largest = self.framing.max_message_size + self.receive_size
        if budget is not None and budget < largest:
            raise ValueError(
                f"memory_budget ({budget} bytes) must be at least framing.max_message_size "
                f"plus receive_size ({largest} bytes), or a message of the largest size "
                "could never arrive"
            )

    @property
    def shortest_timeout(self) -> float:
        """The shortest of the connection timeouts (the watchdog's polling bound)."""
        timeouts = [
            self.handshake_timeout,
            self.read_timeout,
            self.write_timeout,
            self.ack_timeout,
        ]
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
        ack_timeout: Seconds to wait for the reply to a message, the
            response timeout (30); for release 2, for the commit ACK and
            then again for the reply.
        write_timeout: Seconds a message has to be written (30).
        retries: Times a message is resent after a commit NAK (release 2),
            a NAK block (HLLP) or an ACK timeout, before giving up (2, as
            Mirth). A timeout resends on a new connection: the old one is
            out of step. A connection the peer closed while idle is
            replaced without counting; :class:`TLSRefusedError` is never
            retried. ``QueuedSender`` sets 0: the queue owns retries.
        receive_size: Bytes asked of the transport per read (64 KiB).
        tls_stream: How TLS records are handled (``"ssl_socket"``, default,
            or ``"trio"``).
        default_charset: Character set of messages (a ``str`` given to
            ``send``) and replies whose MSH-18 is blank (``"UNICODE UTF-8"``;
            plain ASCII reads the same). Control ids are compared in it.
        charset_override: When set, MSH-18 is ignored and messages and
            replies are read in this character set (default ``None``). Bytes
            are always sent as they are: only a ``str`` is encoded.
        local_address: The local IP address to connect from (default
            ``None``: the system chooses). The local port is always chosen
            by the system.
        keepalive: Seconds a connection may be idle before TCP keepalive
            probes start (default ``None``: no keepalive). Detects a peer or
            firewall that silently dropped an idle connection.
    """

    framing: FramingConfig = attrs.field(factory=FramingConfig)
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    ack_timeout: float = attrs.field(default=30.0, validator=_positive)
    write_timeout: float = attrs.field(default=30.0, validator=_positive)
    retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    receive_size: int = attrs.field(default=65536, validator=_positive)
    tls_stream: TLSStreamKind = attrs.field(
        default="ssl_socket", validator=attrs.validators.in_(_TLS_STREAMS)
    )
    default_charset: str = attrs.field(default="UNICODE UTF-8", validator=_valid_charset)
    charset_override: str | None = attrs.field(default=None, validator=_valid_charset)
    local_address: str | None = None
    keepalive: float | None = attrs.field(default=None, validator=_optional_positive)

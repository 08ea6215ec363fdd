"""The exception hierarchy shared by every layer of mllp_trio."""

from __future__ import annotations

__all__ = [
    "ConnectionClosedError",
    "DeliveryFailed",
    "LocalProtocolError",
    "MLLPError",
    "MLLPTimeoutError",
    "RemoteProtocolError",
]


class MLLPError(Exception):
    """Base class of every error mllp_trio raises on purpose."""


class LocalProtocolError(MLLPError):
    """Our side misused the API: for example sent an invalid event.

    The connection object is not damaged by the attempt unless the error
    says so; fix the calling code.
    """


class RemoteProtocolError(MLLPError):
    """The peer's bytes broke the framing rules.

    After this error the connection object refuses further use: close the
    underlying transport.
    """


class MLLPTimeoutError(MLLPError, TimeoutError):
    """The peer did not send or accept data within the configured time."""


class ConnectionClosedError(MLLPError):
    """The peer closed the connection, or it is unusable after an interrupted exchange."""


class DeliveryFailed(MLLPError):
    """A message was refused at the transport level more times than the retry count allows.

    Raised after every resend got a release 2 commit NAK or an HLLP NAK block.
    """

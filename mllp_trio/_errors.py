"""The exception hierarchy shared by every layer of mllp_trio.

Everything mllp_trio raises on purpose derives from :class:`MLLPError`, so a
caller catches one family. Bad arguments to a constructor are the exception:
they raise ``ValueError`` (or ``TypeError``), as in the standard library.

::

    MLLPError
    +-- ProtocolError
    |   +-- LocalProtocolError      our side misused the API
    |   +-- RemoteProtocolError     the peer broke the framing rules
    +-- TransportError              the connection could not carry the exchange
    |   +-- ConnectError            refused, unknown host, unreachable
    |   +-- TLSHandshakeError       the TLS handshake failed
    |   |   +-- TLSRefusedError     ...for good: certificate refused, no common protocol
    |   +-- ConnectionClosedError   the connection ended or broke mid-exchange
    |   +-- MLLPTimeoutError        a deadline passed (also a ``TimeoutError``)
    +-- DeliveryFailed              NAKed more times than the retry count allows
"""

from __future__ import annotations

__all__ = [
    "ConnectError",
    "ConnectionClosedError",
    "DeliveryFailed",
    "LocalProtocolError",
    "MLLPError",
    "MLLPTimeoutError",
    "ProtocolError",
    "RemoteProtocolError",
    "TLSHandshakeError",
    "TLSRefusedError",
    "TransportError",
]


class MLLPError(Exception):
    """Base class of every error mllp_trio raises on purpose."""


class ProtocolError(MLLPError):
    """The MLLP or HLLP rules were broken, by one side or the other."""


class LocalProtocolError(ProtocolError):
    """Our side misused the API: for example sent an event the state forbids.

    The connection object is not damaged by the attempt unless the error
    says so; fix the calling code.
    """


class RemoteProtocolError(ProtocolError):
    """The peer's bytes broke the framing rules.

    After this error the connection object refuses further use: close the
    underlying transport.
    """


class TransportError(MLLPError):
    """The network connection could not carry the exchange."""


class ConnectError(TransportError):
    """The connection could not be opened: refused, unknown host, unreachable."""


class TLSHandshakeError(TransportError):
    """The TLS handshake failed: a certificate was refused, or no common protocol."""


class TLSRefusedError(TLSHandshakeError):
    """A TLS refusal that trying again cannot fix: the client does not retry it.

    We do not trust the server's certificate (unknown CA, wrong host name,
    expired), the server refused ours (unknown CA, none given, revoked, not
    on its allow list), the two sides share no TLS version or cipher, or
    the server does not speak TLS at all. Fix the configuration, then send
    again; a queue keeps the message pending.
    """


class ConnectionClosedError(TransportError):
    """The peer closed the connection, it broke, or it is unusable after an interrupted exchange."""


class MLLPTimeoutError(TransportError, TimeoutError):
    """The peer did not send or accept data within the configured time."""


class DeliveryFailed(MLLPError):
    """A message was refused at the transport level more times than the retry count allows.

    Raised after every resend got a release 2 commit NAK (or no commit
    acknowledgement in time) or an HLLP NAK block.
    """

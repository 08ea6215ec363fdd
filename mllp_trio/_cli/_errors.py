"""Error messages for people: what happened, where, and what to do."""

from __future__ import annotations

import errno
import socket
import ssl
from typing import TYPE_CHECKING

from mllp_trio._cli._common import causes, describe
from mllp_trio._service import EndpointBindError

if TYPE_CHECKING:
    from mllp_trio._cli._options import ClientTLSOptions


def _has(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(c, kind) for c in causes(exc))


def _errno(exc: BaseException) -> int | None:
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause.errno
    return None


def explain_send_error(
    exc: BaseException, where: str, tls: ClientTLSOptions | None, framing: str | None = None
) -> str:
    """One line for a failed connection or exchange with ``where``, with a hint."""
    text = describe(exc)
    lowered = text.lower()
    hint = ""
    code = _errno(exc)
    if _has(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        if "refused" not in lowered:
            text += ": connection refused"
        hint = "nothing listens there: check HOST:PORT and that the listener runs"
    elif _has(exc, socket.gaierror):
        hint = "the host name is unknown: check HOST (or --host)"
    elif code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        hint = "the network or host is unreachable: check HOST, routes and firewalls"
    elif "certificate verify failed" in lowered or _has(exc, ssl.SSLCertVerificationError):
        hint = (
            "we do not trust the server's certificate: give the CA that signed it with --ca"
            " (or the name it carries with --server-hostname)"
        )
    elif "plaintext" in lowered or "--plaintext" in lowered:
        hint = ""
    elif "handshake" in lowered and "timed out" in lowered:
        hint = (
            "the server said nothing during the TLS handshake: it may be a plaintext "
            "listener (then send with --plaintext) or not an MLLP listener at all"
        )
    elif "no readable msh" in lowered or "content block" in lowered:
        ours = f"--framing {framing}" if framing else "our framing"
        return (
            f"framing mismatch: the reply from {where} is not an acknowledgement in "
            f"{ours} ({text}); the listener probably uses another framing: "
            "check --framing (mllp, mllp2 or hllp) against the listener's"
        )
    elif "timed out" in lowered or "no reply within" in lowered:
        hint = (
            "the server did not answer in time: raise --ack-timeout, check the server, "
            "or check that --framing matches the listener's"
        )
    if tls is not None and not tls.plaintext and "certificate" in lowered and not hint:
        hint = f"certificates in use: {tls.describe()}"
    return f"{text}; {hint}" if hint else text


def explain_listen_error(exc: BaseException, host: str, port: int) -> str | None:
    """A line for a listener that cannot start, or ``None`` if it is not a socket problem."""
    code = _errno(exc)
    endpoint = next((c for c in causes(exc) if isinstance(c, EndpointBindError)), None)
    if endpoint is not None:
        where = f"{endpoint.host}:{endpoint.port}"
        return (
            f"cannot serve --metrics on {where}: {endpoint.strerror}; "
            "choose another --metrics address or port"
        )
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if code == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: address already in use (another listener, perhaps "
            "another mllp-trio, holds that port); stop it or choose another --port"
        )
    if code == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need privileges); "
            "choose a --port above 1023"
        )
    if code == errno.EADDRNOTAVAIL or _has(exc, socket.gaierror):
        return (
            f"cannot listen on {where}: this machine has no such address; give one of its "
            "own with --host (127.0.0.1, 0.0.0.0 for all)"
        )
    return None

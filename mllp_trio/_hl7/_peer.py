"""Who is on the other end of a connection: address and verified TLS identity."""

from __future__ import annotations

import attrs

__all__ = ["ClientIdentity", "PeerInfo"]


@attrs.frozen(kw_only=True)
class ClientIdentity:
    """The verified identity of a TLS peer, read from its certificate.

    Attributes:
        subject: The certificate subject in RFC 4514-like ``CN=...,O=...`` form.
        common_name: The subject common name, or ``None`` if it has none.
        alt_names: Subject alternative names as ``"DNS:host"``, ``"IP:addr"``,
            ``"URI:..."`` or ``"email:..."`` strings, in certificate order.
        fingerprint_sha256: Lower-case hex SHA-256 of the DER certificate,
            without separators.
    """

    subject: str
    common_name: str | None
    alt_names: tuple[str, ...] = ()
    fingerprint_sha256: str


@attrs.frozen(kw_only=True)
class PeerInfo:
    """The remote end of one connection.

    Attributes:
        address: ``"host:port"`` (``"[v6addr]:port"`` for IPv6), or a
            description for streams that have no address (memory streams).
        identity: The verified client certificate identity over TLS, else ``None``.
    """

    address: str
    identity: ClientIdentity | None = None

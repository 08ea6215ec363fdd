"""The verified identity of a TLS peer, read from its certificate.

:func:`identity_from_ssl` takes a connection whose handshake is done and
returns the :class:`~mllp_trio._hl7._peer.ClientIdentity` that the allow list
and the handler see; :func:`identity_from_der` reads one DER certificate.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Protocol, overload

from cryptography import x509
from cryptography.x509.oid import NameOID

from mllp_trio._hl7._peer import ClientIdentity

__all__ = ["PeerCertificateSource", "identity_from_der", "identity_from_ssl"]


class PeerCertificateSource(Protocol):
    """What identity extraction needs from a TLS connection.

    ``ssl.SSLObject``, ``ssl.SSLSocket`` and ``trio.SSLStream`` (after its
    handshake) all provide it.
    """

    @overload
    def getpeercert(self, binary_form: Literal[False] = False) -> Any: ...

    @overload
    def getpeercert(self, binary_form: Literal[True]) -> bytes | None: ...


def _general_name(name: x509.GeneralName) -> str | None:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    # Directory names, other names, registered IDs: no allow-list form.
    return None


def identity_from_der(der: bytes) -> ClientIdentity:
    """Read the identity fields of a DER certificate.

    This does not verify anything: use it only on a certificate the TLS
    handshake has verified.

    Args:
        der: The certificate in DER form.

    Returns:
        The subject, common name, subject alternative names and SHA-256
        fingerprint.

    Raises:
        ValueError: The bytes are not a certificate.
    """
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    # The last CN is the most specific one, as OpenSSL reads it.
    common_name = str(cns[-1].value) if cns else None
    alt_names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        alt_names = [text for gn in san.value if (text := _general_name(gn)) is not None]
    return ClientIdentity(
        subject=cert.subject.rfc4514_string(),
        common_name=common_name,
        alt_names=tuple(alt_names),
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
    )


def identity_from_ssl(obj: PeerCertificateSource) -> ClientIdentity | None:
    """Return the verified identity of the peer of a completed TLS handshake.

    Args:
        obj: The TLS connection: an ``ssl.SSLObject``, ``ssl.SSLSocket`` or a
            ``trio.SSLStream`` whose handshake is done.

    Returns:
        The identity, or ``None`` when the peer sent no certificate or its
        certificate was not verified (a context with ``CERT_NONE``).
    """
    # getpeercert() is empty unless the certificate was verified; the binary
    # form would be returned even for an unverified one.
    if not obj.getpeercert():
        return None
    der = obj.getpeercert(binary_form=True)
    if der is None:  # pragma: no cover - verified implies present
        return None
    return identity_from_der(der)

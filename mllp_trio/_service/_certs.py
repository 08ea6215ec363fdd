"""When the listener's TLS material runs out: server certificate chain, CA bundle, CRL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import attrs
from cryptography import x509

from mllp_trio._tls import ServerTLSConfig

__all__ = ["Expiry", "expiring", "tls_expiries"]


@attrs.frozen(kw_only=True)
class Expiry:
    """The end of validity of one piece of TLS material.

    Attributes:
        kind: ``server`` (the certificate chain the listener presents),
            ``ca`` (a CA that issues client certificates) or ``crl`` (the
            revocation list: its ``nextUpdate``, after which clients fail).
        subject: The certificate's subject or the CRL's issuer (RFC 4514),
            for operators: never message content.
        file: Where it was read from.
        not_after: When it expires (UTC).
    """

    kind: str
    subject: str
    file: Path
    not_after: datetime

    def describe(self) -> str:
        """A line for the log and ``/readyz``."""
        what = "CRL of" if self.kind == "crl" else f"{self.kind} certificate"
        verb = "needs its next update by" if self.kind == "crl" else "expires"
        return f"{what} {self.subject} ({self.file}) {verb} {self.not_after:%Y-%m-%d %H:%M} UTC"


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def tls_expiries(config: ServerTLSConfig) -> list[Expiry]:
    """Read the expiry of every certificate and CRL a listener's TLS settings name.

    Raises:
        OSError: A file cannot be read.
        ValueError: A file holds no PEM certificate or CRL.
    """
    found: list[Expiry] = []
    named: list[tuple[str, Path | None]] = [
        ("server", config.cert_file),
        ("ca", config.ca_file),
    ]
    for kind, path in named:
        if path is None:
            continue
        for cert in _certificates(path):
            found.append(
                Expiry(
                    kind=kind,
                    subject=cert.subject.rfc4514_string(),
                    file=path,
                    not_after=cert.not_valid_after_utc,
                )
            )
    if config.crl_file is not None:
        crl = x509.load_pem_x509_crl(config.crl_file.read_bytes())
        if crl.next_update_utc is not None:
            found.append(
                Expiry(
                    kind="crl",
                    subject=crl.issuer.rfc4514_string(),
                    file=config.crl_file,
                    not_after=crl.next_update_utc,
                )
            )
    return found


def expiring(expiries: Sequence[Expiry], now: datetime, window_seconds: float) -> list[Expiry]:
    """Those that expire within ``window_seconds`` of ``now`` (or already have)."""
    return [e for e in expiries if (e.not_after - now).total_seconds() <= window_seconds]

"""Reusable TLS test material: trustme CAs, certificate files, CRLs and in-memory handshakes.

Plain functions and classes (no fixtures) so that any test module can use
them; wrap ``make_tls_material(tmp_path)`` in a fixture where convenient.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TypeAlias

import attrs
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from mllp_trio._tls import ServerTLSConfig, client_ssl_context, server_ssl_context

__all__ = [
    "Handshake",
    "MemorySSLStream",
    "TLSMaterial",
    "make_tls_material",
    "tls_handshake",
    "write_crl",
    "write_leaf",
]

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
_ORG = "mllp-trio tests"

#: A TLS stream over one end of ``trio.testing.memory_stream_pair()``.
MemorySSLStream: TypeAlias = trio.SSLStream[
    trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]
]


def write_leaf(leaf: trustme.LeafCert, directory: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.pem`` (certificate chain) and ``<stem>.key`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / f"{stem}.pem"
    key = directory / f"{stem}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return cert, key


def write_crl(
    ca: trustme.CA,
    revoked: Iterable[trustme.LeafCert],
    path: Path,
    *,
    next_update: datetime.datetime | None = None,
) -> Path:
    """Write a PEM CRL signed by ``ca`` that revokes the ``revoked`` certificates."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(key, EllipticCurvePrivateKey)  # trustme's default key type
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now - datetime.timedelta(days=1))
        .next_update(next_update or now + datetime.timedelta(days=30))
    )
    for leaf in revoked:
        serial = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - datetime.timedelta(hours=1))
            .build()
        )
    crl = builder.sign(private_key=key, algorithm=hashes.SHA256())
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


@attrs.define(kw_only=True)
class TLSMaterial:
    """A CA, a server certificate and a client certificate, with their files on disk.

    ``ca`` issues both; the server certificate is for ``localhost``,
    ``127.0.0.1`` and ``::1``; the client certificate has DNS name and CN
    ``client_name``.
    """

    directory: Path
    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert
    client_name: str
    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path

    def issue_client(self, name: str, *, ca: trustme.CA | None = None) -> trustme.LeafCert:
        """Issue another client certificate (DNS name and CN ``name``)."""
        return (ca or self.ca).issue_cert(name, common_name=name)

    def write_crl(self, revoked: Iterable[trustme.LeafCert], name: str = "crl.pem") -> Path:
        """Write a CRL from this CA revoking ``revoked``; returns its path."""
        return write_crl(self.ca, revoked, self.directory / name)

    def server_config(self, **overrides: object) -> ServerTLSConfig:
        """A ServerTLSConfig on these files; keyword arguments override fields."""
        fields: dict[str, object] = {
            "cert_file": self.server_cert_file,
            "key_file": self.server_key_file,
            "ca_file": self.ca_file,
        }
        fields.update(overrides)
        return ServerTLSConfig(**fields)  # type: ignore[arg-type]

    def server_context(
        self, *, require_client_cert: bool = True, crl_file: Path | None = None
    ) -> ssl.SSLContext:
        """The server context built from the files, trusting ``ca`` for clients."""
        return server_ssl_context(
            cert_file=self.server_cert_file,
            key_file=self.server_key_file,
            ca_file=self.ca_file,
            crl_file=crl_file,
            require_client_cert=require_client_cert,
        )

    def client_context(
        self,
        *,
        cert: trustme.LeafCert | None = None,
        anonymous: bool = False,
        trust: trustme.CA | None = None,
        check_hostname: bool = True,
    ) -> ssl.SSLContext:
        """A client context trusting ``trust`` (default ``ca``).

        It presents ``cert`` (default: the material's client certificate), or
        no certificate at all with ``anonymous=True``.
        """
        ctx = client_ssl_context(
            ca_data=(trust or self.ca).cert_pem.bytes().decode("ascii"),
            check_hostname=check_hostname,
        )
        if not anonymous:
            (cert or self.client).configure_cert(ctx)
        return ctx


def make_tls_material(directory: Path, *, client_name: str = "test-client") -> TLSMaterial:
    """Create a fresh CA with server and client certificates, written into ``directory``."""
    ca = trustme.CA(organization_name=_ORG)
    server = ca.issue_cert(*SERVER_NAMES, common_name="localhost", organization_name=_ORG)
    client = ca.issue_cert(client_name, common_name=client_name, organization_name=_ORG)
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert, server_key = write_leaf(server, directory, "server")
    client_cert, client_key = write_leaf(client, directory, "client")
    return TLSMaterial(
        directory=directory,
        ca=ca,
        server=server,
        client=client,
        client_name=client_name,
        ca_file=ca_file,
        server_cert_file=server_cert,
        server_key_file=server_key,
        client_cert_file=client_cert,
        client_key_file=client_key,
    )


@attrs.define
class Handshake:
    """Both ends of a TLS handshake over an in-memory stream pair, and how each ended."""

    server: MemorySSLStream
    client: MemorySSLStream
    server_error: trio.BrokenResourceError | None = None
    client_error: trio.BrokenResourceError | None = None

    @property
    def ok(self) -> bool:
        """Both sides completed the handshake."""
        return self.server_error is None and self.client_error is None

    @property
    def server_ssl_error(self) -> ssl.SSLError:
        """The OpenSSL error behind the server's failure (fails the test if none)."""
        assert self.server_error is not None, "the server handshake succeeded"
        cause = self.server_error.__cause__
        assert isinstance(cause, ssl.SSLError), repr(cause)
        return cause

    async def aclose(self) -> None:
        """Close both ends without waiting for close_notify."""
        for stream in (self.client, self.server):
            await trio.aclose_forcefully(stream)


async def _handshake_side(
    stream: MemorySSLStream,
) -> trio.BrokenResourceError | None:
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        # Close the transport so that the other end sees end of stream rather
        # than waiting forever for bytes this side will never send.
        await trio.aclose_forcefully(stream.transport_stream)
        return exc
    return None


async def tls_handshake(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    *,
    server_hostname: str = "localhost",
) -> Handshake:
    """Run a TLS handshake between the two contexts over memory streams.

    Never raises for a handshake failure: the errors are in the result. With
    TLS 1.3 a client certificate is rejected after the client has finished
    its handshake, so a refusal may show only in ``server_error``.
    """
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_raw, server_context, server_side=True)
    client = trio.SSLStream(client_raw, client_context, server_hostname=server_hostname)
    result = Handshake(server, client)

    async def run_server() -> None:
        result.server_error = await _handshake_side(server)

    async def run_client() -> None:
        result.client_error = await _handshake_side(client)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server)
        nursery.start_soon(run_client)
    return result

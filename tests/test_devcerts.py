"""Development certificates: files, permissions, a working mTLS pair, no overwriting."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from mllp_trio._devcerts import (
    DEV_CLIENT_NAME,
    DevCertPaths,
    DevCertsExist,
    ensure_dev_certs,
    write_dev_certs,
)
from mllp_trio._errors import MLLPError
from mllp_trio._tls import check_allowed, client_ssl_context, identity_from_ssl, server_ssl_context

from .tls_helpers import tls_handshake


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_write_dev_certs_files_and_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "certs" / "dev"
    paths = write_dev_certs(directory)
    assert paths == DevCertPaths.in_directory(directory)
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["ca.pem", "client.key", "client.pem", "server.key", "server.pem"]
    for key in (paths.server_key, paths.client_key):
        assert b"PRIVATE KEY" in key.read_bytes()
        if os.name == "posix":
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (paths.ca, paths.server_cert, paths.client_cert):
        assert b"PRIVATE KEY" not in cert.read_bytes()


def test_dev_certs_say_development_only(tmp_path: Path) -> None:
    paths = write_dev_certs(tmp_path)
    for path in (paths.ca, paths.server_cert, paths.client_cert):
        cert = load_cert(path)
        assert "DEVELOPMENT ONLY" in cert.subject.rfc4514_string()
    server = load_cert(paths.server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    client = load_cert(paths.client_cert)
    assert client.issuer == load_cert(paths.ca).subject


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
async def test_dev_client_connects_to_dev_server(tmp_path: Path, host: str) -> None:
    paths = write_dev_certs(tmp_path)
    server_ctx = server_ssl_context(
        cert_file=paths.server_cert, key_file=paths.server_key, ca_file=paths.ca
    )
    client_ctx = client_ssl_context(
        ca_file=paths.ca, cert_file=paths.client_cert, key_file=paths.client_key
    )
    h = await tls_handshake(server_ctx, client_ctx, server_hostname=host)
    assert h.ok
    identity = identity_from_ssl(h.server)
    assert identity is not None
    assert identity.common_name == DEV_CLIENT_NAME
    check_allowed(identity, [DEV_CLIENT_NAME])
    await h.aclose()


async def test_dev_certs_from_two_runs_do_not_trust_each_other(tmp_path: Path) -> None:
    first = write_dev_certs(tmp_path / "a")
    second = write_dev_certs(tmp_path / "b")
    server_ctx = server_ssl_context(
        cert_file=first.server_cert, key_file=first.server_key, ca_file=first.ca
    )
    client_ctx = client_ssl_context(
        ca_file=first.ca, cert_file=second.client_cert, key_file=second.client_key
    )
    h = await tls_handshake(server_ctx, client_ctx)
    assert h.server_error is not None
    await h.aclose()


def test_ensure_dev_certs_creates_once(tmp_path: Path) -> None:
    paths, created = ensure_dev_certs(tmp_path / "dev")
    assert created
    before = {p: p.read_bytes() for p in paths.files()}
    again, created_again = ensure_dev_certs(tmp_path / "dev")
    assert again == paths
    assert not created_again
    assert {p: p.read_bytes() for p in paths.files()} == before


def test_ensure_dev_certs_refuses_an_incomplete_set(tmp_path: Path) -> None:
    paths, _ = ensure_dev_certs(tmp_path)
    paths.client_key.unlink()
    ca_before = paths.ca.read_bytes()
    with pytest.raises(DevCertsExist, match=r"missing client\.key"):
        ensure_dev_certs(tmp_path)
    assert paths.ca.read_bytes() == ca_before
    assert not paths.client_key.exists()


def test_write_dev_certs_does_not_overwrite_unless_asked(tmp_path: Path) -> None:
    paths = write_dev_certs(tmp_path)
    ca_before = paths.ca.read_bytes()
    with pytest.raises(DevCertsExist, match=r"ca\.pem") as info:
        write_dev_certs(tmp_path)
    assert isinstance(info.value, MLLPError)
    assert isinstance(info.value, FileExistsError)
    assert paths.ca.read_bytes() == ca_before

    write_dev_certs(tmp_path, overwrite=True)
    assert paths.ca.read_bytes() != ca_before
    # No temporary files are left behind.
    assert len(list(tmp_path.iterdir())) == 5

"""Issue 12: the listener's TLS options (as hl7rcv offers): protocol floor, cipher list, PKCS#12."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mllp_trio._cli import cli
from mllp_trio._errors import TLSRefusedError
from mllp_trio._hl7 import AckCode
from mllp_trio._server import MLLPServer
from mllp_trio._tls import ClientTLSConfig, ServerTLS, TLSConfigError

from .conftest import StartServer
from .test_client_tls_options import PASSWORD, Identities, send_one, trust_store
from .tls_helpers import TLSMaterial


def server_key_store(tls: TLSMaterial, path: Path) -> Path:
    key = serialization.load_pem_private_key(tls.server.private_key_pem.bytes(), password=None)
    cert = x509.load_pem_x509_certificate(tls.server.cert_chain_pems[0].bytes())
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"server",
            key,  # type: ignore[arg-type]
            cert,
            None,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return path


def client(tls: TLSMaterial, **fields: object) -> ssl.SSLContext:
    base: dict[str, object] = {
        "ca_file": tls.ca_file,
        "cert_file": tls.client_cert_file,
        "key_file": tls.client_key_file,
    }
    return ClientTLSConfig(**{**base, **fields}).build_context()  # type: ignore[arg-type]


async def test_listener_reads_pkcs12_key_and_trust_stores(
    tls: TLSMaterial, start_server: StartServer
) -> None:
    config = tls.server_config(
        cert_file=server_key_store(tls, tls.directory / "server.p12"),
        key_file=None,
        key_password=PASSWORD,
        ca_file=trust_store(tls, tls.directory / "clients.p12"),
        ca_password=PASSWORD,
    )
    assert PASSWORD not in repr(config)
    handler = Identities()
    port = await start_server(MLLPServer(handler, ssl_context=ServerTLS(config)))
    assert await send_one(port, client(tls)) == AckCode.AA
    assert handler.seen == [tls.client_name]


def test_listener_pkcs12_with_a_wrong_password_is_a_config_error(tls: TLSMaterial) -> None:
    config = tls.server_config(
        cert_file=server_key_store(tls, tls.directory / "server.p12"),
        key_file=None,
        key_password="Pa55-not-this",
    )
    with pytest.raises(TLSConfigError, match=r"server\.p12") as caught:
        config.build_context()
    assert "Pa55-not-this" not in str(caught.value)
    assert "wrong password" in str(caught.value)


async def test_listener_tls13_floor_refuses_a_tls12_client(
    tls: TLSMaterial, start_server: StartServer
) -> None:
    server = MLLPServer(
        Identities(), ssl_context=ServerTLS(tls.server_config(minimum_version="1.3"))
    )
    port = await start_server(server)
    tls12_only = client(tls)
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(TLSRefusedError, match="no TLS version in common"):
        await send_one(port, tls12_only)
    assert await send_one(port, client(tls)) == AckCode.AA


def test_listener_cipher_list_applies_to_tls12(tls: TLSMaterial) -> None:
    ctx = tls.server_config(ciphers="ECDHE+AESGCM").build_context()
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all("GCM" in name and "CHACHA" not in name for name in tls12)
    with pytest.raises(TLSConfigError, match="cipher"):
        tls.server_config(ciphers="NO-SUCH-CIPHER").build_context()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tls-min", "1.1"], "--tls-min"),
        (["--plaintext", "--ciphers", "ECDHE+AESGCM"], "--ciphers"),
        (["--plaintext", "--tls-min", "1.3"], "--tls-min 1.3"),
    ],
)
def test_listen_tls_flags_are_validated(args: list[str], expected: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["listen", "--no-store", *args])
    assert result.exit_code == 2
    assert expected in result.output

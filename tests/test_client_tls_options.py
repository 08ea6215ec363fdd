"""Issue 12: the client's TLS options: PKCS#12 key and trust stores, protocol floor, cipher list."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mllp_trio._client import open_mllp_client
from mllp_trio._errors import TLSRefusedError
from mllp_trio._hl7 import AckCode, InboundMessage
from mllp_trio._server import MLLPServer
from mllp_trio._tls import ClientTLSConfig, ServerTLS, TLSConfigError

from .conftest import StartServer
from .hl7_samples import make_message
from .tls_helpers import TLSMaterial

PASSWORD = "s3cret-Pa55"


class Identities:
    def __init__(self) -> None:
        self.seen: list[str | None] = []

    async def __call__(self, message: InboundMessage) -> None:
        identity = message.peer.identity
        self.seen.append(identity.common_name if identity is not None else None)


def key_store(tls: TLSMaterial, path: Path, password: str = PASSWORD) -> Path:
    key = serialization.load_pem_private_key(tls.client.private_key_pem.bytes(), password=None)
    cert = x509.load_pem_x509_certificate(tls.client.cert_chain_pems[0].bytes())
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"client",
            key,  # type: ignore[arg-type]
            cert,
            None,
            serialization.BestAvailableEncryption(password.encode()),
        )
    )
    return path


def trust_store(tls: TLSMaterial, path: Path) -> Path:
    ca = x509.load_pem_x509_certificate(tls.ca.cert_pem.bytes())
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            None, None, None, [ca], serialization.BestAvailableEncryption(PASSWORD.encode())
        )
    )
    return path


async def send_one(port: int, ctx: ssl.SSLContext) -> AckCode:
    async with open_mllp_client("localhost", port, ssl_context=ctx) as client:
        return (await client.send(make_message(control_id="P1"))).code


async def test_pkcs12_key_store_and_trust_store(
    tls: TLSMaterial, start_server: StartServer
) -> None:
    handler = Identities()
    port = await start_server(MLLPServer(handler, ssl_context=ServerTLS(tls.server_config())))
    config = ClientTLSConfig(
        ca_file=trust_store(tls, tls.directory / "trust.p12"),
        ca_password=PASSWORD,
        pkcs12_file=key_store(tls, tls.directory / "client.p12"),
        pkcs12_password=PASSWORD,
    )
    assert PASSWORD not in repr(config)
    assert await send_one(port, config.build_context()) == AckCode.AA
    assert handler.seen == [tls.client_name]
    # A cert_file named .p12 is a key store too, opened with key_password.
    named = ClientTLSConfig(
        ca_file=tls.ca_file, cert_file=tls.directory / "client.p12", key_password=PASSWORD
    )
    assert await send_one(port, named.build_context()) == AckCode.AA


def test_pkcs12_errors_name_the_file_and_never_the_password(tls: TLSMaterial) -> None:
    store = key_store(tls, tls.directory / "client.p12")
    with pytest.raises(TLSConfigError, match="wrong password") as caught:
        ClientTLSConfig(pkcs12_file=store, pkcs12_password="not-it").build_context()
    assert "client.p12" in str(caught.value) and "not-it" not in str(caught.value)
    with pytest.raises(TLSConfigError, match="not a PKCS#12"):
        ClientTLSConfig(pkcs12_file=tls.ca_file).build_context()
    with pytest.raises(TLSConfigError, match="not both"):
        ClientTLSConfig(pkcs12_file=store, cert_file=tls.client_cert_file)


def test_cipher_list_and_floor_are_validated() -> None:
    with pytest.raises(TLSConfigError, match="NOPE"):
        ClientTLSConfig(ciphers="NOPE").build_context()
    with pytest.raises(ValueError, match="minimum_version"):
        ClientTLSConfig(minimum_version="1.1")  # type: ignore[arg-type]
    ctx = ClientTLSConfig(minimum_version="1.3", ciphers="ECDHE+AESGCM").build_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all("GCM" in name for name in tls12)


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ({"minimum_version": "1.3"}, "no TLS version in common"),
        ({"ciphers": "ECDHE+CHACHA20"}, "cipher"),
    ],
)
async def test_a_server_limited_to_tls12_aes(
    tls: TLSMaterial, start_server: StartServer, client: dict[str, str], reason: str
) -> None:
    server_ctx = tls.server_context()
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.set_ciphers("ECDHE+AESGCM")
    server = MLLPServer(Identities(), ssl_context=server_ctx)
    port = await start_server(server)
    base = {
        "ca_file": tls.ca_file,
        "cert_file": tls.client_cert_file,
        "key_file": tls.client_key_file,
    }
    with pytest.raises(TLSRefusedError, match=reason):
        await send_one(port, ClientTLSConfig(**base, **client).build_context())  # type: ignore[arg-type]
    # The default profile agrees with it.
    assert await send_one(port, ClientTLSConfig(**base).build_context()) == AckCode.AA  # type: ignore[arg-type]
    with trio.fail_after(5):
        while server.stats.active:
            await trio.sleep(0.001)

"""TLS profile, identity, allow list, CRL and reload, over real Trio TLS on memory streams."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import struct
import warnings
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import assume, given
from hypothesis import strategies as st

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._peer import ClientIdentity
from mllp_trio._tls import (
    AllowList,
    ClientNotAllowed,
    ClientTLSConfig,
    ServerTLS,
    ServerTLSConfig,
    TLSConfigError,
    check_allowed,
    client_ssl_context,
    identity_from_der,
    identity_from_ssl,
    server_ssl_context,
)

from .tls_helpers import (
    MemorySSLStream,
    TLSMaterial,
    tls_handshake,
    write_crl,
    write_leaf,
)


def der_of(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))


async def exchange(client: MemorySSLStream, server: MemorySSLStream) -> None:
    """Prove the connection carries data both ways."""
    await client.send_all(b"ping")
    assert await server.receive_some() == b"ping"
    await server.send_all(b"pong")
    assert await client.receive_some() == b"pong"


# ---------------------------------------------------------------- profile


def test_server_context_profile(tls: TLSMaterial) -> None:
    ctx = tls.server_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    for flag in (ssl.OP_NO_RENEGOTIATION, ssl.OP_NO_COMPRESSION, ssl.OP_CIPHER_SERVER_PREFERENCE):
        assert ctx.options & flag == flag
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["aead"], cipher["name"]
        assert cipher["kea"] in {"kx-ecdhe", "kx-dhe"}, cipher["name"]
    assert all(c["aead"] for c in ctx.get_ciphers())


def test_client_context_profile(tls: TLSMaterial) -> None:
    ctx = client_ssl_context(ca_file=tls.ca_file)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert all(c["aead"] for c in ctx.get_ciphers())
    relaxed = client_ssl_context(ca_file=tls.ca_file, check_hostname=False)
    assert not relaxed.check_hostname
    assert relaxed.verify_mode == ssl.CERT_REQUIRED


def test_mutual_tls_needs_a_ca_unless_explicitly_off(tls: TLSMaterial) -> None:
    with pytest.raises(TLSConfigError, match="require_client_cert=False"):
        server_ssl_context(cert_file=tls.server_cert_file, key_file=tls.server_key_file)
    with pytest.raises(TLSConfigError, match="require_client_cert=False"):
        ServerTLSConfig(cert_file=tls.server_cert_file, key_file=tls.server_key_file)
    ctx = server_ssl_context(
        cert_file=tls.server_cert_file, key_file=tls.server_key_file, require_client_cert=False
    )
    assert ctx.verify_mode == ssl.CERT_NONE
    with_ca = tls.server_context(require_client_cert=False)
    assert with_ca.verify_mode == ssl.CERT_OPTIONAL


def test_bad_files_raise_typed_errors(tls: TLSMaterial, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match=r"nope\.pem"):
        server_ssl_context(cert_file=missing, key_file=tls.server_key_file, ca_file=tls.ca_file)
    with pytest.raises(TLSConfigError, match="CA bundle"):
        server_ssl_context(
            cert_file=tls.server_cert_file, key_file=tls.server_key_file, ca_file=missing
        )
    # A key that does not belong to the certificate.
    with pytest.raises(TLSConfigError, match="cannot load certificate"):
        server_ssl_context(
            cert_file=tls.server_cert_file, key_file=tls.client_key_file, ca_file=tls.ca_file
        )
    with pytest.raises(TLSConfigError, match="without cert_file"):
        client_ssl_context(ca_file=tls.ca_file, key_file=tls.client_key_file)
    assert issubclass(TLSConfigError, MLLPError)


def test_crl_file_is_checked_before_use(tls: TLSMaterial, tmp_path: Path) -> None:
    # A certificate in the CRL file would silently become a trusted root.
    with pytest.raises(TLSConfigError, match="other than 'X509 CRL'"):
        tls.server_context(crl_file=tls.ca_file)
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(TLSConfigError, match="no PEM"):
        tls.server_context(crl_file=empty)
    stale = write_crl(
        tls.ca,
        [],
        tmp_path / "stale.pem",
        next_update=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1),
    )
    with pytest.raises(TLSConfigError, match="expired"):
        tls.server_context(crl_file=stale)
    with pytest.raises(TLSConfigError, match="needs a CA"):
        server_ssl_context(
            cert_file=tls.server_cert_file,
            key_file=tls.server_key_file,
            crl_file=tls.write_crl([]),
            require_client_cert=False,
        )


# ---------------------------------------------------------------- handshakes


async def test_mutual_tls_success_and_identity(tls: TLSMaterial) -> None:
    h = await tls_handshake(tls.server_context(), tls.client_context())
    assert h.ok
    assert h.server.version() == "TLSv1.3"
    await exchange(h.client, h.server)

    identity = identity_from_ssl(h.server)
    assert identity is not None
    assert identity.common_name == "test-client"
    assert identity.alt_names == ("DNS:test-client",)
    assert identity.subject.startswith("CN=test-client,")
    assert "O=mllp-trio tests" in identity.subject
    assert identity.fingerprint_sha256 == hashlib.sha256(der_of(tls.client)).hexdigest()

    server_identity = identity_from_ssl(h.client)
    assert server_identity is not None
    assert server_identity.common_name == "localhost"
    assert server_identity.alt_names == ("DNS:localhost", "IP:127.0.0.1", "IP:::1")
    await h.aclose()


async def test_client_files_from_client_tls_config(tls: TLSMaterial) -> None:
    config = ClientTLSConfig(
        ca_file=str(tls.ca_file), cert_file=tls.client_cert_file, key_file=tls.client_key_file
    )
    h = await tls_handshake(tls.server_context(), config.build_context())
    assert h.ok
    identity = identity_from_ssl(h.server)
    assert identity is not None
    assert identity.common_name == "test-client"
    await h.aclose()


async def test_refused_without_client_certificate(tls: TLSMaterial) -> None:
    h = await tls_handshake(tls.server_context(), tls.client_context(anonymous=True))
    assert h.server_error is not None
    assert h.server_ssl_error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    await h.aclose()


async def test_refused_certificate_from_another_ca(tls: TLSMaterial) -> None:
    stranger = trustme.CA().issue_cert("test-client", common_name="test-client")
    h = await tls_handshake(tls.server_context(), tls.client_context(cert=stranger))
    err = h.server_ssl_error
    assert isinstance(err, ssl.SSLCertVerificationError)
    assert "issuer" in err.verify_message
    await h.aclose()


async def test_refused_revoked_client(tls: TLSMaterial) -> None:
    crl = tls.write_crl([tls.client])
    server_ctx = tls.server_context(crl_file=crl)
    assert server_ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF

    h = await tls_handshake(server_ctx, tls.client_context())
    err = h.server_ssl_error
    assert isinstance(err, ssl.SSLCertVerificationError)
    assert err.verify_message == "certificate revoked"
    await h.aclose()

    # The same CA's other clients still get in.
    h = await tls_handshake(server_ctx, tls.client_context(cert=tls.issue_client("other")))
    assert h.ok
    await h.aclose()


async def test_refused_tls_1_1_client(tls: TLSMaterial) -> None:
    client_ctx = tls.client_context()
    with warnings.catch_warnings():
        # Python deprecates naming TLS 1.1; that is the point of this test.
        warnings.simplefilter("ignore", DeprecationWarning)
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    # Let the client library offer TLS 1.1 if it can at all.
    client_ctx.set_ciphers("ALL:@SECLEVEL=0")
    h = await tls_handshake(tls.server_context(), client_ctx)
    # Whatever the client library did, the server did not complete a handshake.
    assert h.server_error is not None
    assert h.client_error is not None
    await h.aclose()


def _tls11_client_hello() -> bytes:
    """A minimal ClientHello offering at most TLS 1.1, written byte by byte."""
    suites = (0xC009, 0xC00A, 0xC013, 0xC014, 0x002F, 0x0035)  # CBC: all TLS 1.1 had
    groups = struct.pack("!H", 4) + struct.pack("!HH", 0x0017, 0x001D)
    extensions = (
        struct.pack("!HH", 0x000A, len(groups))
        + groups
        + struct.pack("!HH", 0x000B, 2)
        + b"\x01\x00"  # ec_point_formats: uncompressed
    )
    body = (
        b"\x03\x02"  # client_version TLS 1.1, and no supported_versions extension
        + bytes(32)  # random
        + b"\x00"  # no session id
        + struct.pack("!H", 2 * len(suites))
        + b"".join(struct.pack("!H", s) for s in suites)
        + b"\x01\x00"  # compression methods: null
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


async def test_server_refuses_tls_1_1_hello_whatever_the_client_library(
    tls: TLSMaterial,
) -> None:
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_raw, tls.server_context(), server_side=True)
    await client_raw.send_all(_tls11_client_hello())
    with pytest.raises(trio.BrokenResourceError) as info:
        await server.do_handshake()
    cause = info.value.__cause__
    assert isinstance(cause, ssl.SSLError)
    assert cause.reason == "UNSUPPORTED_PROTOCOL"
    await trio.aclose_forcefully(server)
    await client_raw.aclose()


async def test_client_refuses_wrong_server_hostname(tls: TLSMaterial) -> None:
    h = await tls_handshake(
        tls.server_context(), tls.client_context(), server_hostname="ris.example.org"
    )
    assert h.client_error is not None
    cause = h.client_error.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert "ris.example.org" in cause.verify_message
    assert h.server_error is not None
    await h.aclose()


async def test_hostname_check_can_be_turned_off_but_not_verification(tls: TLSMaterial) -> None:
    h = await tls_handshake(
        tls.server_context(),
        tls.client_context(check_hostname=False),
        server_hostname="ris.example.org",
    )
    assert h.ok
    await h.aclose()
    # Without the hostname check, the chain is still verified.
    h = await tls_handshake(
        tls.server_context(),
        tls.client_context(check_hostname=False, trust=trustme.CA()),
        server_hostname="localhost",
    )
    assert h.client_error is not None
    await h.aclose()


async def test_server_hostname_may_be_an_ip_address(tls: TLSMaterial) -> None:
    for host in ("127.0.0.1", "::1"):
        h = await tls_handshake(tls.server_context(), tls.client_context(), server_hostname=host)
        assert h.ok, host
        await h.aclose()


async def test_tls_1_2_uses_only_aead_suites(tls: TLSMaterial) -> None:
    client_ctx = tls.client_context()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    h = await tls_handshake(tls.server_context(), client_ctx)
    assert h.ok
    assert h.server.version() == "TLSv1.2"
    cipher = h.server.cipher()
    assert cipher is not None
    assert cipher[0].startswith("ECDHE-")
    assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]
    await exchange(h.client, h.server)
    await h.aclose()


async def test_tls_1_2_cbc_only_client_is_refused(tls: TLSMaterial) -> None:
    client_ctx = tls.client_context()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx.set_ciphers(
        "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA"
    )
    h = await tls_handshake(tls.server_context(), client_ctx)
    assert h.server_ssl_error.reason == "NO_SHARED_CIPHER"
    await h.aclose()


async def test_optional_client_certificate(tls: TLSMaterial) -> None:
    server_ctx = tls.server_context(require_client_cert=False)
    h = await tls_handshake(server_ctx, tls.client_context(anonymous=True))
    assert h.ok
    assert identity_from_ssl(h.server) is None
    await h.aclose()
    h = await tls_handshake(server_ctx, tls.client_context())
    assert h.ok
    identity = identity_from_ssl(h.server)
    assert identity is not None
    assert identity.common_name == "test-client"
    await h.aclose()


async def test_unverified_certificate_gives_no_identity(tls: TLSMaterial) -> None:
    # A server context that does not verify clients: nothing to trust.
    server_ctx = server_ssl_context(
        cert_file=tls.server_cert_file, key_file=tls.server_key_file, require_client_cert=False
    )
    h = await tls_handshake(server_ctx, tls.client_context())
    assert h.ok
    assert identity_from_ssl(h.server) is None
    await h.aclose()
    # A client that skips verification has the server's certificate in hand,
    # but it proves nothing, so it yields no identity.
    client_ctx = tls.client_context(check_hostname=False)
    client_ctx.verify_mode = ssl.CERT_NONE
    h = await tls_handshake(tls.server_context(), client_ctx)
    assert h.ok
    assert h.client.getpeercert(binary_form=True) is not None
    assert identity_from_ssl(h.client) is None
    await h.aclose()


# ---------------------------------------------------------------- identity parsing


def _custom_cert_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab, Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, "Lab System A"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("lab.example.org"),
            x509.IPAddress(ipaddress.ip_address("2001:db8::5")),
            x509.UniformResourceIdentifier("urn:oid:1.2.3.4"),
            x509.RFC822Name("lab@example.org"),
            x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def test_identity_from_der_reads_every_san_kind() -> None:
    der = _custom_cert_der()
    identity = identity_from_der(der)
    assert identity.common_name == "Lab System A"
    assert identity.subject == "CN=Lab System A,O=Lab\\, Inc.,C=NL"
    assert identity.alt_names == (
        "DNS:lab.example.org",
        "IP:2001:db8::5",
        "URI:urn:oid:1.2.3.4",
        "email:lab@example.org",
    )
    assert identity.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    for entry in (
        "IP:2001:DB8:0::5",
        "2001:db8::5",
        "URI:urn:oid:1.2.3.4",
        "email:LAB@example.org",
        "CN:lab system a",
        "DNS:LAB.example.org.",
        "lab.example.org",
    ):
        check_allowed(identity, [entry])
    for entry in ("URI:urn:oid:1.2.3.5", "IP:2001:db8::6", "CN:Lab System", "x"):
        with pytest.raises(ClientNotAllowed):
            check_allowed(identity, [entry])


# ---------------------------------------------------------------- allow list


def make_identity(**overrides: object) -> ClientIdentity:
    fields: dict[str, object] = {
        "subject": "CN=lab-a,O=Hospital",
        "common_name": "lab-a",
        "alt_names": ("DNS:lab-a.example.org", "IP:10.0.0.7"),
        "fingerprint_sha256": "ab" * 32,
    }
    fields.update(overrides)
    return ClientIdentity(**fields)  # type: ignore[arg-type]


async def test_client_not_on_allow_list_is_refused_after_handshake(tls: TLSMaterial) -> None:
    h = await tls_handshake(tls.server_context(), tls.client_context())
    assert h.ok  # the handshake itself succeeds
    identity = identity_from_ssl(h.server)
    assert identity is not None
    with pytest.raises(ClientNotAllowed) as info:
        check_allowed(identity, ["CN:lab-a", "DNS:ris.example.org"])
    err = info.value
    assert isinstance(err, MLLPError)
    assert err.identity == identity
    # The reason names the certificate and says what would admit it.
    assert "CN=test-client" in err.reason
    assert "CN:test-client" in err.reason
    assert f"sha256:{identity.fingerprint_sha256}" in err.reason
    assert "2 allow-list entries" in err.reason
    assert str(err) == err.reason
    check_allowed(identity, ["CN:lab-a", "test-client"])
    await h.aclose()


def test_empty_or_none_allow_list_admits_everyone() -> None:
    identity = make_identity()
    check_allowed(identity, None)
    check_allowed(identity, [])
    check_allowed(identity, AllowList())
    check_allowed(None, None)
    assert AllowList().allows(None)


def test_allow_list_requires_a_certificate() -> None:
    with pytest.raises(ClientNotAllowed, match="no verified certificate") as info:
        check_allowed(None, ["lab-a"])
    assert info.value.identity is None


@pytest.mark.parametrize(
    "entry",
    [
        "lab-a",
        "LAB-A",
        "CN:lab-a",
        "cn: Lab-A ",
        "DNS:lab-a.example.org",
        "lab-a.example.org",
        "IP:10.0.0.7",
        "10.0.0.7",
        "sha256:" + "AB" * 32,
        "SHA256:" + ":".join(["ab"] * 32),
    ],
)
def test_allow_list_entry_forms_match(entry: str) -> None:
    check_allowed(make_identity(), [entry])


@pytest.mark.parametrize(
    "entry",
    [
        "lab-b",
        "CN:lab-a.example.org",  # a DNS SAN is not the CN
        "DNS:lab-a",  # nor is the CN a DNS SAN
        "IP:10.0.0.8",
        "sha256:" + "ac" * 32,
        "URI:lab-a",
        "email:lab-a",
    ],
)
def test_allow_list_entry_forms_refuse(entry: str) -> None:
    with pytest.raises(ClientNotAllowed):
        check_allowed(make_identity(), [entry])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("fingerprint:abcd", "unknown prefix"),
        ("IP:not-an-ip", "not an IP address"),
        ("sha256:abcd", "64 hex digits"),
        ("CN:", "nothing after"),
    ],
)
def test_invalid_allow_list_entries(entry: str, message: str) -> None:
    with pytest.raises(TLSConfigError, match=message):
        AllowList.parse([entry])
    with pytest.raises(TLSConfigError, match=message):
        check_allowed(make_identity(), [entry])


def test_allow_list_file(tmp_path: Path) -> None:
    path = tmp_path / "allow.txt"
    path.write_text("# lab systems\n\nCN:lab-x   # old\nlab-a\n", encoding="utf-8")
    allow = AllowList.from_file(path)
    assert allow.entries == ("CN:lab-x", "lab-a")
    assert allow.allows(make_identity())
    assert not allow.allows(make_identity(common_name="lab-b", alt_names=()))
    path.write_text("lab-a\nIP:nope\n", encoding="utf-8")
    with pytest.raises(TLSConfigError, match=r"allow\.txt:2:"):
        AllowList.from_file(path)
    with pytest.raises(TLSConfigError, match="cannot read"):
        AllowList.from_file(tmp_path / "missing.txt")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def test_bare_ip_entry_means_ip_san() -> None:
    assert AllowList.parse(["10.0.0.7"]).allows(make_identity(alt_names=("IP:10.0.0.7",)))
    assert not AllowList.parse(["10.0.0.7"]).allows(
        make_identity(common_name="10.0.0.7", alt_names=("DNS:10.0.0.7",))
    )


@given(
    digest=st.binary(min_size=32, max_size=32),
    upper=st.booleans(),
    colons=st.booleans(),
)
def test_fingerprint_entries_tolerate_case_and_colons(
    digest: bytes, upper: bool, colons: bool
) -> None:
    hexdigest = digest.hex()
    text = ":".join(f"{b:02x}" for b in digest) if colons else hexdigest
    if upper:
        text = text.upper()
    allow = AllowList.parse([f"sha256:{text}"])
    assert allow.allows(make_identity(fingerprint_sha256=hexdigest))
    other = bytes([digest[0] ^ 1]) + digest[1:]
    assert not allow.allows(make_identity(fingerprint_sha256=other.hex()))


@given(
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
)
def test_dns_entries_match_case_insensitively(name: str) -> None:
    identity = make_identity(common_name=None, alt_names=(f"DNS:{name}",))
    assert AllowList.parse([f"DNS:{name.upper()}"]).allows(identity)
    assert not AllowList.parse([f"DNS:x{name}"]).allows(identity)
    # A bare entry that reads as an IP address means IP:, not DNS:.
    assume(not _is_ip(name))
    assert AllowList.parse([name]).allows(identity)


# ---------------------------------------------------------------- ServerTLS and reload


async def test_server_tls_authorize(tls: TLSMaterial) -> None:
    holder = ServerTLS(tls.server_config(allow=["CN:someone-else"]))
    h = await tls_handshake(holder.context, tls.client_context())
    assert h.ok
    with pytest.raises(ClientNotAllowed):
        holder.authorize(h.server)
    await h.aclose()

    holder = ServerTLS(tls.server_config(allow=["test-client"]))
    h = await tls_handshake(holder.context, tls.client_context())
    identity = holder.authorize(h.server)
    assert identity is not None
    assert identity.common_name == "test-client"
    await h.aclose()


def test_server_tls_config_rejects_bad_allow_entries_early(tls: TLSMaterial) -> None:
    with pytest.raises(TLSConfigError, match="unknown prefix"):
        tls.server_config(allow=["bogus:entry"])


async def test_reload_swaps_context_for_new_connections_only(tls: TLSMaterial) -> None:
    holder = ServerTLS(tls.server_config())
    old_ctx = holder.context
    old = await tls_handshake(holder.context, tls.client_context())
    assert old.ok

    # Replace the server certificate with one from a new CA, and revoke the client.
    new_ca = trustme.CA()
    write_leaf(new_ca.issue_cert("localhost", common_name="localhost"), tls.directory, "server")
    crl = tls.write_crl([tls.client])
    holder.reload(tls.server_config(crl_file=crl))
    assert holder.context is not old_ctx
    assert holder.config.crl_file == crl

    # New connections use the new certificate and the CRL ...
    h = await tls_handshake(holder.context, tls.client_context(trust=new_ca))
    assert h.server_ssl_error.reason == "CERTIFICATE_VERIFY_FAILED"  # revoked
    await h.aclose()
    other_client = tls.issue_client("other-client")
    h = await tls_handshake(holder.context, tls.client_context(trust=new_ca, cert=other_client))
    assert h.ok
    await h.aclose()
    h = await tls_handshake(holder.context, tls.client_context(cert=other_client))
    assert h.client_error is not None  # the old CA no longer vouches for the server
    await h.aclose()

    # ... while the connection accepted before the reload keeps its context.
    assert old.server.context is old_ctx
    await exchange(old.client, old.server)
    await old.aclose()


async def test_reload_rereads_same_paths_and_allow_file(tls: TLSMaterial) -> None:
    allow_file = tls.directory / "allow.txt"
    allow_file.write_text("CN:nobody\n", encoding="utf-8")
    holder = ServerTLS(tls.server_config(allow_file=allow_file))
    h = await tls_handshake(holder.context, tls.client_context())
    with pytest.raises(ClientNotAllowed):
        holder.authorize(h.server)
    await h.aclose()

    allow_file.write_text("CN:nobody\ntest-client\n", encoding="utf-8")
    holder.reload()
    assert holder.allow_list.entries == ("CN:nobody", "test-client")
    h = await tls_handshake(holder.context, tls.client_context())
    assert holder.authorize(h.server) is not None
    await h.aclose()


@pytest.mark.parametrize("broken", ["server.key", "server.pem", "ca.pem", "allow.txt", "crl.pem"])
async def test_reload_with_broken_file_keeps_old_context(tls: TLSMaterial, broken: str) -> None:
    allow_file = tls.directory / "allow.txt"
    allow_file.write_text("test-client\n", encoding="utf-8")
    config = tls.server_config(allow_file=allow_file, crl_file=tls.write_crl([]))
    holder = ServerTLS(config)
    before_ctx, before_allow = holder.context, holder.allow_list

    target = tls.directory / broken
    if broken == "allow.txt":
        target.write_text("IP:999.1.1.1\n", encoding="utf-8")
    else:
        target.write_text("-----BEGIN GARBAGE-----\nnot pem\n-----END GARBAGE-----\n")
    with pytest.raises(TLSConfigError, match=broken.replace(".", r"\.")):
        holder.reload()
    assert holder.context is before_ctx
    assert holder.allow_list is before_allow
    assert holder.config is config

    h = await tls_handshake(holder.context, tls.client_context())
    assert h.ok
    assert holder.authorize(h.server) is not None
    await h.aclose()


def test_reload_with_missing_file_keeps_old_context(tls: TLSMaterial) -> None:
    holder = ServerTLS(tls.server_config())
    before = holder.context
    tls.server_key_file.unlink()
    with pytest.raises(TLSConfigError):
        holder.reload()
    assert holder.context is before

"""TLS contexts for MLLP: the hardened profile and the listener's and sender's settings.

The profile follows SPEC section 6 (IHE ATNA "Authenticate Node"): TLS 1.2
minimum, TLS 1.3 preferred, only ECDHE/DHE AEAD suites for TLS 1.2, no
renegotiation, no compression, and mutual authentication by default on the
server. :func:`server_ssl_context` and :func:`client_ssl_context` build the
contexts; :class:`ServerTLSConfig` and :class:`ClientTLSConfig` say where the
files are. Who the peer is lives in ``_identity``, who may connect in
``_allowlist``, and the reloadable listener state in ``_reload``.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import ssl
import tempfile
from pathlib import Path
from typing import Final, Literal, TypeAlias

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from mllp_trio._tls._allowlist import AllowList
from mllp_trio._tls._errors import TLSConfigError

__all__ = [
    "ClientTLSConfig",
    "ServerTLSConfig",
    "TLSVersionName",
    "client_ssl_context",
    "server_ssl_context",
]

StrPath: TypeAlias = str | os.PathLike[str]

# TLS 1.2 suites: forward-secret key exchange and AEAD ciphers only. TLS 1.3
# suites are configured separately by OpenSSL and are all AEAD already.
_TLS12_CIPHERS: Final = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"
)

_PEM_BEGIN: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")

#: The lowest TLS version accepted: ``"1.2"`` (the default, as IHE ATNA
#: asks) or ``"1.3"``.
TLSVersionName = Literal["1.2", "1.3"]
_TLS_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

#: File name endings read as PKCS#12 key stores rather than PEM.
_PKCS12_SUFFIXES: Final = (".p12", ".pfx")


def _harden(
    ctx: ssl.SSLContext, *, minimum_version: str = "1.2", ciphers: str | None = None
) -> None:
    floor = _TLS_VERSIONS.get(minimum_version)
    if floor is None:
        raise TLSConfigError(
            f"unsupported minimum TLS version {minimum_version!r}: choose 1.2 or 1.3"
        )
    ctx.minimum_version = floor
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    if ciphers is not None:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise TLSConfigError(
                f"the cipher list {ciphers!r} names no cipher this OpenSSL offers "
                "(OpenSSL cipher-list syntax, TLS 1.2 suites; TLS 1.3 suites are fixed)"
            ) from None
    else:
        try:
            ctx.set_ciphers(_TLS12_CIPHERS)
        except ssl.SSLError as exc:  # pragma: no cover - only on an OpenSSL without AEAD
            raise TLSConfigError(
                f"this OpenSSL has none of the required AEAD suites: {exc}"
            ) from exc
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_SINGLE_DH_USE
    )


def _load_chain(
    ctx: ssl.SSLContext, cert_file: StrPath, key_file: StrPath | None, password: str | None
) -> None:
    try:
        ctx.load_cert_chain(cert_file, key_file, password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        # ssl.SSLError subclasses OSError; both carry no key material.
        raise TLSConfigError(
            f"cannot load certificate {os.fspath(cert_file)!r} with key "
            f"{os.fspath(key_file if key_file is not None else cert_file)!r}: {exc}"
        ) from exc


def _read_pkcs12(
    path: StrPath, password: str | None
) -> tuple[PrivateKeyTypes | None, x509.Certificate | None, list[x509.Certificate]]:
    """Key, certificate and other certificates of a PKCS#12 key store."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read PKCS#12 key store {os.fspath(path)!r}: {exc}") from exc
    try:
        key, cert, others = pkcs12.load_key_and_certificates(
            data, password.encode() if password is not None else None
        )
    except (ValueError, TypeError):
        # The message says nothing about the content; never echo the password.
        raise TLSConfigError(
            f"cannot open PKCS#12 key store {os.fspath(path)!r}: wrong password, "
            "or not a PKCS#12 file"
        ) from None
    return key, cert, list(others)


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _load_pkcs12_chain(ctx: ssl.SSLContext, path: StrPath, password: str | None) -> None:
    """Load our certificate, its chain and its key from a PKCS#12 key store.

    ``ssl`` reads keys from files only: the key goes through a private
    temporary folder, encrypted with a one-time password, and is deleted at once.
    """
    key, cert, others = _read_pkcs12(path, password)
    if key is None or cert is None:
        raise TLSConfigError(
            f"PKCS#12 key store {os.fspath(path)!r} holds no private key with its certificate"
        )
    one_time = secrets.token_urlsafe(24)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time.encode()),
    )
    with tempfile.TemporaryDirectory(prefix="mllp-trio-") as folder:
        chain_file = Path(folder) / "chain.pem"
        key_file = Path(folder) / "key.pem"
        chain_file.write_bytes(_pem([cert, *others]))
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        try:
            ctx.load_cert_chain(chain_file, key_file, one_time)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TLSConfigError(f"cannot use the key store {os.fspath(path)!r}: {exc}") from exc


def _pkcs12_ca_data(path: StrPath, password: str | None) -> str:
    """The certificates of a PKCS#12 trust store, as PEM text."""
    _key, cert, others = _read_pkcs12(path, password)
    certs = ([cert] if cert is not None else []) + others
    if not certs:
        raise TLSConfigError(f"PKCS#12 trust store {os.fspath(path)!r} holds no certificate")
    return _pem(certs).decode("ascii")


def _is_pkcs12(path: StrPath | None) -> bool:
    return path is not None and os.fspath(path).lower().endswith(_PKCS12_SUFFIXES)


def _load_ca(ctx: ssl.SSLContext, ca_file: StrPath | None, ca_data: str | bytes | None) -> None:
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TLSConfigError(f"cannot load CA bundle {os.fspath(ca_file)!r}: {exc}") from exc
    if ca_data is not None:
        try:
            ctx.load_verify_locations(cadata=ca_data)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TLSConfigError(f"cannot load in-memory CA certificates: {exc}") from exc


def _check_crl_pem(crl_file: StrPath, data: bytes) -> None:
    labels = _PEM_BEGIN.findall(data)
    if not labels:
        raise TLSConfigError(f"CRL file {os.fspath(crl_file)!r} holds no PEM 'X509 CRL' block")
    if any(label != b"X509 CRL" for label in labels):
        # load_verify_locations would silently add a certificate found here to
        # the trusted roots: refuse anything but CRLs in the CRL file.
        raise TLSConfigError(
            f"CRL file {os.fspath(crl_file)!r} holds PEM blocks other than 'X509 CRL'"
        )
    now = datetime.datetime.now(datetime.UTC)
    for block in re.findall(
        rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", data, flags=re.DOTALL
    ):
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as exc:
            raise TLSConfigError(f"CRL file {os.fspath(crl_file)!r} is malformed: {exc}") from exc
        next_update = crl.next_update_utc
        if next_update is not None and next_update < now:
            # OpenSSL would refuse every client with "CRL has expired": say so now.
            raise TLSConfigError(
                f"CRL file {os.fspath(crl_file)!r} from {crl.issuer.rfc4514_string()!r} "
                f"expired at {next_update.isoformat()}; fetch a fresh CRL"
            )


def _load_crl(ctx: ssl.SSLContext, crl_file: StrPath) -> None:
    try:
        data = Path(crl_file).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read CRL file {os.fspath(crl_file)!r}: {exc}") from exc
    _check_crl_pem(crl_file, data)
    try:
        ctx.load_verify_locations(cafile=crl_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(f"cannot load CRL file {os.fspath(crl_file)!r}: {exc}") from exc
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def server_ssl_context(
    *,
    cert_file: StrPath,
    key_file: StrPath | None = None,
    ca_file: StrPath | None = None,
    ca_data: str | bytes | None = None,
    crl_file: StrPath | None = None,
    require_client_cert: bool = True,
    key_password: str | None = None,
    minimum_version: TLSVersionName = "1.2",
    ciphers: str | None = None,
    ca_password: str | None = None,
) -> ssl.SSLContext:
    """Build the server-side TLS context for an MLLP listener.

    Args:
        cert_file: PEM file with the server certificate, followed by any
            intermediate certificates.
        key_file: PEM file with the server private key; ``None`` if it is in
            ``cert_file``.
        ca_file: PEM bundle of the CAs that issue client certificates.
        ca_data: The same as in-memory PEM text (or DER bytes); may be
            combined with ``ca_file``.
        crl_file: PEM file of certificate revocation lists. Client (leaf)
            certificates are then checked against it, and a client whose
            issuer has no CRL in the file is refused. Intermediate CAs are
            not checked.
        require_client_cert: Mutual TLS, the default: the handshake fails
            unless the client presents a certificate issued by a trusted CA.
            With ``False``, a client certificate is still verified and
            reported if one is presented and a CA is configured.
        key_password: Password of an encrypted private key, or of a PKCS#12
            ``cert_file``.
        minimum_version: The lowest TLS version accepted, ``"1.2"`` (default)
            or ``"1.3"``.
        ciphers: TLS 1.2 cipher suites in OpenSSL cipher-list syntax,
            instead of the forward-secret AEAD default.
        ca_password: Password of a PKCS#12 ``ca_file``.

    A ``cert_file`` (or ``ca_file``) ending ``.p12``/``.pfx`` is read as a
    PKCS#12 key store (trust store), as on the client side.

    Returns:
        A new context: TLS 1.2 minimum, AEAD suites only, no renegotiation,
        no compression, server cipher preference.

    Raises:
        TLSConfigError: A file is missing or unusable, or mutual TLS was
            asked for without a CA to verify clients against.
    """
    has_ca = ca_file is not None or ca_data is not None
    if require_client_cert and not has_ca:
        raise TLSConfigError(
            "mutual TLS needs the CA bundle that issues client certificates: "
            "give ca_file (or ca_data), or pass require_client_cert=False explicitly"
        )
    if crl_file is not None and not has_ca:
        raise TLSConfigError("a CRL file needs a CA bundle to verify client certificates")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, minimum_version=minimum_version, ciphers=ciphers)
    if _is_pkcs12(cert_file):
        _load_pkcs12_chain(ctx, cert_file, key_password)
    else:
        _load_chain(ctx, cert_file, key_file, key_password)
    if ca_file is not None and _is_pkcs12(ca_file):
        _load_ca(ctx, None, _pkcs12_ca_data(ca_file, ca_password))
        ca_file = None
    _load_ca(ctx, ca_file, ca_data)
    if crl_file is not None:
        _load_crl(ctx, crl_file)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif has_ca:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_ssl_context(
    *,
    ca_file: StrPath | None = None,
    ca_data: str | bytes | None = None,
    cert_file: StrPath | None = None,
    key_file: StrPath | None = None,
    check_hostname: bool = True,
    key_password: str | None = None,
    minimum_version: TLSVersionName = "1.2",
    ciphers: str | None = None,
    pkcs12_file: StrPath | None = None,
    pkcs12_password: str | None = None,
    ca_password: str | None = None,
) -> ssl.SSLContext:
    """Build the client-side TLS context for an MLLP sender.

    The server certificate is always verified; only the host name check can
    be turned off.

    Args:
        ca_file: PEM bundle of the CAs that issue server certificates, or a
            PKCS#12 trust store (a name ending ``.p12`` or ``.pfx``).
        ca_data: The same as in-memory PEM text (or DER bytes). When neither
            is given, the system's default trust store is used.
        cert_file: PEM file with our client certificate (and intermediates),
            for mutual TLS.
        key_file: PEM file with our client private key; ``None`` if it is in
            ``cert_file``.
        check_hostname: Check that the server certificate names the host we
            connect to (pass ``server_hostname`` when wrapping). On by default.
        key_password: Password of an encrypted private key.
        minimum_version: The lowest TLS version offered, ``"1.2"`` (default)
            or ``"1.3"``.
        ciphers: TLS 1.2 cipher suites in OpenSSL cipher-list syntax,
            replacing the default (forward-secret AEAD suites only). TLS 1.3
            suites are not affected.
        pkcs12_file: A PKCS#12 key store (``.p12``/``.pfx``) with our client
            certificate, its chain and its key, instead of ``cert_file``.
        pkcs12_password: The key store's password.
        ca_password: The password of a PKCS#12 ``ca_file``.

    Returns:
        A new context with the same protocol profile as the server's.

    Raises:
        TLSConfigError: A file is missing or unusable, a password is wrong,
            both ``cert_file`` and ``pkcs12_file`` are given, the version is
            not 1.2 or 1.3, or the cipher list names no usable cipher.
    """
    if key_file is not None and cert_file is None:
        raise TLSConfigError("key_file was given without cert_file")
    if pkcs12_file is not None and cert_file is not None:
        raise TLSConfigError("give either cert_file (PEM) or pkcs12_file, not both")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx, minimum_version=minimum_version, ciphers=ciphers)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is None and ca_data is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    elif _is_pkcs12(ca_file):
        assert ca_file is not None
        _load_ca(ctx, None, _pkcs12_ca_data(ca_file, ca_password))
        _load_ca(ctx, None, ca_data)
    else:
        _load_ca(ctx, ca_file, ca_data)
    if cert_file is not None:
        if _is_pkcs12(cert_file):
            _load_pkcs12_chain(ctx, cert_file, key_password)
        else:
            _load_chain(ctx, cert_file, key_file, key_password)
    if pkcs12_file is not None:
        _load_pkcs12_chain(ctx, pkcs12_file, pkcs12_password)
    return ctx


def _optional_path(value: StrPath | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen(kw_only=True)
class ServerTLSConfig:
    """Where the listener's TLS material lives, and who may connect.

    Attributes:
        cert_file: PEM server certificate, followed by any intermediates.
        key_file: PEM server private key. Default ``None``: the key is in
            ``cert_file``.
        ca_file: PEM bundle of the CAs that issue client certificates.
            Default ``None``; required while ``require_client_cert`` is on.
        crl_file: PEM certificate revocation lists checked for client
            certificates. Default ``None``: no revocation check.
        allow: Allow-list entries (see :class:`AllowList`). Default empty.
        allow_file: A file of allow-list entries, one per line, added to
            ``allow`` and re-read on reload. Default ``None``.
        require_client_cert: Mutual TLS. Default ``True``; turning it off
            must be explicit.
        minimum_version: The lowest TLS version accepted: ``"1.2"``
            (default) or ``"1.3"``.
        ciphers: TLS 1.2 cipher suites (OpenSSL cipher-list syntax) instead
            of the default forward-secret AEAD suites. Default ``None``.
        key_password: Password of an encrypted PEM key, or of a
            ``cert_file`` ending ``.p12``/``.pfx`` (read as a PKCS#12 key
            store with the certificate, chain and key). Not in the repr.
        ca_password: Password of a ``ca_file`` ending ``.p12``/``.pfx``
            (read as a PKCS#12 trust store). Not in the repr.
    """

    cert_file: Path = attrs.field(converter=Path)
    key_file: Path | None = attrs.field(default=None, converter=_optional_path)
    ca_file: Path | None = attrs.field(default=None, converter=_optional_path)
    crl_file: Path | None = attrs.field(default=None, converter=_optional_path)
    allow: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allow_file: Path | None = attrs.field(default=None, converter=_optional_path)
    require_client_cert: bool = True
    minimum_version: TLSVersionName = attrs.field(
        default="1.2", validator=attrs.validators.in_(tuple(_TLS_VERSIONS))
    )
    ciphers: str | None = None
    key_password: str | None = attrs.field(default=None, repr=False)
    ca_password: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        # Fail at configuration time, not at the first connection.
        if self.require_client_cert and self.ca_file is None:
            raise TLSConfigError(
                "mutual TLS needs ca_file, the CA bundle that issues client certificates; "
                "pass require_client_cert=False explicitly to accept clients without one"
            )
        AllowList.parse(self.allow)

    def build_context(self) -> ssl.SSLContext:
        """Read the files and build a new server context.

        Returns:
            The context, from :func:`server_ssl_context`.

        Raises:
            TLSConfigError: A file is missing or unusable.
        """
        return server_ssl_context(
            cert_file=self.cert_file,
            key_file=self.key_file,
            ca_file=self.ca_file,
            crl_file=self.crl_file,
            require_client_cert=self.require_client_cert,
            key_password=self.key_password,
            minimum_version=self.minimum_version,
            ciphers=self.ciphers,
            ca_password=self.ca_password,
        )

    def load_allow_list(self) -> AllowList:
        """Combine ``allow`` and the entries of ``allow_file``.

        Returns:
            The allow list.

        Raises:
            TLSConfigError: The file cannot be read or holds an invalid entry.
        """
        entries = list(self.allow)
        if self.allow_file is not None:
            entries.extend(AllowList.from_file(self.allow_file).entries)
        return AllowList.parse(entries)


@attrs.frozen(kw_only=True)
class ClientTLSConfig:
    """The sender's TLS material.

    Attributes:
        ca_file: PEM bundle of the CAs that issue server certificates.
            Default ``None``: the system trust store.
        cert_file: PEM client certificate for mutual TLS. Default ``None``.
        key_file: PEM client private key. Default ``None``: in ``cert_file``.
        check_hostname: Check the server certificate against the host name.
            Default ``True``.
        minimum_version: The lowest TLS version offered: ``"1.2"`` (default)
            or ``"1.3"``.
        ciphers: TLS 1.2 cipher suites (OpenSSL cipher-list syntax) instead
            of the default forward-secret AEAD suites. Default ``None``.
        pkcs12_file: A PKCS#12 key store (``.p12``/``.pfx``) with the client
            certificate, chain and key, instead of ``cert_file``/``key_file``.
            Default ``None``. (A ``cert_file`` ending ``.p12``/``.pfx`` is
            read as one too, with ``key_password``; a ``ca_file`` so named is
            read as a PKCS#12 trust store, with ``ca_password``.)
        pkcs12_password: Password of ``pkcs12_file``. Not in the repr.
        ca_password: Password of a PKCS#12 ``ca_file``. Not in the repr.
        key_password: Password of an encrypted PEM key. Not in the repr.
    """

    ca_file: Path | None = attrs.field(default=None, converter=_optional_path)
    cert_file: Path | None = attrs.field(default=None, converter=_optional_path)
    key_file: Path | None = attrs.field(default=None, converter=_optional_path)
    check_hostname: bool = True
    minimum_version: TLSVersionName = attrs.field(
        default="1.2", validator=attrs.validators.in_(tuple(_TLS_VERSIONS))
    )
    ciphers: str | None = None
    pkcs12_file: Path | None = attrs.field(default=None, converter=_optional_path)
    pkcs12_password: str | None = attrs.field(default=None, repr=False)
    ca_password: str | None = attrs.field(default=None, repr=False)
    key_password: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.pkcs12_file is not None and self.cert_file is not None:
            raise TLSConfigError("give either cert_file (PEM) or pkcs12_file, not both")

    def build_context(self) -> ssl.SSLContext:
        """Read the files and build a new client context.

        Returns:
            The context, from :func:`client_ssl_context`.

        Raises:
            TLSConfigError: A file is missing or unusable, or a password is wrong.
        """
        return client_ssl_context(
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            check_hostname=self.check_hostname,
            key_password=self.key_password,
            minimum_version=self.minimum_version,
            ciphers=self.ciphers,
            pkcs12_file=self.pkcs12_file,
            pkcs12_password=self.pkcs12_password,
            ca_password=self.ca_password,
        )

"""TLS for MLLP: the context profile, the peer's identity, and who may connect.

The profile follows SPEC section 6 (IHE ATNA "Authenticate Node"): TLS 1.2
minimum, TLS 1.3 preferred, only ECDHE/DHE AEAD suites for TLS 1.2, no
renegotiation, no compression, and mutual authentication by default on the
server. After the handshake, :func:`identity_from_ssl` reads the verified
client certificate and :func:`check_allowed` applies the optional allow list.
:class:`ServerTLS` holds the current server context and swaps it on
:meth:`ServerTLS.reload`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias, overload

import attrs
from cryptography import x509
from cryptography.x509.oid import NameOID

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._peer import ClientIdentity

__all__ = [
    "AllowList",
    "ClientNotAllowed",
    "ClientTLSConfig",
    "PeerCertificateSource",
    "ServerTLS",
    "ServerTLSConfig",
    "TLSConfigError",
    "check_allowed",
    "client_ssl_context",
    "identity_from_der",
    "identity_from_ssl",
    "server_ssl_context",
]

StrPath: TypeAlias = str | os.PathLike[str]

# TLS 1.2 suites: forward-secret key exchange and AEAD ciphers only. TLS 1.3
# suites are configured separately by OpenSSL and are all AEAD already.
_TLS12_CIPHERS: Final = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"
)

_PEM_BEGIN: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


class TLSConfigError(MLLPError):
    """A TLS setting or file is unusable: bad path, bad PEM, wrong key, bad allow entry.

    The message names the file or setting at fault and never contains key
    material.
    """


class ClientNotAllowed(MLLPError):
    """A client completed the TLS handshake but is not on the allow list.

    The server logs :attr:`reason` and closes the connection before reading
    any message.

    Attributes:
        identity: The client's verified identity, or ``None`` if it presented
            no certificate.
        reason: What was refused and how to admit the client, for logs. It
            contains certificate identity, never message content.
    """

    def __init__(self, reason: str, identity: ClientIdentity | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.identity = identity


# ---------------------------------------------------------------- contexts


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    try:
        ctx.set_ciphers(_TLS12_CIPHERS)
    except ssl.SSLError as exc:  # pragma: no cover - only on an OpenSSL without AEAD
        raise TLSConfigError(f"this OpenSSL has none of the required AEAD suites: {exc}") from exc
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
        key_password: Password of an encrypted private key.

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
    _harden(ctx)
    _load_chain(ctx, cert_file, key_file, key_password)
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
) -> ssl.SSLContext:
    """Build the client-side TLS context for an MLLP sender.

    The server certificate is always verified; only the host name check can
    be turned off.

    Args:
        ca_file: PEM bundle of the CAs that issue server certificates.
        ca_data: The same as in-memory PEM text (or DER bytes). When neither
            is given, the system's default trust store is used.
        cert_file: PEM file with our client certificate (and intermediates),
            for mutual TLS.
        key_file: PEM file with our client private key; ``None`` if it is in
            ``cert_file``.
        check_hostname: Check that the server certificate names the host we
            connect to (pass ``server_hostname`` when wrapping). On by default.
        key_password: Password of an encrypted private key.

    Returns:
        A new context with the same protocol profile as the server's.

    Raises:
        TLSConfigError: A file is missing or unusable.
    """
    if key_file is not None and cert_file is None:
        raise TLSConfigError("key_file was given without cert_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is None and ca_data is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_ca(ctx, ca_file, ca_data)
    if cert_file is not None:
        _load_chain(ctx, cert_file, key_file, key_password)
    return ctx


# ---------------------------------------------------------------- identity


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


# ---------------------------------------------------------------- allow list

_Key: TypeAlias = tuple[str, object]
_PREFIXES: Final = frozenset({"dns", "ip", "uri", "email", "cn", "sha256"})


def _dns_key(name: str) -> _Key:
    return ("dns", name.rstrip(".").casefold())


def _identity_keys(identity: ClientIdentity) -> set[_Key]:
    keys: set[_Key] = {("sha256", identity.fingerprint_sha256.lower())}
    if identity.common_name is not None:
        keys.add(("cn", identity.common_name.casefold()))
    for alt in identity.alt_names:
        kind, _, value = alt.partition(":")
        if kind == "DNS":
            keys.add(_dns_key(value))
        elif kind == "IP":
            # A malformed value matches no entry rather than failing the check.
            with contextlib.suppress(ValueError):
                keys.add(("ip", ipaddress.ip_address(value)))
        elif kind == "URI":
            keys.add(("uri", value))
        elif kind == "email":
            keys.add(("email", value.casefold()))
    return keys


def _entry_keys(entry: str) -> list[_Key]:
    text = entry.strip()
    if not text:
        raise TLSConfigError("empty allow-list entry")
    prefix, sep, value = text.partition(":")
    kind = prefix.strip().casefold()
    if not sep or kind not in _PREFIXES:
        try:
            # A bare IP address (IPv6 has colons) is the friendly reading.
            return [("ip", ipaddress.ip_address(text))]
        except ValueError:
            pass
        if sep:
            raise TLSConfigError(
                f"allow-list entry {entry!r}: unknown prefix {prefix!r}; "
                "use DNS:, IP:, URI:, email:, CN:, sha256: or a bare host name"
            )
        # A bare name: a DNS subject alternative name or the common name.
        return [_dns_key(text), ("cn", text.casefold())]
    value = value.strip()
    if not value:
        raise TLSConfigError(f"allow-list entry {entry!r} has nothing after {prefix}:")
    if kind == "dns":
        return [_dns_key(value)]
    if kind == "cn":
        return [("cn", value.casefold())]
    if kind == "uri":
        return [("uri", value)]
    if kind == "email":
        return [("email", value.casefold())]
    if kind == "ip":
        try:
            return [("ip", ipaddress.ip_address(value))]
        except ValueError:
            raise TLSConfigError(
                f"allow-list entry {entry!r}: {value!r} is not an IP address"
            ) from None
    digest = re.sub(r"[\s:]", "", value).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise TLSConfigError(
            f"allow-list entry {entry!r}: a sha256 fingerprint is 64 hex digits "
            "(colons and case are ignored)"
        )
    return [("sha256", digest)]


@attrs.frozen
class AllowList:
    """The clients admitted after the TLS handshake; empty admits every verified client.

    Entry forms (prefixes are case-insensitive):

    * ``DNS:name`` — a DNS subject alternative name (case-insensitive, exact:
      wildcards in certificates are not expanded);
    * ``IP:addr`` — an IP address subject alternative name;
    * ``URI:uri`` — a URI subject alternative name (exact);
    * ``email:addr`` — an e-mail subject alternative name (case-insensitive);
    * ``CN:name`` — the subject common name (case-insensitive);
    * ``sha256:hex`` — the certificate's SHA-256 fingerprint (colons, spaces
      and case ignored);
    * a bare name — a DNS subject alternative name or the common name; a bare
      IP address is read as ``IP:``.

    Build it with :meth:`parse` or :meth:`from_file`.

    Attributes:
        entries: The entries as given, for messages.
    """

    entries: tuple[str, ...] = ()
    _keys: frozenset[_Key] = attrs.field(default=frozenset(), repr=False)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Parse allow-list entries.

        Args:
            entries: Entries in the forms listed on the class.

        Returns:
            The allow list.

        Raises:
            TLSConfigError: An entry is empty, has an unknown prefix, or holds
                a malformed address or fingerprint.
        """
        given = tuple(entries)
        keys: set[_Key] = set()
        for entry in given:
            keys.update(_entry_keys(entry))
        return cls(given, frozenset(keys))

    @classmethod
    def from_file(cls, path: StrPath) -> AllowList:
        """Read an allow list: one entry per line, ``#`` comments and blank lines ignored.

        Args:
            path: The text file (UTF-8).

        Returns:
            The allow list.

        Raises:
            TLSConfigError: The file cannot be read or a line is not a valid entry.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TLSConfigError(f"cannot read allow list {os.fspath(path)!r}: {exc}") from exc
        entries: list[str] = []
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                _entry_keys(line)
            except TLSConfigError as exc:
                raise TLSConfigError(f"{os.fspath(path)}:{lineno}: {exc}") from None
            entries.append(line)
        return cls.parse(entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def allows(self, identity: ClientIdentity | None) -> bool:
        """Tell whether a client is admitted.

        Args:
            identity: The verified client identity, ``None`` without a certificate.

        Returns:
            ``True`` if the list is empty or an entry matches the identity.
        """
        if not self.entries:
            return True
        if identity is None:
            return False
        return not self._keys.isdisjoint(_identity_keys(identity))


def check_allowed(identity: ClientIdentity | None, allow: AllowList | Iterable[str] | None) -> None:
    """Refuse a client that the allow list does not admit.

    Args:
        identity: The verified client identity from :func:`identity_from_ssl`.
        allow: The allow list, or its entries; ``None`` or empty admits every
            client that passed the handshake.

    Raises:
        ClientNotAllowed: The list is not empty and no entry matches; the
            reason names the certificate and what entry would admit it.
        TLSConfigError: ``allow`` holds an invalid entry.
    """
    if allow is None:
        return
    allow_list = allow if isinstance(allow, AllowList) else AllowList.parse(allow)
    if allow_list.allows(identity):
        return
    if identity is None:
        raise ClientNotAllowed(
            f"client presented no verified certificate, but an allow list of "
            f"{len(allow_list)} entries is configured; require client certificates "
            "(mutual TLS) or remove the allow list",
            None,
        )
    sans = ", ".join(identity.alt_names) or "none"
    suggestions = [f"sha256:{identity.fingerprint_sha256}"]
    if identity.common_name is not None:
        suggestions.insert(0, f"CN:{identity.common_name}")
    raise ClientNotAllowed(
        f"client certificate {identity.subject!r} (subject alternative names: {sans}; "
        f"sha256:{identity.fingerprint_sha256}) matches none of the {len(allow_list)} "
        f"allow-list entries; to admit it add one of: {', '.join(suggestions)}",
        identity,
    )


# ---------------------------------------------------------------- configuration


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
    """

    cert_file: Path = attrs.field(converter=Path)
    key_file: Path | None = attrs.field(default=None, converter=_optional_path)
    ca_file: Path | None = attrs.field(default=None, converter=_optional_path)
    crl_file: Path | None = attrs.field(default=None, converter=_optional_path)
    allow: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    allow_file: Path | None = attrs.field(default=None, converter=_optional_path)
    require_client_cert: bool = True

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
    """

    ca_file: Path | None = attrs.field(default=None, converter=_optional_path)
    cert_file: Path | None = attrs.field(default=None, converter=_optional_path)
    key_file: Path | None = attrs.field(default=None, converter=_optional_path)
    check_hostname: bool = True

    def build_context(self) -> ssl.SSLContext:
        """Read the files and build a new client context.

        Returns:
            The context, from :func:`client_ssl_context`.

        Raises:
            TLSConfigError: A file is missing or unusable.
        """
        return client_ssl_context(
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            check_hostname=self.check_hostname,
        )


@attrs.frozen
class _ServerState:
    config: ServerTLSConfig
    context: ssl.SSLContext
    allow_list: AllowList


class ServerTLS:
    """The listener's current TLS context and allow list, reloadable at run time.

    Wrap each accepted connection with :attr:`context` read at accept time:
    a connection keeps the context it was wrapped with, so :meth:`reload`
    affects only connections accepted afterwards.

    Args:
        config: Where the files are.

    Raises:
        TLSConfigError: A file is missing or unusable.
    """

    def __init__(self, config: ServerTLSConfig) -> None:
        self._state = self._load(config)

    @staticmethod
    def _load(config: ServerTLSConfig) -> _ServerState:
        return _ServerState(config, config.build_context(), config.load_allow_list())

    @property
    def config(self) -> ServerTLSConfig:
        """The configuration of the current context."""
        return self._state.config

    @property
    def context(self) -> ssl.SSLContext:
        """The context for connections accepted now."""
        return self._state.context

    @property
    def allow_list(self) -> AllowList:
        """The current allow list."""
        return self._state.allow_list

    def reload(self, config: ServerTLSConfig | None = None) -> None:
        """Re-read the certificate, key, CA, CRL and allow-list files.

        Everything is loaded first and swapped in with one assignment, so a
        failure leaves the previous context and allow list in use.

        Args:
            config: New settings to load; default: the current ones again.

        Raises:
            TLSConfigError: A file is missing or unusable; nothing changed.
        """
        state = self._load(self._state.config if config is None else config)
        # One attribute holds everything, so readers never see a mixed set.
        self._state = state

    def authorize(self, obj: PeerCertificateSource) -> ClientIdentity | None:
        """Read the peer's identity after the handshake and apply the allow list.

        Args:
            obj: The TLS connection whose handshake is done.

        Returns:
            The verified client identity, ``None`` if it sent no certificate
            (possible only with ``require_client_cert=False``).

        Raises:
            ClientNotAllowed: The allow list does not admit the client.
        """
        identity = identity_from_ssl(obj)
        check_allowed(identity, self._state.allow_list)
        return identity

"""Option sets shared by commands, as click decorators.

Each set adds its options to a command and hands the command one frozen
value object instead of a dozen keyword arguments: ``@client_tls_options``
gives ``tls: ClientTLSOptions``, ``@client_options`` gives
``client: ClientOptions`` and so on. ``send`` and ``batch send`` use the
same sets, so their flags, defaults, validation and help are the same.

Validation lives in the option types (``PORT``, ``POSITIVE_SECONDS``...):
click refuses a bad value before any command code runs, and its message
names the flag (``Invalid value for '--port': 70000 is not in the range
1<=x<=65535``).
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import attrs
import click
from click.core import ParameterSource

import mllp_trio
from mllp_trio._cli._common import DEFAULT_CERTS, DEFAULT_OUTBOX, log
from mllp_trio._devcerts import DevCertPaths, ensure_dev_certs

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    # click 8.2+ types ParamType as a generic; older releases cannot subscript it.
    ParamTypeBase = click.ParamType[Any]
    ChoiceType = click.Choice[str]
else:
    ParamTypeBase = click.ParamType
    ChoiceType = click.Choice

# --- types: each refuses a bad value with the flag named ----------------------------------

#: A TCP port to connect to.
PORT = click.IntRange(1, 65535)
#: A TCP port to listen on; 0 asks the system for a free one.
LISTEN_PORT = click.IntRange(0, 65535)
#: A duration in seconds, more than zero.
POSITIVE_SECONDS = click.FloatRange(min=0, min_open=True)
#: A count or size, at least one.
POSITIVE_INT = click.IntRange(min=1)
#: A count that may be zero (retries).
NON_NEGATIVE_INT = click.IntRange(min=0)
LOG_LEVELS = ("debug", "info", "warning", "error")


class OptionalSeconds(ParamTypeBase):
    """Seconds more than zero, or ``0``/``none``/``off`` for no limit (``None``)."""

    name = "seconds|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text in ("none", "off", "0", "0.0"):
            return None
        try:
            seconds = float(text)
        except ValueError:
            self.fail(f"{value!r} is not a number of seconds, nor 'none'", param, ctx)
        if not seconds > 0 or seconds != seconds:
            self.fail(f"{value!r} must be more than 0 (or 0/'none' for no limit)", param, ctx)
        return seconds


OPTIONAL_SECONDS = OptionalSeconds()


def choice(*values: str) -> ChoiceType:
    """A case-insensitive choice (``--log-level warning`` is ``WARNING``)."""
    return click.Choice(values, case_sensitive=False)


def _option_set(
    name: str, factory: Callable[..., Any], *options: Callable[[Any], Any]
) -> Callable[[F], F]:
    """A decorator adding ``options`` and passing their values as one ``factory`` object.

    The values of the options go to ``factory`` as keyword arguments (by
    their parameter names) and the command gets the result as ``name``.
    """
    names = [_param_name(option) for option in options]

    def decorator(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            kwargs[name] = factory(**values)
            return command(*args, **kwargs)

        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorator


def _param_name(option: Callable[[Any], Any]) -> str:
    def probe() -> None:
        """Carries the option's parameter to read its name."""

    params = option(probe).__click_params__
    name = params[-1].name
    assert isinstance(name, str)
    return name


def log_level_option(default: str = "info") -> Callable[[F], F]:
    """``--log-level``, case-insensitive."""
    return click.option(
        "--log-level",
        type=choice(*LOG_LEVELS),
        default=default,
        show_default=True,
        help="log messages at this level and above go to stderr",
    )


# --- framing ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FramingOptions:
    """``--framing``, ``--max-message-size`` and the HLLP block options."""

    framing: Literal["mllp", "mllp2", "hllp"]
    max_message_size: int
    hllp_protocol_id: str = "23"
    hllp_checksum: Literal["xor", "oracle", "sum"] = "xor"
    hllp_send_checksum: bool = True

    def config(self) -> mllp_trio.FramingConfig:
        """The library's framing configuration."""
        return mllp_trio.FramingConfig(
            framing=self.framing,
            max_message_size=self.max_message_size,
            hllp_protocol_id=self.hllp_protocol_id,
            hllp_checksum=self.hllp_checksum,
            hllp_send_checksum=self.hllp_send_checksum,
        )


class ProtocolId(ParamTypeBase):
    """The two digits of an HLLP block's protocol id."""

    name = "NN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        if len(text) != 2 or not text.isascii() or not text.isdigit():
            self.fail(f"{value!r} is not two digits (23, or 21 for VistA)", param, ctx)
        return text


_HLLP_FLAGS = {
    "hllp_protocol_id": "--hllp-protocol-id",
    "hllp_checksum": "--hllp-checksum",
    "hllp_send_checksum": "--no-hllp-checksum",
}


def _make_framing(values: dict[str, Any]) -> FramingOptions:
    framing = values.pop("framing").lower()
    if framing != "hllp":
        ctx = click.get_current_context(silent=True)
        given = [
            flag
            for name, flag in _HLLP_FLAGS.items()
            if ctx is not None
            and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} set(s) HLLP blocks, but --framing is {framing}: "
                "add --framing hllp or drop them",
                ctx,
            )
    return FramingOptions(
        framing=framing,
        max_message_size=values.pop("max_message_size"),
        hllp_protocol_id=values.pop("hllp_protocol_id"),
        hllp_checksum=values.pop("hllp_checksum").lower(),
        hllp_send_checksum=values.pop("hllp_send_checksum"),
    )


_FRAMING = click.option(
    "--framing",
    type=choice("mllp", "mllp2", "hllp"),
    default="mllp",
    show_default=True,
    help="MLLP release 1, MLLP release 2 (commit ACK/NAK) or HLLP",
)
_MAX_MESSAGE_SIZE = click.option(
    "--max-message-size",
    type=POSITIVE_INT,
    default=mllp_trio.proto.DEFAULT_MAX_MESSAGE_SIZE,
    show_default="16 MiB",
    help="bytes",
)
_HLLP_PROTOCOL_ID = click.option(
    "--hllp-protocol-id",
    type=ProtocolId(),
    default="23",
    show_default=True,
    help="HLLP: the protocol id of the blocks (21 for VistA)",
)
_HLLP_CHECKSUM = click.option(
    "--hllp-checksum",
    type=choice("xor", "oracle", "sum"),
    default="xor",
    show_default=True,
    help="HLLP: the block checksum variant",
)
_HLLP_SEND_CHECKSUM = click.option(
    "--hllp-checksum-sent/--no-hllp-checksum",
    "hllp_send_checksum",
    default=True,
    show_default=True,
    help="HLLP: compute the checksum of the blocks we send, or send 999 (not checked)",
)
_FRAMING_OPTIONS = (
    _FRAMING,
    _MAX_MESSAGE_SIZE,
    _HLLP_PROTOCOL_ID,
    _HLLP_CHECKSUM,
    _HLLP_SEND_CHECKSUM,
)
#: ``--framing``, ``--max-message-size`` and the HLLP options, as ``framing: FramingOptions``.
framing_options = _option_set("framing", lambda **v: _make_framing(v), *_FRAMING_OPTIONS)


def _without(values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in names}


# --- TLS -------------------------------------------------------------------------------

TLSStream = Literal["ssl_socket", "trio"]


def _tls_stream(value: str) -> TLSStream:
    return "trio" if value.lower() == "trio" else "ssl_socket"


_CERT = click.option(
    "--cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM certificate, or a PKCS#12 key store (.p12/.pfx; password: --key-password)  "
    "[default: the development one in --certs-dir]",
)
_KEY = click.option(
    "--key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM private key  [default: the development one]",
)
_CA = click.option(
    "--ca",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM CA bundle that verifies the peer  [default: the development CA]",
)
_CERTS_DIR = click.option(
    "--certs-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_CERTS,
    show_default=True,
    help="development certificates folder",
)
_PLAINTEXT = click.option(
    "--plaintext",
    is_flag=True,
    help="no TLS at all: only behind a VPN or an SSH tunnel (loudly warned)",
)
_TLS_STREAM = click.option(
    "--tls-stream",
    type=choice("ssl-socket", "trio"),
    default="ssl-socket",
    show_default=True,
    help="TLS implementation: non-blocking ssl.SSLSocket (faster) or trio.SSLStream",
)


_TLS_MIN = click.option(
    "--tls-min",
    type=choice("1.2", "1.3"),
    default="1.2",
    show_default=True,
    help="the lowest TLS version accepted",
)
_CIPHERS = click.option(
    "--ciphers",
    metavar="LIST",
    help="TLS 1.2 cipher suites, OpenSSL syntax  [default: forward-secret AEAD only]",
)
_KEY_PASSWORD = click.option(
    "--key-password",
    envvar="MLLP_TRIO_KEY_PASSWORD",
    metavar="TEXT",
    help="password of an encrypted --key or of a PKCS#12 (.p12/.pfx) --cert or --keystore "
    "(better: the MLLP_TRIO_KEY_PASSWORD variable, which ps does not show)",
)
_CA_PASSWORD = click.option(
    "--ca-password",
    envvar="MLLP_TRIO_CA_PASSWORD",
    metavar="TEXT",
    help="password of a PKCS#12 (.p12/.pfx) --ca trust store (or MLLP_TRIO_CA_PASSWORD)",
)


@attrs.frozen(kw_only=True)
class ServerTLSOptions:
    """The listener's TLS flags."""

    cert: Path | None
    key: Path | None
    ca: Path | None
    certs_dir: Path
    plaintext: bool
    tls_stream: TLSStream
    crl: Path | None
    allow: tuple[str, ...]
    no_client_cert: bool
    tls_min: Literal["1.2", "1.3"] = "1.2"
    ciphers: str | None = None
    key_password: str | None = attrs.field(default=None, repr=False)
    ca_password: str | None = attrs.field(default=None, repr=False)

    def conflicts(self) -> list[str]:
        """Flags that contradict each other, as messages naming them."""
        problems: list[str] = []
        if self.plaintext:
            given = [
                flag
                for flag, value in (
                    ("--cert", self.cert),
                    ("--key", self.key),
                    ("--ca", self.ca),
                    ("--crl", self.crl),
                    ("--allow", self.allow),
                    ("--no-client-cert", self.no_client_cert),
                    ("--tls-min 1.3", self.tls_min == "1.3"),
                    ("--ciphers", self.ciphers),
                )
                if value
            ]
            if given:
                problems.append(
                    f"--plaintext turns TLS off, so {', '.join(given)} would be ignored: "
                    "drop one or the other"
                )
            return problems
        if self.allow and self.no_client_cert:
            problems.append(
                "--allow checks client certificates, which --no-client-cert does not ask "
                "for: drop one or the other"
            )
        if self.key is not None and self.cert is None:
            problems.append("--key needs --cert (the certificate it belongs to)")
        if self.cert is not None and self.ca is None:
            if self.crl is not None:
                problems.append(
                    "--crl needs --ca (the CA bundle that verifies client certificates)"
                )
            elif not self.no_client_cert:
                problems.append(
                    "--cert without --ca: mutual TLS needs the CA bundle that issues client "
                    "certificates; give --ca, or --no-client-cert for server-only TLS"
                )
        return problems

    def server_tls(self) -> mllp_trio.ServerTLS | None:
        """The listener's TLS, creating development certificates when none are given.

        Returns ``None`` for ``--plaintext``, after a loud warning.
        """
        if self.plaintext:
            log.warning(
                "PLAINTEXT MODE: messages travel unencrypted and clients are not authenticated. "
                "Use it only behind a VPN or an SSH tunnel."
            )
            return None
        cert, key, ca = self.cert, self.key, self.ca
        if cert is None:
            paths, created = ensure_dev_certs(self.certs_dir)
            if created:
                click.echo(
                    f"created development certificates in {paths.directory}/ (not for production)"
                )
            cert, key = paths.server_cert, paths.server_key
            ca = ca or paths.ca
        return mllp_trio.ServerTLS(
            mllp_trio.ServerTLSConfig(
                cert_file=cert,
                key_file=key,
                ca_file=ca,
                crl_file=self.crl,
                # attrs' ``converter=tuple`` hides the field's type from mypy.
                allow=cast(Any, self.allow),
                require_client_cert=not self.no_client_cert,
                minimum_version=self.tls_min,
                ciphers=self.ciphers,
                key_password=self.key_password,
                ca_password=self.ca_password,
            )
        )


server_tls_options = _option_set(
    "tls",
    lambda **v: ServerTLSOptions(
        tls_stream=_tls_stream(v["tls_stream"]),
        allow=tuple(v["allow"]),
        **_without(v, "tls_stream", "allow"),
    ),
    _CERT,
    _KEY,
    _CA,
    _CERTS_DIR,
    _PLAINTEXT,
    _TLS_STREAM,
    click.option(
        "--crl",
        type=click.Path(path_type=Path, dir_okay=False),
        help="PEM CRL checked for client certificates",
    ),
    click.option(
        "--allow",
        multiple=True,
        metavar="IDENTITY",
        help="allowed client (DNS:, IP:, URI:, email:, CN:, sha256:, or a name); repeatable",
    ),
    click.option(
        "--no-client-cert",
        is_flag=True,
        help="do not require client certificates (server-only TLS)",
    ),
    _TLS_MIN,
    _CIPHERS,
    _KEY_PASSWORD,
    _CA_PASSWORD,
)


@attrs.frozen(kw_only=True)
class ClientTLSOptions:
    """The sender's TLS flags."""

    cert: Path | None
    key: Path | None
    ca: Path | None
    certs_dir: Path
    plaintext: bool
    tls_stream: TLSStream
    server_hostname: str | None
    no_check_hostname: bool
    tls_min: Literal["1.2", "1.3"] = "1.2"
    ciphers: str | None = None
    keystore: Path | None = None
    keystore_password: str | None = attrs.field(default=None, repr=False)
    key_password: str | None = attrs.field(default=None, repr=False)
    ca_password: str | None = attrs.field(default=None, repr=False)
    #: The context once built (``attrs.evolve(tls, context=tls.ssl_context())``).
    context: ssl.SSLContext | None = attrs.field(default=None, repr=False)

    def conflicts(self) -> list[str]:
        """Flags that contradict each other, as messages naming them."""
        if self.plaintext:
            given = [
                flag
                for flag, value in (
                    ("--cert", self.cert),
                    ("--key", self.key),
                    ("--ca", self.ca),
                    ("--keystore", self.keystore),
                    ("--ciphers", self.ciphers),
                    ("--tls-min 1.3", self.tls_min == "1.3"),
                    ("--server-hostname", self.server_hostname),
                    ("--no-check-hostname", self.no_check_hostname),
                )
                if value
            ]
            if given:
                return [
                    f"--plaintext turns TLS off, so {', '.join(given)} would be ignored: "
                    "drop one or the other"
                ]
            return []
        problems = []
        if self.keystore is not None and (self.cert is not None or self.key is not None):
            problems.append(
                "--keystore holds the certificate and its key: drop --cert/--key, or --keystore"
            )
        elif self.key is not None and self.cert is None:
            problems.append("--key needs --cert (the client certificate it belongs to)")
        if self.keystore_password is not None and self.keystore is None:
            problems.append("--keystore-password needs --keystore")
        return problems

    def files(self) -> tuple[Path | None, Path | None, Path | None]:
        """The client certificate (or key store), key and CA in use: given, else in --certs-dir."""
        paths = DevCertPaths.in_directory(self.certs_dir)
        cert: Path | None
        key: Path | None
        if self.keystore is not None:
            cert, key = self.keystore, None
        else:
            cert = self.cert or (paths.client_cert if paths.client_cert.exists() else None)
            key = self.key or (paths.client_key if self.cert is None and cert is not None else None)
        ca = self.ca or (paths.ca if paths.ca.exists() else None)
        return cert, key, ca

    def describe(self) -> str:
        """Which certificates the sender uses, or that it found none, and how to give them."""
        cert, key, ca = self.files()
        if self.keystore is not None:
            mine = f"client key store {self.keystore}"
        elif cert is None:
            mine = (
                f"no client certificate (none given with --cert, no client.pem in "
                f"{self.certs_dir}/): a listener that requires one will refuse"
            )
        else:
            mine = f"client certificate {cert}" + (f", key {key}" if key else "")
        theirs = (
            f"server checked against {ca}"
            if ca is not None
            else f"server checked against the system CAs (no --ca, no ca.pem in {self.certs_dir}/)"
        )
        if self.no_check_hostname:
            theirs += ", host name not checked"
        floor = "" if self.tls_min == "1.2" else "; TLS 1.3 only"
        return f"{mine}; {theirs}{floor}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client context: the given files, else the development ones found in --certs-dir.

        Returns ``None`` for ``--plaintext``.
        """
        if self.plaintext:
            return None
        if self.context is not None:
            return self.context
        cert, key, ca = self.files()
        return mllp_trio.ClientTLSConfig(
            ca_file=ca,
            cert_file=None if self.keystore is not None else cert,
            key_file=key,
            check_hostname=not self.no_check_hostname,
            minimum_version=self.tls_min,
            ciphers=self.ciphers,
            pkcs12_file=self.keystore,
            pkcs12_password=self.keystore_password,
            key_password=self.key_password,
            ca_password=self.ca_password,
        ).build_context()


client_tls_options = _option_set(
    "tls",
    lambda **v: ClientTLSOptions(
        tls_stream=_tls_stream(v["tls_stream"]), **_without(v, "tls_stream")
    ),
    _CERT,
    _KEY,
    _CA,
    _CERTS_DIR,
    _PLAINTEXT,
    _TLS_STREAM,
    click.option("--server-hostname", help="name the server certificate must carry"),
    click.option("--no-check-hostname", is_flag=True, help="do not check the server name"),
    _TLS_MIN,
    _CIPHERS,
    click.option(
        "--keystore",
        type=click.Path(path_type=Path, dir_okay=False),
        help="PKCS#12 key store (.p12/.pfx) with the client certificate and key, "
        "instead of --cert/--key (a .p12 --ca is read as a trust store)",
    ),
    click.option(
        "--keystore-password",
        envvar="MLLP_TRIO_KEYSTORE_PASSWORD",
        metavar="TEXT",
        help="password of --keystore (better: the MLLP_TRIO_KEYSTORE_PASSWORD variable, "
        "which ps does not show)",
    ),
    _KEY_PASSWORD,
    _CA_PASSWORD,
)


# --- timeouts and retries --------------------------------------------------------------


def queue_store_options() -> Callable[[F], F]:
    """``--store`` and ``--give-up-after``, the queue flags of ``send`` and ``batch send``."""
    store = click.option(
        "--store",
        type=click.Path(path_type=Path, file_okay=False),
        default=DEFAULT_OUTBOX,
        show_default=True,
        help="queue folder for --queue",
    )
    give_up = click.option(
        "--give-up-after",
        type=OPTIONAL_SECONDS,
        default=86400.0,
        show_default=True,
        help="with --queue: seconds of failures (AE, no answer) before a message becomes a "
        "dead letter; 0 or 'none': never",
    )

    def apply(f: F) -> F:
        return store(give_up(f))

    return apply


def handshake_timeout_option() -> Callable[[F], F]:
    """``--handshake-timeout``."""
    return click.option(
        "--handshake-timeout",
        type=POSITIVE_SECONDS,
        default=10.0,
        show_default=True,
        help="seconds for the TLS handshake",
    )


def retries_option() -> Callable[[F], F]:
    """``--retries``: MLLP release 2 resends."""
    return click.option(
        "--retries",
        type=NON_NEGATIVE_INT,
        default=2,
        show_default=True,
        help="resends after a NAK or a timeout",
    )


@attrs.frozen(kw_only=True)
class ClientOptions:
    """How the sender frames, connects, waits, decodes and retries."""

    framing: FramingOptions
    handshake_timeout: float
    ack_timeout: float
    retries: int
    connect_timeout: float = 10.0
    charset: str = "UNICODE UTF-8"
    charset_override: str | None = None
    bind: str | None = None
    keepalive: float | None = None

    def config(self, tls_stream: TLSStream = "ssl_socket") -> mllp_trio.ClientConfig:
        """The library's client configuration."""
        return mllp_trio.ClientConfig(
            framing=self.framing.config(),
            connect_timeout=self.connect_timeout,
            handshake_timeout=self.handshake_timeout,
            ack_timeout=self.ack_timeout,
            retries=self.retries,
            default_charset=self.charset,
            charset_override=self.charset_override,
            local_address=self.bind,
            keepalive=self.keepalive,
            tls_stream=tls_stream,
        )


def _make_client_options(**values: Any) -> ClientOptions:
    framing = _make_framing(values)
    return ClientOptions(framing=framing, **values)


class HL7Charset(ParamTypeBase):
    """An HL7 character set name (table 0211), as MSH-18 carries it."""

    name = "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        try:
            mllp_trio.ClientConfig(default_charset=text)
        except ValueError:
            self.fail(
                f"{value!r} is not an HL7 character set (table 0211 names such as "
                "'UNICODE UTF-8', '8859/1', 'ASCII')",
                param,
                ctx,
            )
        return text


class IPAddress(ParamTypeBase):
    """An IP address of this host."""

    name = "ADDRESS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        try:
            ipaddress.ip_address(text)
        except ValueError:
            self.fail(f"{value!r} is not an IP address", param, ctx)
        return text


#: Framing, timeouts and retries of a sender, as ``client: ClientOptions``.
client_options = _option_set(
    "client",
    _make_client_options,
    *_FRAMING_OPTIONS,
    click.option(
        "--connect-timeout",
        type=POSITIVE_SECONDS,
        default=10.0,
        show_default=True,
        help="seconds to open the TCP connection",
    ),
    handshake_timeout_option(),
    click.option(
        "--ack-timeout",
        "--response-timeout",
        "ack_timeout",
        type=POSITIVE_SECONDS,
        default=30.0,
        show_default=True,
        help="seconds to wait for each reply",
    ),
    retries_option(),
    click.option(
        "--charset",
        type=HL7Charset(),
        default="UNICODE UTF-8",
        show_default=True,
        help="character set of replies without MSH-18 (HL7 table 0211 name)",
    ),
    click.option(
        "--charset-override",
        type=HL7Charset(),
        default=None,
        help="read every reply in this character set, whatever its MSH-18 says",
    ),
    click.option(
        "--bind",
        type=IPAddress(),
        default=None,
        help="local address to connect from (the port is the system's choice)",
    ),
    click.option(
        "--keepalive",
        type=POSITIVE_SECONDS,
        default=None,
        help="TCP keepalive: seconds of silence before probes start  [default: off]",
    ),
)


def done_marker_suffix(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check a ``--done-marker`` value: a file name suffix such as ``.done``."""
    if value is not None and (not value or "/" in value):
        raise click.BadParameter("a file name suffix such as '.done'", ctx, param)
    return value


def file_pickup_options(
    *, stable: str, marker: str, left: str, ack_batch: str, window: str
) -> Callable[[F], F]:
    """The options of commands that pick batch files up (``batch watch``, ``batch pull``).

    Each value reaches the command as its own keyword argument; the help
    texts say where the files are (a local folder or a server).

    Args:
        stable: Help of ``--stable-seconds``.
        marker: Help of ``--done-marker``.
        left: Where a file that could not be finished stays, and why (help of
            ``--retry-interval``).
        ack_batch: The acknowledgement batch's name (help of ``--ack-mode``).
        window: Help of ``--window``.
    """
    options = (
        click.option(
            "--stable-seconds",
            type=click.FloatRange(min=0),
            default=2.0,
            show_default=True,
            help=stable,
        ),
        click.option("--done-marker", callback=done_marker_suffix, help=marker),
        click.option(
            "--retry-interval",
            type=POSITIVE_SECONDS,
            default=30.0,
            show_default=True,
            help=f"seconds before a file left {left} is retried",
        ),
        click.option(
            "--ack-mode",
            type=choice("all", "errors", "none"),
            default="all",
            show_default=True,
            help=f"which acknowledgements the acknowledgement batch ({ack_batch}) holds",
        ),
        click.option(
            "--checkpoint-every",
            type=POSITIVE_INT,
            default=100,
            show_default=True,
            help="record progress in the journal every this many messages",
        ),
        click.option("--window", type=POSITIVE_INT, default=1, show_default=True, help=window),
        click.option(
            "--lenient", is_flag=True, help="process files with structure problems (logged)"
        ),
    )

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply

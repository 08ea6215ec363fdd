"""The listener's TLS state, swapped whole on reload.

:class:`ServerTLS` holds the current server context and allow list; each
accepted connection reads them at accept time, so :meth:`ServerTLS.reload`
(SIGHUP on the command line) affects only later connections and never drops
an open one.
"""

from __future__ import annotations

import ssl

import attrs

from mllp_trio._hl7._peer import ClientIdentity
from mllp_trio._tls._allowlist import AllowList, check_allowed
from mllp_trio._tls._context import ServerTLSConfig
from mllp_trio._tls._identity import PeerCertificateSource, identity_from_ssl

__all__ = ["ServerTLS"]


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

"""TLS for MLLP: hardened contexts, the peer's identity, the allow list and reload.

Modules, lowest first (at run time each imports only those before it):

* ``_errors``: :class:`TLSConfigError`;
* ``_identity``: the verified peer identity read from its certificate;
* ``_allowlist``: who may connect, applied after the handshake;
* ``_context``: the TLS profile, the context builders and the settings classes;
* ``_reload``: :class:`ServerTLS`, the listener's reloadable context and allow list;

Import from this package (``from mllp_trio._tls import ServerTLS``), not from
the modules. The package is private: the public names are re-exported by
``mllp_trio``.
"""

from mllp_trio._tls._allowlist import AllowList, ClientNotAllowed, check_allowed
from mllp_trio._tls._context import (
    ClientTLSConfig,
    ServerTLSConfig,
    client_ssl_context,
    server_ssl_context,
)
from mllp_trio._tls._errors import TLSConfigError
from mllp_trio._tls._identity import PeerCertificateSource, identity_from_der, identity_from_ssl
from mllp_trio._tls._reload import ServerTLS

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

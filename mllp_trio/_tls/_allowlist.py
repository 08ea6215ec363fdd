"""Who may connect: the allow list applied after the TLS handshake.

An :class:`AllowList` holds entries naming subject alternative names, common
names or fingerprints; :func:`check_allowed` raises :class:`ClientNotAllowed`
for a verified client that no entry names, with a reason that says which
entry would admit it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final, TypeAlias

import attrs

from mllp_trio._errors import MLLPError
from mllp_trio._hl7._peer import ClientIdentity
from mllp_trio._tls._errors import TLSConfigError

__all__ = ["AllowList", "ClientNotAllowed", "check_allowed"]


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
    def from_file(cls, path: str | os.PathLike[str]) -> AllowList:
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

"""Who may be fetched and who may be answered: the URL allowlist, the Host allowlist and the Origin rule.

Pure functions and small value types (no I/O): `settings` validates its fields with them, the downloader
(`services/downloads.py`) and the request guard (`api/middleware.py`) apply them, and the MCP transport gets
the same host list.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""The Host names a loopback-bound server answers by default."""


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def is_host_name(text: str) -> bool:
    return bool(_HOST_NAME.fullmatch(text.lower()))


# --- URL fetching (`file_path` URLs) -----------------------------------------------------------------


@dataclass(frozen=True)
class UrlAllowlist:
    """Hosts and networks a user trusts: their private addresses may be fetched with the guard on."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> UrlAllowlist:
        """Each entry an IP address, a CIDR (10.0.0.0/8, fd00::/8) or a host name; ValueError otherwise."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            item = entry.strip().lower()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not is_host_name(item):
                raise ValueError(f"{entry!r} is neither a host name, an IP address nor a CIDR")
            hosts.add(item.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)


# --- Host header (DNS rebinding) ----------------------------------------------------------------------


def is_loopback_bind(bind: str) -> bool:
    """Whether the server's bind address only accepts connections from this machine."""
    if bind.lower().rstrip(".") == "localhost":
        return True
    address = _ip(bind)
    return address is not None and address.is_loopback


def split_host_header(value: str) -> str:
    """`Host` header -> the host alone, lower-cased: "[::1]:8000" -> "::1", "A.example:80" -> "a.example"."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def check_allowed_host(entry: str) -> str:
    """One TALKIES_ALLOWED_HOSTS entry, normalised; ValueError when it is not a host, an address or `*`."""
    item = entry.strip().lower()
    if item == "*":
        return item
    address = _ip(item)
    if address is not None:
        return str(address)
    if not is_host_name(item):
        raise ValueError(f"{entry!r} is neither a host name, an IP address nor '*'")
    return item.rstrip(".")


@dataclass(frozen=True)
class HostPolicy:
    """The Host names the server answers to. `names` empty with `any_host`: anything goes."""

    names: tuple[str, ...]
    any_host: bool
    reason: str
    """Where the list comes from, for the start-up log and the refusal message."""

    @classmethod
    def build(cls, allowed: Iterable[str], *, bind: str, has_token: bool) -> HostPolicy:
        entries = tuple(dict.fromkeys(check_allowed_host(e) for e in allowed if e.strip()))
        if entries:
            if "*" in entries:
                return cls((), True, "TALKIES_ALLOWED_HOSTS=*")
            return cls(entries, False, "TALKIES_ALLOWED_HOSTS")
        if not is_loopback_bind(bind) and has_token:
            return cls((), True, f"bound to {bind} with TALKIES_AUTH_TOKEN set")
        names = list(LOOPBACK_NAMES)
        if not is_loopback_bind(bind):
            address = _ip(bind)
            if address is not None and not address.is_unspecified:
                names.append(str(address))
            elif address is None:
                names.append(check_allowed_host(bind))
        why = "bound to loopback" if is_loopback_bind(bind) else f"bound to {bind} without TALKIES_AUTH_TOKEN"
        return cls(tuple(dict.fromkeys(names)), False, why)

    def allows(self, host_header: str | None) -> bool:
        """A missing Host (HTTP/1.0, raw ASGI) is allowed: browsers always send one, so no rebinding."""
        if self.any_host or not host_header:
            return True
        host = split_host_header(host_header)
        address = _ip(host)
        return (str(address) if address is not None else host) in self.names

    def mcp_hosts(self) -> list[str]:
        """The same list in the MCP SDK's form (exact `Host` values, `name:*` for any port)."""
        hosts: list[str] = []
        for name in self.names:
            shown = f"[{name}]" if ":" in name else name
            hosts += [shown, f"{shown}:*"]
        return hosts


# --- Origin (cross-site requests from a browser) -----------------------------------------------------


def _origin_key(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    default = 443 if scheme == "https" else 80
    return scheme, host, port if port is not None else default


def origin_allowed(origin: str, *, host_header: str | None, scheme: str, cors_origins: Iterable[str]) -> bool:
    """A browser's `Origin` may change state when it is listed in TALKIES_CORS_ORIGINS (`*`: any), or when
    it is the server itself (same scheme, host and port as the request)."""
    allowed = {o.strip().rstrip("/").lower() for o in cors_origins}
    value = origin.strip().rstrip("/").lower()
    if "*" in allowed or value in allowed:
        return True
    if value == "null" or not host_header:
        return False
    try:
        parts = urlsplit(value)
        own = urlsplit(f"{scheme}://{host_header.strip().lower()}")
        return _origin_key(parts.scheme, parts.hostname or "", parts.port) == _origin_key(
            own.scheme, own.hostname or "", own.port
        )
    except ValueError:
        return False

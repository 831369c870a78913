"""Where a webhook may post: a public http(s) address, checked when the channel is saved AND at every
send (a name can be re-pointed at 127.0.0.1 or a cloud metadata address after it was accepted:
DNS rebinding). The send connects to the very address that was checked (``PinnedConnection``), so
the name is not resolved a second time between the check and the connection. Private, loopback,
link-local, multicast, reserved and unspecified addresses are refused unless the operator sets
ORLAB_WEBHOOK_ALLOW_PRIVATE=1 (the tests and the demo post to a receiver on 127.0.0.1)."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL = 2000


class AddressRefused(Exception):
    """The URL cannot be posted to; the message says why (shown as the field's error or the
    delivery's last error)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    ip: str  # the checked address the connection goes to


def allow_private() -> bool:
    return bool(getattr(settings, "ORLAB_WEBHOOK_ALLOW_PRIVATE", False))


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    if mapped is not None:
        ip = mapped
    return ip.is_global and not ip.is_multicast


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL without credentials; AddressRefused otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise AddressRefused(f"an http(s) URL of at most {MAX_URL} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise AddressRefused("the URL has spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("the scheme must be http or https")
    if not parts.hostname:
        raise AddressRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        # a secret in the URL would be shown on the page; the channel's secret signs the body
        raise AddressRefused("credentials in the URL are not accepted (the secret signs each body)")
    port = port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def resolve(url: str, *, private_ok: bool | None = None) -> Target:
    """Check ``url`` and pick the address to connect to. Every address the name resolves to must be
    public (one private answer among public ones is how a rebinding attack hides)."""
    scheme, host, port, path = parse(url)
    private_ok = allow_private() if private_ok is None else private_ok
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"the host {host!r} does not resolve ({exc})") from None
    addresses = []
    for info in infos:
        raw = info[4][0].split("%", 1)[0]  # drop an IPv6 zone
        try:
            addresses.append(ipaddress.ip_address(raw))
        except ValueError:
            continue
    if not addresses:
        raise AddressRefused(f"the host {host!r} has no IP address")
    if not private_ok:
        for ip in addresses:
            if not _is_public(ip):
                raise AddressRefused(
                    f"{host} resolves to {ip}, a private, loopback or otherwise non-public address "
                    "(the operator allows those with ORLAB_WEBHOOK_ALLOW_PRIVATE=1)"
                )
    return Target(scheme, host, port, path, str(addresses[0]))


class PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection to ``ip`` for the name ``host`` (Host header from the name)."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._ip = target.ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class PinnedTLSConnection(http.client.HTTPSConnection):
    """HTTPS to ``ip``, with the certificate checked against the name (SNI and hostname check)."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._ip = target.ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    cls = PinnedTLSConnection if target.scheme == "https" else PinnedConnection
    return cls(target, timeout)

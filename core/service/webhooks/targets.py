"""Where a webhook may be posted: http(s) URLs whose host resolves only to public addresses.

A URL naming (or resolving to) a loopback, private, link-local, multicast or reserved address
would let an API key holder make the service probe its own network (SSRF), so it is refused
unless the settings allow private targets. The check runs when an endpoint is created and again
before every delivery (DNS can change); the delivery connects to the address checked, never to
a second resolution of the name.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from core.service.errors import ServiceUnavailable, WebhookTargetRefused

MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A checked URL: the host it names and the address a delivery connects to."""

    url: str
    host: str
    address: IpAddress
    parts: SplitResult

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (the port and path kept)."""
        shown = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        netloc = shown if self.parts.port is None else f"{shown}:{self.parts.port}"
        return self.parts._replace(netloc=netloc).geturl()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.parts.port is None else f"{host}:{self.parts.port}"


def parse_url(url: str) -> SplitResult:
    """The URL's parts; WebhookTargetRefused (field `url`) naming what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookTargetRefused(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError as exc:
        raise WebhookTargetRefused(f"url is not a valid URL: {exc}") from exc
    if parts.scheme not in SCHEMES:
        raise WebhookTargetRefused(
            f"url must start with http:// or https://, got scheme {parts.scheme or 'none'!r}"
        )
    if not parts.hostname:
        raise WebhookTargetRefused("url names no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookTargetRefused("url must not carry credentials (user:password@)")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise WebhookTargetRefused("url must not contain spaces or control characters")
    return parts


def ascii_host(host: str) -> str:
    """The host as sent on the wire (an internationalized name in its IDNA form)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise WebhookTargetRefused(f"url's host {host!r} is not a valid host name") from exc


def refusal_reason(address: IpAddress) -> str | None:
    """Why a delivery to `address` is refused, or None for a public address. An IPv6 address
    that carries an IPv4 one (mapped, 6to4, Teredo) is judged by that too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal_reason(address.ipv4_mapped)
        if address.is_site_local:  # fec0::/10: deprecated, still routed inside some networks
            return "a site-local address"
        for kind, inner in _embedded_ipv4(address):
            reason = refusal_reason(inner)
            if reason is not None:
                return f"a {kind} address of {inner}, {reason}"
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if not address.is_global:  # shared (100.64/10), documentation, benchmarking ranges
        return "not a public address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses a 6to4 (2002::/16) or Teredo (2001::/32) address leads to."""
    found = []
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo", server), ("Teredo", client)]
    return found


def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address `host` names (itself when it is an address literal). WebhookTargetRefused
    when it names none; ServiceUnavailable when the resolver failed for now (EAI_AGAIN)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:  # the resolver failed for now: not the URL's fault
            raise ServiceUnavailable(
                f"url's host {host!r} could not be resolved just now ({exc}); try again",
                field="url",
            ) from exc
        raise WebhookTargetRefused(f"url's host {host!r} does not resolve ({exc})") from exc
    except (OSError, UnicodeError) as exc:
        raise WebhookTargetRefused(f"url's host {host!r} does not resolve ({exc})") from exc
    addresses: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_target(url: str, *, allow_private: bool) -> Target:
    """The URL checked: well formed, http(s), and (unless `allow_private`) every address its
    host resolves to public. WebhookTargetRefused (field `url`) names the problem."""
    parts = parse_url(url)
    host = ascii_host(parts.hostname or "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    if not addresses:
        raise WebhookTargetRefused(f"url's host {host!r} resolves to no address")
    if not allow_private:
        for address in addresses:
            reason = refusal_reason(address)
            if reason is not None:
                named = host if host == str(address) else f"{host} ({address})"
                raise WebhookTargetRefused(
                    f"url's host {named} is {reason}; webhooks go to public addresses only "
                    "(ROBUSTIFY_WEBHOOKS_ALLOW_PRIVATE=true allows private ones)"
                )
    return Target(url=url, host=host, address=addresses[0], parts=parts)

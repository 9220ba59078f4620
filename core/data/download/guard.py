"""Which hosts the downloader may connect to (issue 19 #8: a CSV's URL, or a redirect, must not
reach the machine itself, its network or the cloud's metadata service).

Before every request (the first URL and every redirect hop) the host is resolved and every
address it resolves to is checked; the request then goes to the address that was checked, with
the host name kept for the Host header, TLS's SNI and the certificate check, so a second lookup
cannot answer otherwise (DNS rebinding).

  always refused       cloud metadata addresses (169.254.169.254, fd00:ec2::254, ...), link-local
                       (169.254/16, fe80::/10), multicast, unspecified and "this network"
                       (0.0.0.0/8, ::), reserved (240/4, broadcast)
  refused by default   loopback (127/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7),
                       shared (100.64/10) and other non-public ranges: allowed with
                       allow_private (the CLI's --allow-private, LANDMARKS_ALLOW_PRIVATE=1)

An IPv6 address that carries an IPv4 one (::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4, Teredo) is
judged by the IPv4 address it reaches."""
from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time

from core.data.download.base import REFUSED

ALLOW_ENV = "LANDMARKS_ALLOW_PRIVATE"     # "1": the operator allows private addresses (jobs, the app)
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",    # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle instance metadata
    "169.254.170.2",      # AWS ECS task metadata and credentials
    "fd00:ec2::254",      # AWS instance metadata over IPv6
    "100.100.100.200",    # Alibaba Cloud metadata
    "168.63.129.16",      # Azure host (wire server)
    "192.0.0.192",        # Oracle Cloud (legacy) metadata
))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
DNS_TTL_S = 60.0


class Refused(Exception):
    """The URL's host may not be fetched from; str() is the reason for the report."""


def allowed_by_env() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def _embedded_v4(ip) -> ipaddress.IPv4Address | None:
    if ip.version != 6:
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    return None


def _why(ip, allow_private: bool) -> str | None:
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip.is_loopback:
        return None if allow_private else "a loopback address"
    if ip.is_reserved:
        return "a reserved address"
    if allow_private or ip.is_global:
        return None
    return "a private address"


def refusal(address: str, allow_private: bool = False) -> str | None:
    """Why the downloader may not connect to `address` (an IP), or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])      # an IPv6 zone (fe80::1%eth0) does not matter
    return _why(_embedded_v4(ip) or ip, allow_private)       # ::ffff:a.b.c.d and the like reach a.b.c.d


def _resolve(host: str, port: int) -> list[str]:
    """The addresses of `host` (the system's resolver; an IP literal in any form the C library
    accepts, such as 2852039166 or 0x7f.1, comes back as the address it means)."""
    try:                                             # a number in any form: no lookup at all
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class Policy:
    """Checks a URL's host before a request and pins the request to the address it checked."""

    def __init__(self, allow_private: bool = False, resolve=None):
        self.allow_private = bool(allow_private)
        self._resolve = resolve or _resolve
        self._cache: dict[tuple[str, int], tuple[float, asyncio.Future]] = {}

    def check_addresses(self, host: str, addresses: list[str]) -> str:
        """The first address, once every one of them is allowed; else Refused."""
        if not addresses:
            raise OSError(f"{host} has no address")
        for a in addresses:
            why = refusal(a, self.allow_private)
            if why:
                shown = host if host == a else f"{host} ({a})"
                hint = "" if self.allow_private or why not in ("a loopback address", "a private address") else \
                    " (pass --allow-private to fetch from such addresses)"
                raise Refused(f"{REFUSED}{shown} is {why}{hint}")
        return addresses[0]

    async def address(self, host: str, port: int) -> str:
        """The address to connect to for host:port: resolved (cached for DNS_TTL_S), every answer
        allowed. Refused, or OSError when the name does not resolve."""
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            return self.check_addresses(host, [host])           # a literal: no lookup at all
        except ValueError:
            pass
        now, key = time.monotonic(), (host, port)
        hit = self._cache.get(key)
        if hit is None or now - hit[0] >= DNS_TTL_S:       # one lookup shared by the workers asking at once
            hit = (now, asyncio.get_running_loop().run_in_executor(None, self._resolve, host, port))
            self._cache[key] = hit
        try:
            addresses = await hit[1]
        except OSError:
            if self._cache.get(key) is hit:
                del self._cache[key]                        # a failed lookup is not remembered
            raise
        return self.check_addresses(host, addresses)

    async def pin(self, url):
        """(request URL, headers, extensions) for an httpx.URL: the URL with its host replaced by
        the checked address, the Host header and TLS server name of the original."""
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        address = await self.address(host, port)
        headers = {"Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        return url.copy_with(host=address.split("%", 1)[0]), headers, extensions

"""Where notifications may go: the policy every outbound request passes (a guard against server-side request forgery).

Whoever holds the API token chooses webhook URLs and apprise URLs, and the worker can reach what they cannot: the
cloud metadata service, the plant network, its own Triton (whose repository API unloads models). So a target is
refused when its host is, or resolves to, an address that is not public: loopback, link-local (``169.254.0.0/16``,
``fe80::/10``), private (``10/8``, ``172.16/12``, ``192.168/16``, ``fc00::/7``), unspecified, multicast, or otherwise
not globally routable; IPv4 addresses embedded in IPv6 (``::ffff:a.b.c.d``, 6to4, NAT64) are judged as the IPv4 address.

``delivery.allowed_targets`` opens exceptions for local receivers: CIDRs (``127.0.0.1/32``, ``10.20.0.0/16``)
admit the addresses in them, host names (``hooks.plant.internal``) admit that host whatever it resolves to.
Even then, a non-public address is refused on a port of DiffSentry's own services (broker, Triton, store, this
API, the metrics server, and every port of a running local stack).

Every address a host resolves to must pass, and a webhook request then goes to the checked address (the URL keeps
its name in the Host header and TLS server name), so DNS cannot answer differently between the check and the
connection. Redirects are never followed. Apprise URLs are checked for the servers the user names in them
(``json://``, ``ntfy://host``, ``gotify://``, ``mailto://...?smtp=``: :func:`operators.apprise_urls.chosen_hosts`);
apprise then connects by itself, so for those the check cannot pin the address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

from core.settings import Settings
from core.stack_state import StackState
from operators import apprise_urls

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedTarget(ValueError):
    """The policy refuses this target; ``str(error)`` says why and how to allow it."""


@dataclass(frozen=True)
class Target:
    """A checked target: ``url`` names the address to connect to, ``host_header`` and ``server_name`` the host."""

    url: str
    host_header: str
    server_name: str


def redact_url(url: str) -> str:
    """The URL with any credentials (``user:password@``) replaced by ``***@``, for output and logs."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<unparsable URL>"
    if not parsed.userinfo:
        return url
    return str(parsed.copy_with(username="***", password=None))


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _non_public_kind(address: IPAddress) -> str | None:
    """What makes the address non-public, or None for a public one."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _port_of(address: str) -> int | None:
    """The port of ``host:port`` or of a URL; None where none is given or it is not a number."""
    try:
        url = httpx.URL(address if "//" in address else f"tcp://{address}")
    except httpx.InvalidURL:
        return None
    return url.port


def own_ports(settings: Settings) -> dict[int, str]:
    """Ports of DiffSentry's own services, each with the setting or stack service it comes from."""
    ports: dict[int, str] = {}
    for server in settings.kafka.bootstrap_servers.split(","):
        if (port := _port_of(server.strip())) is not None:
            ports[port] = "kafka.bootstrap_servers"
    for what, address in [
        *(("triton.grpc_urls", url) for url in settings.triton.grpc_urls),
        ("triton.http_url", settings.triton.http_url),
        ("influx.url", settings.influx.url),
    ]:
        if (port := _port_of(address)) is not None:
            ports[port] = what
    for what, port in [("api.port", settings.api.port), ("stream.metrics_port", settings.stream.metrics_port)]:
        if port:
            ports[port] = what
    for name, record in StackState.load(settings.state_dir).running().items():
        for port in record.ports.values():
            ports[port] = f"the local stack's {name}"
    return ports


class OutboundPolicy:
    """Decides whether a webhook URL may be requested; the default (no arguments) admits public addresses only."""

    def __init__(self, allowed_targets: Iterable[str] = (), own_ports: Mapping[int, str] | None = None) -> None:
        self._allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._allowed_hosts: set[str] = set()
        for entry in allowed_targets:
            try:
                self._allowed_networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._allowed_hosts.add(entry.lower().rstrip("."))
        self._own_ports = dict(own_ports or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(settings.delivery.allowed_targets, own_ports(settings))

    def check_address(self, host: str, address: IPAddress, port: int) -> None:
        """Raises BlockedTarget unless a request for ``host`` may connect to ``address:port``."""
        judged = _embedded_ipv4(address)
        kind = _non_public_kind(judged)
        if kind is None:
            return
        if host not in self._allowed_hosts and not any(judged in network for network in self._allowed_networks):
            what = f"{host} is" if _is_address(host) else f"{host} resolves to {address},"
            raise BlockedTarget(
                f"{what} a {kind} address: notifications go to public addresses unless delivery.allowed_targets lists "
                "the address (in a CIDR) or the host"
            )
        if port in self._own_ports:
            raise BlockedTarget(
                f"port {port} of {address} is DiffSentry's own ({self._own_ports[port]}): not a notification target"
            )

    async def check_host(self, host: str, port: int) -> list[IPAddress]:
        """Checks every address ``host`` resolves to (BlockedTarget, or OSError when it does not resolve) and
        returns them."""
        host = host.lower().rstrip(".").removeprefix("[").removesuffix("]")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        for address in addresses:
            self.check_address(host, address, port)
        return addresses

    async def check_apprise_url(self, url: str) -> None:
        """Checks the servers an apprise URL names (``json://``, ``ntfy://host``, ``gotify://``, ``mailto://`` and
        every other service at a host the user chooses); services at fixed cloud addresses pass as they are.

        Apprise connects by itself, so unlike a webhook the request cannot be pinned to the checked address: a DNS
        answer that changes between this check and apprise's own lookup is not caught (redirects stay off)."""
        try:
            hosts = apprise_urls.chosen_hosts(url)
        except ValueError as error:
            raise BlockedTarget(str(error)) from error
        for host, port in hosts:
            await self.check_host(host, port)

    async def resolve(self, url: str) -> Target:
        """Checks a webhook URL and every address its host resolves to; returns what to connect to.

        Raises BlockedTarget when the policy refuses it, OSError (``socket.gaierror``) when the host does not
        resolve (which may pass: worth another try)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise BlockedTarget(f"not a URL: {error}") from error
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BlockedTarget(f"{redact_url(url)} is not an http(s) URL with a host")
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await self.check_host(host, port)
        return Target(
            url=str(parsed.copy_with(host=str(addresses[0]))),
            host_header=parsed.netloc.decode("ascii"),
            server_name=host,
        )

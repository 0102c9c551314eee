"""Which peers are reverse proxies the city trusts (``[http] trusted_proxies``), and who their client is.

The rule is in gateway.web.forwarded (which applies it to requests); this module holds no aiohttp so
that the config loader can check the setting without loading the web stack.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Entries read from one X-Forwarded-For header at most: a longer chain is not a real proxy path.
MAX_HOPS = 16


class NotANetwork(ValueError):
    """:func:`network_of`'s refusal. Attributes: ``host_bits``: the network meant, when the entry has host bits
    set (``10.0.0.1/8`` -> ``10.0.0.0/8``), else None."""

    def __init__(self, text: str, host_bits: IpNetwork | None) -> None:
        super().__init__("%r is not an IP address or network" % text)
        self.host_bits = host_bits


def network_of(text: str) -> IpNetwork:
    """An IP address or network (``10.0.0.5``, ``10.0.0.0/8``, ``::1``), an IPv4-mapped IPv6 form
    (``::ffff:127.0.0.1``) taken as the IPv4 it names, which is how a dual-stack socket names its IPv4 peers.

    Raises:
        NotANetwork: neither, or a network with host bits set (its ``host_bits``: the network meant).
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        meant = ipaddress.ip_network(text.strip(), strict=False) if "has host bits set" in str(exc) else None
        raise NotANetwork(text, meant) from None
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:
        network = ipaddress.IPv4Network("%s/%d" % (mapped, network.prefixlen - 96))
    return network


def parse_network(text: str) -> IpNetwork:
    """One ``trusted_proxies`` entry: an IP address or a network, as :func:`network_of` reads it.

    Raises:
        ValueError: not an address or network, a network with host bits set (``10.0.0.1/8``: a typo
            that would trust more or other addresses than meant), or every address (``0.0.0.0/0``,
            ``::/0``: any client could then name any other); the message says which.
    """
    try:
        network = network_of(text)
    except NotANetwork as exc:
        if exc.host_bits is not None:
            raise ValueError("%r has host bits set (did you mean %s?)" % (text, exc.host_bits)) from None
        raise ValueError("%r is not an IP address or network (e.g. \"127.0.0.1\", \"10.0.0.0/8\", \"::1\")"
                         % text) from None
    if network.prefixlen == 0:
        raise ValueError("%r trusts every address: any client could then name any other in X-Forwarded-For;"
                         " list the proxy's own address" % text)
    return network


def _address(text: str) -> IpAddress | None:
    """An address in ``X-Forwarded-For``, or None when it is none (``unknown``, a port, garbage, an IPv6
    zone id: ``fe80::1%<any text>`` would carry that text into audit lines and per-client keys). An
    IPv4-mapped form (``::ffff:203.0.113.9``) is the IPv4 address, so one client has one form."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """Finds a request's client address through the proxies of ``[http] trusted_proxies``."""

    def __init__(self, networks: Iterable[str | IpNetwork] = ()) -> None:
        """Args:
            networks: addresses or networks of trusted proxies (strings are parsed by :func:`parse_network`).
        """
        self.networks: tuple[IpNetwork, ...] = tuple(
            n if not isinstance(n, str) else parse_network(n) for n in networks)

    def trusts(self, address: IpAddress | None) -> bool:
        """Whether ``address`` is a listed proxy."""
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket names an IPv4 peer ::ffff:a.b.c.d
        return any(address.version == n.version and address in n for n in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """The client's address for a connection from ``peer`` carrying ``forwarded_for`` headers.

        Args:
            peer: the address the connection comes from (``request.remote``).
            forwarded_for: the values of every ``X-Forwarded-For`` header, in order.

        Returns:
            The rightmost address that is not a trusted proxy, walking left from ``peer`` while each hop is
            trusted; ``peer`` itself when it is not trusted or sent no usable header. An entry that is not
            an address stops the walk at the hop that wrote it.
        """
        if not self.networks or not self.trusts(_address(peer or "")):
            return peer
        hops = [h for value in forwarded_for for h in value.split(",")][-MAX_HOPS:]
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            client = str(address)
            if not self.trusts(address):
                break
        return client

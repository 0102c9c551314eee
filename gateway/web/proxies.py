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


def client_address(text: str | None, *, from_socket: bool) -> IpAddress | None:
    """A client's address as every per-client rule of the web app reads it (the ``trusted_proxies`` walk, the
    admin throttle's client and network keys, ``[http] admin_networks``, audit lines, the route planner's
    per-client limit), or None when ``text`` is none (``unknown``, a port, garbage, empty or None).

    One machine is one address to each of them: brackets (``[2001:db8::7]``) are taken off, an
    IPv4-mapped form (``::ffff:203.0.113.9``, how a dual-stack socket names an IPv4 peer) is the IPv4
    address. An IPv6 zone id (``fe80::1%eth0``) depends on where the text comes from:

    * ``from_socket=True``, the connection's peer (``request.remote`` as the transport names it): the zone
      is dropped. It names the gateway's own interface the connection came in on, which says nothing about
      the client, and :mod:`ipaddress` keeps it in an address's equality, hash and ``str``: kept, it would
      key ``fe80::1%eth0`` apart from ``fe80::1`` and put the interface name into audit lines. (CPython on
      Linux names an accepted link-local peer without it, the scope being the peername's fourth item; a
      transport, event loop or middleware that names the peer with one is read the same way.)
    * ``from_socket=False``, an ``X-Forwarded-For`` entry, text any client can write: an address with a
      zone id is refused (None). :mod:`ipaddress` takes any text after ``%`` as the zone, so a hop could
      otherwise carry words of its choosing into audit lines and a fresh per-client key into every limit.
    """
    text = (text or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not from_socket and "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            address = ipaddress.IPv6Address(address.packed)  # the same address without its zone
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def peer_text(peer: str | None) -> str | None:
    """The socket peer ``peer`` (``request.remote``) as the web app names it: without an IPv6 zone id
    (:func:`client_address` with ``from_socket=True`` says why); any other text unchanged, an IPv4-mapped
    form included (only a zone is taken off, so most requests keep their ``request.remote`` as it is)."""
    if peer is None or "%" not in peer:
        return peer
    address = client_address(peer, from_socket=True)
    return peer if address is None else str(address)


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
            peer: the address the connection comes from (``request.remote``; an IPv6 zone id on it is
                ignored, :func:`client_address`).
            forwarded_for: the values of every ``X-Forwarded-For`` header, in order.

        Returns:
            The rightmost address that is not a trusted proxy, walking left from ``peer`` while each hop is
            trusted; ``peer`` itself, as given, when it is not trusted or sent no usable header. An entry
            that is not an address, or has a zone id, stops the walk at the hop that wrote it.
        """
        if not self.networks or not self.trusts(client_address(peer, from_socket=True)):
            return peer
        hops = [h for value in forwarded_for for h in value.split(",")][-MAX_HOPS:]
        client = peer
        for hop in reversed(hops):
            address = client_address(hop, from_socket=False)
            if address is None:
                break
            client = str(address)
            if not self.trusts(address):
                break
        return client

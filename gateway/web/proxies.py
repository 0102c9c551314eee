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
# Link-local ranges (RFC 4291, RFC 3927): an address in them names a host only on one link
# (:func:`link_local_problem`), so no setting trusts one, and the admin throttle takes each range as one
# source network (gateway.web.auth.throttle_network).
LINK_LOCAL: tuple[IpNetwork, ...] = (ipaddress.IPv4Network("169.254.0.0/16"), ipaddress.IPv6Network("fe80::/10"))


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
            that would trust more or other addresses than meant), every address (``0.0.0.0/0``,
            ``::/0``: any client could then name any other), link-local or including link-local addresses
            (:func:`link_local_problem`: any host on a link the gateway listens on could be the proxy), or
            with an IPv6 zone id (:func:`zone_problem`); the message says which.
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
    problem = link_local_problem(network)
    if problem is not None:
        raise ValueError("%r %s, and would then be believed naming any client in X-Forwarded-For; list the"
                         " proxy's global or unique-local (fd00::/8) address, or bind the gateway to loopback"
                         " (listen = \"127.0.0.1\") and run the proxy on its machine" % (text, problem))
    problem = zone_problem(network)
    if problem is not None:
        raise ValueError("%r %s" % (text, problem))
    return network


def link_local_problem(network: IpNetwork) -> str | None:
    """Why ``network``, an entry of ``[http] trusted_proxies`` or ``admin_networks``, names no host the city
    can trust, in words following the entry, when it is or includes link-local addresses
    (:data:`LINK_LOCAL`); else None.

    A link-local address names a host only on one link (RFC 4007; IPv4's 169.254/16 likewise, RFC 3927):
    ``fe80::1%eth0`` and ``fe80::1%wlan0`` are two hosts, and any host on a link the gateway listens on can
    give itself either address. The zone cannot tell them apart here: CPython names an accepted peer
    without it (the scope is the peername's fourth item, which aiohttp leaves out of ``request.remote``).
    """
    for local in LINK_LOCAL:
        if local.version == network.version and local.overlaps(network):
            # Overlapping and at least as long a prefix: inside the range (subnet_of would compare zones).
            what = "is link-local" if network.prefixlen >= local.prefixlen else "includes link-local addresses"
            return ("%s (%s): a link-local address names a host only on one link, and the gateway is not told"
                    " which link a client came in on, so any host on any link it listens on could take it"
                    % (what, local))
    return None


def admin_network_problem(network: IpNetwork) -> str | None:
    """Why ``network`` cannot be an ``[http] admin_networks`` entry, in words following the entry, or None:
    every address, link-local (:func:`link_local_problem`) or with an IPv6 zone id (:func:`zone_problem`).
    The entry spares its clients the admin throttle's global cap, so it must hold only the operators'
    machines."""
    if network.prefixlen == 0:
        return ("is every address: no client would be held to the global cap of wrong admin tokens; list the"
                " operators' networks only")
    problem = link_local_problem(network)
    if problem is not None:
        return ("%s; every such host would be spared the global cap of wrong admin tokens, and one taking a"
                " fresh address every few guesses could guess past it: list the operators' global or"
                " unique-local network" % problem)
    return zone_problem(network)


def zone_problem(network: IpNetwork) -> str | None:
    """Why ``network`` could not be matched as written, in words following the entry, when it carries an
    IPv6 zone id (``2001:db8::7%eth0``: :mod:`ipaddress` reads one, and would ignore it when matching);
    else None."""
    zone = network.network_address.scope_id if isinstance(network, ipaddress.IPv6Network) else None
    if zone is None:
        return None
    return ("has an IPv6 zone id (%%%s) that could not be matched: the gateway is not told which interface a"
            " client came in on; write the address without it" % zone)


def client_address(text: str | None, *, from_socket: bool) -> IpAddress | None:
    """A client's address as every per-client rule of the web app reads it (the ``trusted_proxies`` walk, the
    admin throttle's client and network keys, ``[http] admin_networks``, audit lines, the route planner's
    per-client limit), or None when ``text`` is none (``unknown``, a port, garbage, empty or None).

    One machine is one address to each of them: brackets (``[2001:db8::7]``) are taken off, an
    IPv4-mapped form (``::ffff:203.0.113.9``, how a dual-stack socket names an IPv4 peer) is the IPv4
    address. An IPv6 zone id (``fe80::1%eth0``) depends on where the text comes from:

    * ``from_socket=True``, the connection's peer (``request.remote`` as the transport names it): the zone
      is dropped. CPython names an accepted peer without one (the scope is the peername's fourth item,
      which aiohttp leaves out), so the gateway cannot rely on it; a transport, event loop or middleware
      that does name it would otherwise make one machine two keys to every per-client rule
      (:mod:`ipaddress` keeps the zone in equality, hash and ``str``) and put the interface name into audit
      lines. What is lost is real: a link-local address names a host only per link (RFC 4007),
      ``fe80::1%eth0`` and ``fe80::1%wlan0`` being different hosts that the gateway cannot tell apart.
      That is why no setting trusts a link-local address (:func:`link_local_problem`: ``trusted_proxies``
      and ``admin_networks`` refuse one), and the admin throttle pauses one as a single address
      (gateway.web.auth), not as every link-local host.
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
    """The socket peer ``peer`` (``request.remote``) as the web app names it. A peer with an IPv6 zone id
    is named as :func:`client_address` with ``from_socket=True`` reads it (which says why): without the
    zone, and an IPv4-mapped one then as its IPv4 address (``::ffff:203.0.113.9%eth0`` is
    ``203.0.113.9``). Any other text is unchanged, an IPv4-mapped form without a zone included, so most
    requests keep their ``request.remote`` as it is."""
    if peer is None or "%" not in peer:
        return peer
    address = client_address(peer, from_socket=True)
    return peer if address is None else str(address)


class TrustedProxies:
    """Finds a request's client address through the proxies of ``[http] trusted_proxies``."""

    def __init__(self, networks: Iterable[str | IpNetwork] = ()) -> None:
        """Args:
            networks: addresses or networks of trusted proxies, each checked by :func:`parse_network` (a
                network object as its text).

        Raises:
            ValueError: an entry :func:`parse_network` refuses (a link-local one among them).
        """
        self.networks: tuple[IpNetwork, ...] = tuple(parse_network(str(n)) for n in networks)

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
                dropped, :func:`client_address`: no listed proxy is link-local, so it could not decide).
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

"""The ``[http]`` section: where the HTTP surface listens, who may reach it, and the admin token."""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable
from pathlib import Path

from gateway.config.model import HttpConfig
from gateway.config.secret_files import read_owner_only
from gateway.config.section import Section, is_host
from gateway.config.token_strength import token_weakness
from gateway.web.proxies import NotANetwork, admin_network_problem, network_of, parse_network

MIN_TOKEN_LEN = 16
MIN_TOKEN_DISTINCT = 4  # fewer distinct characters in the admin token is a placeholder (see token_placeholder)
MAX_TOKEN_UNIT = 4  # a token that is a unit this short repeated ("abab...", "12341234...") is a placeholder


def parse_http(sec: Section, base: Path) -> HttpConfig | None:
    """``[http]``: None when ``enabled = false``; the admin token file is read and checked now (relative
    to ``base``), and a ``listen`` host name of an enabled server must resolve."""
    enabled = sec.get("enabled", bool, True)
    token_file = sec.get("admin_token_file", str)
    token_path = None
    if token_file is not None and not token_file.strip():
        raise sec.error("http.admin_token_file", "http.admin_token_file must not be empty (leave the key out for no"
                        " admin endpoints)", "bad_value")
    if token_file is not None:
        token_path = base / sec.user_path("admin_token_file", token_file)
        _admin_token_of(sec, token_path)
    listen = sec.get("listen", str, "127.0.0.1")
    check_listen(sec, listen, resolve=enabled)
    cfg = HttpConfig(enabled=enabled, listen=listen, port=sec.number("port", int, 8080, 0, 65535),
                     admin_token_file=token_path, allowed_hosts=_parse_allowed_hosts(sec),
                     max_connections=sec.number("max_connections", int, 256, 8, 1_000_000),
                     trusted_proxies=_parse_trusted_proxies(sec), admin_networks=_parse_admin_networks(sec))
    return cfg if enabled else None


def read_admin_token(path: Path) -> str:
    """The admin token in ``path``, checked as at load: readable UTF-8, owner-only, at least
    :data:`MIN_TOKEN_LEN` printable ASCII characters without spaces, not a placeholder, not easy to
    guess (:func:`gateway.config.token_strength.token_weakness`). The web surface uses it to take a
    replaced token file while the gateway runs.

    Raises:
        ConfigError: key ``http.admin_token_file``; reason ``bad_path`` (missing, unreadable, not UTF-8,
            readable by other users) or ``bad_value`` (too short, not one printable line, a placeholder,
            guessable: words, a keyboard row, a date...). The message names the file, never the token.
    """
    return _admin_token_of(Section({}, "http", None, ()), path)


def _admin_token_of(sec: Section, token_path: Path) -> str:
    """:func:`read_admin_token`, with errors located in ``sec``'s config file."""
    token = read_owner_only(sec, "http.admin_token_file", token_path).strip()
    if len(token) < MIN_TOKEN_LEN:
        raise sec.error("http.admin_token_file", "the admin token in %s is shorter than %d characters"
                        % (token_path, MIN_TOKEN_LEN), "bad_value")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        # Clients send it in an HTTP header: a second line or a space in it could never match.
        raise sec.error("http.admin_token_file", "the admin token in %s must be one line of printable ASCII "
                        "without spaces (clients send it in an HTTP header)" % token_path, "bad_value")
    placeholder = token_placeholder(token)
    if placeholder is not None:
        raise sec.error("http.admin_token_file", "the admin token in %s %s: it looks like a placeholder; make a"
                        " random one, e.g. openssl rand -hex 32" % (token_path, placeholder), "bad_value")
    weakness = token_weakness(token)
    if weakness is not None:
        raise sec.error("http.admin_token_file", "the admin token in %s %s" % (token_path, weakness), "bad_value")
    return token


def token_placeholder(token: str) -> str | None:
    """Why ``token`` looks like a placeholder rather than a secret (e.g. "is 'ab' repeated"), or None.

    Only real placeholders are refused: fewer than :data:`MIN_TOKEN_DISTINCT` distinct characters, or
    a unit of at most :data:`MAX_TOKEN_UNIT` characters repeated. A count of distinct characters any
    higher would refuse random tokens too (16 random digits have fewer than 8 distinct ones 24% of the
    time). gateway.web.auth checks the same.
    """
    distinct = len(set(token))
    if distinct < MIN_TOKEN_DISTINCT:
        return "has only %d distinct characters (at least %d needed)" % (distinct, MIN_TOKEN_DISTINCT)
    for size in range(1, MAX_TOKEN_UNIT + 1):
        unit = token[:size]
        if len(token) % size == 0 and token == unit * (len(token) // size):
            return "is %r repeated" % unit
    return None


def _parse_allowed_hosts(sec: Section) -> tuple[str, ...]:
    """``http.allowed_hosts``: names (besides IPs, localhost and this machine's) the server answers to."""
    raw = sec.get("allowed_hosts", list, [])
    names: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise sec.error("http.allowed_hosts", "http.allowed_hosts[%d] must be a string, not %r" % (i, item),
                            "wrong_type")
        name = item.strip().lower().removesuffix(".")
        if not is_host(name):
            raise sec.error("http.allowed_hosts", "http.allowed_hosts[%d] = %r must be a host name (no scheme,"
                            " port or path), e.g. \"data.city.example\"" % (i, item), "bad_value")
        if name not in names:
            names.append(name)
    return tuple(names)


def _network_list(sec: Section, key: str, parse: Callable[[int, str], str]) -> tuple[str, ...]:
    """``http.<key>``: a list of strings, each read by ``parse(index, text)`` (raising the config error), in
    order without repeats."""
    name = "http." + key
    networks: list[str] = []
    for i, item in enumerate(sec.get(key, list, [])):
        if not isinstance(item, str):
            raise sec.error(name, "%s[%d] must be a string, not %r" % (name, i, item), "wrong_type")
        network = parse(i, item)
        if network not in networks:
            networks.append(network)
    return tuple(networks)


def _parse_trusted_proxies(sec: Section) -> tuple[str, ...]:
    """``http.trusted_proxies``: addresses or networks of reverse proxies whose X-Forwarded-For is believed, as
    gateway.web.proxies.parse_network reads and refuses them (link-local ones and zone ids included)."""

    def parse(i: int, item: str) -> str:
        try:
            return str(parse_network(item))
        except ValueError as exc:
            raise sec.error("http.trusted_proxies", "http.trusted_proxies[%d]: %s" % (i, exc), "bad_value") from None

    return _network_list(sec, "trusted_proxies", parse)


def _parse_admin_networks(sec: Section) -> tuple[str, ...]:
    """``http.admin_networks``: networks (CIDR, or one address) whose clients the admin throttle's global budget
    never refuses (their own wrong tokens still pause them: gateway.web.admin_throttle); every address, a
    link-local network and one with an IPv6 zone id are refused (gateway.web.proxies.admin_network_problem)."""

    def parse(i: int, item: str) -> str:
        try:
            network = network_of(item)
        except NotANetwork as exc:
            hint = "" if exc.host_bits is None else " (host bits set: did you mean %s?)" % exc.host_bits
            raise sec.error("http.admin_networks", "http.admin_networks[%d] = %r is not a network%s; write one as"
                            " CIDR, e.g. \"10.20.0.0/24\" or \"2001:db8:5::/48\"" % (i, item, hint),
                            "bad_value") from None
        problem = admin_network_problem(network)
        if problem is not None:
            raise sec.error("http.admin_networks", "http.admin_networks[%d] = %r %s" % (i, item, problem),
                            "bad_value")
        return str(network)

    return _network_list(sec, "admin_networks", parse)


def check_listen(sec: Section, listen: str, *, resolve: bool) -> None:
    """``http.listen`` must be an IP address or a host name that resolves (what the server binds to)."""
    if not is_host(listen):
        raise sec.error("http.listen", "http.listen %r must be an IP address or a host name (0.0.0.0 or :: for"
                        " every interface)" % listen, "bad_value")
    if not resolve:
        return
    try:
        ipaddress.ip_address(listen)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(listen, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise sec.error("http.listen", "http.listen %r does not resolve to an address (%s)"
                        % (listen, exc.strerror if isinstance(exc, socket.gaierror) else exc), "bad_value") from exc

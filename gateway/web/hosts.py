"""Which ``Host`` headers the web surface answers (a defence against DNS rebinding).

A hostile page can make its own name resolve to 127.0.0.1 (or the gateway's LAN address) and
then read the operator-only API from the operator's browser as "same origin". The browser still
sends the hostile name in ``Host``; refusing names the gateway was not told about closes that
door, as Django's ``ALLOWED_HOSTS`` does.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

ALWAYS_ALLOWED = ("localhost",)


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::]:18733``, not ``:::18733``)."""
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _normal(name: str) -> str:
    return name.strip().lower().removesuffix(".")


def host_name_of(header: str) -> str | None:
    """The host part of a ``Host`` header (port dropped), or None when it is malformed.

    IPv6 literals must be in brackets (``[::1]:8080``); the brackets are removed.
    """
    header = header.strip()
    if header.startswith("["):
        inside, sep, rest = header[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            return None
        return inside.lower()
    name, sep, port = header.rpartition(":")
    if not sep:
        name = header
    elif not port.isdigit() or ":" in name:
        return None
    return _normal(name) or None


class HostAllowlist:
    """Decides whether a request's ``Host`` header names this gateway.

    Allowed: IPv4 literals, bracketed IPv6 literals, ``localhost``, the machine's host name and
    FQDN, and ``names`` (``[http] allowed_hosts``).
    """

    def __init__(self, names: Iterable[str] = (), *, own_names: Iterable[str] | None = None) -> None:
        """Args:
            names: extra host names (``[http] allowed_hosts``).
            own_names: this machine's names; default ``socket.gethostname()`` and ``socket.getfqdn()``.
        """
        if own_names is None:
            own_names = (socket.gethostname(), socket.getfqdn())
        self.names = frozenset(_normal(n) for n in (*ALWAYS_ALLOWED, *own_names, *names) if _normal(n))

    def allows(self, header: str | None) -> bool:
        """True when ``header`` (the raw ``Host`` value; None when absent) may be served."""
        if header is None:
            return True  # HTTP/1.0 without Host: not a browser, so not a rebinding page
        name = host_name_of(header)
        if name is None:
            return False
        if ":" in name:
            return True  # a bracketed IPv6 literal (validated by host_name_of)
        try:
            ipaddress.IPv4Address(name)
            return True
        except ValueError:
            pass
        return name in self.names

"""Admin bearer-token check (constant-time; the token never reaches a log line)."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway.web.errors import Unauthorized


class AdminToken:
    """Holds the admin token and checks ``Authorization: Bearer <token>`` headers.

    The token is kept as bytes and compared with :func:`hmac.compare_digest`; ``repr`` never
    shows it, so an accidental log of this object leaks nothing.
    """

    def __init__(self, token: str | None) -> None:
        if token is not None and len(token.strip()) < 16:
            raise ValueError("admin token must be at least 16 characters")
        self._token = token.strip().encode() if token is not None else None

    def __repr__(self) -> str:
        return f"AdminToken(configured={self._token is not None})"

    @property
    def configured(self) -> bool:
        """True when an admin token is set (without one every admin call is refused)."""
        return self._token is not None

    def check(self, request: web.Request) -> None:
        """Raise :class:`Unauthorized` unless the request carries the admin bearer token."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if self._token is None:
            raise Unauthorized("admin API disabled: no admin token configured", code="admin_disabled")
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)", code="missing_token")
        # Header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise (a 500).
        if not hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), self._token):
            raise Unauthorized("wrong admin token", code="wrong_token")

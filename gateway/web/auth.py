"""Admin bearer-token check (constant-time; the token never reaches a log line)."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Callable

from aiohttp import web

from gateway.config.loader import token_placeholder
from gateway.log_limit import LogLimiter, more_since
from gateway.web.errors import Unauthorized
from gateway.web.logsafe import shown_path

logger = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
REFUSED_LOG_EVERY_S = 10.0


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be the admin token, or None (the config loader checks the same)."""
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        return "admin token must be at least %d characters" % MIN_TOKEN_CHARS
    placeholder = token_placeholder(token)
    if placeholder is not None:
        return ("admin token %s: it looks like a placeholder; make a random one, e.g. openssl rand -hex 32"
                % placeholder)
    return None


class AdminToken:
    """Holds the admin token and checks ``Authorization: Bearer <token>`` headers.

    The token is kept as bytes and compared with :func:`hmac.compare_digest`; ``repr`` never
    shows it, so an accidental log of this object leaks nothing. A refused call is logged as a
    WARNING (remote address, path, reason; never the presented token), at most one line per
    :data:`REFUSED_LOG_EVERY_S` counting the others, so guessing is visible without flooding the log.

    Raises:
        ValueError: the token is shorter than 16 characters or a placeholder (fewer than 4 distinct
            characters, or a unit of at most 4 repeated).
    """

    def __init__(self, token: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        if token is not None:
            problem = token_problem(token)
            if problem is not None:
                raise ValueError(problem)
        self._token = token.strip().encode() if token is not None else None
        self._refused_log = LogLimiter(REFUSED_LOG_EVERY_S, clock)

    def __repr__(self) -> str:
        return f"AdminToken(configured={self._token is not None})"

    @property
    def configured(self) -> bool:
        """True when an admin token is set (without one every admin call is refused)."""
        return self._token is not None

    def _refuse(self, request: web.Request, message: str, code: str) -> Unauthorized:
        skipped = self._refused_log.allow()
        if skipped is not None:
            logger.warning("refused an admin call from %s to %s %s: %s%s", request.remote, request.method,
                           shown_path(request), code, more_since(skipped, "refused admin calls"))
        return Unauthorized(message, code=code)

    def check(self, request: web.Request) -> None:
        """Raise :class:`Unauthorized` unless the request carries the admin bearer token."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if self._token is None:
            raise Unauthorized("admin API disabled: no admin token configured", code="admin_disabled")
        if scheme.lower() != "bearer" or not presented:
            raise self._refuse(request, "missing bearer token (Authorization: Bearer <token>)", "missing_token")
        # Header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise (a 500).
        if not hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), self._token):
            raise self._refuse(request, "wrong admin token", "wrong_token")

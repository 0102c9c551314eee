"""Admin bearer-token check (constant-time; the token never reaches a log line)."""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path
from typing import Callable

from aiohttp import web

from gateway.config.loader import read_admin_token, token_placeholder
from gateway.errors import ConfigError
from gateway.log_limit import LogLimiter, more_since
from gateway.web.errors import Unauthorized, Unavailable
from gateway.web.forwarded import client_label
from gateway.web.logsafe import shown_path

logger = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
REFUSED_LOG_EVERY_S = 10.0
# The admin token file is looked at (one stat) at most this often, on an admin call or /healthz.
TOKEN_RECHECK_S = 1.0
# A changed token file is read once it has not changed for this long: an editor or `echo > file`
# writing it in place is not caught half-written (which would be refused as unusable). Counted from the
# file's last change (its change time, which only this host's clock sets) when that is in the past, else
# from when the gateway first saw the change: an idle gateway's first call after a rename takes the file.
TOKEN_SETTLE_S = 1.0


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


def _file_state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a replaced or rewritten file (also a chmod: the change time)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hold(path: Path) -> int | None:
    """A descriptor on ``path`` (opened without blocking: a FIFO there does not), or None."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                       | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def _state_after(path: Path, held: int | None, before: object) -> object:
    """The state of ``path`` after a read (as :func:`_file_state`; ``"gone"`` when it cannot be stat'ed), or
    ``None`` when it is still ``before`` and the file held open during the read (``held``) is that file,
    unchanged: what was read is what the file held all along."""
    try:
        now: object = _file_state(os.stat(path))
        same = now == before and (held is None or _file_state(os.fstat(held)) == now)
    except OSError:
        return "gone"
    return None if same else now


class AdminToken:
    """Holds the admin token and checks ``Authorization: Bearer <token>`` headers.

    The token is kept as bytes and compared with :func:`hmac.compare_digest`; ``repr`` never
    shows it, so an accidental log of this object leaks nothing. A refused call is logged as a
    WARNING (remote address, path, reason; never the presented token), at most one line per
    :data:`REFUSED_LOG_EVERY_S` counting the others, so guessing is visible without flooding the log.

    With ``path`` (the ``[http] admin_token_file``), a token file replaced or rewritten while the
    gateway runs is taken without a restart: the file is stat'ed at most every :data:`TOKEN_RECHECK_S`
    (on an admin call or a ``/healthz``), and once a change has stayed the same for
    :data:`TOKEN_SETTLE_S` it is read and checked as at start
    (:func:`gateway.config.loader.read_admin_token`: owner-only, not a placeholder, ...). The settle time
    counts from the file's last change as its times say (the later of mtime and ctime), at most
    :data:`TOKEN_SETTLE_S` back from when the gateway first saw it, and never from a time ahead of the
    wall clock (a copy with times kept from a host whose clock is ahead then waits the full settle time
    from the first look). The file is stat'ed again after it is read (its path, and the descriptor held
    open across the read): a file written to or replaced during the read is not taken, nor called
    unusable, but read again once its new state has stayed the same for :data:`TOKEN_SETTLE_S` on the
    gateway's clock (file times set by an NFS, SMB or FUSE server's clock cannot be trusted). A usable new
    token replaces the old one at once (a WARNING says so). An unusable file (or one that is gone)
    fails closed: a file is replaced when the old token may have leaked, so every admin call gets 503
    ``token_file_unusable`` until a usable file is back, with an ERROR naming the problem once per
    change of the file and :attr:`problem` set (a ``/healthz`` reason).

    Raises:
        ValueError: the token is shorter than 16 characters or a placeholder (fewer than 4 distinct
            characters, or a unit of at most 4 repeated).
    """

    def __init__(self, token: str | None, clock: Callable[[], float] = time.monotonic, *,
                 path: Path | None = None) -> None:
        if token is not None:
            problem = token_problem(token)
            if problem is not None:
                raise ValueError(problem)
        self._token = token.strip().encode() if token is not None else None
        self._refused_log = LogLimiter(REFUSED_LOG_EVERY_S, clock)
        self._clock = clock
        # Only a gateway started with a token follows its file (without one the admin API is off).
        self._path = path if token is not None else None
        self._state: tuple[int, int, int, int, int] | None = None  # of the file the token in use came from
        if self._path is not None:
            try:
                self._state = _file_state(os.stat(self._path))
            except OSError:
                pass  # compared at the first look: any state differs
        self._looked = clock()
        # a changed file state and when (monotonic) it last changed (_changed_at): it is read once it
        # has stayed the same for TOKEN_SETTLE_S
        self._pending: tuple[object, float] | None = None
        self._problem: str | None = None
        self._logged_state: object = None  # the file state an ERROR was logged for (once per change)

    @property
    def problem(self) -> str | None:
        """Why the token file cannot be used (every admin call is refused meanwhile), else None."""
        self.refresh()
        return self._problem

    def refresh(self) -> None:
        """Take a changed token file (at most one look per :data:`TOKEN_RECHECK_S`; see the class)."""
        if self._path is None or self._clock() - self._looked < TOKEN_RECHECK_S:
            return
        self._looked = self._clock()
        try:
            st = os.stat(self._path)
        except OSError as exc:
            self._unusable("missing", "the admin token file %s cannot be read (%s)" % (self._path, exc.strerror))
            return
        state = _file_state(st)
        if state == self._state:
            self._pending = None
            return
        if self._pending is None or self._pending[0] != state:
            self._pending = (state, self._changed_at(st))
        if self._clock() - self._pending[1] < TOKEN_SETTLE_S:
            self._looked -= TOKEN_RECHECK_S  # may still be being written: look again at the next call
            return
        held = _hold(self._path)  # the file being read, to tell whether it changed during the read
        try:
            try:
                token = read_admin_token(self._path).encode()
            except ConfigError as exc:
                error: ConfigError | None = exc
            else:
                error = None
            after = _state_after(self._path, held, state)
        finally:
            if held is not None:
                os.close(held)
        if after is not None:
            # Written to (or replaced) while it was read: what was read may be half a token. The file
            # times cannot tell (NFS, SMB or FUSE servers set them by their own clocks): it is read
            # again once its new state has stayed the same for TOKEN_SETTLE_S (counted from now),
            # and is neither taken nor called unusable now.
            self._pending = (after, self._clock())
            self._looked -= TOKEN_RECHECK_S
            return
        if error is not None:
            self._unusable(state, str(error))
            return
        changed = self._token is not None and not hmac.compare_digest(token, self._token)
        self._token, self._state, self._problem, self._logged_state = token, state, None, None
        self._pending = None
        if changed:
            # An admin credential changed: an audit line the quiet gateway keeps (never the token).
            logger.warning("admin token file %s changed: its new token is in use, the previous one is refused",
                           self._path)
        else:
            logger.info("admin token file %s is usable again (same token)", self._path)

    def _changed_at(self, st: os.stat_result) -> float:
        """When (on :attr:`_clock`) the file seen now as ``st`` last changed, as its times say: the later of
        mtime and ctime (``cp -p`` or ``touch -d`` set the mtime to any time; the ctime is when this host
        last changed the inode: a write, rename or chmod),
        taken as at most :data:`TOKEN_SETTLE_S` ago, and as now when it is ahead of the wall clock. A file
        being written in place has times of about now (this host's clock) and so still waits; a file last
        changed a second or more ago is read at the first look."""
        age = time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
        return self._clock() - min(max(age, 0.0), TOKEN_SETTLE_S)

    def _unusable(self, state: object, why: str) -> None:
        # Fail closed: a token file is replaced when the old token may have leaked, so a replacement
        # that cannot be used must not leave the old token working.
        self._problem = "admin token file unusable, admin API refused until it is fixed: %s" % why
        if state != self._logged_state:
            self._logged_state = state
            logger.error("%s; every admin call is refused (503 token_file_unusable) until the file is fixed", why)

    def __repr__(self) -> str:
        return f"AdminToken(configured={self._token is not None})"

    @property
    def configured(self) -> bool:
        """True when an admin token is set (without one every admin call is refused)."""
        return self._token is not None

    def _refuse(self, request: web.Request, message: str, code: str) -> Unauthorized:
        skipped = self._refused_log.allow()
        if skipped is not None:
            logger.warning("refused an admin call from %s to %s %s: %s%s", client_label(request), request.method,
                           shown_path(request), code, more_since(skipped, "refused admin calls"))
        return Unauthorized(message, code=code)

    def _matches(self, presented: str) -> bool:
        assert self._token is not None
        # Header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise (a 500).
        return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), self._token)

    def accepts(self, request: web.BaseRequest) -> bool:
        """True when :meth:`check` would let ``request`` through; logs nothing (a refusal is logged once,
        by :meth:`check`). Whether to send ``100 Continue`` to an admin call (gateway.web.app)."""
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        self.refresh()
        if self._token is None or self._problem is not None or scheme.lower() != "bearer" or not presented:
            return False
        return self._matches(presented)

    def check(self, request: web.Request) -> None:
        """Raise :class:`Unauthorized` unless the request carries the admin bearer token."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        self.refresh()
        if self._token is None:
            raise Unauthorized("admin API disabled: no admin token configured", code="admin_disabled")
        if self._problem is not None:
            raise Unavailable(self._problem, code="token_file_unusable")
        if scheme.lower() != "bearer" or not presented:
            raise self._refuse(request, "missing bearer token (Authorization: Bearer <token>)", "missing_token")
        if not self._matches(presented):
            raise self._refuse(request, "wrong admin token", "wrong_token")

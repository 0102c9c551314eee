"""Request values in log lines, so that a request cannot forge or colour log lines."""

from __future__ import annotations

from aiohttp import web

LOGGED_PATH_CHARS = 200


def shown_path(request: web.BaseRequest) -> str:
    """The request path for a log line: ``repr`` of at most :data:`LOGGED_PATH_CHARS` characters.

    The path is percent-decoded: a ``%0a`` or ``%1b`` in it would be a newline (a forged line) or an
    ANSI escape in the log; ``repr`` escapes every control character.
    """
    path = request.path
    cut = path[:LOGGED_PATH_CHARS]
    return repr(cut) + ("..." if len(path) > len(cut) else "")

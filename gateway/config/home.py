"""The user's home directory for config paths and the defaults' data directory, without a traceback.

A gateway in a container often runs as a uid with no passwd entry and no ``HOME``: ``Path.home()`` and
``Path.expanduser()`` then raise ``RuntimeError``. An empty ``HOME`` (``env HOME= ...``) is taken as
unset: Python would use it and put ``~/x`` at ``/x``.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def home_dir() -> Path | None:
    """``$HOME`` when set and not empty, else this uid's passwd entry's; None when neither is known."""
    home = os.environ.get("HOME")
    if home:
        return Path(home)
    try:
        entry = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None
    return Path(entry) if entry else None


def expand_user(text: str) -> Path | None:
    """``text`` as a path, a leading ``~`` (or ``~/``) the home directory and ``~user`` that user's; None
    when it starts with one of them and that home is not known."""
    if text == "~" or text.startswith("~/"):
        if os.environ.get("HOME"):
            return Path(os.path.expanduser(text))  # exactly as before (``~//x`` is $HOME/x, not /x)
        home = home_dir()
        if home is None:
            return None
        return Path(str(home).rstrip("/") + text[1:] or "/")  # as os.path.expanduser joins it
    if text.startswith("~"):
        expanded = os.path.expanduser(text)  # ~user from the passwd file; unchanged when no such user
        return None if expanded.startswith("~") else Path(expanded)
    return Path(text)

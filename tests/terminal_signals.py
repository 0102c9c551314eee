"""Start a test's child command with a terminal's signal dispositions.

A test run in the background (``cmd &`` in a script, a CI runner, ``nohup``) inherits SIGINT and
SIGQUIT ignored (and under ``nohup`` SIGHUP), and ``civicedge`` keeps a signal it inherited as
ignored, as ``nohup`` intends. A test that sends Ctrl-C or a hang-up to a command means a user at a
terminal, so it starts the command with these signals at their defaults (``preexec_fn``).
"""

from __future__ import annotations

import signal

TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def as_in_a_terminal() -> None:
    """``preexec_fn`` for a child: SIGINT, SIGQUIT and SIGHUP at their defaults, as in a terminal session."""
    for sig in TERMINAL_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)

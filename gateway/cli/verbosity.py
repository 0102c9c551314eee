"""Log levels for ``-v``/``-vv``/``-vvv``: detail of civicedge's own loggers, not of the libraries under it.

``-v`` and ``-vv`` raise the level of civicedge's loggers only (:data:`OWN_LOGGERS`: the gateway and
the harness); every other logger (websockets frames, Bumble HCI dumps, bleak, aiomqtt/paho,
aiohttp) stays at WARNING, so ``-vv`` is the gateway's debug, not a flood of third-party traces.
``-vvv`` turns DEBUG on for everything. ``CIVICEDGE_LOG_DEBUG`` (comma-separated logger names,
e.g. ``bumble,websockets``) turns DEBUG on for those loggers at any ``-v`` count; ``*`` or ``all``
there is everything (as ``-vvv``). A value that looks like a switch (``1``, ``true``, ``yes``...)
names no logger: it is ignored with a one-line warning on stderr.
"""

from __future__ import annotations

import logging
import os
import sys

OWN_LOGGERS = ("gateway", "hil", "bench", "__main__")
DEBUG_LOGGERS_ENV = "CIVICEDGE_LOG_DEBUG"
EVERYTHING = ("*", "all")
_SWITCHES = ("1", "0", "true", "false", "yes", "no", "on", "off", "y", "n")
_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # by -v count
_warned: set[str] = set()  # switch-like values already warned about (apply_verbosity may run twice)


def apply_verbosity(verbosity: int) -> None:
    """Set the root and civicedge logger levels for ``verbosity`` ``-v`` flags (module docstring)."""
    names = [name.strip() for name in os.environ.get(DEBUG_LOGGERS_ENV, "").split(",") if name.strip()]
    everything = verbosity >= 3 or any(name.lower() in EVERYTHING for name in names)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if everything else logging.WARNING)
    # Quiet or -vvv: civicedge's loggers follow the root (an embedding program's levels still apply).
    own = _LEVELS[verbosity] if 0 < verbosity < 3 and not everything else logging.NOTSET
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    for name in names:
        if name.lower() in EVERYTHING:
            continue
        if name.lower() in _SWITCHES:
            if name not in _warned:
                _warned.add(name)
                print("civicedge: %s=%s ignored: it takes logger names (e.g. bumble,websockets), or * for "
                      "everything" % (DEBUG_LOGGERS_ENV, name), file=sys.stderr)
            continue
        logging.getLogger(name).setLevel(logging.DEBUG)

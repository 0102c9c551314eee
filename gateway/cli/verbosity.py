"""Log levels for ``-v``/``-vv``/``-vvv``: detail of civicedge's own loggers, not of the libraries under it.

``-v`` and ``-vv`` raise the level of civicedge's loggers only (:data:`OWN_LOGGERS`: the gateway and
the harness); every other logger (websockets frames, Bumble HCI dumps, bleak, aiomqtt/paho,
aiohttp) stays at WARNING, so ``-vv`` is the gateway's debug, not a flood of third-party traces.
``-vvv`` turns DEBUG on for everything. ``CIVICEDGE_LOG_DEBUG`` (comma-separated logger names,
e.g. ``bumble,websockets``) turns DEBUG on for those loggers at any ``-v`` count.
"""

from __future__ import annotations

import logging
import os

OWN_LOGGERS = ("gateway", "hil", "bench", "__main__")
DEBUG_LOGGERS_ENV = "CIVICEDGE_LOG_DEBUG"
_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # by -v count


def apply_verbosity(verbosity: int) -> None:
    """Set the root and civicedge logger levels for ``verbosity`` ``-v`` flags (module docstring)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbosity >= 3 else logging.WARNING)
    # Quiet or -vvv: civicedge's loggers follow the root (an embedding program's levels still apply).
    own = _LEVELS[verbosity] if 0 < verbosity < 3 else logging.NOTSET
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    for name in os.environ.get(DEBUG_LOGGERS_ENV, "").split(","):
        if name.strip():
            logging.getLogger(name.strip()).setLevel(logging.DEBUG)

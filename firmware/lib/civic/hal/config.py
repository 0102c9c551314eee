"""Read and check the device files: ``/board.json``, ``/identity.json``.

``/board.json`` is generated on the host from ``boards/<name>.toml`` by
``hil.boards.load_board(...).to_device_config()``, which has validated it fully; the device
only checks what it needs so that a damaged file gives a clear message instead of a KeyError.
"""

import json


class BoardConfigError(ValueError):
    """``/board.json`` is missing or lacks something the firmware needs.

    Attributes:
        key: the missing or bad key (dotted), or None.
    """

    def __init__(self, detail, key=None):
        super().__init__("board.json: " + detail)
        self.key = key


REQUIRED = ("kind", "io", "links", "cal", "sleep", "wdt_ms", "app")
# The io roles each kind's app uses: those of hil/boards/kinds.py (tests/firmware checks they match).
IO_BY_KIND = {
    "streetlight": ("pir", "light", "lamp", "lamp_current"),
    "bin": ("trig", "echo", "temp", "battery", "tilt", "lid"),
}


def parse_board(text):
    """Parse and check the text of ``/board.json``; return the dict."""
    try:
        cfg = json.loads(text)
    except ValueError:
        raise BoardConfigError("not valid JSON")
    if not isinstance(cfg, dict):
        raise BoardConfigError("not a JSON object")
    for key in REQUIRED:
        if key not in cfg:
            raise BoardConfigError("missing " + key, key)
    roles = IO_BY_KIND.get(cfg["kind"])
    if roles is None:
        raise BoardConfigError("unknown kind %r" % (cfg["kind"],), "kind")
    for role in roles:
        io = cfg["io"].get(role)
        if not isinstance(io, dict) or not isinstance(io.get("pin"), int):
            raise BoardConfigError("missing io " + role, "io." + role)
    return cfg


def read_text(path):
    """Return the text of a flash file, or None when it does not exist."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return text


def load_board(path="/board.json"):
    """Load ``/board.json``; raise :class:`BoardConfigError` if absent or bad."""
    text = read_text(path)
    if text is None:
        raise BoardConfigError("cannot read " + path)
    return parse_board(text)


def load_identity_doc(path="/identity.json"):
    """Return the identity dict, or None when the board is not provisioned yet.

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    text = read_text(path)
    if text is None:
        return None
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("identity.json is not a JSON object")
    return doc

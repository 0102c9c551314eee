"""Radio URLs: ``ws://HOST:PORT/ROOM`` (``link-relay:`` prefix accepted for familiarity)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from hil.sim.radio.errors import RadioUrlError

DEFAULT_ROOM = "civicedge"
_ROOM_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class RadioUrl:
    """A parsed radio address.

    Attributes:
        host: relay host (loopback by default).
        port: relay TCP port.
        room: radio "room": devices only hear devices in the same room.
    """

    host: str
    port: int
    room: str

    @property
    def url(self) -> str:
        """The canonical ``ws://host:port/room`` form."""
        return f"ws://{self.host}:{self.port}/{self.room}"

    @property
    def transport_spec(self) -> str:
        """The Bumble transport spec that opens one controller on this radio."""
        return f"ws-client:{self.url}"


def parse_radio_url(url: str) -> RadioUrl:
    """Parse and validate a radio URL.

    Args:
        url: ``ws://HOST:PORT/ROOM`` or ``link-relay:ws://HOST:PORT/ROOM``; the room
            defaults to ``civicedge`` when the path is empty.

    Raises:
        RadioUrlError: scheme, port or room is missing or malformed.
    """
    if not isinstance(url, str) or not url:
        raise RadioUrlError("radio URL must be a non-empty string", url=str(url))
    text = url[len("link-relay:"):] if url.startswith("link-relay:") else url
    parts = urlsplit(text)
    if parts.scheme != "ws":
        raise RadioUrlError(f"radio URL must start with ws:// (got {url!r})", url=url)
    if not parts.hostname:
        raise RadioUrlError(f"radio URL has no host: {url!r}", url=url)
    try:
        port = parts.port
    except ValueError as exc:
        raise RadioUrlError(f"radio URL has a bad port: {url!r}", url=url) from exc
    if port is None or not 0 < port < 65536:
        raise RadioUrlError(f"radio URL needs a port 1..65535: {url!r}", url=url)
    room = parts.path.strip("/") or DEFAULT_ROOM
    if not _ROOM_RE.match(room):
        raise RadioUrlError(f"radio room must match [A-Za-z0-9._-]{{1,64}}: {room!r}", url=url, room=room)
    return RadioUrl(host=parts.hostname, port=port, room=room)

"""Whether a board's port is free before the harness opens it, and who holds it when it is not.

pyserial's exclusive lock (taken by the gateway's serial link, esptool, mpremote, ``civicedge flash``)
makes a second open fail with mpremote's bare "failed to access"; this names the holder instead, found
as ``fuser`` finds it (``/proc/*/fd``; other users' processes are visible only to root).
"""

from __future__ import annotations

from hil.backends.errors import PortInUseError
from hil.field.errors import PortBusyError, PortNotFoundError
from hil.field.ports import check_port_available, is_url, port_holders


def check_port_free(port: str, *, role: str) -> None:
    """Raise :class:`PortInUseError` when another process has ``port`` open.

    Args:
        port: a local device path (URLs are not checked: their server decides).
        role: what the port is to the test, for the message (``console``, ``data port``).

    Raises:
        PortInUseError: the port is locked by another process, or open in one that reads it.
        hil.field.errors.PortPermissionError: this user may not open it.
    """
    if is_url(port):
        return
    try:
        check_port_available(port)
    except PortNotFoundError:
        return  # not this check's business: opening it says what is wrong with it
    except PortBusyError as exc:
        holders = port_holders(port)
        if holders:
            who = "by " + ", ".join(f"pid {pid} ({name})" for pid, name in holders)
        else:
            who = ("by another process (not visible to this user; `fuser -v " + port + "` as root names it)")
        raise PortInUseError(
            f"the {role} {port} is in use {who}: close that program first (a gateway's [[serial]] link, a "
            "serial monitor or another flash holds the port, and takes the board's answers)",
            port=port, holders=holders) from exc

"""Write interest for aiomqtt's socket, registered with the event loop only while paho's socket is open.

aiomqtt (2.4 to 2.5.1, the newest) answers paho's ``on_socket_register_write`` with
``loop.call_soon_threadsafe(loop.add_writer, <fd read now>, ...)``: the registration runs one loop turn
later (2.3 passes the socket itself, which fails on fd -1 the same way). When the broker's connection closes within that turn (a reader callback sees the EOF), paho has
closed the socket by then and asyncio logs ``Exception in callback BaseSelectorEventLoop.add_writer(N,
...)`` with ``OSError: [Errno 9] Bad file descriptor``; worse, when another socket (the BLE central's, a
web client's) got fd N meanwhile, the MQTT write callback silently replaces that socket's own.

:func:`guard_write_registration` gives paho callbacks that read the fd when the registration runs, from
the socket paho asked about, and skip it when paho closed or replaced that socket. The connect-time
``add_reader`` is left to aiomqtt: it runs before ``Client.__aenter__`` resumes, and nothing can close
the new socket before then (the upstream makes a new client per connection).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

_missing_noted = False


def _bound_to(callback: object, owner: object) -> bool:
    return getattr(callback, "__self__", None) is owner


def guard_write_registration(client: aiomqtt.Client) -> bool:
    """Replace ``client``'s paho write (un)registration callbacks by fd-checked ones; call in the event
    loop that runs ``client`` (it is the loop the registrations go to), before connecting.

    Returns:
        False, leaving aiomqtt's own callbacks (one WARNING per process: the guard is off), when the aiomqtt internals
        this relies on are not there: ``Client._client`` (the paho client) with aiomqtt's own
        ``_on_socket_(un)register_write`` set on it, and ``Client._disconnected`` (an asyncio Future).
    """
    global _missing_noted
    paho = getattr(client, "_client", None)
    if not (isinstance(paho, mqtt.Client) and isinstance(getattr(client, "_disconnected", None), asyncio.Future)
            and _bound_to(paho.on_socket_register_write, client)
            and _bound_to(paho.on_socket_unregister_write, client)):
        if not _missing_noted:
            _missing_noted = True
            log.warning("aiomqtt %s lacks the internals the fd-checked write registration relies on; using"
                      " its own (a broker disconnect may log 'Bad file descriptor' from asyncio)",
                      getattr(aiomqtt, "__version__", "?"))
        return False
    loop = asyncio.get_running_loop()

    def writable(paho_client: mqtt.Client) -> None:
        try:
            paho_client.loop_write()
        except Exception as exc:  # noqa: BLE001 - as aiomqtt's own: a write error means the connection is lost
            disconnected = client._disconnected  # aiomqtt replaces it at each connect: read it now
            if not disconnected.done():
                disconnected.set_exception(exc)

    def register(paho_client: mqtt.Client, userdata: Any, sock: Any) -> None:  # noqa: ANN401 - paho's SocketLike
        def add() -> None:
            fd = sock.fileno()  # -1 once closed; while open, a number no other socket can hold
            if paho_client.socket() is not sock or fd < 0:
                log.debug("MQTT socket closed before its write registration ran: skipped")
                return
            loop.add_writer(fd, writable, paho_client)

        # paho calls this from the connect() executor thread too
        loop.call_soon_threadsafe(add)

    def unregister(paho_client: mqtt.Client, userdata: Any, sock: Any) -> None:  # noqa: ANN401
        fd = sock.fileno()
        if fd >= 0:  # paho unregisters before it closes; a closed socket has nothing registered by number
            loop.remove_writer(fd)

    paho.on_socket_register_write = register
    paho.on_socket_unregister_write = unregister
    return True

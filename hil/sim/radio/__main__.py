"""``python -m hil.sim.radio``: run a standalone virtual radio relay and print its URL."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Sequence

from gateway.cli.verbosity import apply_verbosity
from gateway.log_time import LINE_FORMAT, IsoTimeFormatter


async def _serve(host: str, port: int, as_json: bool) -> None:
    from hil.sim.radio.relay import RadioServer  # Bumble and websockets: the 'hil' extra (checked in main)

    server = RadioServer(host=host, port=port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Print only once signals are handled: a caller may stop us as soon as it has the URL.
    if as_json:
        print(json.dumps({"url": server.url, "host": host, "port": server.port}), flush=True)
    else:
        print(server.url, flush=True)
    await stop.wait()
    await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the relay until SIGINT/SIGTERM, return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m hil.sim.radio",
                                     description="Run a virtual BLE radio relay (Bumble link over WebSocket).")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the bare URL")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v info, -vv debug of civicedge's loggers, -vvv debug of everything (websockets "
                             "frames, Bumble HCI dumps); or CIVICEDGE_LOG_DEBUG=bumble,websockets")
    args = parser.parse_args(argv)
    try:
        import hil.sim.radio.relay  # noqa: F401 - its modules come with the 'hil' extra
    except ModuleNotFoundError as exc:
        from hil.cli.extras import extra_for, needs_extra_message

        missing = extra_for(exc)
        if missing is None:
            raise
        print(f"radio: {needs_extra_message('python -m hil.sim.radio', *missing)}", file=sys.stderr)
        return 1
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(IsoTimeFormatter(LINE_FORMAT))  # with its UTC offset, as the civicedge CLI's lines
    logging.basicConfig(handlers=[handler])
    apply_verbosity(args.verbose)
    try:
        asyncio.run(_serve(args.host, args.port, args.json))
    except OSError as exc:
        print(f"radio: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

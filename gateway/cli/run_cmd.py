"""``civicedge gateway run`` and ``civicedge gateway init``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Mapping

from gateway.cli.common import EXIT_OK, add_config_arg, config_from, fail
from gateway.cli.verbosity import apply_verbosity
from gateway.config import GatewayConfig, write_example
from gateway.config.licence import licence_warning
from gateway.config.retention_warning import retention_interval_warning
from gateway.errors import GatewayError
from gateway.notify_status import StatusReporter
from gateway.storage.disk_space import low_space
from gateway.systemd import notify

log = logging.getLogger(__name__)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``run`` and ``init``."""
    run = sub.add_parser("run", help="run the gateway until SIGTERM/SIGINT/SIGHUP",
                         description="Run the gateway until SIGTERM, SIGINT or SIGHUP (each a clean stop: there is "
                                     "nothing to reload). Under systemd it supports Type=notify (READY=1 once it "
                                     "accepts frames) and journal priorities; see docs/gateway.md, Running as a "
                                     "service (scripts/civicedge-gateway.service).")
    add_config_arg(run)
    run.add_argument("--check", action="store_true", help="validate the config and exit")
    # Also accepted here (docs write `gateway run --config F -v`); adds to a `civicedge -v` before the command.
    run.add_argument("-v", "--verbose", dest="run_verbose", action="count", default=0,
                     help="more log detail (-vv gateway debug, -vvv debug of the libraries too), as civicedge -v "
                          "(default: warnings only)")
    run.set_defaults(func=cmd_run)
    init = sub.add_parser("init", help="write a commented example config",
                          description="Write a commented example config to PATH. Missing parent directories "
                                      "are created (mode 0700, as the gateway's data directories). For a "
                                      "service, as root: gateway init --group civicedge "
                                      "/etc/civicedge/gateway.toml (docs/gateway.md, Running as a service).")
    init.add_argument("path", nargs="?", type=Path, default=Path("gateway.toml"),
                      help="default: ./gateway.toml; missing parent directories are created (0700)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing old config (never a database, one of the gateway's files or a "
                           "file that is not a config)")
    init.add_argument("--group", metavar="GROUP",
                      help="the service user's group (e.g. civicedge): the directories created get it with mode "
                           "0750 and the config file with mode 0640, so that user can read the config")
    init.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    """Write the example config."""
    try:
        created = write_example(args.path, force=args.force, group=args.group)
    except GatewayError as exc:
        return fail(exc)
    print("wrote %s" % args.path)
    if created and args.group is None and os.name == "posix" and os.geteuid() == 0:
        print(root_only_note(args.path, created), file=sys.stderr)
    return EXIT_OK


def root_only_note(path: Path, created: list[Path]) -> str:
    """What ``init`` run as root says when it created ``created`` (0700, root's) without ``--group``: a
    service user (the unit's ``User=civicedge``) could not enter them to read ``path``, nor `run --check`."""
    dirs = " ".join(str(d) for d in created)
    return ("note: %s %s created for root only (mode 0700): a service user cannot read %s. For the service "
            "user civicedge (scripts/civicedge-gateway.service), run:\n  chgrp civicedge %s %s && chmod 750 %s "
            "&& chmod 640 %s\nor write it again with: civicedge gateway init --force --group civicedge %s"
            % (dirs, "was" if len(created) == 1 else "were", path.name, dirs, path, dirs, path, path))


def cmd_run(args: argparse.Namespace) -> int:
    """Validate the config, then run the gateway until SIGTERM, SIGINT or SIGHUP (clean drain)."""
    _apply_verbosity(args)
    try:
        config = config_from(args, store_free=True)  # --check also says when another gateway holds the store
    except GatewayError as exc:
        return fail(exc)
    # Data published without a usable licence is legally unusable: said at every check and start (a
    # licence the SPDX list does not have was refused with the config).
    licence_warning = open_data_licence_warning(config)
    if args.check:
        # No gateway is built here (it would open the store): the retentions are read as start-up reads them.
        short_retention, retention_ignored = retention_warning(config)
        try:
            store = _store_schema(config.storage.path)
        except GatewayError as exc:
            return fail(exc)
        for warning in (licence_warning, short_retention, *retention_ignored):
            if warning is not None:
                print("warning: %s" % warning, file=sys.stderr)
        low = low_space(config.storage.path, config.storage.min_free_mb)
        if low is not None:  # not refused: run starts and commits while there is room
            print("warning: %s" % low, file=sys.stderr)
        from gateway.transports.ble_link import system_bus_missing  # bleak: only when checking

        missing = _virtual_radio_missing(config)
        if missing is not None:  # refused as `gateway run` would refuse it (resolve_backends), not at start
            return fail(missing)
        no_bus = system_bus_missing(config.ble)
        if no_bus is not None:  # not refused: the serial links work, and BLE retries until the bus is there
            print("warning: %s" % no_bus, file=sys.stderr)
        print("config OK: gateway %s, store %s (%s)" % (config.id, config.storage.path, store))
        return EXIT_OK
    if licence_warning is not None:
        log.warning("%s", licence_warning)
    # the retention warning: once the gateway has read retention.json (_run)
    _stop_with_parent()
    try:
        return asyncio.run(_run(config))
    except GatewayError as exc:
        return fail(exc)


def _virtual_radio_missing(config: GatewayConfig) -> GatewayError | None:
    """For ``run --check``: the error ``gateway run`` would stop with when ``[ble] backend = "virtual"``
    is enabled and the virtual radio's modules (the ``hil`` extra) are not installed; None otherwise."""
    if not (config.ble.enabled and config.ble.backend == "virtual"):
        return None
    import importlib.util

    from gateway.errors import TransportError
    from gateway.transports.ble_link import VIRTUAL_BACKEND
    from hil.cli.extras import EXTRA_OF_MODULE, needs_extra_message  # hil ships with gateway; stdlib only

    for module in ("bumble", "websockets"):  # what hil.sim.radio.bleak_backend imports from the extra
        if importlib.util.find_spec(module) is None:
            return TransportError(needs_extra_message(VIRTUAL_BACKEND, EXTRA_OF_MODULE[module], module),
                                  reason="open_failed", link="ble")
    return None


def short_retention_warning(config: GatewayConfig, effective: Mapping[tuple[str, str], int]) -> str | None:
    """:func:`gateway.config.retention_warning.retention_interval_warning` on ``effective``, the retentions the
    gateway uses (the policy's, the config's ``[retention.<kind>]``, the admin API's ``retention.json``), or None.
    At ``run`` and ``run --check``, not at every config load: each CLI command loads the config."""
    return retention_interval_warning(effective, config.retention_interval_s, configured=config.retention_overrides)


def retention_warning(config: GatewayConfig) -> tuple[str | None, list[str]]:
    """For ``run --check``, which builds no gateway: :func:`short_retention_warning` on the retentions the
    gateway will use, ``retention.json`` read as the start reads it (a file it refuses is left to that
    refusal). ``run`` itself warns from what its gateway loaded (:func:`_run`): the file is read once.

    Returns:
        That warning or None, and what ``retention.json`` keeps longer than the config allows
        (:attr:`gateway.web.retention.RetentionSettings.ignored`: not logged here, printed by ``run --check``;
        the gateway logs it once as it starts).
    """
    from gateway.config.loader import retention_days
    from gateway.resources import load_policy
    from gateway.web.errors import BadParameter
    from gateway.web.retention import RetentionSettings

    effective = retention_days(config)
    ignored: list[str] = []
    try:
        settings = RetentionSettings(load_policy(), path=config.data_dir / "retention.json",
                                     overrides=config.retention_overrides, log_ignored=False)
    except BadParameter:
        pass  # run --check and the start refuse it with their own error
    else:
        effective.update(settings.effective())
        ignored = settings.ignored
    return short_retention_warning(config, effective), ignored


# A refused licence's problem holds its key so (gateway.config.loader: "error (<reason>) [<key>]: ...").
LICENCE_PROBLEM = ") [opendata.licence]: "


def open_data_licence_warning(config: GatewayConfig) -> str | None:
    """What is likely wrong with the open data's licence when the gateway publishes open data (HTTP on),
    or None (:func:`gateway.config.licence.licence_warning`)."""
    if config.http is None:
        return None
    if any(LICENCE_PROBLEM in problem.split("\n", 1)[0] for problem in config.open_data.problems):
        return None  # refused (a lenient `run`): its ERROR says what to fix, "not set" would be wrong
    return licence_warning(config.open_data_licence, config.open_data.licence_text_url)


def _store_schema(path: Path) -> str:
    """Say what ``run`` will find at the store ``path`` (read-only: nothing is created or migrated).

    Raises:
        StorageError: ``schema_too_new`` / ``schema_unknown`` / ``read_failed``, as ``run`` would fail.
    """
    from gateway.cli.run_check import read_schema_version
    from gateway.storage.schema import SCHEMA_VERSION

    found = read_schema_version(path)
    if found is None:
        return "no store yet: created at start with schema version %d" % SCHEMA_VERSION
    if found < SCHEMA_VERSION:
        return "schema version %d: migrated to %d at start" % (found, SCHEMA_VERSION)
    return "schema version %d" % found


def _apply_verbosity(args: argparse.Namespace) -> None:
    """Raise the log detail for ``gateway run -v``; the top-level command set up logging already."""
    extra: int = getattr(args, "run_verbose", 0)
    if extra:
        apply_verbosity(int(getattr(args, "verbose", 0) or 0) + extra)


# Each of them stops the gateway cleanly (drain, ACKs, WAL checkpoint, exit 0).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# Set by a tool that runs the gateway as its child (civicedge demo) to its own pid.
STOP_WITH_PARENT_ENV = "CIVICEDGE_STOP_WITH_PARENT"


def _stop_with_parent() -> None:
    """When started by a tool as its child, get SIGTERM (a clean drain) if that tool dies, even by
    kill -9 or a closed terminal, instead of running on as an orphan holding the port and the store."""
    parent = os.environ.get(STOP_WITH_PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError) as exc:
        log.warning("cannot arrange to stop with the parent process: %s", exc)
        return
    if str(os.getppid()) != parent:  # it died before the above took effect
        os.kill(os.getpid(), signal.SIGTERM)


async def _run(config: "object") -> int:
    from gateway.config import GatewayConfig
    from gateway.service import Gateway

    assert isinstance(config, GatewayConfig)
    gateway = Gateway(config)  # reads retention.json; logs what of it the config caps
    short_retention = short_retention_warning(config, gateway.retention())
    if short_retention is not None:
        log.warning("%s", short_retention)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal or SSH session ended the gateway with 129 (no drain, WAL left
    # behind). The gateway has no configuration to reload, so it is a stop like the others.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
    except BaseException:
        await gateway.stop()
        raise
    # A line on stdout tells supervisors (and tests) that the gateway is accepting frames; systemd
    # (Type=notify) is told through NOTIFY_SOCKET.
    print("gateway %s ready%s" % (config.id, "" if gateway.http_port is None else " http=%d" % gateway.http_port),
          flush=True)
    running = "gateway %s running: %d serial port(s), BLE %s, HTTP %s" % (
        config.id, len(config.serial), "on" if config.ble.enabled else "off",
        "off" if gateway.http_port is None else "on port %d" % gateway.http_port)
    notify("READY=1", "STATUS=" + running)
    # STATUS= follows the health (degraded: link_down ...; back to running), WATCHDOG=1 if the unit asks.
    status = StatusReporter(config.id, running, lambda: gateway.health())  # looked up at each look
    reporter = asyncio.create_task(status.run(), name="sd-status")
    try:
        await stop.wait()
        status.stopping()  # the watchdog is still pinged while the gateway drains
        notify("STOPPING=1", "STATUS=gateway %s stopping: committing and acknowledging what is in flight" % config.id)
        await gateway.stop()
    finally:
        reporter.cancel()
        await asyncio.wait([reporter])  # ended before the check for tasks that ignored cancellation below
    sys.stdout.flush()
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    if leftover:
        # Everything is committed and closed; a task that ignored cancellation (a hung radio stack)
        # must not keep the process from exiting (asyncio.run would wait for it forever).
        log.warning("exiting past %d task(s) that ignored cancellation: %s", len(leftover),
                    ", ".join(sorted(t.get_name() for t in leftover)))
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK

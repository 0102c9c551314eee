"""``civicedge gateway run`` and ``civicedge gateway init``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from gateway.cli.common import EXIT_ERROR, EXIT_OK, add_config_arg, config_from, fail
from gateway.cli.verbosity import apply_verbosity
from gateway.config import GatewayConfig, write_example
from gateway.config.licence import licence_warning
from gateway.config.retention_warning import retention_interval_warning
from gateway.errors import GatewayError
from gateway.gc_tuning import tune_collector
from gateway.notify_status import StatusReporter
from gateway.storage.disk_space import low_space
from gateway.systemd import notify

if TYPE_CHECKING:
    from gateway.service import Gateway

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


# Each of them stops the gateway cleanly (drain, ACKs, WAL checkpoint, exit 0). Once the stop has begun
# (by one of them, a closed stdout or an error), the next one ends the process at once (_StopSignals).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# A stop that has not ended this long after it began ends the process (a radio stack or a disk that hangs
# must not keep it, and its port, for ever). Gateway.stop bounds its own steps (ingest 10 s, then a few
# of STOP_STEP_S); this is the backstop, under systemd's TimeoutStopSec=60 (scripts/civicedge-gateway.service).
STOP_GRACE_S = 50.0

# Tasks left after the stop are cancelled and get this long to end before the process exits past them.
LEFTOVER_WAIT_S = 3.0

# The exit status when stdout's reader went away (128 + SIGPIPE, as civicedge's other commands, hil.cli.main).
EXIT_STDOUT_CLOSED = 141

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


class _StopSignals:
    """SIGTERM, SIGINT and SIGHUP during ``gateway run``.

    Until the stop begins, each calls ``stop`` (a clean drain). From :meth:`stopping` on (called at the first
    signal, and on every other way the stop begins: a closed stdout, an error), the next one ends the process
    at once: its default action is restored, so it works even while a stuck store call blocks the event
    loop. A signal the gateway was started with ignored (``nohup``) stays ignored then. A watchdog thread
    ends the process (``os._exit``, :data:`EXIT_ERROR`) if the stop has not ended ``grace_s`` (default
    :data:`STOP_GRACE_S`) later. Both lose nothing committed: SQLite keeps every committed transaction in
    the store or its ``-wal`` (replayed at the next start), ACKs follow commits, and the kernel releases
    the store's lock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None], *,
                 grace_s: float | None = None) -> None:
        self._loop = loop
        self._stop = stop
        self._grace_s = STOP_GRACE_S if grace_s is None else grace_s
        # Restored by stopped(): asyncio.run's own SIGINT handler, or a test process's handlers.
        self._before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        self._stopped = threading.Event()
        self._watchdog: threading.Thread | None = None
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._first, sig)

    def _first(self, sig: int) -> None:
        log.info("%s: stopping; another SIGTERM/SIGINT/SIGHUP ends the gateway at once", signal.Signals(sig).name)
        self.stopping()
        self._stop()

    def stopping(self) -> None:
        """The stop begins: the next stop signal ends the process, and so does the grace period's end."""
        if self._watchdog is not None or self._stopped.is_set():
            return
        for sig in STOP_SIGNALS:
            self._loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN if self._before[sig] == signal.SIG_IGN else signal.SIG_DFL)
        self._watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._watchdog.start()

    def stopped(self) -> None:
        """The stop has ended: the watchdog ends without a word, the signals are handled as before the run."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for sig in STOP_SIGNALS:
            self._loop.remove_signal_handler(sig)
            before = self._before[sig]
            signal.signal(sig, before if before is not None else signal.SIG_DFL)

    def _watch(self) -> None:
        if self._stopped.wait(self._grace_s):
            return
        # Said from another thread, waited for briefly: the stuck main thread may hold the log handler's lock
        # (a write to a stderr pipe nobody reads), and nothing may keep this exit from happening.
        said = threading.Thread(target=log.error, daemon=True, args=(
            "the gateway's stop has not ended %.0f s after it began: exiting now (committed reports are kept, in the "
            "store or its -wal; what was not acknowledged the devices send again)", self._grace_s))
        said.start()
        said.join(1.0)
        os._exit(EXIT_ERROR)


def _hard_exit(code: int) -> None:
    """Flush what can be flushed and end the process at once (no asyncio.run teardown)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: nothing more can be said there
    logging.shutdown()
    os._exit(code)


async def _run(config: "object") -> int:
    from gateway.config import GatewayConfig
    from gateway.service import Gateway

    assert isinstance(config, GatewayConfig)
    gateway = Gateway(config)  # reads retention.json; logs what of it the config caps
    short_retention = short_retention_warning(config, gateway.retention())
    if short_retention is not None:
        log.warning("%s", short_retention)
    stop = asyncio.Event()
    # SIGHUP too: a closed terminal or SSH session ended the gateway with 129 (no drain, WAL left
    # behind). The gateway has no configuration to reload, so it is a stop like the others.
    signals = _StopSignals(asyncio.get_running_loop(), stop.set)
    try:
        code = await _serve(config, gateway, stop, signals)
    except BaseException as exc:
        # asyncio.run would wait for ever for a task that ignores cancellation before this error is reported.
        await _exit_past_stuck_tasks(exc)
        raise
    finally:
        signals.stopped()
    await _exit_past_stuck_tasks(code)
    return code


async def _serve(config: GatewayConfig, gateway: "Gateway", stop: asyncio.Event, signals: _StopSignals) -> int:
    """Start ``gateway``, say it is ready, wait for ``stop``; stop the gateway on every way out (a normal stop
    commits, acknowledges, closes the store and releases its lock). Returns the exit status."""
    try:
        await gateway.start()
    except BaseException:
        signals.stopping()
        await gateway.stop()
        raise
    tune_collector()  # after the start: what it loaded is frozen out of later collections
    code = EXIT_OK
    reporter: asyncio.Task[None] | None = None
    try:
        # A line on stdout tells supervisors (and tests) that the gateway is accepting frames; systemd
        # (Type=notify) is told through NOTIFY_SOCKET.
        code = _say_ready("gateway %s ready%s" % (
            config.id, "" if gateway.http_port is None else " http=%d" % gateway.http_port))
        if code == EXIT_OK:
            running = "gateway %s running: %d serial port(s), BLE %s, HTTP %s" % (
                config.id, len(config.serial), "on" if config.ble.enabled else "off",
                "off" if gateway.http_port is None else "on port %d" % gateway.http_port)
            notify("READY=1", "STATUS=" + running)
            # STATUS= follows the health (degraded: link_down ...; back to running), WATCHDOG=1 if the unit asks.
            status = StatusReporter(config.id, running, lambda: gateway.health())  # looked up at each look
            reporter = asyncio.create_task(status.run(), name="sd-status")
            await stop.wait()
            status.stopping()  # the watchdog is still pinged while the gateway drains
            notify("STOPPING=1",
                   "STATUS=gateway %s stopping: committing and acknowledging what is in flight" % config.id)
    finally:
        signals.stopping()
        try:
            await gateway.stop()
        finally:
            if reporter is not None:
                reporter.cancel()
                await asyncio.wait([reporter])  # ended before the check for tasks that ignored cancellation
    try:
        sys.stdout.flush()
    except OSError:
        _stdout_to_devnull()  # its reader went away after the ready line: the stop was still clean
    return code


def _say_ready(line: str) -> int:
    """Print the ready line; :data:`EXIT_OK`, or the exit status of a stop because stdout cannot take it.

    A reader that went away (``| head -c0``, a supervisor that closed the pipe) is :data:`EXIT_STDOUT_CLOSED`
    as for every civicedge command; another write error (a full disk under a redirect) :data:`EXIT_ERROR`.
    Either way the gateway then stops as on SIGTERM, and stdout is pointed at /dev/null so no later
    write or the interpreter's final flush fails again.
    """
    try:
        print(line, flush=True)
    except OSError as exc:
        closed = isinstance(exc, BrokenPipeError)
        _stdout_to_devnull()
        log.warning("%s: stopping the gateway (exit status %d)",
                    "stdout was closed before the ready line (its reader went away)" if closed
                    else "cannot write the ready line to stdout (%s)" % exc,
                    EXIT_STDOUT_CLOSED if closed else EXIT_ERROR)
        return EXIT_STDOUT_CLOSED if closed else EXIT_ERROR
    return EXIT_OK


def _stdout_to_devnull() -> None:
    """Point stdout's descriptor at /dev/null (what it still buffers is dropped there)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _failure_status(exc: BaseException) -> int:
    """Report ``exc``, which ends ``gateway run``, as :func:`cmd_run` and the entry point would; its exit status."""
    if isinstance(exc, GatewayError):
        return fail(exc)
    if isinstance(exc, KeyboardInterrupt):
        return 130
    log.critical("gateway run failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return EXIT_ERROR


async def _exit_past_stuck_tasks(outcome: int | BaseException) -> None:
    """End the process now if a task is left that does not end when cancelled; return if none is.

    ``outcome``: the exit status, or the exception that ends the run (reported here before the exit).
    The gateway is stopped (committed, closed) before this is called. A task that ignores cancellation (a
    hung radio stack) must not keep the process: asyncio.run would wait for it for ever, and the stop
    signals no longer reach a running gateway.
    """
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if not leftover:
        return
    for task in leftover:
        task.cancel()
    _done, pending = await asyncio.wait(leftover, timeout=LEFTOVER_WAIT_S)
    if not pending:
        return
    code = _failure_status(outcome) if isinstance(outcome, BaseException) else outcome
    log.warning("exiting past %d task(s) that ignored cancellation: %s", len(pending),
                ", ".join(sorted(t.get_name() for t in pending)))
    _hard_exit(code)

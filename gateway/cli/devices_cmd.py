"""``civicedge gateway devices add|list|show|move|revoke|retire|reinstate|rotate-key|remove``. Keys are never
printed."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from rich.cells import cell_len

from gateway.cli.common import EXIT_OK, add_config_arg, config_from, fail
from gateway.cli.restore_swap import Interrupted, interruptible, signals_blocked
from gateway.errors import GatewayError, RegistryError
from gateway.pipeline.verify import REGISTRY_CACHE_S
from gateway.registry import DeviceRecord, Registry, key_fingerprint, read_key_file
from gateway.registry.removal import SETTLE_MARGIN_S, keyless_advice
from gateway.storage.device_traces import device_traces
from gateway.storage.store_files import store_writer
from gateway.web.revocation import REINSTATED_OPEN_DATA, RETIRED_OPEN_DATA, REVOKED_OPEN_DATA


# argparse takes "-33.8688,151.2093" (south or west) for an unknown option ("expected one argument"):
# its own negative-number test only knows "-12" and "-1.5". This one also knows LAT,LON pairs.
_NEGATIVE_NUMBER_OR_LOCATION = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d*,\s*-?\d*\.?\d*$")
LOCATION_HELP_NOTE = " (south or west: --location -33.8688,151.2093 or --location=-33.8688,151.2093)"


def accept_negative_location(parser: argparse.ArgumentParser) -> None:
    """Let ``parser`` take a ``--location`` value that starts with a minus (southern or western
    hemisphere) as the value it is, not as an unknown option. Also used by ``civicedge provision``."""
    parser._negative_number_matcher = _NEGATIVE_NUMBER_OR_LOCATION


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``devices`` group."""
    devices = sub.add_parser("devices", help="manage the device registry",
                             description="Register, list, show, move, revoke, retire, reinstate and remove devices and "
                                         "rotate their keys in the gateway's device registry. Keys are never "
                                         "printed.")
    add_config_arg(devices)
    devices.add_argument("--registry", type=Path, metavar="DIR",
                         help="registry directory (default: the config's [registry] path)")
    common = argparse.ArgumentParser(add_help=False)
    # Accept --config/--registry after the action too; SUPPRESS keeps the group-level value.
    common.add_argument("--config", "-c", type=Path, metavar="PATH", default=argparse.SUPPRESS,
                        help="gateway TOML config whose registry is used (default: built-in defaults)")
    common.add_argument("--registry", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                        help="registry directory (default: the config's [registry] path)")
    dsub = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    add = dsub.add_parser("add", parents=[common],
                          help="register a device; the key is generated unless --key-file is given",
                          description="Register a device. Its key is generated (or read from --key-file) and stored "
                                      "0600 in the registry's keys/ directory; it is never printed.")
    add.add_argument("--id", required=True, dest="device_id", metavar="ID", help="device id, as the firmware sends it")
    add.add_argument("--kind", required=True, help="a kind of the privacy policy (streetlight, bin, ...)")
    add.add_argument("--zone", required=True, help="city zone: 1..64 letters and digits of any script, space . _ -")
    add.add_argument("--location", required=True, metavar="LAT,LON",
                     help="decimal degrees, e.g. 52.37,4.89" + LOCATION_HELP_NOTE)
    accept_negative_location(add)
    add.add_argument("--key-file", type=Path,
                     help="file with the 32-byte key (64 hex chars or raw; default: a new random key)")
    add.set_defaults(func=cmd_add)
    ls = dsub.add_parser("list", parents=[common], help="list devices (an empty registry says so on stderr)",
                         description="List the registered devices: id, kind, zone, location, REVOKED or RETIRED. An "
                                     "empty "
                                     "registry prints nothing on stdout and says so on stderr.")
    ls.add_argument("--json", action="store_true", help="print a JSON array of device records instead of a table")
    ls.set_defaults(func=cmd_list)
    move = dsub.add_parser("move", parents=[common],
                           help="correct or change a device's location (and zone); its key and past reports stay",
                           description="Correct or change where a registered device is (a mistyped --location, a "
                                       "bin put elsewhere) without a new id. Only the registry row changes: the key "
                                       "stays, and reports stored before keep the zone they were stored with.")
    move.add_argument("device_id", metavar="ID", help="device id (as in devices list)")
    move.add_argument("--location", required=True, metavar="LAT,LON", help="new location in decimal degrees, "
                      "e.g. 52.37,4.89" + LOCATION_HELP_NOTE)
    accept_negative_location(move)
    move.add_argument("--zone", help="the new zone (default: keep the registered one)")
    move.set_defaults(func=cmd_move)
    for name, func, helptext in (("show", cmd_show, "show one device and whether its key file is usable"),
                                 ("revoke", cmd_revoke, "revoke a device (fails if it already is, as the admin API)"),
                                 ("retire", cmd_retire, "retire a device whose board left this gateway (moved to "
                                  "another gateway or taken out of service): not silent, its frames refused and not "
                                  "acknowledged, key and reports kept; not a revocation"),
                                 ("reinstate", cmd_reinstate, "take a retired device back: its frames are accepted "
                                  "again"),
                                 ("rotate-key", cmd_rotate, "give a device a new key (prints where it is)")):
        p = dsub.add_parser(name, parents=[common], help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("device_id", metavar="ID", help="device id (as in devices list)")
        if name == "show":
            p.add_argument("--json", action="store_true", help="print the device record as a JSON object")
        p.set_defaults(func=func)
    remove = dsub.add_parser(
        "remove", parents=[common],
        help="delete a device that was never heard from (a typo'd id, a board never installed) and its key file",
        description="Delete a device registered by mistake and never heard from (a typo'd id, a board never "
                    "installed): its registry row and key file. Only a device the report store holds nothing of "
                    "(no report, ACK floor, replay protection or provenance entry) is removed; for one that was "
                    "heard from use retire (its board left this gateway) or revoke (its key is compromised), which "
                    "keep its reports. Safe beside a running gateway: the device is retired while the command "
                    "waits for the gateway to commit what it accepted, the store is checked again, and a device "
                    "heard from meanwhile is put back as it was. Cut off during that wait, it stays retired: "
                    "run remove again, or reinstate it.")
    remove.add_argument("device_id", metavar="ID", help="device id (as in devices list)")
    remove.add_argument("--store", type=Path, metavar="PATH",
                        help="the report store checked for the device (default: the config's [storage] path; "
                             "required with --registry and no --config); it must be a report store")
    remove.add_argument("--no-store-yet", action="store_true",
                        help="the gateway never ran: no store file at that path counts as nothing stored (without "
                             "it a missing store is refused: a wrong path must not pass for an empty store)")
    remove.set_defaults(func=cmd_remove)


def _registry(args: argparse.Namespace, *, create: bool = False, read_only: bool = False) -> Registry:
    """Open the registry; only ``add`` creates one: elsewhere a mistyped path is an error.

    ``read_only`` (``list``, ``show``): the config's paths need only be readable.
    """
    path = args.registry if args.registry is not None else config_from(args, read_only=read_only).registry_dir
    return Registry(path, create=create)


def _as_dict(rec: DeviceRecord) -> dict[str, object]:
    return {"id": rec.id, "kind": rec.kind, "zone": rec.zone, "lat": rec.lat, "lon": rec.lon,
            "revoked": rec.revoked, "retired": rec.retired, "removing": rec.removing, "key_version": rec.key_version,
            "key_file": str(rec.key_path)}


def parse_location(text: str) -> tuple[str, str]:
    """Split ``LAT,LON``.

    Raises:
        RegistryError: reason ``bad_value`` if it is not two comma-separated values.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise RegistryError("--location must be LAT,LON (e.g. 52.3702,4.8952), got %r" % text, reason="bad_value")
    return parts[0], parts[1]


def cmd_add(args: argparse.Namespace) -> int:
    """Register a device."""
    try:
        lat, lon = parse_location(args.location)
        key = read_key_file(args.key_file) if args.key_file is not None else None
        reg = _registry(args, create=True)
        rec = reg.add(args.device_id, kind=args.kind, zone=args.zone, lat=lat, lon=lon, key=key)
    except GatewayError as exc:
        return fail(exc)
    print("added %s (%s, zone %s); key stored in %s" % (rec.id, rec.kind, rec.zone, rec.key_path))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """List devices."""
    try:
        reg = _registry(args, read_only=True)
        records = reg.list()
    except GatewayError as exc:
        return fail(exc)
    if args.json:
        print(json.dumps([_as_dict(r) for r in records], indent=2))
        return EXIT_OK
    if not records:
        # On stderr: a script reading stdout sees no devices either way.
        print("no devices registered in %s" % reg.path, file=sys.stderr)
    rows: list[tuple[str, ...]] = [(r.id, r.kind, r.zone, "%s,%s" % (r.lat, r.lon), _state(r))
                                   for r in records]
    for line in _columns(rows, minimum=(20, 12, 16, 0, 0)):
        print(line)
    return EXIT_OK


def _state(rec: DeviceRecord) -> str:
    """The list's last column: REVOKED (it wins: a retired device may be revoked too), RETIRED (``RETIRED
    (removing)``: only for a removal, running or cut off) or nothing."""
    return ("REVOKED" if rec.revoked else "RETIRED (removing)" if rec.removing else "RETIRED" if rec.retired
            else "")


def _columns(rows: list[tuple[str, ...]], *, minimum: tuple[int, ...]) -> list[str]:
    """Rows as lines of left-aligned columns, each as wide as its longest cell (at least ``minimum``),
    two spaces apart from the last but one column on; no trailing spaces. Widths are terminal cells
    (``中央区`` takes 6, a combining mark none), so zones in any script stay aligned."""
    widths = [max([m, *(cell_len(row[i]) for row in rows)]) for i, m in enumerate(minimum)]
    return ["  ".join(cell + " " * (w - cell_len(cell)) for cell, w in zip(row, widths)).rstrip() for row in rows]


def cmd_show(args: argparse.Namespace) -> int:
    """Show one device (never its key) and whether its key file is usable."""
    try:
        reg = _registry(args, read_only=True)
        rec = reg.get(args.device_id)
        problem = reg.key_problem(args.device_id)
    except GatewayError as exc:
        return fail(exc)
    data = _as_dict(rec)
    unreadable = False
    try:  # the label's "key ..." of `civicedge provision`: compare it with the pole's sheet
        if problem is None:
            data["key_fingerprint"] = key_fingerprint(reg.key(args.device_id))
        elif rec.key_path.is_file():
            reg.key(args.device_id)  # raises again: says whether it is only this user who may not read it
    except RegistryError as exc:
        problem = str(exc)
        unreadable = isinstance(exc.__cause__, PermissionError)
    except OSError as exc:  # stat of a key file in a directory this user may not search
        problem, unreadable = "cannot read key file %s: %s" % (rec.key_path, exc.strerror), isinstance(
            exc, PermissionError)
    if unreadable:
        # The key may be fine: the gateway's user reads it. Re-keying the board would be wrong advice.
        data["key_status"] = "unreadable by this user: %s" % problem
        print("warning: the key file of device %s cannot be read by this user (%s); run this command as the "
              "gateway's user (the owner of %s) to check it" % (rec.id, problem, rec.key_path), file=sys.stderr)
    else:
        data["key_status"] = "ok" if problem is None else "unusable: %s" % problem
    wide = reg.key_mode_problem(args.device_id)
    if wide is not None:
        # Read-only here (nothing is changed by `show`): the gateway tightens it when it next starts.
        data["key_status"] = "%s; too open: %s" % (data["key_status"], wide)
        print("warning: device %s: %s" % (rec.id, wide), file=sys.stderr)
    if problem is not None and not unreadable:
        print("warning: device %s cannot authenticate its frames: %s; %s" % (rec.id, problem, _key_advice(rec)),
              file=sys.stderr)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for line in _columns([(k, str(v)) for k, v in data.items()], minimum=(0, 0)):
            print(line)
    return EXIT_OK


def _key_advice(rec: DeviceRecord) -> str:
    """What to do about a device whose key is unusable, by its state: a provision with ``--take-over`` is
    refused for a retired or revoked id, and a retired board's key is the one it still holds."""
    if rec.revoked:
        return "it is revoked, so its frames are refused anyway (a revoked id stays revoked)"
    if rec.removing:
        return ("it is retired for a removal that is running or was cut off, so its frames are refused anyway; "
                "finish the removal: civicedge gateway devices remove -- %s" % shlex.quote(rec.id))
    if rec.retired:
        return ("it is retired, so its frames are refused anyway; if its board comes back here, put its key file "
                "back first (from a backup of the registry: the board still holds that key), then civicedge gateway "
                "devices reinstate %s" % rec.id)
    return ("give it a key again with civicedge provision --port PORT --id %s ... --force --take-over "
            "(docs/field.md)" % rec.id)


def cmd_move(args: argparse.Namespace) -> int:
    """Move a device: new location (and zone) in the registry; the key and stored reports are kept."""
    try:
        lat, lon = parse_location(args.location)
        reg = _registry(args)
        before = reg.get(args.device_id)
        rec, changed = reg.move(args.device_id, lat=lat, lon=lon, zone=args.zone)
    except GatewayError as exc:
        return fail(exc)
    if not changed:
        print("%s is already in zone %s at %s,%s; nothing changed" % (rec.id, rec.zone, rec.lat, rec.lon))
    else:
        kept = "; reports stored before keep zone %s" % before.zone if before.zone != rec.zone else ""
        print("moved %s to zone %s at %s,%s (was zone %s at %s,%s)%s"
              % (rec.id, rec.zone, rec.lat, rec.lon, before.zone, before.lat, before.lon, kept))
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a device; an already revoked one is an error (``already_revoked``), as in the admin API."""
    try:
        rec = _registry(args).revoke(args.device_id)
    except GatewayError as exc:
        return fail(exc)
    print("revoked %s" % rec.id)
    print("open data: %s" % REVOKED_OPEN_DATA)
    return EXIT_OK


def cmd_retire(args: argparse.Namespace) -> int:
    """Retire a device; an already retired one is an error (``already_retired``), as in the admin API."""
    try:
        rec = _registry(args).retire(args.device_id)
    except GatewayError as exc:
        return fail(exc)
    print("retired %s: its frames are refused and not acknowledged (the board keeps its reports for the gateway "
          "that serves it now); its key and stored reports are kept; `civicedge gateway devices reinstate %s` "
          "takes it back" % (rec.id, rec.id))
    print("open data: %s" % RETIRED_OPEN_DATA)
    return EXIT_OK


def cmd_reinstate(args: argparse.Namespace) -> int:
    """Take a retired device back; one that is not retired is an error (``not_retired``)."""
    try:
        reg = _registry(args)
        rec = reg.reinstate(args.device_id)
        problem = reg.key_problem(args.device_id)
    except GatewayError as exc:
        return fail(exc)
    print("reinstated %s: its frames are accepted again" % rec.id)
    print("open data: %s" % REINSTATED_OPEN_DATA)
    if problem is not None:
        print("warning: device %s cannot authenticate its frames: %s" % (rec.id, keyless_advice(rec.id, problem)),
              file=sys.stderr)
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    """Rotate a device key (refused for a revoked device); print where the new key was written (never
    the key) and, on stderr, that the board keeps its old key and how a board is re-keyed."""
    try:
        reg = _registry(args)
        path = reg.rotate_key(args.device_id)
        rec = reg.get(args.device_id)
    except GatewayError as exc:
        return fail(exc)
    print("new key for %s written to %s" % (args.device_id, path))
    # No civicedge command copies a registry key onto a board: `provision` makes the board's key
    # itself. So name the command that re-keys board and registry together, with this registry and
    # the registered place (--take-over: the registry no longer holds the key the board has).
    provision = ("civicedge provision --port PORT --id %s --zone %s --location %s,%s --registry %s --force "
                 "--take-over --discard-unsent" % (rec.id, shlex.quote(rec.zone), rec.lat, rec.lon,
                                                   shlex.quote(str(reg.path.absolute()))))
    print("warning: the board of %s still holds its old key: the gateway refuses its frames (hmac) until the board "
          "holds this one, and no civicedge command puts a registry key onto a board (rotate-key is for a board "
          "re-keyed by other means). To give the board a new key, which provision makes and registers itself: %s "
          "(--discard-unsent: its un-sent reports are framed under the old key, which the gateway now refuses)"
          % (rec.id, provision), file=sys.stderr)
    return EXIT_OK


#: The largest ``[storage] batch_ms`` a config may set (gateway.config.loader): what a running gateway may wait
#: before committing what it accepted, assumed when its config is not given (``--registry ... --store``).
BATCH_MS_MAX = 10_000


def _removal_store(args: argparse.Namespace) -> tuple[Path, int]:
    """The report store ``remove`` checks, and the ``[storage] batch_ms`` of the gateway writing it: its
    config's whenever ``--config`` is given (also with ``--store``), else the largest a config may set.

    Raises:
        RegistryError: ``bad_value``: ``--registry`` without ``--store`` or ``--config`` (which store serves
            that registry is not known), or with a ``--config`` whose registry is another one and no ``--store``.
        ConfigError: the config is invalid.
    """
    if args.registry is not None and args.config is None:
        if args.store is None:
            raise RegistryError("devices remove checks the report store for anything of device %s before removing "
                                "it: with --registry, name the store of the gateway that registry serves (--store "
                                "PATH, by default <data_dir>/reports.sqlite) or its config (--config PATH)"
                                % args.device_id, reason="bad_value", device_id=args.device_id)
        return Path(args.store), BATCH_MS_MAX
    config = config_from(args)
    if args.store is not None:
        return Path(args.store), config.storage.batch_ms
    if args.registry is not None and Path(args.registry).resolve() != config.registry_dir.resolve():
        raise RegistryError("--registry %s is not the registry of the config %s (%s): give --store PATH, the "
                            "report store of the gateway that registry serves"
                            % (args.registry, args.config, config.registry_dir), reason="bad_value",
                            device_id=args.device_id)
    return config.storage.path, config.storage.batch_ms


def _interruptible_sleep(seconds: float, announce: Callable[[], None]) -> None:
    """``announce`` the wait, then sleep ``seconds``; SIGTERM and SIGHUP meanwhile (from the announcement on: a
    caller that saw it may signal at once) raise :class:`gateway.cli.restore_swap.Interrupted` (as Ctrl-C
    raises KeyboardInterrupt), so the removal puts the device back before the command ends."""
    with interruptible():
        announce()
        time.sleep(seconds)


def _signal_name(exc: BaseException) -> str:
    """The signal an interruption came from, for the messages."""
    return "SIGINT" if isinstance(exc, KeyboardInterrupt) else str(exc)


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove a device the report store holds nothing of: its registry row and key file. One heard from is
    refused (``heard_from``), pointing to retire and revoke."""
    final: list[str] = []  # "begun", then "done": how far its final deletion went
    held: list[str] = []  # a signal held during a final deletion that failed (its error is reported)

    @contextlib.contextmanager
    def final_step() -> Iterator[None]:
        # It unlinks the key file before the row's deletion commits: Ctrl-C, SIGTERM or SIGHUP there would leave
        # the row without its key. They are held until it is done, then end the command (below). When it failed,
        # the signal delivered as they are let go must not replace its RegistryError: Registry.remove puts the
        # device back on that error, and the error says what its registration is now.
        final.append("begun")
        failed: list[BaseException] = []
        try:
            with interruptible(), signals_blocked():
                try:
                    yield
                except BaseException as exc:
                    failed.append(exc)
                    raise
                final.append("done")
        except (Interrupted, KeyboardInterrupt) as exc:
            if failed and failed[0] is not exc and isinstance(failed[0], RegistryError):
                held.append(_signal_name(exc))
                raise failed[0] from None
            raise

    try:
        reg = _registry(args)  # first: a registry that is not there is no_registry, whatever else is missing
        store, batch_ms = _removal_store(args)

        def settle_s() -> float:
            # Asked once the device is retired: a gateway started since the first check is waited for too.
            if store_writer(store) is None:
                return 0.0
            return REGISTRY_CACHE_S + max(batch_ms, 50) / 1000 + SETTLE_MARGIN_S

        def wait(seconds: float) -> None:
            _interruptible_sleep(seconds, lambda: print(
                "a gateway is running on %s: device %s is retired while it is being removed; waiting %.1f s (its "
                "registry cache, batch_ms %d and a margin) for frames it accepted just before, then checking the "
                "store again" % (store, args.device_id, seconds, batch_ms), file=sys.stderr, flush=True))

        rec = reg.remove(args.device_id, traces=lambda device: device_traces(store, device,
                                                                             absent_ok=args.no_store_yet),
                         settle_s=settle_s, wait=wait, guard=final_step)
    except (Interrupted, KeyboardInterrupt) as exc:
        if not final:
            if isinstance(exc, KeyboardInterrupt):
                raise
        elif final[-1] == "done":
            print("removed %s: its registry row and key file are deleted; the interruption (%s) that came during "
                  "that last step was held until it was done" % (args.device_id, _signal_name(exc)))
            return EXIT_OK
        else:
            return fail(RegistryError("removal of device %s interrupted (%s) in its final step, which failed: "
                                      "nothing is removed; it stays retired for its removal: run remove again, or "
                                      "reinstate it" % (args.device_id, _signal_name(exc)), reason="interrupted",
                                      device_id=args.device_id))
        assert isinstance(exc, Interrupted)
        return fail(RegistryError("removal of device %s interrupted (%s) during its wait: nothing is removed, and "
                                  "the device is put back as it was (an ERROR line above says if that failed)"
                                  % (args.device_id, exc), reason="interrupted", device_id=args.device_id))
    except GatewayError as exc:
        if held:
            print("the interruption (%s) that came during the removal's last step was held until it ended; that "
                  "step failed (below)" % held[0], file=sys.stderr)
        return fail(exc)
    stored = ("the report store %s holds nothing of it" % store if store.is_file()
            else "there is no report store at %s yet (--no-store-yet)" % store)
    print("removed %s (%s, zone %s): its registry row and key file are deleted; %s; its frames are refused as from "
          "an unknown device, and `civicedge gateway devices add --id %s ...` registers the id again"
          % (rec.id, rec.kind, rec.zone, stored, rec.id))
    return EXIT_OK

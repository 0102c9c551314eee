"""Load and validate gateway.toml.

Every problem raises :class:`gateway.errors.ConfigError` with ``reason`` one of ``syntax``,
``unknown_key``, ``wrong_type``, ``missing``, ``bad_value``, ``bad_path`` and the dotted ``key``.
Relative paths are resolved against the config file's directory.

The paths are checked for the access the command needs: by default for ``gateway run`` and the
commands that change the registry (writable, or creatable); with ``read_only=True`` for the
commands that only read (``export-log``, ``devices list|show``): what exists must be readable, and
a store or registry on a read-only mount is fine.

``[opendata]`` is metadata of the published data, not needed to collect it: with
``lenient_opendata=True`` (``gateway run``, not ``run --check``) a refused key of it is left at
its default and its error kept in :attr:`OpenDataConfig.problems` (the gateway logs it as an
ERROR) instead of raised, so a config that ran before an upgrade tightened a check keeps collecting.

The larger sections are checked in modules of their own: ``[opendata]``
(:mod:`gateway.config.opendata_section`), ``[mqtt]`` (:mod:`gateway.config.mqtt_section`) and
``[http]`` with the admin token (:mod:`gateway.config.http_section`), on :class:`gateway.config.section.Section`
and :mod:`gateway.config.path_checks`; the names other code imports from this module
(:func:`read_admin_token`, :func:`token_placeholder`, :func:`token_weakness`, the limits) are importable here too.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
import uuid
from pathlib import Path
from typing import Any

from gateway.config.home import home_dir
from gateway.config.http_section import MAX_TOKEN_UNIT as MAX_TOKEN_UNIT
from gateway.config.http_section import MIN_TOKEN_DISTINCT as MIN_TOKEN_DISTINCT
from gateway.config.http_section import MIN_TOKEN_LEN as MIN_TOKEN_LEN
from gateway.config.http_section import parse_http
from gateway.config.http_section import read_admin_token as read_admin_token
from gateway.config.http_section import token_placeholder as token_placeholder
from gateway.config.model import (
    BleConfig,
    GatewayConfig,
    SerialPortConfig,
    SimClockConfig,
    StorageConfig,
)
from gateway.config.mqtt_section import MQTT_STRING_MAX_BYTES as MQTT_STRING_MAX_BYTES
from gateway.config.mqtt_section import TOPIC_MAX_BYTES as TOPIC_MAX_BYTES
from gateway.config.mqtt_section import TOPIC_PREFIX_MAX_BYTES as TOPIC_PREFIX_MAX_BYTES
from gateway.config.mqtt_section import TOPIC_PREFIX_MAX_LEVELS as TOPIC_PREFIX_MAX_LEVELS
from gateway.config.mqtt_section import check_client_id as check_client_id
from gateway.config.mqtt_section import check_topic_prefix as check_topic_prefix
from gateway.config.mqtt_section import parse_mqtt
from gateway.config.opendata_section import MAX_DESCRIPTION_LEN as MAX_DESCRIPTION_LEN
from gateway.config.opendata_section import MAX_KEYWORD_LEN as MAX_KEYWORD_LEN
from gateway.config.opendata_section import MAX_KEYWORDS as MAX_KEYWORDS
from gateway.config.opendata_section import MAX_LICENCE_URL_LEN as MAX_LICENCE_URL_LEN
from gateway.config.opendata_section import MAX_PUBLISHER_LEN as MAX_PUBLISHER_LEN
from gateway.config.opendata_section import MAX_TITLE_LEN as MAX_TITLE_LEN
from gateway.config.opendata_section import parse_opendata
from gateway.config.path_checks import check_dir, check_file
from gateway.config.section import Section
from gateway.config.sim_clock import FollowFileError, read_follow_file
from gateway.config.token_strength import token_weakness as token_weakness
from gateway.errors import ConfigError as ConfigError
from gateway.resources import load_policy
from gateway.small_files import CONFIG_MAX, NestedTooDeeplyError, loads_toml, read_limited
from gateway.toml_text import TomlTextError, decode_toml_bytes
from gateway.transports.serial_link import serial_url_problem

_SECTIONS = ("gateway", "registry", "storage", "serial", "ble", "mqtt", "http", "retention", "sim_clock",
             "routes", "opendata")  # [routes] is validated by gateway.routes.config (see _check_routes)
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def default_data_dir() -> Path:
    """Return the data directory used when no config (or no ``data_dir``) is given.

    Raises:
        ConfigError: reason ``bad_path`` when neither ``XDG_DATA_HOME`` nor a home directory is known (a
            container run as a uid without a passwd entry and no ``HOME``): was a RuntimeError traceback.
    """
    base = os.environ.get("XDG_DATA_HOME")
    if not base:
        home = home_dir()  # an empty HOME is unset here: Python would take it and use /.local/share
        if home is not None:
            base = str(home / ".local" / "share")
        else:
            raise ConfigError("no data directory for the built-in defaults: this user has no home directory "
                              "(HOME is not set or empty and uid %d has no passwd entry); set HOME or XDG_DATA_HOME, or "
                              "give --config with a data_dir" % os.getuid(), reason="bad_path", key="")
    return Path(base) / "civicedge" / "gateway"


def default_config(*, read_only: bool = False) -> GatewayConfig:
    """Return the embedded defaults: SQLite under the data dir, no links, no upstream.

    Args:
        read_only: check the paths for a command that only reads them (see the module docstring).
    """
    return parse_config({}, source=None, read_only=read_only)


def load_config(path: Path, *, read_only: bool = False, lenient_opendata: bool = False) -> GatewayConfig:
    """Read and validate a TOML config file.

    Args:
        path: the TOML file.
        read_only: check the paths for a command that only reads them (``export-log``, ``devices
            list``): existing ones must be readable, not writable (see the module docstring).
        lenient_opendata: for ``gateway run``: a refused ``[opendata]`` key is left at its default
            and its error kept in ``open_data.problems`` rather than raised (see the module docstring).

    Raises:
        ConfigError: with a specific reason and key (see module docstring).
    """
    path = Path(path)
    try:
        # A bounded read (--config /dev/zero read until the OOM killer came); a pipe is taken, with a
        # bounded wait, for ``--config <(...)``; a device is refused.
        raw = read_limited(path, CONFIG_MAX, pipes=True)
    except OSError as exc:
        raise ConfigError("cannot read config %s: %s" % (path, exc.strerror), reason="bad_path", key="",
                          path=path) from exc
    try:
        data = loads_toml(decode_toml_bytes(raw, what="config"))
    except TomlTextError as exc:
        raise ConfigError("%s: %s" % (path, exc), reason="syntax", key="", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("%s is not valid TOML: %s" % (path, exc), reason="syntax", key="", path=path) from exc
    except NestedTooDeeplyError as exc:
        raise ConfigError("%s: %s" % (path, exc), reason="syntax", key="", path=path) from None
    return parse_config(data, source=path, read_only=read_only, lenient_opendata=lenient_opendata)


def _check_sections(data: dict[str, Any], source: Path | None) -> None:
    """Refuse a top-level table or key that is no section of the config, suggesting a close section name."""
    for name, value in data.items():
        if name in _SECTIONS:
            continue
        where = "%s: " % source if source else ""
        tables = isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
        if isinstance(value, dict) or tables:
            near = difflib.get_close_matches(name, _SECTIONS, n=1, cutoff=0.6)
            hint = ("did you mean %s?" % _section_header(near[0]) if near
                    else "sections: %s" % ", ".join(_section_header(n) for n in _SECTIONS))
            shown = "[[%s]]" % name if tables else "[%s]" % name
            message = "unknown section %s (%s)" % (shown, hint)
        else:
            message = ("key %r is outside any section; keys belong in a section such as [gateway] (sections: %s)"
                       % (name, ", ".join(_section_header(n) for n in _SECTIONS)))
        raise ConfigError(where + message, reason="unknown_key", key=name, path=source)


def _section_header(name: str) -> str:
    return "[[%s]]" % name if name == "serial" else "[%s]" % name


def parse_config(data: dict[str, Any], *, source: Path | None, read_only: bool = False,
                 lenient_opendata: bool = False) -> GatewayConfig:
    """Validate parsed TOML ``data`` into a :class:`GatewayConfig`.

    Args:
        data: the parsed TOML.
        source: the config file (relative paths are relative to its directory), None for defaults.
        read_only: check the paths for a command that only reads them (see the module docstring).
        lenient_opendata: keep a refused ``[opendata]`` key's error in ``open_data.problems``
            instead of raising it (``gateway run``; see the module docstring).
    """
    base = source.resolve().parent if source is not None else Path.cwd()
    _check_sections(data, source)
    top = Section(data, "config", source, _SECTIONS)

    gw = Section(top.data.get("gateway", {}), "gateway", source, ("id", "data_dir", "ack_gap_hold_s"))
    gap_hold_s = gw.number("ack_gap_hold_s", float, 15.0, 0.0, 600.0)
    gw_id = gw.get("id", str, re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64] or "gateway")
    if not _ID.match(gw_id):
        raise gw.error("gateway.id", "gateway.id %r must be 1..64 chars of [A-Za-z0-9._-]" % gw_id, "bad_value")
    data_dir = gw.path("data_dir", default_data_dir() if source is None else base / "data", base)
    check_dir(gw, "gateway.data_dir", data_dir, read_only=read_only)

    reg = Section(top.data.get("registry", {}), "registry", source, ("path",))
    registry_dir = reg.path("path", data_dir / "registry", base)
    check_dir(reg, "registry.path", registry_dir, owned=True, read_only=read_only)
    if registry_dir.is_dir():  # what Registry() opens and chmods in it
        check_dir(reg, "registry.path", registry_dir / "keys", owned=True, read_only=read_only)
        check_file(reg, "registry.path", registry_dir / "devices.sqlite", owned=True, read_only=read_only)

    st = Section(top.data.get("storage", {}), "storage", source, ("path", "batch_ms", "batch_max", "max_in_flight",
                                                                       "min_free_mb", "backup_before_migration"))
    db_path = st.path("path", data_dir / "reports.sqlite", base, file=True)
    # its directory also holds the -wal, -shm and .lock files (a reader of a store on a read-only mount
    # opens it immutable, gateway.storage.sqlite_uri)
    check_file(st, "storage.path", db_path, read_only=read_only)
    storage = StorageConfig(path=db_path, batch_ms=st.number("batch_ms", int, 50, 1, 10_000),
                            batch_max=st.number("batch_max", int, 2000, 1, 10_000),
                            max_in_flight=st.number("max_in_flight", int, 5000, 10, 1_000_000),
                            min_free_mb=st.number("min_free_mb", int, 256, 0, 10_000_000),
                            backup_before_migration=st.get("backup_before_migration", bool, True))

    serial_raw = top.data.get("serial", [])
    if not isinstance(serial_raw, list):
        raise top.error("serial", "serial must be an array of tables: write [[serial]]", "wrong_type")
    ports: list[SerialPortConfig] = []
    for i, entry in enumerate(serial_raw):
        sp = Section(entry, "serial[%d]" % i, source, ("port", "baud"))
        port = sp.get("port", str, required=True)
        if not port or any(p.port == port for p in ports):
            raise sp.error("serial[%d].port" % i, "serial port %r is empty or listed twice" % port, "bad_value")
        url_problem = serial_url_problem(port)
        if url_problem is not None:
            raise sp.error("serial[%d].port" % i, "serial[%d].port %s" % (i, url_problem), "bad_value")
        ports.append(SerialPortConfig(port=port, baud=sp.number("baud", int, 115200, 300, 4_000_000)))

    ble = _parse_ble(Section(top.data.get("ble", {}), "ble", source, (
        "enabled", "backend", "radio", "service_uuid", "max_connections", "scan_interval_s", "connect_timeout_s",
        "auth_timeout_s")))
    mqtt = None
    if "mqtt" in top.data:
        mqtt = parse_mqtt(Section(top.data["mqtt"], "mqtt", source, (
            "host", "port", "topic_prefix", "client_id", "outbox_max_bytes", "outbox_policy", "keepalive_s",
            "username", "password_file", "password", "tls", "ca_file", "cert_file", "key_file")), base)
    http = parse_http(Section(top.data.get("http", {}), "http", source,
                                ("enabled", "listen", "port", "admin_token_file", "allowed_hosts",
                                 "max_connections", "trusted_proxies", "admin_networks")), base)
    overrides, interval = _parse_retention(top.data.get("retention", {}), source)
    sim_clock = None
    if "sim_clock" in top.data:
        sim_clock = _parse_sim_clock(Section(top.data["sim_clock"], "sim_clock", source,
                                              ("speed", "virtual_at", "wall_at", "follow_file")), base)
    if "routes" in top.data:
        _check_routes(top.data["routes"], source, base)
    open_data = parse_opendata(top.data.get("opendata", {}), source, lenient=lenient_opendata)
    return GatewayConfig(id=gw_id, data_dir=data_dir, registry_dir=registry_dir, storage=storage, serial=tuple(ports),
                         ble=ble, mqtt=mqtt, http=http, retention_overrides=overrides, retention_interval_s=interval,
                         sim_clock=sim_clock, ack_gap_hold_s=gap_hold_s, source=source, open_data=open_data)
def _parse_sim_clock(sc: Section, base: Path) -> SimClockConfig:
    """Either fixed ``speed``, ``virtual_at``, ``wall_at``, or a ``follow_file`` giving them (read now)."""
    if sc.get("follow_file", str) is None:
        sc.get("speed", float, required=True)
        return SimClockConfig(speed=sc.number("speed", float, None, 0.001, 1e6),
                              virtual_at=sc.get("virtual_at", float, required=True),
                              wall_at=sc.get("wall_at", float, required=True))
    fixed = [k for k in ("speed", "virtual_at", "wall_at") if k in sc.data]
    if fixed:
        raise sc.error("sim_clock.%s" % fixed[0], "sim_clock.follow_file gives speed, virtual_at and wall_at: "
                       "leave out %s" % ", ".join(fixed), "bad_value")
    path = sc.path("follow_file", base, base, file=True)
    try:
        speed, virtual_at, wall_at = read_follow_file(path)
    except FollowFileError as exc:
        raise sc.error("sim_clock.follow_file", "sim_clock.follow_file: %s" % exc, exc.reason) from exc
    return SimClockConfig(speed=speed, virtual_at=virtual_at, wall_at=wall_at, follow_file=path)


def _parse_ble(sec: Section) -> BleConfig:
    backend = sec.choice("backend", "bluez", ("bluez", "virtual"))
    radio = sec.get("radio", str)
    enabled = sec.get("enabled", bool, False)
    if enabled and backend == "virtual" and not radio:
        raise sec.error("ble.radio", "ble.radio (the virtual radio URL) is required with backend = \"virtual\"",
                        "missing")
    if enabled and backend == "virtual" and radio is not None:  # a disabled section is kept, not used
        _check_radio_url(sec, radio)
    service = sec.get("service_uuid", str, BleConfig.service_uuid)
    try:
        service = str(uuid.UUID(service))
    except ValueError as exc:
        raise sec.error("ble.service_uuid", "ble.service_uuid %r is not a UUID" % service, "bad_value") from exc
    return BleConfig(enabled=enabled, backend=backend, radio=radio, service_uuid=service,
                     max_connections=sec.number("max_connections", int, 4, 1, 64),
                     scan_interval_s=sec.number("scan_interval_s", float, 5.0, 0.1, 3600.0),
                     connect_timeout_s=sec.number("connect_timeout_s", float, 10.0, 0.5, 120.0),
                     auth_timeout_s=sec.number("auth_timeout_s", float, 20.0, 1.0, 600.0))


def _check_radio_url(sec: Section, radio: str) -> None:
    """Parse ``ble.radio`` as the virtual radio will, so a bad URL fails here and not in ``run``."""
    try:
        # Imported lazily: only simulator setups (backend = "virtual") need the harness.
        from hil.sim.radio.errors import RadioUrlError
        from hil.sim.radio.url import parse_radio_url
    except ImportError as exc:
        raise sec.error("ble.backend", "ble.backend = \"virtual\" needs the simulator (hil.sim.radio): %s" % exc,
                        "bad_value") from exc
    try:
        parse_radio_url(radio)
    except RadioUrlError as exc:
        raise sec.error("ble.radio", "ble.radio: %s" % exc, "bad_value") from exc


def _check_routes(data: Any, source: Path | None, base: Path) -> None:
    """Validate ``[routes]`` with the planner's own parser, as ``run`` does when it mounts the plan endpoint.

    Raises:
        ConfigError: ``unknown_key`` or ``bad_value`` (a wrong value, an unreadable matrix or bin-volumes
            file) with the ``routes.<key>`` concerned.
    """
    # Imported lazily: gateway.routes loads the OR-Tools solver, which only [routes] users need.
    from gateway.routes.config import ROUTES_KEYS
    from gateway.routes.config import parse_plan_defaults
    from gateway.routes.errors import InvalidInputError, MatrixError, RoutesError

    sec = Section(data, "routes", source, ROUTES_KEYS)
    try:
        parse_plan_defaults(sec.data, base=base)
    except RoutesError as exc:
        name = ""
        if isinstance(exc, InvalidInputError):
            name = exc.field.removeprefix("routes.")  # the [routes] parsers name routes.<key>
        elif isinstance(exc, MatrixError):
            name = "osrm" if "osrm" in sec.data else "matrix"
        key = "routes.%s" % name if name in sec.data else "routes"
        named = isinstance(exc, InvalidInputError) and exc.field == key
        raise sec.error(key, str(exc) if named else "%s: %s" % (key, exc), "bad_value") from exc


def _parse_retention(data: Any, source: Path | None) -> tuple[dict[tuple[str, str], int], float]:
    kinds: dict[str, Any] = load_policy()["kinds"]
    sec = Section(data, "retention", source, ("interval_s", *sorted(kinds)))
    interval = sec.number("interval_s", float, 3600.0, 1.0, 7 * 86400.0)
    overrides: dict[tuple[str, str], int] = {}
    for kind in sorted(kinds):
        if kind not in sec.data:
            continue
        fields = kinds[kind]["fields"]
        ksec = Section(sec.data[kind], "retention.%s" % kind, source, tuple(sorted(fields)))
        for fld in sorted(ksec.data):
            limit = int(fields[fld]["retention_days"])
            days: int = ksec.get(fld, int, limit)
            if not 1 <= days <= limit:
                raise ksec.error("retention.%s.%s" % (kind, fld), "retention.%s.%s = %d is outside 1..%d days (%d is the "
                                 "policy's retention, which may only be shortened)" % (kind, fld, days, limit, limit),
                                 "bad_value")
            overrides[(kind, fld)] = days
    # a retention shorter than interval_s is warned about at the start, on the retentions in effect
    # (gateway.cli.run_cmd), not here: every CLI command loads the config
    return overrides, interval


def retention_days(config: GatewayConfig) -> dict[tuple[str, str], int]:
    """Return the effective ``(kind, field) -> days``: policy.json with config overrides applied."""
    out: dict[tuple[str, str], int] = {}
    for kind, spec in load_policy()["kinds"].items():
        for fld, fspec in spec["fields"].items():
            out[(kind, fld)] = int(fspec["retention_days"])
    out.update(config.retention_overrides)
    return out

"""The commented example written by ``civicedge gateway init``."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from gateway.errors import ConfigError, GatewayError
from gateway.output_guard import GatewayFiles, OutputRefused, check_output
from gateway.private_dirs import mkdir_private
from gateway.small_files import (
    CONFIG_MAX,
    NestedTooDeeplyError,
    file_kind,
    loads_toml,
    read_limited,
)
from gateway.toml_text import TomlTextError, decode_toml_bytes

EXAMPLE_CONFIG = '''\
# civicedge gateway configuration. Every key is optional unless marked "required".
# Relative paths are relative to this file. Validate with: civicedge gateway run --config THIS --check

[gateway]
# id = "gw-centre-1"            # recorded on every stored report and MQTT message (default: host name)
data_dir = "data"               # store and registry live here by default
# ack_gap_hold_s = 15.0         # a gap in a device's seqs that the device still holds is waited for
                                # (protocol §6 "Gaps") and logged after this long; firmware without
                                # h: ACKs wait this long at a gap, then pass it (0 = never wait)

# [registry]
# path = "data/registry"        # device registry (created 0700; keys in keys/<id>.key, 0600)

[storage]
# path = "data/reports.sqlite"  # SQLite, WAL mode
batch_ms = 50                   # commit (and then ACK) at least every 50 ms ...
batch_max = 2000                # ... or as soon as 2000 wait (a burst: fewer, larger commits)
max_in_flight = 5000            # backlog at which serial links are paused (twice this: frames shed)
min_free_mb = 256               # warn (log, /healthz, run --check) below this much free disk; 0: off
backup_before_migration = true  # copy a store of an older release next to itself before migrating it

# One [[serial]] table per port; a port may come and go (it is reopened when it returns).
# [[serial]]
# port = "/dev/ttyUSB0"         # required in each [[serial]]; or "socket://127.0.0.1:5555" (QEMU, a TCP serial bridge)
# baud = 115200

[ble]
enabled = false
backend = "bluez"               # "bluez" (the OS default) or "virtual" (simulator radio)
# radio = "ws://127.0.0.1:9000/civic"   # required with backend = "virtual"
# service_uuid = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
max_connections = 4             # concurrent BLE connections
scan_interval_s = 5.0
# connect_timeout_s = 10.0
# auth_timeout_s = 20.0         # drop a link on which no frame verified within this time

# Upstream MQTT broker (QoS 1, persisted outbox). Leave out for no upstream.
# [mqtt]
# host = "broker.city.example"  # required in [mqtt]
# port = 1883
# topic_prefix = "civicedge"
# client_id = "gw-centre-1"     # default civicedge-<gateway id>; must not be empty
# outbox_max_bytes = 67108864   # cap on queued payload bytes on disk
# outbox_policy = "drop_oldest" # at the cap: "drop_oldest" or "drop_newest"; drops are counted
# keepalive_s = 30
# username = "gw-centre-1"          # broker login; the password goes in its own file, never here:
# password_file = "mqtt.password"  # one line, owner-only (chmod 600)
# tls = true                       # TLS (port then defaults to 8883)
# ca_file = "city-ca.pem"          # the CA that signed the broker's certificate (default: the system's)
# cert_file = "gw.pem"             # client certificate, with key_file (owner-only), if the broker asks for one
# key_file = "gw.key"

[http]
enabled = true
listen = "127.0.0.1"            # IP address (0.0.0.0 or :: = every interface) or host name
port = 8080
# admin_token_file = "admin.token"   # must exist and be private (chmod 600); bearer token for admin endpoints
# Names this server answers to besides IP addresses, localhost and this machine's own name; a request
# with any other Host header is refused (a hostile page rebinding its name to this gateway).
# allowed_hosts = ["data.city.example"]   # e.g. the name a reverse proxy forwards
# Reverse proxies (addresses or networks) whose X-Forwarded-For header names the client: admin audit
# lines and the route planner's per-client limit then see the client, not the proxy.
# trusted_proxies = ["127.0.0.1"]
# Networks the operators call the admin API from: never refused by the throttle's global cap on wrong
# tokens (10 a second from all clients), so a distributed guesser cannot lock them out.
# admin_networks = ["10.20.0.0/24"]

# Open data (/opendata): shown in the index and in each dataset; "not set" until the city decides
# (run --check and the start log warn while the licence is not set: such data is legally unusable).
# [opendata]
# licence = "CC-BY-4.0"             # an id of the SPDX License List, "LicenseRef-...", or the licence's URL
# publisher = "City of Example, Open Data Office"
# The catalogue (/opendata, /opendata/catalog.jsonld), for open-data portals; defaults when left out:
# title = "Streetlight and waste bin sensors of Example"
# description = "Anonymised values of the city's streetlights and waste bins."
# contact = "opendata@city.example"       # an e-mail address or the URL of a contact page
# keywords = ["lighting", "waste", "sensors"]
# language = "en"                         # BCP 47 tag of the texts above, e.g. "de" or "pl" (default "en")
# base_url = "https://data.city.example"  # the public address (behind a reverse proxy), makes URLs absolute

[retention]
interval_s = 3600               # how often old field values are removed
# Retention comes from the privacy policy shipped with civicedge (retention_days per field: the public
# GET /transparency.json, or policy_max_days in GET /api/admin/retention); it may only be shortened:
# [retention.streetlight]
# lux = 30
'''


def write_example(path: Path, *, force: bool = False, group: str | None = None) -> list[Path]:
    """Write the commented example config to ``path``, creating its missing parent directories.

    Missing parents are created 0700 like the gateway's data directories (the config's directory
    usually holds its data directory and the admin token file too), as ``init`` tools do. With
    ``group`` (the service user's group, when root writes a config a service user runs), the
    directories it creates are given that group and mode 0750 and the file that group and mode 0640,
    so the service user can enter the directory and read the config (an admin token file its user owns,
    mode 600, is then readable there too). A parent that already exists is left as it is.

    Returns:
        The directories created, outermost first.

    ``force`` replaces an old config only: a file that is clearly something else is refused even then
    (:func:`_check_replaceable`).

    Raises:
        ConfigError: reason ``bad_path`` if ``path`` cannot be looked up (a name too long), is a
            directory, the file exists (and not ``force``), a parent cannot be created or the file cannot
            be written; with ``force``, reason ``gateway_file``, ``sqlite_file`` or ``not_config`` if the
            existing file is not a config (:func:`_check_replaceable`); reason ``bad_value`` if ``group``
            is no group of this system.
    """
    path = Path(path)
    try:
        st: os.stat_result | None = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # not there (a file in the way of a parent: said below)
        st = None
    except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES: was a traceback from path.is_dir()
        raise ConfigError("cannot write %s: %s" % (path, exc.strerror or exc), reason="bad_path", key="",
                          path=path) from None
    if st is not None and stat.S_ISDIR(st.st_mode):  # with --force too: the write would only fail "Is a directory"
        raise ConfigError("%s is a directory; give the config file's name, e.g. %s" % (path, path / "gateway.toml"),
                          reason="bad_path", key="", path=path)
    if st is not None and not force:
        raise ConfigError("%s already exists (use --force to overwrite)" % path, reason="bad_path", key="", path=path)
    if st is not None:
        _check_replaceable(path, st)
    else:  # a new file, but perhaps where the gateway's registry or data directory belongs (not made yet)
        _refuse_gateway_place(path, new=True)
    gid = None if group is None else _group_id(group, path)
    created = _missing_dirs(path.parent)
    try:
        mkdir_private(path.parent)
    except OSError as exc:
        raise ConfigError("cannot create the directory %s for %s: %s" % (exc.filename or path.parent, path.name,
                                                                        exc.strerror), reason="bad_path", key="",
                          path=path) from exc
    try:
        path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
        if gid is not None:
            for d in created:
                os.chown(d, -1, gid)
                d.chmod(0o750)  # group: enter only (list and read), never write
            os.chown(path, -1, gid)
            path.chmod(0o640)
    except OSError as exc:
        raise ConfigError("cannot write %s: %s" % (exc.filename or path, exc.strerror), reason="bad_path", key="",
                          path=path) from exc
    return created


def _check_replaceable(path: Path, st: os.stat_result) -> None:
    """Refuse to replace the existing ``path`` (``init --force``) unless it may be an old config.

    ``--force`` is for writing the example over an old config. Refused, saying what the file is: a
    FIFO, device or socket; one of the gateway's own files (those of the default config), any SQLite
    database (a store, a registry, a backup) or a file of one (its WAL, journal or lock), as
    :mod:`gateway.output_guard` tells them; a non-empty file that is not a TOML document of at
    most 1 MiB, or whose tables are none of a gateway config's. An empty file is replaced.

    Raises:
        ConfigError: reason ``bad_path``, ``gateway_file``, ``sqlite_file`` or ``not_config``.
    """
    hint = "gateway init --force replaces only an old config: give another file name"
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the write until some program read it
        raise ConfigError("%s is %s, not a config file; %s" % (path, file_kind(st.st_mode), hint),
                          reason="bad_path", key="", path=path)
    _refuse_gateway_place(path)
    if st.st_size == 0:
        return
    try:
        doc = loads_toml(decode_toml_bytes(read_limited(path, CONFIG_MAX), what="config"))
    except OSError as exc:  # larger than 1 MiB (no config is), or unreadable
        raise ConfigError("%s cannot be a config (%s); %s" % (path, exc.strerror or exc, hint), reason="not_config",
                          key="", path=path) from None
    except (TomlTextError, tomllib.TOMLDecodeError, NestedTooDeeplyError) as exc:
        raise ConfigError("%s is not a config: it is not valid TOML (%s); %s" % (path, exc, hint),
                          reason="not_config", key="", path=path) from None
    from gateway.config.loader import _SECTIONS  # here: the loader imports this module's package

    if doc and not any(name in _SECTIONS for name in doc):
        raise ConfigError("%s is a TOML file but not a gateway config (it has %s, none of a config's sections); %s"
                          % (path, ", ".join(sorted(doc)[:5]), hint), reason="not_config", key="", path=path)


def _refuse_gateway_place(path: Path, *, new: bool = False) -> None:
    """Refuse ``path`` if it is one of the gateway's own files or directories, or the place of one not
    made yet (:func:`gateway.output_guard.check_output`), or a file of an SQLite database. For a ``new``
    path, a parent that cannot be looked at is left to the directory creation, which names it.

    Raises:
        ConfigError: reason ``gateway_file`` or ``sqlite_file``, saying what the path is for.
    """
    try:
        check_output(path, _gateway_files(), force=True, previous=lambda _p: True, command="gateway init",
                     kind="a config")
    except OutputRefused as exc:
        if new and exc.reason == "bad_path":
            return
        raise ConfigError(exc.message, reason=exc.reason, key="", path=path) from None


def _gateway_files() -> GatewayFiles:
    """The gateway files ``init --force`` must not replace: those of the default config (the one used
    without ``--config``). The side files of any SQLite database and the database itself are refused by
    :func:`gateway.output_guard.check_output` whatever this holds."""
    files = GatewayFiles()
    from gateway.config.loader import default_config

    try:
        files.add_config(default_config(read_only=True))
    except GatewayError:
        pass  # no usable defaults (e.g. no home directory): the other checks still hold
    return files


def _missing_dirs(directory: Path) -> list[Path]:
    """``directory`` and its parents that do not exist yet, outermost first."""
    missing: list[Path] = []
    d = directory
    while not os.path.lexists(d) and d.parent != d:
        missing.append(d)
        d = d.parent
    return missing[::-1]


def _group_id(group: str, path: Path) -> int:
    """The id of the group named (or numbered) ``group``."""
    try:
        import grp
    except ImportError:  # Windows
        raise ConfigError("a group for the config is for POSIX systems only", reason="bad_value", key="",
                          path=path) from None
    try:
        return grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError("no group %r on this system (create the service user first, e.g. useradd --system "
                          "--user-group civicedge)" % group, reason="bad_value", key="", path=path) from None

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
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import logging
import os
import re
import socket
import tomllib
import unicodedata
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

from gateway.config.model import (
    BleConfig,
    GatewayConfig,
    HttpConfig,
    MqttConfig,
    OpenDataConfig,
    SerialPortConfig,
    SimClockConfig,
    StorageConfig,
)
from gateway.config.licence import UnknownLicence, canonical_licence_id
from gateway.config.sim_clock import FollowFileError, read_follow_file
from gateway.errors import ConfigError
from gateway.resources import load_policy
from gateway.small_files import (
    CONFIG_MAX,
    SECRET_MAX,
    NestedTooDeeplyError,
    loads_toml,
    open_regular,
    read_fd_limited,
    read_limited,
)
from gateway.toml_text import TomlTextError, decode_toml_bytes
from gateway.web.proxies import parse_network

log = logging.getLogger(__name__)

_SECTIONS = ("gateway", "registry", "storage", "serial", "ble", "mqtt", "http", "retention", "sim_clock",
             "routes", "opendata")  # [routes] is validated by gateway.routes.config (see _check_routes)
MIN_TOKEN_LEN = 16
MIN_TOKEN_DISTINCT = 4  # fewer distinct characters in the admin token is a placeholder (see token_placeholder)
MAX_TOKEN_UNIT = 4  # a token that is a unit this short repeated ("abab...", "12341234...") is a placeholder
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table",
               list: "an array"}


def default_data_dir() -> Path:
    """Return the data directory used when no config (or no ``data_dir``) is given."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
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


class _Section:
    """Typed access to one TOML table that reports unknown keys and type errors precisely."""

    def __init__(self, data: Any, name: str, source: Path | None, allowed: tuple[str, ...]) -> None:
        self.name, self.source = name, source
        if not isinstance(data, dict):
            raise self.error(name, "[%s] must be a table" % name, "wrong_type")
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = "did you mean %r? " % near[0] if near else ""
                raise self.error("%s.%s" % (name, key), "unknown key %r in [%s] (%sallowed: %s)"
                                 % (key, name, hint, ", ".join(allowed)), "unknown_key")
        self.data: dict[str, Any] = data

    def error(self, key: str, message: str, reason: str) -> ConfigError:
        where = "%s: " % self.source if self.source else ""
        return ConfigError(where + message, reason=reason, key=key, path=self.source)

    def get(self, key: str, typ: type, default: Any = None, *, required: bool = False) -> Any:
        dotted = "%s.%s" % (self.name, key)
        if key not in self.data:
            if required:
                raise self.error(dotted, "missing required key %r in [%s]" % (key, self.name), "missing")
            return default
        value = self.data[key]
        ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise self.error(dotted, "%s must be %s, not %r" % (dotted, _TYPE_NAMES.get(typ, typ.__name__), value),
                             "wrong_type")
        return value

    def number(self, key: str, typ: type, default: Any, lo: float, hi: float) -> Any:
        value = self.get(key, typ, default)
        if not lo <= value <= hi:
            raise self.error("%s.%s" % (self.name, key), "%s.%s = %r is outside %s..%s" % (self.name, key, value, lo, hi),
                             "bad_value")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value: str = self.get(key, str, default)
        if value not in choices:
            raise self.error("%s.%s" % (self.name, key), "%s.%s = %r must be one of %s"
                             % (self.name, key, value, ", ".join(choices)), "bad_value")
        return value

    def path(self, key: str, default: Path, base: Path, *, file: bool = False) -> Path:
        """The path at ``key`` relative to ``base`` (``default`` when absent); ``file`` for a key that names
        a file, not a directory (the hint for an empty value differs)."""
        value = self.get(key, str, None)
        if value is None:
            return default
        if not value.strip():  # Path("") is ".": an empty data_dir put the store next to the config
            # "." only fits a directory: for a file key it is refused as "not a regular file".
            example = ", such as %r" % default.name if default != base else ""
            other = ("name a file, relative to the config file's directory%s" % example if file
                     else "write \".\" for the config file's own directory")
            raise self.error("%s.%s" % (self.name, key), "%s.%s must not be empty (leave the key out for the default,"
                             " or %s)" % (self.name, key, other), "bad_value")
        return base / Path(value).expanduser()


# Kernel file systems where no ordinary file can be created whatever the modes say (root passes every
# access() check, so /proc/foo would otherwise look creatable).
_PSEUDO_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "debugfs", "tracefs", "securityfs", "pstore",
                        "bpf", "configfs", "efivarfs", "fusectl", "binfmt_misc", "mqueue", "nsfs"})


def _fs_type(path: Path) -> str | None:
    """Return the type of the file system holding ``path`` (from /proc/self/mountinfo), None if unknown."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None  # not Linux: rely on access() alone
    target, best, fstype = os.path.realpath(path), "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 is a space
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):  # >=: a later mount on the same point hides the earlier
            best, fstype = mount, right.split()[0]
    return fstype


def _existing(sec: _Section, key: str, path: Path) -> Path:
    """Return ``path`` if it exists, else its nearest existing ancestor (where run would create it)."""
    probe = path
    while True:
        try:
            os.stat(probe)
            return probe
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return probe
            probe = probe.parent
        except OSError as exc:
            raise sec.error(key, "%s: cannot look up %s: %s" % (key, probe, exc.strerror), "bad_path") from exc


def _check_dir(sec: _Section, key: str, path: Path, *, owned: bool = False, read_only: bool = False) -> None:
    """Check a directory run creates if absent and writes in, creating nothing.

    It must be a writable directory, or be creatable in its nearest existing ancestor; with
    ``owned``, an existing one must belong to this user (run makes it 0700; a reader does not care,
    so ``read_only`` skips it). With ``read_only``
    (a command that only reads), an existing one must be a readable directory and a missing one
    passes: the command says what it did not find.
    """
    probe = _existing(sec, key, path)
    if read_only and probe != path:
        return

    def refuse(problem: str) -> ConfigError:
        what = "%s %s" % (path, problem) if probe == path else "%s cannot be created (%s %s)" % (path, probe, problem)
        return sec.error(key, "%s: %s" % (key, what), "bad_path")

    if not probe.is_dir():
        raise refuse("is not a directory")
    if read_only:
        if not os.access(probe, os.R_OK | os.X_OK):
            raise refuse("is not readable by this user")
    elif not os.access(probe, os.R_OK | os.W_OK | os.X_OK if probe == path else os.W_OK | os.X_OK):
        raise refuse("is not writable by this user")
    fs = _fs_type(probe)
    if fs in _PSEUDO_FS:
        raise refuse("is on the kernel's %s file system, which holds no files" % fs)
    if owned and not read_only and probe == path and os.geteuid() != 0 and path.stat().st_uid != os.geteuid():
        raise refuse("belongs to another user (the gateway makes it 0700)")


def _check_file(sec: _Section, key: str, path: Path, *, owned: bool = False, read_only: bool = False) -> None:
    """Check a file run opens for reading and writing, creating it (and its directory) if absent.

    With ``read_only``, an existing one must be readable (see :func:`_check_dir`).
    """
    _check_dir(sec, key, path.parent, read_only=read_only)
    if _existing(sec, key, path) != path:
        return
    if not path.is_file():
        raise sec.error(key, "%s: %s is not a regular file" % (key, path), "bad_path")
    if read_only:
        if not os.access(path, os.R_OK):
            raise sec.error(key, "%s: %s is not readable by this user" % (key, path), "bad_path")
    elif not os.access(path, os.R_OK | os.W_OK):
        raise sec.error(key, "%s: %s is not readable and writable by this user" % (key, path), "bad_path")
    if owned and not read_only and os.geteuid() != 0 and path.stat().st_uid != os.geteuid():
        raise sec.error(key, "%s: %s belongs to another user (the gateway makes it 0600)" % (key, path), "bad_path")


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
    top = _Section(data, "config", source, _SECTIONS)

    gw = _Section(top.data.get("gateway", {}), "gateway", source, ("id", "data_dir", "ack_gap_hold_s"))
    gap_hold_s = gw.number("ack_gap_hold_s", float, 15.0, 0.0, 600.0)
    gw_id = gw.get("id", str, re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64] or "gateway")
    if not _ID.match(gw_id):
        raise gw.error("gateway.id", "gateway.id %r must be 1..64 chars of [A-Za-z0-9._-]" % gw_id, "bad_value")
    data_dir = gw.path("data_dir", default_data_dir() if source is None else base / "data", base)
    _check_dir(gw, "gateway.data_dir", data_dir, read_only=read_only)

    reg = _Section(top.data.get("registry", {}), "registry", source, ("path",))
    registry_dir = reg.path("path", data_dir / "registry", base)
    _check_dir(reg, "registry.path", registry_dir, owned=True, read_only=read_only)
    if registry_dir.is_dir():  # what Registry() opens and chmods in it
        _check_dir(reg, "registry.path", registry_dir / "keys", owned=True, read_only=read_only)
        _check_file(reg, "registry.path", registry_dir / "devices.sqlite", owned=True, read_only=read_only)

    st = _Section(top.data.get("storage", {}), "storage", source, ("path", "batch_ms", "batch_max", "max_in_flight",
                                                                       "min_free_mb", "backup_before_migration"))
    db_path = st.path("path", data_dir / "reports.sqlite", base, file=True)
    # its directory also holds the -wal, -shm and .lock files (a reader of a store on a read-only mount
    # opens it immutable, gateway.storage.sqlite_uri)
    _check_file(st, "storage.path", db_path, read_only=read_only)
    storage = StorageConfig(path=db_path, batch_ms=st.number("batch_ms", int, 50, 1, 10_000),
                            batch_max=st.number("batch_max", int, 200, 1, 10_000),
                            max_in_flight=st.number("max_in_flight", int, 5000, 10, 1_000_000),
                            min_free_mb=st.number("min_free_mb", int, 256, 0, 10_000_000),
                            backup_before_migration=st.get("backup_before_migration", bool, True))

    serial_raw = top.data.get("serial", [])
    if not isinstance(serial_raw, list):
        raise top.error("serial", "serial must be an array of tables: write [[serial]]", "wrong_type")
    ports: list[SerialPortConfig] = []
    for i, entry in enumerate(serial_raw):
        sp = _Section(entry, "serial[%d]" % i, source, ("port", "baud"))
        port = sp.get("port", str, required=True)
        if not port or any(p.port == port for p in ports):
            raise sp.error("serial[%d].port" % i, "serial port %r is empty or listed twice" % port, "bad_value")
        ports.append(SerialPortConfig(port=port, baud=sp.number("baud", int, 115200, 300, 4_000_000)))

    ble = _parse_ble(_Section(top.data.get("ble", {}), "ble", source, (
        "enabled", "backend", "radio", "service_uuid", "max_connections", "scan_interval_s", "connect_timeout_s",
        "auth_timeout_s")))
    mqtt = None
    if "mqtt" in top.data:
        mqtt = _parse_mqtt(_Section(top.data["mqtt"], "mqtt", source, (
            "host", "port", "topic_prefix", "client_id", "outbox_max_bytes", "outbox_policy", "keepalive_s",
            "username", "password_file", "password", "tls", "ca_file", "cert_file", "key_file")), base)
    http = _parse_http(_Section(top.data.get("http", {}), "http", source,
                                ("enabled", "listen", "port", "admin_token_file", "allowed_hosts",
                                 "max_connections", "trusted_proxies")), base)
    overrides, interval = _parse_retention(top.data.get("retention", {}), source)
    sim_clock = None
    if "sim_clock" in top.data:
        sim_clock = _parse_sim_clock(_Section(top.data["sim_clock"], "sim_clock", source,
                                              ("speed", "virtual_at", "wall_at", "follow_file")), base)
    if "routes" in top.data:
        _check_routes(top.data["routes"], source, base)
    open_data = _parse_opendata(top.data.get("opendata", {}), source, lenient=lenient_opendata)
    return GatewayConfig(id=gw_id, data_dir=data_dir, registry_dir=registry_dir, storage=storage, serial=tuple(ports),
                         ble=ble, mqtt=mqtt, http=http, retention_overrides=overrides, retention_interval_s=interval,
                         sim_clock=sim_clock, ack_gap_hold_s=gap_hold_s, source=source, open_data=open_data)


_OPENDATA_KEYS = ("licence", "licence_url", "publisher", "title", "description", "contact", "keywords", "base_url",
                  "language")


def _parse_opendata(data: Any, source: Path | None, *, lenient: bool) -> OpenDataConfig:
    """``[opendata]``: licence and publisher "not set" unless the city says so (the gateway never invents a
    licence, docs/open-data.md); the catalogue's keys None (the gateway's defaults) when absent.

    With ``lenient``, a refused key (an unknown one too) is left at its default and its error kept in
    ``problems``: metadata must not stop data collection. A licence refused so is published as not
    set, and its ``licence_url`` is dropped with it (the licence's error says what to fix)."""
    problems: list[str] = []

    def kept(parse: Any, default: Any) -> Any:
        if not lenient:
            return parse()
        try:
            return parse()
        except ConfigError as exc:
            problems.append("error (%s) [%s]: %s" % (exc.reason, exc.key, exc))
            return default

    if lenient:
        kept(lambda: _Section(data, "opendata", source, _OPENDATA_KEYS), None)  # not a table, an unknown key
        data = {k: v for k, v in data.items() if k in _OPENDATA_KEYS} if isinstance(data, dict) else {}
    od = _Section(data, "opendata", source, _OPENDATA_KEYS)
    before = len(problems)
    licence = kept(lambda: _opendata_licence(od), "not set")
    licence_refused = len(problems) > before
    licence_url = None if licence_refused else kept(lambda: _opendata_licence_url(od, licence), None)
    return OpenDataConfig(licence=licence, licence_text_url=licence_url,
                          publisher=kept(lambda: _opendata_publisher(od), "not set"),
                          title=kept(lambda: _opendata_text(od, "title", MAX_TITLE_LEN), None),
                          description=kept(lambda: _opendata_text(od, "description", MAX_DESCRIPTION_LEN, lines=True),
                                           None),
                          contact=kept(lambda: _opendata_contact(od), None),
                          keywords=kept(lambda: _opendata_keywords(od), None),
                          base_url=kept(lambda: _opendata_base_url(od), None),
                          # refused at run: unknown (""), never "en", which would declare the city's texts English
                          language=kept(lambda: _opendata_language(od), ""), problems=tuple(problems))


# [opendata] licence: an SPDX-style id (CC-BY-4.0, LicenseRef-city-1.0) or an absolute http(s) URL. Both
# go into a Link header (RFC 8288) and JSON, so nothing a header cannot carry plainly is accepted.
_SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")
_LICENCE_URL = re.compile(r"https?://[\x21-\x7e]+")
_URL_FORBIDDEN = frozenset('<>"')
MAX_LICENCE_URL_LEN = 2048
MAX_PUBLISHER_LEN = 200
MAX_TITLE_LEN = 200
MAX_DESCRIPTION_LEN = 4000
MAX_KEYWORDS = 30
MAX_KEYWORD_LEN = 60
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9]"
                    r"(?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


def _shown(value: str) -> str:
    return value if len(value) <= 80 else value[:80] + "..."


def _http_url(value: str) -> bool:
    """An absolute http(s) URL that a header and JSON carry plainly (see the licence below)."""
    return (len(value) <= MAX_LICENCE_URL_LEN and _LICENCE_URL.fullmatch(value) is not None
            and not _URL_FORBIDDEN & set(value) and bool(urlsplit(value).netloc))


def _opendata_licence(od: _Section) -> str:
    """``[opendata] licence``: "not set" when absent or empty; else an id of the SPDX License List (in its
    exact case), a ``LicenseRef-`` id or an http(s) URL (:mod:`gateway.config.licence`)."""
    value: str = od.get("licence", str, "not set").strip() or "not set"
    if value == "not set":
        return value
    if _SPDX_ID.fullmatch(value):
        try:
            return canonical_licence_id(value)
        except UnknownLicence as exc:
            near = "did you mean %r? " % exc.suggestion if exc.suggestion else ""
            if exc.or_later:
                # SPDX's "or any later version": no SPDX page, and a portal's licence field names one licence.
                raise od.error("opendata.licence", "opendata.licence %r ends in '+' (\"or any later version\"), which "
                               "has no SPDX page and no open-data portal's licence field takes: %swrite the one "
                               "licence the data is published under" % (value, near), "bad_value") from None
            # Published as https://spdx.org/licenses/<id>.html: a typo would be a dead link and no licence.
            raise od.error("opendata.licence", "opendata.licence %r is not a licence id of the SPDX License List "
                           "(%sit would be published as a dead link, the data under no licence); write the exact id "
                           "from https://spdx.org/licenses/ (e.g. \"CC-BY-4.0\", \"ODbL-1.0\"), \"LicenseRef-...\" "
                           "for a licence of the city's own, or the licence's URL" % (value, near), "bad_value") from None
    if _http_url(value):
        return value
    raise od.error("opendata.licence", "opendata.licence %r must be an SPDX licence id (ASCII letters, digits, '.', '+',"
                   " '-', at most 64 characters, e.g. \"CC-BY-4.0\" or \"LicenseRef-city-1.0\") or an absolute"
                   " http:// or https:// URL (ASCII, at most %d characters, no spaces, control characters, '<', '>'"
                   " or '\"')" % (_shown(value), MAX_LICENCE_URL_LEN), "bad_value")


def _opendata_licence_url(od: _Section, licence: str) -> str | None:
    """``[opendata] licence_url``: None when absent or empty; else an https URL (as a licence URL is
    checked), given with a licence: the link of a ``LicenseRef-`` id, or in place of the SPDX page."""
    value: str = od.get("licence_url", str, "").strip()
    if not value:
        return None
    if not (value.startswith("https://") and _http_url(value)):
        raise od.error("opendata.licence_url", "opendata.licence_url %r must be the https:// URL of the licence's text "
                       "(ASCII, at most %d characters, no spaces, control characters, '<', '>' or '\"')"
                       % (_shown(value), MAX_LICENCE_URL_LEN), "bad_value")
    if licence == "not set":
        raise od.error("opendata.licence_url", "opendata.licence_url is given but opendata.licence is not: name the "
                       "licence too (e.g. licence = \"LicenseRef-city-1.0\" with its text at licence_url)", "bad_value")
    return value


def _opendata_publisher(od: _Section) -> str:
    """``[opendata] publisher``: "not set" when absent or empty; else printable text of at most 200 characters."""
    value: str = od.get("publisher", str, "not set").strip() or "not set"
    # str.isprintable() is False for control characters (NUL, ESC, DEL, C1) and for the line and
    # paragraph separators U+2028/U+2029; a plain space is printable.
    if len(value) <= MAX_PUBLISHER_LEN and value.isprintable():
        return value
    raise od.error("opendata.publisher", "opendata.publisher %r must be printable text of at most %d characters"
                   " (no control characters, tabs or line breaks)" % (_shown(value), MAX_PUBLISHER_LEN), "bad_value")


def _opendata_text(od: _Section, key: str, limit: int, *, lines: bool = False) -> str | None:
    """``[opendata] title`` / ``description``: None when absent or empty; else printable text of at most
    ``limit`` characters (with ``lines``, line breaks too: a description may have paragraphs)."""
    raw: str = od.get(key, str, "")
    value = raw.strip()
    if not value:
        return None
    body = value.replace("\r\n", "\n").replace("\n", "") if lines else value
    if len(value) <= limit and body.isprintable():
        return value
    raise od.error("opendata.%s" % key, "opendata.%s %r must be printable text of at most %d characters (no control "
                   "characters or tabs%s)" % (key, _shown(value), limit, "" if lines else ", no line breaks"),
                   "bad_value")


def _opendata_contact(od: _Section) -> str | None:
    """``[opendata] contact``: None when absent or empty; else an e-mail address or an http(s) URL.

    An internationalised domain (``opendata@stadt-köln.de``) is kept in its ASCII (``xn--``) form and
    other non-ASCII characters of a URL percent-encoded (RFC 3987 §3.1): the catalogue publishes the
    contact as a ``mailto:`` or ``https:`` URI (DCAT ``contactPoint``), which portals take as ASCII.
    """
    value: str = od.get("contact", str, "").strip()
    if not value:
        return None
    try:
        ascii_value = _ascii_contact(value)
    except _DeviatingDomain as exc:
        raise od.error("opendata.contact", "opendata.contact %r: the domain %r has %s, which the two IDNA standards"
                       " encode as different domains; write the domain in its xn-- form (as the registrar shows it)"
                       % (_shown(value), exc.domain, exc.chars), "bad_value") from None
    if ascii_value is not None and ((len(ascii_value) <= 254 and _EMAIL.fullmatch(ascii_value))
                                    or _http_url(ascii_value)):
        return ascii_value
    raise od.error("opendata.contact", "opendata.contact %r must be an e-mail address (opendata@city.example) or an "
                   "absolute http:// or https:// URL of a contact page, in ASCII but for the domain (an "
                   "internationalised domain such as stadt-köln.de is published in its xn-- form)" % _shown(value),
                   "bad_value")


# Characters IDNA 2003 (Python's "idna" codec) maps away but IDNA 2008 (registries, DENIC) keeps, so the two
# name different domains: straße.de is strasse.de in one and xn--strae-oqa.de in the other (UTS #46 deviations).
_IDNA_DEVIATIONS = frozenset("ßςẞ\u200c\u200d")


class _DeviatingDomain(ValueError):
    def __init__(self, domain: str, chars: str) -> None:
        super().__init__(domain)
        self.domain, self.chars = domain, chars


def _ascii_domain(domain: str) -> str | None:
    """``domain`` with its non-ASCII labels IDNA-encoded (``xn--``), or None when it cannot be.

    Raises:
        _DeviatingDomain: it has a character IDNA 2003 and 2008 encode differently.
    """
    if domain.isascii():
        return domain
    deviating = sorted(_IDNA_DEVIATIONS & set(domain))
    if deviating:
        raise _DeviatingDomain(domain, ", ".join("%r (U+%04X)" % (c, ord(c)) for c in deviating))
    try:
        encoded = domain.encode("idna").decode("ascii")
    except UnicodeError:  # an empty or too long label, a prohibited character
        return None
    # IDNA 2003 maps fullwidth '＠' '／' '：' to '@' '/' ':' (NFKC) without STD3's host-name rules: a host
    # that became another host's userinfo or path is refused, not published
    labels = encoded.split(".")
    if labels[-1] == "":  # a trailing dot
        labels.pop()
    return encoded if labels and all(re.fullmatch(r"[A-Za-z0-9-]+", label) for label in labels) else None


def _ascii_contact(value: str) -> str | None:
    """``value`` (an e-mail address or URL, unchecked) with an internationalised domain in its ``xn--`` form and,
    in a URL, other non-ASCII characters percent-encoded as UTF-8; None when the domain cannot be encoded.

    Raises:
        _DeviatingDomain: see :func:`_ascii_domain`.
    """
    if value.isascii():
        return value
    scheme, sep, rest = value.partition("://")
    if not sep:  # an e-mail address: only its domain may be internationalised (the local part stays ASCII)
        local, at, domain = value.rpartition("@")
        encoded = _ascii_domain(domain) if at else None
        return None if encoded is None else local + at + encoded
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    host, colon, port = hostport.rpartition(":") if re.fullmatch(r".*:\d*", hostport) else (hostport, "", "")
    encoded = _ascii_domain(host)
    if encoded is None:
        return None
    tail = re.sub(r"[^\x00-\x7f]+", lambda m: quote(m.group(0), safe=""), tail)
    return scheme + sep + userinfo + at + encoded + colon + port + tail


def _opendata_keywords(od: _Section) -> tuple[str, ...] | None:
    """``[opendata] keywords``: None when absent; else an array of distinct short printable strings."""
    raw = od.get("keywords", list, None)
    if raw is None:
        return None
    words: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise od.error("opendata.keywords", "opendata.keywords must be an array of strings; item %d is %r"
                           % (i, item), "wrong_type")
        word = item.strip()
        if not word or len(word) > MAX_KEYWORD_LEN or not word.isprintable():
            raise od.error("opendata.keywords", "opendata.keywords item %d (%r) must be printable text of 1 to %d "
                           "characters" % (i, _shown(item), MAX_KEYWORD_LEN), "bad_value")
        if word.lower() in (w.lower() for w in words):
            raise od.error("opendata.keywords", "opendata.keywords lists %r twice" % word, "bad_value")
        words.append(word)
    if len(words) > MAX_KEYWORDS:
        raise od.error("opendata.keywords", "opendata.keywords has %d items; at most %d" % (len(words), MAX_KEYWORDS),
                       "bad_value")
    return tuple(words)


# [opendata] language: a BCP 47 (RFC 5646) language tag: a language subtag (ISO 639, 2 or 3 letters, with up
# to three 3-letter extlangs: zh-yue), an optional script (ISO 15924, 4 letters), an optional region (ISO 3166
# 2 letters, or UN M.49 3 digits), variants (ca-ES-valencia, de-CH-1996), extensions (de-DE-u-co-phonebk) and a
# private use part (x-...). Its form only: whether the subtags are registered (IANA Language Subtag
# Registry) is not checked (no registry offline).
_LANGUAGE_TAG = re.compile(
    r"([A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3})(?:-([A-Za-z]{4}))?(?:-([A-Za-z]{2}|[0-9]{3}))?"
    r"((?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
    r"((?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*)"
    r"(-[xX](?:-[A-Za-z0-9]{1,8})+)?")


def _opendata_language(od: _Section) -> str:
    """``[opendata] language``: "en" when absent or empty; else a BCP 47 tag ``language[-Script][-REGION][-variant...]``
    in its conventional case (``de-DE``, ``zh-Hant-TW``): the page's ``lang`` and the catalogue's language."""
    value: str = od.get("language", str, "").strip()
    if not value:
        return "en"
    match = _LANGUAGE_TAG.fullmatch(value)
    if match is None:
        raise od.error("opendata.language", "opendata.language %r must be a BCP 47 language tag: a 2- or 3-letter "
                       "language code, optionally a 4-letter script, a 2-letter or 3-digit region and variants, joined by '-' "
                       "(e.g. \"de\", \"de-DE\", \"pl\", \"ja\", \"zh-Hant-TW\")" % _shown(value), "bad_value")
    language, script, region, variants, extensions, private = match.groups()
    return ("-".join([language.lower()] + ([script.title()] if script else []) + ([region.upper()] if region else []))
            + (variants + extensions + (private or "")).lower())


def _opendata_base_url(od: _Section) -> str | None:
    """``[opendata] base_url``: None when absent or empty; else an absolute http(s) URL without query or
    fragment, kept without its trailing slash (``/opendata`` is appended to it)."""
    value: str = od.get("base_url", str, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if (_http_url(value) and "?" not in value and "#" not in value
            and not parts.path.rstrip("/").endswith("/opendata")):
        return value.rstrip("/")
    raise od.error("opendata.base_url", "opendata.base_url %r must be the absolute http:// or https:// address the "
                   "public reaches the gateway's /opendata at, without /opendata, query or fragment (e.g. "
                   "\"https://data.city.example\")" % _shown(value), "bad_value")


def _parse_sim_clock(sc: _Section, base: Path) -> SimClockConfig:
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


def _parse_ble(sec: _Section) -> BleConfig:
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


def _check_radio_url(sec: _Section, radio: str) -> None:
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


def _is_host(text: str) -> bool:
    """True for an IP address or a well-formed DNS host name (not resolved: see ``_check_listen``)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    # All-numeric labels would be an IPv4 address, and this one did not parse as one (999.1.1.1).
    return (0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in labels)
            and not all(label.isdigit() for label in labels))


# MQTT 3.1.1 §1.5.3: a topic is at most 65535 bytes of UTF-8. The gateway appends
# /<gateway id>/<kind>/<device>/<type> (at most 64 + 16 + 32 + 16 bytes and four slashes): 256 bytes is room enough.
TOPIC_MAX_BYTES = 65535
TOPIC_PREFIX_MAX_BYTES = TOPIC_MAX_BYTES - 256
# MQTT sets no limit on a topic's levels, brokers do: mosquitto closes the connection on a publish to a
# topic of more than 200 levels (and other brokers allow far fewer). The gateway adds 4 levels.
TOPIC_PREFIX_MAX_LEVELS = 32


def check_topic_prefix(prefix: str) -> str | None:
    """Why ``prefix`` cannot start every upstream topic, or None when it can (see docs/mqtt.md, Topic)."""
    if not prefix:
        return "must not be empty"
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > TOPIC_PREFIX_MAX_BYTES:
        return ("is %d bytes of UTF-8, above %d (an MQTT topic is at most %d bytes, and the gateway appends"
                " /<gateway>/<kind>/<device>/<type>)" % (size, TOPIC_PREFIX_MAX_BYTES, TOPIC_MAX_BYTES))
    if prefix.startswith("$"):
        # MQTT 3.1.1 §4.7.2: $ topics are the broker's; mosquitto accepts a publish to $SYS/... and drops it.
        return "must not start with $ (topics starting with $ belong to the broker, which drops such publishes)"
    for c in prefix:
        if c in "+#":
            return "must not contain the wildcard %r (wildcards are for subscribers)" % c
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return "must not contain the control or separator character U+%04X" % ord(c)
    if prefix.startswith("/") or prefix.endswith("/"):
        return "must not start or end with / (the gateway adds the separator)"
    if "//" in prefix:
        return "must not contain an empty level (//)"
    levels = prefix.count("/") + 1
    if levels > TOPIC_PREFIX_MAX_LEVELS:
        return ("has %d levels, above %d (the gateway adds 4 more, and brokers limit a topic's levels: mosquitto"
                " closes the connection on a publish to more than 200)" % (levels, TOPIC_PREFIX_MAX_LEVELS))
    return None


# MQTT 3.1.1 §1.5.3: a string is at most 65535 bytes of UTF-8 (a 16-bit length prefix).
MQTT_STRING_MAX_BYTES = 65535


def check_client_id(client_id: str) -> str | None:
    """Why ``client_id`` cannot be sent in an MQTT CONNECT, or None when it can (MQTT 3.1.1 §1.5.3).

    Longer than a string may be, the client could never build the packet and retried forever; with
    U+0000 (which the broker must refuse) or another control character, the broker closed the
    connection and it looked like a timeout.
    """
    size = len(client_id.encode("utf-8", "surrogatepass"))
    if size > MQTT_STRING_MAX_BYTES:
        return "is %d bytes of UTF-8, above %d (the most an MQTT string holds)" % (size, MQTT_STRING_MAX_BYTES)
    for c in client_id:
        if unicodedata.category(c) in ("Cc", "Cs"):
            return "must not contain the control character U+%04X (MQTT forbids it in a string)" % ord(c)
    return None


def _parse_mqtt(sec: _Section, base: Path) -> MqttConfig:
    host = sec.get("host", str, required=True)
    if not _is_host(host):
        # An empty host made the upstream task end at once, silently ("upstream :1883").
        raise sec.error("mqtt.host", "mqtt.host %r must be the broker's host name or IP address" % host, "bad_value")
    client_id = sec.get("client_id", str)
    if client_id is not None and not client_id:
        raise sec.error("mqtt.client_id", "mqtt.client_id must not be empty (leave it out for the default"
                        " civicedge-<gateway id>)", "bad_value")
    id_problem = None if client_id is None else check_client_id(client_id)
    if client_id is not None and id_problem is not None:
        shown = client_id if len(client_id) <= 80 else client_id[:60] + "..."
        raise sec.error("mqtt.client_id", "mqtt.client_id %r %s" % (shown, id_problem), "bad_value")
    prefix = sec.get("topic_prefix", str, "civicedge")
    problem = check_topic_prefix(prefix)
    if problem is not None:
        shown = prefix if len(prefix) <= 80 else prefix[:60] + "..."
        raise sec.error("mqtt.topic_prefix", "mqtt.topic_prefix %r %s" % (shown, problem), "bad_value")
    if "password" in sec.data:
        # Config files are shared and pasted into tickets; a secret belongs in its own owner-only file.
        raise sec.error("mqtt.password", "mqtt.password is not accepted in the config file: put the password in a"
                        " file only you can read (chmod 600) and name it with mqtt.password_file", "bad_value")
    username = sec.get("username", str)
    if username is not None and not username:
        raise sec.error("mqtt.username", "mqtt.username must not be empty (leave it out to connect without"
                        " credentials)", "bad_value")
    password_file, password = None, None
    if sec.get("password_file", str) is not None:
        if username is None:
            raise sec.error("mqtt.password_file", "mqtt.password_file needs mqtt.username (MQTT sends no password"
                            " without a user name)", "missing")
        password_file = sec.path("password_file", base, base, file=True)
        password = _read_secret(sec, "mqtt.password_file", password_file)
    tls = sec.get("tls", bool, False)
    files: dict[str, Path | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        files[key] = None
        if sec.get(key, str) is None:
            continue
        if not tls:
            raise sec.error("mqtt.%s" % key, "mqtt.%s is only used with TLS: set mqtt.tls = true (or leave the key"
                            " out)" % key, "bad_value")
        files[key] = path = sec.path(key, base, base, file=True)
        _check_readable(sec, "mqtt.%s" % key, path)
    if files["key_file"] is not None and files["cert_file"] is None:
        raise sec.error("mqtt.key_file", "mqtt.key_file needs mqtt.cert_file (the client certificate it belongs"
                        " to)", "missing")
    if files["key_file"] is not None:
        _check_key_mode(sec, "mqtt.key_file", files["key_file"])
    if files["cert_file"] is not None and _holds_private_key(sec, "mqtt.cert_file", files["cert_file"]):
        _check_key_mode(sec, "mqtt.cert_file", files["cert_file"])  # the key is in it (no key_file needed)
    return MqttConfig(host=host, port=sec.number("port", int, 8883 if tls else 1883, 1, 65535), topic_prefix=prefix,
                      client_id=client_id,
                      outbox_max_bytes=sec.number("outbox_max_bytes", int, 64 * 1024 * 1024, 1024, 2**40),
                      outbox_policy=sec.choice("outbox_policy", "drop_oldest", ("drop_oldest", "drop_newest")),
                      keepalive_s=sec.number("keepalive_s", int, 30, 5, 3600), username=username,
                      password_file=password_file, password=password, tls=tls, ca_file=files["ca_file"],
                      cert_file=files["cert_file"], key_file=files["key_file"])


@contextlib.contextmanager
def _reading_file(sec: _Section, key: str, path: Path) -> Iterator[None]:
    """Turn an OSError while reading the file ``path`` (named by ``key``) into a ConfigError saying why."""
    try:
        yield
    except FileNotFoundError as exc:
        raise sec.error(key, "%s %s does not exist" % (key, path), "bad_path") from exc
    except IsADirectoryError as exc:
        raise sec.error(key, "%s %s is a directory, not a file" % (key, path), "bad_path") from exc
    except OSError as exc:
        raise sec.error(key, "cannot read %s %s: %s" % (key, path, exc.strerror), "bad_path") from exc


def _check_readable(sec: _Section, key: str, path: Path) -> None:
    """``path`` must be a regular file this user can read (opened without blocking: a FIFO hung the check)."""
    with _reading_file(sec, key, path):
        os.close(open_regular(path))


def _read_secret(sec: _Section, key: str, path: Path) -> str:
    """The one-line secret in ``path`` (an owner-only file), without its line end; never echoed."""
    text = _read_owner_only(sec, key, path)
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret or "\n" in secret or "\r" in secret:
        raise sec.error(key, "%s %s must hold the password on one line (it is empty or has several lines)"
                        % (key, path), "bad_value")
    return secret


def _read_owner_only(sec: _Section, key: str, path: Path) -> str:
    """The text of the secret file ``path``, refused when other users may read it (as ssh refuses a
    readable private key).

    The mode is checked on the descriptor the text is read from, so a file swapped in between (a
    token rotated by rename) cannot be read under the old file's mode. Only a regular file is read,
    opened without blocking and at most :data:`SECRET_MAX` bytes of it: the web layer reads a replaced
    token file on the event loop, where a FIFO put there hung the whole gateway.
    """
    with _reading_file(sec, key, path):
        fd = open_regular(path)
        try:
            st = os.fstat(fd)
            if os.name == "posix" and st.st_mode & 0o077:
                raise sec.error(key, "%s %s is readable by other users (mode %03o); run: chmod 600 %s"
                                % (key, path, st.st_mode & 0o777, path), "bad_path")
            data = read_fd_limited(fd, SECRET_MAX)
        finally:
            os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise sec.error(key, "cannot read %s %s: not UTF-8 text" % (key, path), "bad_path") from exc
    if text.startswith("\ufeff"):
        # Notepad's byte-order mark: no part of the secret (the broker refused it as part of the password,
        # and the token check called it not ASCII, which the editor did not show).
        log.debug("%s %s starts with a UTF-8 byte-order mark: skipped", key, path)
        return text[1:]
    return text


def _holds_private_key(sec: _Section, key: str, path: Path) -> bool:
    """Whether the PEM file ``path`` holds a private key (``-----BEGIN ... PRIVATE KEY-----``)."""
    try:
        return b"PRIVATE KEY-----" in read_limited(path, CONFIG_MAX)
    except OSError as exc:
        raise sec.error(key, "cannot read %s %s: %s" % (key, path, exc.strerror), "bad_path") from exc


def _check_key_mode(sec: _Section, key: str, path: Path) -> None:
    """Refuse a private key file other users may read, or its group write. Group-readable is accepted
    when root or this user owns it (the usual root:ssl-cert 0640 key in /etc/ssl/private), as PostgreSQL
    accepts its ssl_key_file; the password file stays owner-only (:func:`_read_owner_only`)."""
    if os.name != "posix":
        return
    try:
        st = path.stat()
    except OSError as exc:
        raise sec.error(key, "cannot read %s %s: %s" % (key, path, exc.strerror), "bad_path") from exc
    mode = st.st_mode & 0o777
    group_ok = st.st_uid in (0, os.geteuid())
    if mode & (0o037 if group_ok else 0o077):  # group read only, and only for root's or our own key
        allowed = "0640 (owner root or you) or 0600" if group_ok else "0600 (it is not yours or root's)"
        raise sec.error(key, "%s %s holds a private key and is open to other users (mode %03o; at most %s);"
                        " run: chmod %s %s" % (key, path, mode, allowed, "640" if group_ok else "600", path),
                        "bad_path")


def _parse_http(sec: _Section, base: Path) -> HttpConfig | None:
    enabled = sec.get("enabled", bool, True)
    token_file = sec.get("admin_token_file", str)
    token_path = None
    if token_file is not None and not token_file.strip():
        raise sec.error("http.admin_token_file", "http.admin_token_file must not be empty (leave the key out for no"
                        " admin endpoints)", "bad_value")
    if token_file is not None:
        token_path = base / Path(token_file).expanduser()
        _admin_token_of(sec, token_path)
    listen = sec.get("listen", str, "127.0.0.1")
    _check_listen(sec, listen, resolve=enabled)
    cfg = HttpConfig(enabled=enabled, listen=listen, port=sec.number("port", int, 8080, 0, 65535),
                     admin_token_file=token_path, allowed_hosts=_parse_allowed_hosts(sec),
                     max_connections=sec.number("max_connections", int, 256, 8, 1_000_000),
                     trusted_proxies=_parse_trusted_proxies(sec))
    return cfg if enabled else None


def read_admin_token(path: Path) -> str:
    """The admin token in ``path``, checked as at load: readable UTF-8, owner-only, at least
    :data:`MIN_TOKEN_LEN` printable ASCII characters without spaces, not a placeholder. The web
    surface uses it to take a replaced token file while the gateway runs.

    Raises:
        ConfigError: key ``http.admin_token_file``; reason ``bad_path`` (missing, unreadable, not UTF-8,
            readable by other users) or ``bad_value`` (too short, not one printable line, a placeholder).
            The message names the file, never the token.
    """
    return _admin_token_of(_Section({}, "http", None, ()), path)


def _admin_token_of(sec: _Section, token_path: Path) -> str:
    """:func:`read_admin_token`, with errors located in ``sec``'s config file."""
    token = _read_owner_only(sec, "http.admin_token_file", token_path).strip()
    if len(token) < MIN_TOKEN_LEN:
        raise sec.error("http.admin_token_file", "the admin token in %s is shorter than %d characters"
                        % (token_path, MIN_TOKEN_LEN), "bad_value")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        # Clients send it in an HTTP header: a second line or a space in it could never match.
        raise sec.error("http.admin_token_file", "the admin token in %s must be one line of printable ASCII "
                        "without spaces (clients send it in an HTTP header)" % token_path, "bad_value")
    placeholder = token_placeholder(token)
    if placeholder is not None:
        raise sec.error("http.admin_token_file", "the admin token in %s %s: it looks like a placeholder; make a"
                        " random one, e.g. openssl rand -hex 32" % (token_path, placeholder), "bad_value")
    return token


def token_placeholder(token: str) -> str | None:
    """Why ``token`` looks like a placeholder rather than a secret (e.g. "is 'ab' repeated"), or None.

    Only real placeholders are refused: fewer than :data:`MIN_TOKEN_DISTINCT` distinct characters, or
    a unit of at most :data:`MAX_TOKEN_UNIT` characters repeated. A count of distinct characters any
    higher would refuse random tokens too (16 random digits have fewer than 8 distinct ones 24% of the
    time). gateway.web.auth checks the same.
    """
    distinct = len(set(token))
    if distinct < MIN_TOKEN_DISTINCT:
        return "has only %d distinct characters (at least %d needed)" % (distinct, MIN_TOKEN_DISTINCT)
    for size in range(1, MAX_TOKEN_UNIT + 1):
        unit = token[:size]
        if len(token) % size == 0 and token == unit * (len(token) // size):
            return "is %r repeated" % unit
    return None


def _parse_allowed_hosts(sec: _Section) -> tuple[str, ...]:
    """``http.allowed_hosts``: names (besides IPs, localhost and this machine's) the server answers to."""
    raw = sec.get("allowed_hosts", list, [])
    names: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise sec.error("http.allowed_hosts", "http.allowed_hosts[%d] must be a string, not %r" % (i, item),
                            "wrong_type")
        name = item.strip().lower().removesuffix(".")
        if not _is_host(name):
            raise sec.error("http.allowed_hosts", "http.allowed_hosts[%d] = %r must be a host name (no scheme,"
                            " port or path), e.g. \"data.city.example\"" % (i, item), "bad_value")
        if name not in names:
            names.append(name)
    return tuple(names)


def _parse_trusted_proxies(sec: _Section) -> tuple[str, ...]:
    """``http.trusted_proxies``: addresses or networks of reverse proxies whose X-Forwarded-For is believed."""
    raw = sec.get("trusted_proxies", list, [])
    networks: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise sec.error("http.trusted_proxies", "http.trusted_proxies[%d] must be a string, not %r" % (i, item),
                            "wrong_type")
        try:
            network = str(parse_network(item))
        except ValueError as exc:
            raise sec.error("http.trusted_proxies", "http.trusted_proxies[%d]: %s" % (i, exc), "bad_value") from None
        if network not in networks:
            networks.append(network)
    return tuple(networks)


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

    sec = _Section(data, "routes", source, ROUTES_KEYS)
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


def _check_listen(sec: _Section, listen: str, *, resolve: bool) -> None:
    """``http.listen`` must be an IP address or a host name that resolves (what the server binds to)."""
    if not _is_host(listen):
        raise sec.error("http.listen", "http.listen %r must be an IP address or a host name (0.0.0.0 or :: for"
                        " every interface)" % listen, "bad_value")
    if not resolve:
        return
    try:
        ipaddress.ip_address(listen)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(listen, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise sec.error("http.listen", "http.listen %r does not resolve to an address (%s)"
                        % (listen, exc.strerror if isinstance(exc, socket.gaierror) else exc), "bad_value") from exc


def _parse_retention(data: Any, source: Path | None) -> tuple[dict[tuple[str, str], int], float]:
    kinds: dict[str, Any] = load_policy()["kinds"]
    sec = _Section(data, "retention", source, ("interval_s", *sorted(kinds)))
    interval = sec.number("interval_s", float, 3600.0, 1.0, 7 * 86400.0)
    overrides: dict[tuple[str, str], int] = {}
    for kind in sorted(kinds):
        if kind not in sec.data:
            continue
        fields = kinds[kind]["fields"]
        ksec = _Section(sec.data[kind], "retention.%s" % kind, source, tuple(sorted(fields)))
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

"""Typed gateway configuration (the result of validating gateway.toml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SERVICE_UUID = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"


@dataclass(frozen=True)
class SerialPortConfig:
    """One serial port a board (or a USB-serial adapter) is attached to."""

    port: str
    baud: int = 115200


@dataclass(frozen=True)
class BleConfig:
    """BLE central settings. ``backend``: ``bluez`` (OS default) or ``virtual`` (simulator radio)."""

    enabled: bool = False
    backend: str = "bluez"
    radio: str | None = None
    service_uuid: str = SERVICE_UUID
    max_connections: int = 4
    scan_interval_s: float = 5.0
    connect_timeout_s: float = 10.0
    # a link on which no frame verified within this time is dropped (a keyless peripheral must not
    # hold a slot); above the default ack_gap_hold_s (15 s): a first ACK may wait at a seq gap
    auth_timeout_s: float = 20.0


@dataclass(frozen=True)
class MqttConfig:
    """Upstream broker. ``outbox_policy`` at the cap: ``drop_oldest`` or ``drop_newest``.

    ``password`` is the content of ``password_file`` (read when the config is loaded); it is left out
    of ``repr`` so that it never reaches a log line. With ``tls``, ``ca_file`` (None: the system's CAs)
    verifies the broker, ``cert_file``/``key_file`` are an optional client certificate.
    """

    host: str
    port: int = 1883
    topic_prefix: str = "civicedge"
    client_id: str | None = None
    outbox_max_bytes: int = 64 * 1024 * 1024
    outbox_policy: str = "drop_oldest"
    keepalive_s: int = 30
    username: str | None = None
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class HttpConfig:
    """Web surface (served by gateway.web); validated here and passed through.

    ``allowed_hosts``: host names (lower case, no trailing dot) the server answers to besides IP
    literals, ``localhost`` and the machine's own name; any other ``Host`` header is refused
    (DNS rebinding). ``max_connections``: most HTTP connections served at once (lowered at start to
    leave room under the open-file limit; see gateway.web.connlimit). ``trusted_proxies``: addresses or
    networks of reverse proxies whose ``X-Forwarded-For`` names the client (gateway.web.forwarded).
    ``admin_networks``: networks whose clients the admin throttle's global budget never refuses
    (gateway.web.admin_throttle).
    """

    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = 8080
    admin_token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_connections: int = 256
    trusted_proxies: tuple[str, ...] = ()
    admin_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class StorageConfig:
    """Report store: SQLite file and batching (commit every ``batch_max`` reports or ``batch_ms``).

    ``min_free_mb``: free space (MiB) on the store's file system below which the gateway warns (log,
    ``run --check``, ``/healthz`` warning ``disk_low``; critical ``disk_critical`` below an eighth of it,
    gateway.storage.disk_space);
    0 turns the warning off. ``backup_before_migration``: copy a store of an older schema version
    next to itself before the one-way migration (gateway.storage.schema_backup); false only when a
    backup was made elsewhere.
    """

    path: Path
    batch_ms: int = 50
    batch_max: int = 2000
    max_in_flight: int = 5000
    min_free_mb: int = 256
    backup_before_migration: bool = True


@dataclass(frozen=True)
class SimClockConfig:
    """Clock of a simulated fleet running faster than real time (never used in production).

    The gateway's time (ACK time sync, ``received_at``) becomes
    ``virtual_at + (wall time - wall_at) * speed``, so boards in virtual time are not pulled back
    to the wall clock by every ACK. With ``follow_file`` the three values come from that JSON file,
    which the simulation rewrites as its boards run (:class:`gateway.config.sim_clock.SimClock`);
    here they are the file's content when the config was loaded.
    """

    speed: float
    virtual_at: float
    wall_at: float
    follow_file: Path | None = None

    def now(self, wall: float) -> float:
        """Return the virtual unix time at wall time ``wall``."""
        return self.virtual_at + (wall - self.wall_at) * self.speed


@dataclass(frozen=True)
class OpenDataConfig:
    """``[opendata]``: who publishes the open data, under which licence, and how its catalogue
    (``/opendata``, docs/open-data.md "Catalogue") describes it. Every key is optional.

    Attributes:
        licence: an SPDX licence id (``CC-BY-4.0``), a ``LicenseRef-`` id or a licence URL; "not set".
        licence_text_url: ``[opendata] licence_url``, the https URL of the licence's text: the link
            of a ``LicenseRef-`` id (SPDX has no page for it), else in place of the SPDX page or the
            licence URL; None: none given.
        publisher: the publishing organisation's name; "not set".
        title: the catalogue's title; None: the gateway's default.
        description: what the data is, for the catalogue; None: the gateway's default (with the
            privacy policy's statement).
        contact: where to ask about the data: an e-mail address or an http(s) URL; None: none.
        keywords: the catalogue's keywords; None: the gateway's default.
        language: the BCP 47 tag (``de``, ``de-DE``, ``ja``) of the language the city writes ``title``,
            ``description``, ``publisher`` and ``keywords`` in; "en" (the language of the gateway's own
            texts) by default; "" when unknown (a tag ``gateway run`` refused: never published as English).
        base_url: the public address the open data is reached at (``https://data.city.example``,
            perhaps with a path prefix), which makes the catalogue's URLs absolute; None: the
            address each request was sent to.
        problems: for ``gateway run`` only (``load_config(lenient_opendata=True)``): the errors of the
            keys refused, each left at its default (a refused licence is published as not set); the
            gateway logs them as ERRORs. Empty otherwise (a refused key is raised).
    """

    licence: str = "not set"
    licence_text_url: str | None = None
    publisher: str = "not set"
    title: str | None = None
    description: str | None = None
    contact: str | None = None
    keywords: tuple[str, ...] | None = None
    base_url: str | None = None
    language: str = "en"
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    """The whole gateway configuration.

    Attributes:
        id: gateway id (recorded on every stored report and upstream message).
        data_dir: where the store and registry live by default.
        registry_dir: device registry directory (0700).
        storage: report store settings.
        serial: serial ports to read.
        ble: BLE central settings.
        mqtt: upstream broker, or None (no upstream).
        http: web surface settings, or None when disabled.
        retention_overrides: ``(kind, field) -> days``; may only shorten policy.json retention.
        retention_interval_s: how often the retention task runs; a value outlives its retention by up to
            this, so a retention shorter than it is warned about at ``run`` and ``run --check``, on the retentions in
            effect, and when the admin API sets one (gateway.config.retention_warning).
        sim_clock: virtual clock of a simulated fleet, or None (system clock).
        ack_gap_hold_s: after how long a wait at a gap the device still holds is logged; for firmware
            without ``h``, how long cumulative ACKs wait at a gap before passing it.
        source: the file this came from (None for built-in defaults).
        open_data: ``[opendata]``: licence, publisher and catalogue of the open data.
    """

    id: str
    data_dir: Path
    registry_dir: Path
    storage: StorageConfig
    serial: tuple[SerialPortConfig, ...] = ()
    ble: BleConfig = field(default_factory=BleConfig)
    mqtt: MqttConfig | None = None
    http: HttpConfig | None = None
    retention_overrides: dict[tuple[str, str], int] = field(default_factory=dict)
    retention_interval_s: float = 3600.0
    sim_clock: SimClockConfig | None = None
    ack_gap_hold_s: float = 15.0
    source: Path | None = None
    open_data: OpenDataConfig = field(default_factory=OpenDataConfig)

    @property
    def open_data_licence(self) -> str:
        """``[opendata] licence`` (see :class:`OpenDataConfig`)."""
        return self.open_data.licence

    @property
    def open_data_publisher(self) -> str:
        """``[opendata] publisher`` (see :class:`OpenDataConfig`)."""
        return self.open_data.publisher

"""``VirtualBoard``: one simulated board seen from the outside like a real one.

It has a console pty (the MicroPython REPL: mpremote works unchanged), a data-UART pty when the
board has a UART link (pyserial opens it like a USB serial port), a BLE peripheral when it has
BLE and a radio is given, a host-directory flash, stimuli and faults.

Example::

    board = VirtualBoard("streetlight-esp32", device_id="sl-1", flash_dir=tmp / "sl-1")
    await board.start()
    serial.Serial(board.data_path)   # the gateway's view
    await board.stimulus("light", 5)
    await board.fault("drop uart 60s")
    await board.stop()
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import tempfile
from pathlib import Path
from typing import Any, Callable

from hil.boards import BoardDefinition, load_board
from hil.sim.errors import FlashError, SimError, StimulusError
from hil.sim.flash import (
    IDENTITY_FILE, FlashLock, check_flash_kind, identity_id, install_firmware, lock_flash, provision_identity,
)
from hil.sim.host import SimHost
from hil.sim import console_registry
from hil.sim.pty_bridge import PtyBridge
from hil.sim.stimuli import BoardIo, StimuliPlan, load_stimuli, parse_fault, stimulus_op

logger = logging.getLogger(__name__)

CONSOLE_LOG_LIMIT = 1 << 20
_UART_IDS = {"esp32": [0, 1, 2], "esp32c3": [0, 1], "esp32s3": [0, 1, 2]}


def board_host_options(cfg: dict[str, Any], *, flash: Path, seed: int | str | None, heap_bytes: int) -> dict[str, Any]:
    """The per-board options the Node host needs (pins the board has, ADC pins, UARTs, lamp model)."""
    pins: set[int] = set()
    adc: set[int] = set()
    for io in cfg.get("io", {}).values():
        pins.add(int(io["pin"]))
        if io.get("mode") == "adc":
            adc.add(int(io["pin"]))
    uart = cfg.get("links", {}).get("uart")
    if uart:
        pins.update((int(uart["tx"]), int(uart["rx"])))
    if cfg.get("recovery"):
        pins.add(int(cfg["recovery"]["pin"]))
    lamp = None
    io = cfg.get("io", {})
    if "lamp" in io and "lamp_current" in io and "lamp" in cfg.get("cal", {}):
        cal = cfg["cal"]["lamp"]
        lamp = {"pwm_pin": io["lamp"]["pin"], "adc_pin": io["lamp_current"]["pin"],
                "uv_full": cal["ma_full"] * 1_000_000 // cal["ma_per_volt"], "uv_offset": cal.get("offset_uv", 0)}
    # Digital sensors start at rest (PIR quiet, lid shut, bin upright): the inactive level.
    rest = {str(io["pin"]): 1 - int(io.get("active", 1)) for io in cfg.get("io", {}).values() if io.get("mode") == "in"}
    return {"config": cfg, "flash": str(flash), "pins": sorted(pins), "adc_pins": sorted(adc), "rest": rest,
            "uart_ids": _UART_IDS.get(cfg.get("chip", "esp32"), [0, 1]), "lamp": lamp,
            "seed": None if seed is None else str(seed), "heap": heap_bytes}


class VirtualBoard:
    """A virtual board on real MicroPython (see module docstring).

    Args:
        board: board name (``boards/<name>.toml``), a path, or a loaded :class:`BoardDefinition`.
        device_id: the board's id; when given and the flash has no ``/identity.json``, one is
            provisioned with a random key. None: an unprovisioned board with a generated id.
        flash_dir: host directory that is the board's flash (created; None: a temp dir).
        host: a shared :class:`SimHost` (fleet); None: the board starts its own.
        speed: clock speed of its own host (virtual s per wall s; 0 = as fast as possible;
            None = paused, use :meth:`advance`).
        seed: makes ``os.urandom`` (privacy noise) and fault randomness deterministic (simulation only).
        start_ms: virtual unix time at start (own host only).
        install: copy ``firmware/`` + ``/policy.json`` + ``/board.json`` into the flash first.
        paced: pace the data UART at the board's baud rate (False: unthrottled).
        radio_url: virtual BLE radio to put the board's peripheral on (boards with BLE).
        heap_bytes: MicroPython heap.
        check_kind: refuse a flash that holds the identity of another kind, or (without ``install``)
            firmware for another kind (``FlashKindError``), as ``civicedge sim up`` does. Off by default:
            a test may simulate a board flashed or provisioned for another kind on purpose.
    """

    def __init__(self, board: str | Path | BoardDefinition, *, device_id: str | None = None,
                 flash_dir: str | Path | None = None, host: SimHost | None = None, speed: float | None = 1.0,
                 seed: int | str | None = None, start_ms: int | None = None, install: bool = True,
                 paced: bool = True, radio_url: str | None = None, heap_bytes: int = 512 * 1024,
                 zone: str = "sim", lat: str = "0.0", lon: str = "0.0", check_kind: bool = False) -> None:
        self.definition = board if isinstance(board, BoardDefinition) else load_board(board)
        self.config: dict[str, Any] = self.definition.to_device_config()
        self.name: str = self.definition.name
        self.provision_id = device_id
        self.device_id: str = device_id or f"vb-{secrets.token_hex(4)}"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if flash_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"civicedge-{self.device_id}-")
            flash_dir = self._tmp.name
        self.flash_dir = Path(flash_dir).resolve()
        self._own_host = host is None
        self.host = host or SimHost(speed=speed, start_ms=start_ms)
        self.seed = seed
        self.install = install
        self.check_kind = check_kind
        self.paced = paced
        self.radio_url = radio_url
        self.heap_bytes = heap_bytes
        self.zone, self.lat, self.lon = zone, lat, lon
        self.io = BoardIo(self.config)
        self.console: PtyBridge | None = None
        self.data: PtyBridge | None = None
        self.ble_bridge: Any = None
        self.console_log = bytearray()
        self.events: list[dict[str, Any]] = []
        self.pwm: dict[int, dict[str, int]] = {}
        self.outputs: dict[int, int] = {}
        self.boots = 0
        self._listeners: dict[str, list[Callable[[str], Any]]] = {}
        self._console_waiters: list[asyncio.Event] = []
        self._flash_lock: FlashLock | None = None
        self._created = False
        self.started = False

    # ------------------------------------------------------------------ properties
    @property
    def console_path(self) -> str:
        """The console pty path (MicroPython REPL)."""
        if self.console is None:
            raise SimError("board is not started", board=self.device_id)
        return self.console.path

    @property
    def data_path(self) -> str | None:
        """The data-UART pty path, or None when the board has no UART link."""
        return None if self.data is None else self.data.path

    @property
    def ble_address(self) -> str | None:
        """The BLE address on the virtual radio (None without BLE or radio)."""
        return None if self.ble_bridge is None else str(self.ble_bridge.address)

    @property
    def identity_path(self) -> Path:
        """Path of ``/identity.json`` in the flash directory (holds the key; never print it)."""
        return self.flash_dir / IDENTITY_FILE

    @property
    def uart_link(self) -> dict[str, Any] | None:
        """The board's UART link config (id, tx, rx, baud) or None."""
        link = self.config.get("links", {}).get("uart")
        return dict(link) if link else None

    def info(self) -> dict[str, Any]:
        """The JSON-ready description printed by ``civicedge sim up --json``."""
        return {"id": self.device_id, "board": self.name, "kind": self.config.get("kind"),
                "console": self.console_path, "data": self.data_path, "ble_address": self.ble_address,
                "flash": str(self.flash_dir),
                "identity": str(self.identity_path) if self.identity_path.exists() else None,
                "pid": self.host.pid}

    # ------------------------------------------------------------------ lifecycle
    def claim_flash(self) -> None:
        """Lock the flash directory for this board until :meth:`stop` and, with ``check_kind``, check
        it may run on it (:meth:`start` does it too; call it first to refuse before anything else starts).

        Raises:
            FlashInUseError: another board holds the flash. FlashKindError (``check_kind``): the flash
                holds another board kind's identity (or, with ``install=False``, firmware). FlashError:
                the lock file cannot be created.
        """
        if self._flash_lock is not None:
            return
        lock = lock_flash(self.flash_dir)
        try:
            if self.check_kind:
                check_flash_kind(self.flash_dir, board=self.name, kind=str(self.config["kind"]), install=self.install)
        except BaseException:
            lock.release()
            raise
        self._flash_lock = lock

    def _release_flash(self) -> None:
        lock, self._flash_lock = self._flash_lock, None
        if lock is not None:
            lock.release()

    async def start(self) -> None:
        """Lock and prepare the flash, open the ptys, boot the board (boot.py, main.py) and attach BLE.

        Raises:
            SimHostError: the Node host failed; FlashError: the flash cannot be prepared (FlashInUseError:
                another board runs on it; FlashKindError, with ``check_kind``: it holds another kind's
                identity or firmware).
        """
        self.claim_flash()
        self._created = False
        try:
            await self._start()
        except BaseException:
            if not self._created:  # no board was asked to run on the flash: the next one may have it
                self._release_flash()
            raise

    async def _start(self) -> None:
        try:
            self.flash_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FlashError(f"cannot create flash directory {self.flash_dir}: {exc}", path=str(self.flash_dir)) from exc
        if self.install:
            install_firmware(self.flash_dir, self.config)
        if self.provision_id is not None:
            provision_identity(self.flash_dir, device_id=self.device_id, kind=str(self.config["kind"]),
                               zone=self.zone, lat=self.lat, lon=self.lon)
        else:
            # A flash that holds an identity runs as that id: name the board after it (info(), logs).
            self.device_id = identity_id(self.flash_dir) or self.device_id
        if self._own_host:
            await self.host.start()
        self.host.on_event(self.device_id, self._on_event)
        self.console = PtyBridge(self._console_input, name=f"{self.device_id}-console")
        console_registry.register(self.console.path)  # the serial backend treats it as a virtual board
        link = self.uart_link
        if link is not None:
            self.data = PtyBridge(self._uart_input, baud=int(link["baud"]) if self.paced else None,
                                  name=f"{self.device_id}-uart")
        opts = board_host_options(self.config, flash=self.flash_dir, seed=self.seed, heap_bytes=self.heap_bytes)
        if self.radio_url and "ble" in self.config.get("links", {}):
            self._attach_ble()
        self._created = True  # from here the Node host may write to the flash until stop()
        await self.host.request({"op": "create", "board": self.device_id, "opts": opts}, timeout_s=120)
        self.started = True
        if self.ble_bridge is not None:
            await self.ble_bridge.wait_ready()

    def _attach_ble(self) -> None:
        try:
            from hil.sim.radio.board_bridge import attach_ble
        except ImportError:
            logger.warning("BLE bridge not available; board %s runs without BLE", self.device_id)
            return
        assert self.radio_url is not None
        self.ble_bridge = attach_ble(self, self.radio_url)

    async def stop(self) -> None:
        """Power the board off and release its ptys (and its host, if it owns one)."""
        if self.ble_bridge is not None:
            try:
                await self.ble_bridge.close()
            except Exception as exc:  # closing must go on: the radio may already be gone
                logger.info("BLE bridge close failed: %s", exc)
            self.ble_bridge = None
        if self.started and self.host.running:
            try:
                await self.host.request({"op": "destroy", "board": self.device_id}, timeout_s=10)
            except SimError as exc:
                logger.info("destroy %s: %s", self.device_id, exc)
        self.started = False
        if self._own_host:
            await self.host.close()
        if self.console is not None:
            console_registry.unregister(self.console.path)
        for bridge in (self.console, self.data):
            if bridge is not None:
                await bridge.close()
        self._release_flash()  # the Node host no longer writes to it
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> "VirtualBoard":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ channel API
    def send(self, channel: str, payload: str) -> None:
        """Deliver ``payload`` to the board's ``_simhw.on(channel, fn)`` handler."""
        self.host.send({"op": "chan", "board": self.device_id, "ch": channel, "p": payload})

    def on(self, channel: str, callback: Callable[[str], Any]) -> None:
        """Call ``callback(payload)`` for every ``_simhw.send(channel, payload)`` on the board."""
        self._listeners.setdefault(channel, []).append(callback)

    # ------------------------------------------------------------------ stimuli / faults / clock
    async def stimulus(self, name: str, value: Any) -> None:
        """Set a sensor now (see :mod:`hil.sim.stimuli` for names and values).

        Raises:
            StimulusError: unknown name, bad value, or the board lacks the sensor.
        """
        await self.host.request({"op": "stimulus", "board": self.device_id, "s": stimulus_op(self.io, name, value)})

    async def fault(self, line: str) -> None:
        """Inject a fault now, written like a stimuli-file line: ``"drop uart 60s"``,
        ``"corrupt uart 0.05"``, ``"reset"``, ``"power_loss"``, ``"power_loss_write outbox"``,
        ``"clock_skew +30s"``, ``"ble_disconnect"``.

        Raises:
            StimulusError: unknown fault or bad arguments.
        """
        await self.host.request({"op": "fault", "board": self.device_id, "f": parse_fault(line)})

    async def load_stimuli(self, source: str | Path) -> StimuliPlan:
        """Apply a stimuli file (path or TOML text): initial values now, timelines on the virtual clock."""
        now = int((await self.host.ping())["now"])
        plan = load_stimuli(source, self.io, now)
        if plan.start_ms is not None and plan.start_ms != self.host.start_ms:
            raise StimulusError("the stimuli file sets 'start': pass it as start_ms when creating the host",
                                value=plan.start_ms)
        for op in plan.initial:
            await self.host.request({"op": "stimulus", "board": self.device_id, "s": op})
        if plan.stimuli:
            await self.host.request({"op": "stimuli", "board": self.device_id, "events": plan.stimuli})
        if plan.faults:
            await self.host.request({"op": "faults", "board": self.device_id, "events": plan.faults})
        return plan

    async def advance(self, seconds: float, *, chunk_s: float = 1.0) -> int:
        """Advance the (paused) virtual clock; returns the virtual unix time in ms."""
        return await self.host.advance(int(seconds * 1000), chunk_ms=int(chunk_s * 1000))

    async def state(self) -> dict[str, Any]:
        """Host-side state: ``state`` (booting/running/sleep/off), reset ``cause``, REPL ``mode``, link
        ``stats``, ``pwm`` and ``out`` pin levels, ``clock_offset_ms``, virtual ``now``."""
        return await self.host.request({"op": "state", "board": self.device_id})

    # ------------------------------------------------------------------ console helpers
    def console_text(self) -> str:
        """Everything the board printed so far (bounded), decoded leniently."""
        return self.console_log.decode("utf-8", errors="replace")

    async def wait_console(self, text: str, *, timeout_s: float = 10.0, since: int = 0) -> int:
        """Wait until ``text`` appears in the console output after offset ``since``; return its end offset.

        Raises:
            asyncio.TimeoutError: not seen in time.
        """
        needle = text.encode()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            idx = self.console_log.find(needle, since)
            if idx >= 0:
                return idx + len(needle)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise asyncio.TimeoutError(f"{text!r} not seen on {self.device_id}'s console")
            ev = asyncio.Event()
            self._console_waiters.append(ev)
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                pass
            finally:
                if ev in self._console_waiters:
                    self._console_waiters.remove(ev)

    def write_console(self, data: bytes) -> None:
        """Type bytes at the console (as if from the console pty)."""
        self._console_input(data)

    # ------------------------------------------------------------------ plumbing
    def _console_input(self, data: bytes) -> None:
        self.host.send({"op": "console", "board": self.device_id, "d": base64.b64encode(data).decode()})

    def _uart_input(self, data: bytes) -> None:
        link = self.uart_link
        assert link is not None
        self.host.send({"op": "uart", "board": self.device_id, "uart": link["id"],
                        "d": base64.b64encode(data).decode()})

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("ev")
        if kind == "console":
            data = base64.b64decode(ev["d"])
            self.console_log += data
            if len(self.console_log) > CONSOLE_LOG_LIMIT:
                del self.console_log[: len(self.console_log) - CONSOLE_LOG_LIMIT]
            if self.console is not None:
                self.console.write(data)
            for w in self._console_waiters:
                w.set()
        elif kind == "uart":
            link = self.uart_link
            if self.data is not None and link is not None and ev.get("uart") == link["id"]:
                self.data.write(base64.b64decode(ev["d"]))
        elif kind == "chan":
            for cb in list(self._listeners.get(ev["ch"], ())):
                try:
                    cb(ev["p"])
                except Exception:
                    logger.exception("channel %s listener failed", ev["ch"])
        else:
            if kind == "boot":
                self.boots += 1
            elif kind == "pwm":
                self.pwm[int(ev["pin"])] = {"freq": int(ev["freq"]), "duty": int(ev["duty"])}
            elif kind == "out":
                self.outputs[int(ev["pin"])] = int(ev["v"])
            elif kind == "fault" and ev.get("kind") == "ble_disconnect" and self.ble_bridge is not None:
                asyncio.get_running_loop().create_task(self.ble_bridge.disconnect_all())
            self.events.append(ev)
            if len(self.events) > 10000:
                del self.events[:5000]

"""Wire a device together from its files: board config, identity, policy -> HAL, core, app, links.

``main.py`` calls :func:`build` then :meth:`Runtime.run`. Everything hardware-related comes in
through the ``machine`` and ``bluetooth`` modules passed here, so the wiring itself is tested in
MicroPython with stand-in modules.
"""

import asyncio
import hashlib

from civic import policy as policy_mod
from civic.hal import boot as bootstate
from civic.hal import hardware, power
from civic.hal.clock import Clock
from civic.privacy.ledger import Ledger
from civic.privacy.release import Releaser
from civic.report import Reporter, parse_identity
from civic.store.outbox import Outbox
from civic.store.seq import SeqCounter
from civic.wire import frame
from civic.uplink.session import Session

STABLE_AFTER_MS = 60000  # a firmware that ran this long booted cleanly: clear the crash counter
LINK_RESTART_MS = 1000  # wait before starting a link again after its task failed

# The app of each kind: kind -> (module, class, state file under root or None). Only the board's
# kind's module is imported (an app costs heap). An app has ``configure(values)`` and ``run()``
# (the bin's awake loop is ``run_awake``); one that may deep-sleep has ``run_deep``, in which a
# wake by an input that senses people alone must not start the links (docs/privacy.md). Adding
# a kind: docs/boards.md, "Adding a sensor kind".
APPS = {
    "streetlight": ("civic.apps.streetlight", "StreetlightApp", None),
    "bin": ("civic.apps.bin", "BinApp", "state/bin.json"),
}


class DeviceFilesError(ValueError):
    """The device files do not fit together (identity kind differs from the board's kind).

    Attributes:
        key: what is inconsistent.
    """

    def __init__(self, detail, key=None):
        super().__init__("runtime: " + detail)
        self.key = key


class Runtime:
    """A built device: hardware, core objects, app and links (see :func:`build`)."""

    def __init__(self, cfg, machine, policy, seq, outbox, ledger, releaser, reporter, hw, clock, app,
                 session, links, log=print, make_links=None, link_test=False):
        self.cfg = cfg
        self.machine = machine
        self.policy = policy
        self.seq = seq
        self.outbox = outbox
        self.ledger = ledger
        self.releaser = releaser
        self.reporter = reporter
        self.hw = hw
        self.clock = clock
        self.app = app
        self.session = session
        self.links = links
        self.log = log
        self.make_links = make_links  # a deep-sleep board builds its links only when a wake needs them
        self.link_test = link_test  # civicedge check asked for a boot report at this start

    async def _stable(self):
        await asyncio.sleep_ms(STABLE_AFTER_MS)
        bootstate.mark_stable(self.machine)

    def ask_time(self):
        """Queue a boot report if the clock was never set and nothing waits to be sent.

        Periodic reports need a set clock and only an ACK sets it; without this, a board whose
        RTC lost power (every first boot, a streetlight after a mains cut) would send nothing
        and never get the time. Pending frames get an ACK with the time anyway.
        """
        if self.clock.valid() or len(self.outbox):
            return False
        try:
            self.reporter.boot(self.clock.time())
        except (ValueError, OSError) as exc:
            self.log("civicedge: boot report failed: %r" % (exc,))
            return False
        return True

    def answer_link_test(self):
        """Queue the boot report ``civicedge check`` asked for at this start (once); return its seq.

        Sent whatever the clock and the outbox hold (check then sees a report within seconds, not at
        the next window close), through the same path as every report (seq, HMAC, outbox), with no
        measurement. Not when half the outbox or more is taken: a backlog that long means the link
        is not draining it, and the frame would only bring nearer the moment a new report pushes out
        the oldest (a measurement lost for a test); the reports waiting are sent anyway, and check
        waits for them. Half, not a few free slots: a link that stays down fills a slot per window,
        so a few slots are gone within the hour.
        """
        if not self.link_test:
            return None
        self.link_test = False
        waiting, size = len(self.outbox), self.outbox.max_entries
        if 2 * waiting >= size:
            self.log("civicedge: link test: outbox half full or more (%d of %d reports wait), no boot report queued"
                     % (waiting, size))
            return None
        try:
            n = self.reporter.boot(self.clock.time())
        except (ValueError, OSError) as exc:
            self.log("civicedge: link test: boot report failed: %r" % (exc,))
            return None
        self.log("civicedge: link test: boot report queued (seq %d)" % n)
        return n

    async def _supervise(self, link):
        # A link whose task died would leave the device silent while the app still feeds the
        # watchdog: log it and start the link again.
        while True:
            try:
                await link.run()
                return
            except Exception as exc:  # noqa: BLE001 - any failure: restart the link
                self.log("civicedge: link %s failed: %r; restarting it" % (type(link).__name__, exc))
                await asyncio.sleep_ms(LINK_RESTART_MS)

    async def run(self):
        """Run the device: links and app as asyncio tasks, with the watchdog started."""
        self.hw.start_watchdog()
        if self.cfg["sleep"]["mode"] == "deep":
            # the app starts the links only if this wake needs them: not for a wake by an input
            # that senses people alone (a bin's lid: BinApp.on_pin_wake), whose frames or adverts
            # would reveal when someone was there. build() refused an app without run_deep.
            await self.app.run_deep(power.woke_by_pin(self.machine) if power.woke_from_deepsleep(self.machine) else False,
                                    lambda: len(self.outbox), self.deep_sleep, start_links=self.start_links)
            return
        self.start_links()
        asyncio.create_task(self._stable())
        run = getattr(self.app, "run_awake", None) or self.app.run
        await run()

    def build_links(self):
        """Build the links if they wait to be built (a deep-sleep board); return them."""
        if self.make_links is not None:
            self.links.extend(self.make_links())
            self.make_links = None
        return self.links

    def start_links(self):
        """Build the links if needed, queue a boot report if check asked for one or the clock needs
        the time, start the link tasks."""
        self.build_links()
        if self.answer_link_test() is None:
            self.ask_time()
        for link in self.links:
            asyncio.create_task(self._supervise(link))

    def deep_sleep(self, ms, wake_names):
        """Arm the wake pins and deep-sleep ``ms`` (a clean cycle: crash counter cleared)."""
        bootstate.mark_stable(self.machine)
        pins = [self.hw.io[n] for n in wake_names if n in self.hw.io]
        if pins:
            level = self.cfg["io"][wake_names[0]].get("active", 1)
            power.arm_wake_pins(pins, level)
        self.log("civicedge: deep sleep %d ms" % ms)
        self.machine.deepsleep(max(ms, 1))


def _framed_by(data, device_id, key):
    """True if ``data`` is a frame of ``device_id`` whose tag verifies under ``key``."""
    try:
        return frame.parse(data, key)[1] == device_id
    except frame.FrameError:
        return False


def _radio_on(radios):
    """True while one of ``radios`` (BLE objects) is active: the ESP32 RNG is then truly random.

    A board without a working radio (no BLE link, the controller failed, no ``bluetooth``
    module) never draws noise: its noisy counts are held, not released (docs/privacy.md §5).
    """
    for ble in radios:
        try:
            if ble.active():
                return True
        except OSError:
            pass
    return False


def app_class(kind, deep=False):
    """The app class of ``kind`` (imported now) and its state file name (or None).

    Raises:
        DeviceFilesError: no app for the kind, or ``deep`` (sleep mode "deep") for an app
            without a deep-sleep cycle (``run_deep``).
    """
    entry = APPS.get(kind)
    if entry is None:
        raise DeviceFilesError("no app for kind %r (apps: %s)" % (kind, ", ".join(sorted(APPS))), "kind")
    cls = getattr(__import__(entry[0], None, None, (entry[1],)), entry[1])
    if deep and not hasattr(cls, "run_deep"):
        # it would run awake with its links on: a battery drained, and wake times on the air
        raise DeviceFilesError("sleep mode 'deep' but the %s app has no deep-sleep cycle" % kind, "sleep.mode")
    return cls, entry[2]


def build(cfg, identity_doc, machine, bluetooth=None, root="/", log=print, link_test=False):
    """Build a :class:`Runtime` from parsed device files.

    Args:
        cfg: parsed ``/board.json``.
        identity_doc: parsed ``/identity.json``.
        machine: the ``machine`` module.
        bluetooth: the ``bluetooth`` module (None: no BLE link even if the board has one).
        root: flash directory holding ``policy.json`` and the firmware's state files.
        log: console output.
        link_test: ``civicedge check`` asked for a boot report at this start
            (:func:`civic.hal.boot.take_link_test`); sent when the links start.

    Raises:
        civic.report.IdentityError, civic.policy.PolicyError, DeviceFilesError: bad device files
            (DeviceFilesError too for a kind without an app: :func:`app_class`).
    """
    device_id, kind, key = parse_identity(identity_doc)
    if kind != cfg["kind"]:
        raise DeviceFilesError("identity kind %r but board kind %r" % (kind, cfg["kind"]), "kind")
    deep = cfg["sleep"]["mode"] == "deep"
    app_cls, state_file = app_class(kind, deep)  # before any file is opened or pin set up
    pol = policy_mod.load(kind, root + "policy.json")
    seq = SeqCounter(root + "seq.bin")
    outbox = Outbox(root + "outbox", accept=lambda data: _framed_by(data, device_id, key),
                    owner=hashlib.sha256(device_id.encode() + key).digest()[:8])
    if outbox.foreign:
        log("civicedge: %d outbox frame(s) framed under another identity or key dropped" % outbox.foreign)
    held = outbox.pending()
    if held:  # seq.bin and its copy lost (a fresh counter): never hand out a seq the outbox still holds
        seq.at_least(held[-1])
    ledger = Ledger(root + "ledger.json", pol.day_budgets())
    radios = []  # BLE objects of the links: os.urandom is truly random only while one is active
    releaser = Releaser(pol.fields, ledger, rng_ready=lambda: _radio_on(radios))
    reporter = Reporter(device_id, key, pol, seq, outbox)
    hw = hardware.build(cfg, machine)
    clock = Clock(hw.rtc())
    if state_file is None:
        app = app_cls(hw, cfg, pol, reporter, releaser, clock, log=log)
    else:
        app = app_cls(hw, cfg, pol, reporter, releaser, clock, state_path=root + state_file, log=log)
    session = Session(device_id, key, outbox, seq, set_time=clock.set_time, now=clock.time,
                      config_path=root + "config.json", config_keys=pol.config_keys, on_config=app.configure)
    reporter.on_queued = session.notify
    app.configure(session.config.get("values", {}))

    def make_links():
        links = []
        uart = hw.uart()
        if uart is not None:
            from civic.uplink.uart import UartLink
            links.append(UartLink(uart, session))
        ble_cfg = cfg["links"].get("ble")
        if ble_cfg is not None and bluetooth is not None:
            from civic.uplink.ble import BleLink
            try:
                ble = bluetooth.BLE()
                links.append(BleLink(ble, bluetooth.UUID, session, preferred_mtu=ble_cfg.get("mtu", 247)))
                radios.append(ble)
            except (OSError, ValueError) as exc:
                # a radio that fails to come up must not stop the sensing or the other link
                log("civicedge: BLE unavailable: %r" % (exc,))
        return links

    if deep:
        return Runtime(cfg, machine, pol, seq, outbox, ledger, releaser, reporter, hw, clock, app, session, [],
                       log, make_links, link_test)
    return Runtime(cfg, machine, pol, seq, outbox, ledger, releaser, reporter, hw, clock, app, session,
                   make_links(), log, None, link_test)

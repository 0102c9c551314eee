// One virtual board: a MicroPython interpreter, its host-directory flash, simulated peripherals
// (pins, ADC, PWM, UART, RTC + RTC memory, WDT, deep sleep, time_pulse_us) and the console REPL.
// Peripheral state lives here, outside the interpreter, so it survives soft/hard/deep-sleep
// resets exactly as on an ESP32 (RTC memory and the RTC clock survive; power loss clears them).
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ERRNO_PRELUDE } from "./errno.mjs";
import { makeHostFS } from "./hostfs.mjs";
import { capture, enter } from "./mpcontext.mjs";
import { byteSource } from "./random.mjs";

export const CAUSE = { PWRON: 1, HARD: 2, WDT: 3, DEEPSLEEP: 4, SOFT: 5 };
const WAKE = { NONE: 0, PIN: 3, TIMER: 4 };
const RX_LIMIT = 65536;

/** Thrown through the interpreter when power is cut in the middle of a flash write. */
export class PowerLoss extends Error {
  constructor() { super("simulated power loss"); this.name = "PowerLoss"; }
}

const PRELUDE = `
import sys, os, binascii, time, _simhw
def _urandom(n, _h=_simhw, _u=binascii.unhexlify):
    return _u(_h.urandom(n))
os.urandom = _urandom
_gm = time.gmtime
def _time(_h=_simhw):
    return int(_h.time_ms()) // 1000
def _time_ns(_h=_simhw):
    return int(_h.time_ms()) * 1000000
def _gmtime(s=None, _g=_gm, _t=_time):
    return _g(_t() if s is None else s)
def _sleep(s, _h=_simhw):
    _h.sleep_ms(int(s * 1000))
def _sleep_ms(ms, _h=_simhw):
    _h.sleep_ms(ms)
def _sleep_us(us, _h=_simhw):
    _h.sleep_ms(us // 1000)
time.time = _time
time.time_ns = _time_ns
time.gmtime = _gmtime
time.localtime = _gmtime
time.sleep = _sleep
time.sleep_ms = _sleep_ms
time.sleep_us = _sleep_us
# A board's os.uname() (the wasm port has none): its machine string names the board's chip, as an
# ESP32's "... with ESP32C3" does, so the field tools learn the chip from MicroPython here too.
def _uname_of(cfg):
    from collections import namedtuple
    import json
    chip = json.loads(cfg).get('chip') or 'esp32'
    rel = '%d.%d.%d' % sys.implementation.version[:3]
    res = namedtuple('uname_result', ('sysname', 'nodename', 'release', 'version', 'machine'))(
        chip, chip, rel, 'v%s (civicedge simulator)' % rel, 'civicedge virtual board with ' + chip.upper())
    return lambda: res
os.uname = _uname_of(_simhw.config())
${ERRNO_PRELUDE}# VfsPosix lists (name, type, inode); littlefs/FAT on a board add the size (mpremote shows it).
_il = os.ilistdir
def _ilistdir(*a, _il=_il, _os=os):
    d = a[0] if a else ''
    if isinstance(d, bytes):
        d = d.decode()
    pre = d + '/' if d and d[-1] != '/' else d
    for e in _il(*a):
        if len(e) == 3:
            try:
                size = 0 if e[1] == 0x4000 else _os.stat(pre + (e[0].decode() if isinstance(e[0], bytes) else e[0]))[6]
            except OSError:
                size = 0
            e = (e[0], e[1], e[2], size)
        yield e
os.ilistdir = _ilistdir
del _il, _ilistdir
sys.path.append('/sim')
import machine, esp32
try:
    import bluetooth
except ImportError:
    pass
sys.path.remove('/sim')
del _urandom, _time, _time_ns, _gmtime, _sleep, _sleep_ms, _sleep_us, _gm
`;

const STOP_TASKS = `
try:
    from asyncio import core as _c
    while _c._task_queue.peek():
        _c._task_queue.pop()
    if _c.asyncio_timer is not None:
        _c.js.clearTimeout(_c.asyncio_timer)
        _c.asyncio_timer = None
    del _c
except Exception:
    pass
`;

export class Board {
  /**
   * @param {object} host the Host (emit(), clock, realImmediate, realDelay)
   * @param {string} id board id
   * @param {object} o {config, flash, pins, adc_pins, uart_ids, lamp, heap, seed, mpyDir, uid}
   */
  constructor(host, id, o) {
    this.host = host;
    this.id = id;
    this.cfg = o.config || {};
    this.flash = o.flash;
    this.heap = o.heap || 512 * 1024;
    this.validPins = new Set(o.pins || []);
    this.adcPins = new Set(o.adc_pins || []);
    this.uartIds = new Set(o.uart_ids || []);
    this.lamp = o.lamp || null;
    this.mpyFiles = o.mpyFiles;
    this.uid = crypto.createHash("sha256").update(id).digest().subarray(0, 6);
    this.random = byteSource(o.seed === null || o.seed === undefined ? null : `${o.seed}:${id}`);
    this.faultRandom = byteSource(o.seed === null || o.seed === undefined ? null : `${o.seed}:${id}:faults`);
    // peripheral state (survives resets)
    // pin -> level driven from outside (stimulus); starts at the sensors' rest levels
    this.ext = new Map(Object.entries(o.rest || {}).map(([pin, level]) => [Number(pin), level]));
    this.out = new Map();      // pin -> level driven by the firmware
    this.pull = new Map();
    this.adc = new Map();      // pin -> microvolts
    this.pwm = new Map();      // pin -> {freq, duty}
    this.echo = new Map();     // pin -> echo pulse length (us)
    this.lampFailed = false;
    this.slowBootMs = 0;       // wall ms added to every boot (fault "slow_boot", a test hook)
    this.rx = new Map();       // uart id -> Buffer
    this.rtcMem = Buffer.alloc(0);
    this.clockOffsetMs = 0;
    this.nvs = {};
    this.faults = { dropUntil: {}, corrupt: {}, cutWrite: null };
    this.wakePins = [];
    this.wakeLevel = 1;
    this.stats = { uart_tx: 0, uart_rx: 0, dropped: 0, corrupted: 0, rx_overflow: 0, boots: 0, chan_dropped: 0 };
    // interpreter state (per boot)
    this.mp = null;
    this.gen = 0;
    this.state = "off";
    this.mode = "friendly";
    this.irqs = new Map();
    this.uartIrqs = new Map(); // uart id -> fn (RX / RX-idle interrupt)
    this.channels = new Map();
    this.conOut = [];
    this.lastOut = 0;
    this.inQueue = [];
    this.pumping = false;
    this.paste = [];
    this.wdt = null;
    this.sleepTimer = null;
    this.resetCause = CAUSE.PWRON;
    this.wakeReason = WAKE.NONE;
  }

  // ---------------------------------------------------------------- lifecycle
  async boot(cause, { runMain = true } = {}) {
    this.halt();
    const gen = ++this.gen;
    this.state = "booting";
    this.resetCause = cause;
    this.stats.boots++;
    try {
      await this.load(gen);
    } catch (e) {
      // A boot that fails (the interpreter does not load, the prelude raises) must not stay
      // "booting": a paused clock waits for booting boards. It ends off, like a dead board.
      if (gen === this.gen) {
        this.halt();
        this.host.emit({ ev: "boot_failed", board: this.id, cause, error: String(e && e.message ? e.message : e) });
      }
      throw e;
    }
    if (gen !== this.gen) return;
    this.state = "running";
    this.host.emit({ ev: "boot", board: this.id, cause, gen });
    const raw = this.mode === "raw";
    this.runFile(gen, "boot.py");
    if (gen !== this.gen) return;
    if (runMain && !raw) this.runFile(gen, "main.py");
    if (gen !== this.gen) return;
    enter(this.ctx);
    this.mp.replInit();
    if (raw) this.mp.replProcessChar(1);
    this.pump();
  }

  /** Load a fresh interpreter with the board's modules and flash (sets this.mp unless reset meanwhile). */
  async load(gen) {
    // Test hook (fault "slow_boot"): a host too loaded to load the interpreter for this long.
    if (this.slowBootMs > 0) await new Promise((r) => this.host.realDelay(r, this.slowBootMs));
    if (gen !== this.gen) return;
    const write = (b) => { if (gen === this.gen) this.console(b); };
    const mp = await loadMicroPython({ heapsize: this.heap, linebuffer: false, stdout: write, stderr: write });
    const ctx = capture(mp); // several interpreters share the glue's globals: see mpcontext.mjs
    if (gen !== this.gen) return; // reset again while loading
    this.ctx = ctx;
    mp.registerJsModule("_simhw", this.hwApi(gen));
    mp.FS.mkdir("/sim");
    for (const [name, text] of this.mpyFiles) mp.FS.writeFile(`/sim/${name}`, text);
    mp.runPython(PRELUDE);
    // The host directory becomes the interpreter's root: MicroPython's own VfsPosix at "/" then
    // sees exactly the board's flash (the simulated modules in MEMFS /sim are already imported).
    const hostfs = makeHostFS(mp.FS, {
      beforeWrite: (p, n) => this.beforeFlashWrite(p, n),
      afterCutWrite: () => { throw new PowerLoss(); },
    });
    let st = null;
    try { st = fs.statSync(this.flash); } catch { /* named below */ }
    if (!st || !st.isDirectory()) {
      throw new Error(`flash directory ${this.flash} ${st ? "is not a directory" : "does not exist"}`);
    }
    mp.FS.mkdir("/flash");
    mp.FS.mount(hostfs, { root: this.flash }, "/flash");
    mp.FS.root = mp.FS.lookupPath("/flash").node;
    mp.FS.root.mount.mountpoint = "/";
    mp.runPython("import os\nos.chdir('/')\n");
    this.mp = mp;
  }

  runFile(gen, name) {
    const p = path.join(this.flash, name);
    if (!fs.existsSync(p)) return;
    this.guard(gen, () => this.mp.runPython(fs.readFileSync(p, "utf8")));
  }

  /** Run interpreter code; Python errors print like a board; a power loss/halts end the boot. */
  guard(gen, fn) {
    try {
      enter(this.ctx);
      return fn();
    } catch (e) {
      if (e instanceof PowerLoss) return undefined;
      if (e && e.name === "PythonError") {
        if (gen === this.gen && e.type !== "SystemExit" && !String(e.message).includes("_Halted")) {
          this.console(Buffer.from(String(e.message)));
        }
        return undefined;
      }
      if (gen === this.gen) this.host.log(`board ${this.id}: host error ${e && e.stack ? e.stack : e}`);
      return undefined;
    }
  }

  /** Stop the interpreter now (power off / reset / deep sleep). */
  halt() {
    const old = this.mp;
    const oldCtx = this.ctx;
    this.gen++;
    this.mp = null;
    this.state = "off";
    this.irqs.clear();
    this.uartIrqs.clear();
    this.channels.clear();
    if (this.wdt) { clearTimeout(this.wdt.timer); this.wdt = null; }
    if (this.sleepTimer) { clearTimeout(this.sleepTimer); this.sleepTimer = null; }
    if (old) {
      // Empty its asyncio queue once control is back at the top level (never re-enter).
      this.host.realImmediate(() => { try { enter(oldCtx); old.runPython(STOP_TASKS); } catch { /* dead */ } });
    }
  }

  reset(cause, delayMs = 1) {
    this.halt();
    if (cause !== CAUSE.SOFT) this.mode = "friendly";
    const gen = this.gen;
    setTimeout(() => { if (gen === this.gen) this.boot(cause).catch((e) => this.host.log(String(e))); }, delayMs);
  }

  powerLoss(offMs = 100) {
    this.rtcMem = Buffer.alloc(0);
    // An RTC without power restarts from the epoch, as on an ESP32: at power-up the board's clock
    // reads 1970-01-01 00:00:00 and the firmware must get the time from the gateway again.
    this.clockOffsetMs = -(Date.now() + offMs);
    this.mode = "friendly";
    this.host.emit({ ev: "power", board: this.id, on: false });
    this.reset(CAUSE.PWRON, offMs);
  }

  deepsleep(ms) {
    this.halt();
    this.mode = "friendly";
    const gen = this.gen;
    this.state = "sleep";
    this.wakeReason = WAKE.TIMER;
    this.host.emit({ ev: "sleep", board: this.id, ms });
    if (ms > 0) this.sleepTimer = setTimeout(() => this.wake(gen, WAKE.TIMER), ms);
  }

  wake(gen, reason) {
    if (gen !== this.gen || this.state !== "sleep") return;
    this.wakeReason = reason;
    this.boot(CAUSE.DEEPSLEEP).catch((e) => this.host.log(String(e)));
  }

  beforeFlashWrite(p, n) {
    const cut = this.faults.cutWrite;
    if (!cut || (cut.match && !p.includes(cut.match))) return undefined;
    this.faults.cutWrite = null;
    this.host.emit({ ev: "fault", board: this.id, kind: "power_loss_write", path: p, wrote: Math.floor(n * cut.fraction), of: n });
    this.powerLoss(cut.off_ms);
    return Math.floor(n * cut.fraction);
  }

  // ---------------------------------------------------------------- console
  console(bytes) {
    for (const b of bytes) {
      if (b === 10 && this.lastOut !== 13) this.conOut.push(13); // cooked output, like a board
      this.conOut.push(b);
      this.lastOut = b;
    }
    this.host.scheduleFlush();
  }

  consoleIn(bytes) {
    for (const b of bytes) this.inQueue.push(b);
    this.pump();
  }

  pump() {
    while (this.inQueue.length && this.mp && this.state === "running") {
      const b = this.inQueue.shift();
      const gen = this.gen;
      if (this.mode === "raw" && (this.paste.length || b === 5)) {
        this.paste.push(b);
        const p = this.paste;
        if (p.length === 3 && p[1] === 65 && p[2] === 1) {
          // Raw-paste request: answer "not supported" so clients fall back to the raw REPL.
          this.paste = [];
          this.console(Buffer.from("R\x00"));
        } else if (p.length === 3 || (p.length === 2 && p[1] !== 65)) {
          this.paste = [];
          for (const c of p) this.feed(gen, c);
        }
        continue;
      }
      this.feed(gen, b);
    }
  }

  feed(gen, b) {
    if (gen !== this.gen || !this.mp) return;
    if (b === 3) this.guard(gen, () => this.mp.runPython(STOP_TASKS)); // Ctrl-C stops main's tasks
    const r = this.guard(gen, () => this.mp.replProcessChar(b));
    if (gen !== this.gen) return;
    if (b === 1 && this.mode === "friendly") this.mode = "raw";
    else if (b === 2 && this.mode === "raw") this.mode = "friendly";
    if (r === 256) {
      this.console(Buffer.from("MPY: soft reboot\r\n"));
      this.halt();
      this.boot(CAUSE.SOFT).catch((e) => this.host.log(String(e)));
    }
  }

  flush() {
    const out = [];
    if (this.conOut.length) {
      out.push({ ev: "console", board: this.id, d: Buffer.from(this.conOut).toString("base64") });
      this.conOut = [];
    }
    return out;
  }

  // ---------------------------------------------------------------- links
  linkDropped(link) {
    const until = this.faults.dropUntil[link] ?? this.faults.dropUntil.all;
    return until !== undefined && Date.now() < until;
  }

  corrupt(link, buf) {
    const c = this.faults.corrupt[link] ?? this.faults.corrupt.all;
    if (!c || (c.until !== undefined && Date.now() >= c.until)) return buf;
    const out = Buffer.from(buf);
    const rnd = this.faultRandom(out.length * 2);
    for (let i = 0; i < out.length; i++) {
      if (rnd[2 * i] / 256 < c.rate) {
        out[i] ^= 1 << (rnd[2 * i + 1] & 7);
        this.stats.corrupted++;
      }
    }
    return out;
  }

  uartOut(id, buf) {
    this.stats.uart_tx += buf.length;
    if (this.linkDropped("uart")) { this.stats.dropped += buf.length; return; }
    this.host.emit({ ev: "uart", board: this.id, uart: id, d: this.corrupt("uart", buf).toString("base64") });
  }

  uartIn(id, buf) {
    if (this.linkDropped("uart")) { this.stats.dropped += buf.length; return; }
    buf = this.corrupt("uart", buf);
    const cur = this.rx.get(id) || Buffer.alloc(0);
    let next = Buffer.concat([cur, buf]);
    if (next.length > RX_LIMIT) {
      this.stats.rx_overflow += next.length - RX_LIMIT;
      next = next.subarray(next.length - RX_LIMIT);
    }
    this.rx.set(id, next);
    this.stats.uart_rx += buf.length;
    const irq = this.uartIrqs.get(id);
    if (irq && this.mp && this.state === "running") this.guard(this.gen, () => irq());
  }

  chanIn(ch, payload) {
    if (ch === "ble" && this.linkDropped("ble") && this.bleDropped(payload)) return;
    const fn = this.channels.get(ch);
    if (!fn || !this.mp) { this.stats.chan_dropped++; return; }
    const gen = this.gen;
    this.guard(gen, () => fn(payload));
  }

  /** While BLE is dropped, a central that reconnects is thrown off again and its writes are lost;
   * returns true for a message that must not reach the board. */
  bleDropped(payload) {
    let ev;
    try {
      ev = JSON.parse(payload).ev;
    } catch {
      return false;
    }
    if (ev === "connect") {
      // The board sees the connection (and re-advertises when it is dropped right after).
      this.host.emit({ ev: "fault", board: this.id, kind: "ble_disconnect" });
      return false;
    }
    if (ev !== "write" && ev !== "mtu") return false;
    this.stats.dropped++;
    return true;
  }

  // ---------------------------------------------------------------- stimuli
  setPin(pin, level) {
    const before = this.readPin(pin);
    this.ext.set(pin, level ? 1 : 0);
    const after = this.readPin(pin);
    if (before === after) return;
    if (this.state === "sleep" && this.wakePins.includes(pin) && after === this.wakeLevel) {
      this.wake(this.gen, WAKE.PIN);
      return;
    }
    const irq = this.irqs.get(pin);
    if (irq && ((after && irq.trigger & 1) || (!after && irq.trigger & 2))) {
      this.guard(this.gen, () => irq.fn());
    }
  }

  pulse(pin, level, ms) {
    this.setPin(pin, level);
    setTimeout(() => this.setPin(pin, level ? 0 : 1), Math.max(1, ms));
  }

  readPin(pin) {
    if (this.out.has(pin)) return this.out.get(pin);
    if (this.ext.has(pin)) return this.ext.get(pin);
    return this.pull.get(pin) === 2 ? 1 : 0;
  }

  adcMicrovolts(pin) {
    if (this.lamp && pin === this.lamp.adc_pin && !this.adc.has(pin)) {
      const pwm = this.pwm.get(this.lamp.pwm_pin);
      const duty = this.lampFailed || !pwm ? 0 : pwm.duty;
      return Math.round(this.lamp.uv_offset + (this.lamp.uv_full * duty) / 65535);
    }
    return this.adc.get(pin) ?? 0;
  }

  // ---------------------------------------------------------------- _simhw (called from Python)
  hwApi(gen) {
    const live = () => gen === this.gen;
    const b = this;
    return {
      config: () => JSON.stringify(b.cfg),
      pins_json: () => JSON.stringify([...b.validPins]),
      urandom: (n) => b.random(n).toString("hex"),
      time_ms: () => String(Date.now() + b.clockOffsetMs), // a string: JS numbers > 2^31 do not convert
      rtc_set_ms: (ms) => { if (live()) b.clockOffsetMs = Number(String(ms)) - Date.now(); },
      rtc_mem_get: () => b.rtcMem.toString("hex"),
      rtc_mem_set: (hex) => { if (live()) b.rtcMem = Buffer.from(String(hex), "hex"); },
      sleep_ms: (ms) => { if (live() && ms > 0) b.host.clock.setSystemTime(Date.now() + Number(ms)); },
      pin_init: (pin, mode, pull, value) => {
        if (!live()) return;
        if (pull !== -1) b.pull.set(pin, pull);
        if (mode === 3 || mode === 7) {
          b.out.set(pin, value === -1 ? (b.out.get(pin) ?? 0) : value);
          b.host.emit({ ev: "out", board: b.id, pin, v: b.out.get(pin) });
        } else if (mode !== -1) b.out.delete(pin);
      },
      pin_get: (pin) => b.readPin(pin),
      pin_set: (pin, v) => {
        if (!live()) return;
        const prev = b.out.get(pin);
        b.out.set(pin, v);
        if (prev !== v) b.host.emit({ ev: "out", board: b.id, pin, v });
      },
      pin_irq: (pin, trigger, fn) => {
        if (!live()) return;
        if (!fn || !trigger) b.irqs.delete(pin);
        else b.irqs.set(pin, { trigger, fn });
      },
      adc_ok: (pin) => b.adcPins.has(pin),
      adc_uv: (pin) => b.adcMicrovolts(pin),
      pwm_set: (pin, freq, duty) => {
        if (!live()) return;
        const prev = b.pwm.get(pin);
        b.pwm.set(pin, { freq, duty });
        if (!prev || prev.duty !== duty || prev.freq !== freq) b.host.emit({ ev: "pwm", board: b.id, pin, freq, duty });
      },
      uart_ok: (id) => b.uartIds.has(id),
      uart_init: () => {},
      uart_irq: (id, trigger, fn) => {
        if (!live()) return;
        if (!fn || !trigger) b.uartIrqs.delete(id);
        else b.uartIrqs.set(id, fn);
      },
      uart_any: (id) => (b.rx.get(id) || Buffer.alloc(0)).length,
      uart_read: (id, n) => {
        const cur = b.rx.get(id) || Buffer.alloc(0);
        if (!cur.length) return "";
        const k = n < 0 ? cur.length : Math.min(n, cur.length);
        b.rx.set(id, cur.subarray(k));
        return cur.subarray(0, k).toString("hex");
      },
      uart_readline: (id) => {
        const cur = b.rx.get(id) || Buffer.alloc(0);
        if (!cur.length) return "";
        const nl = cur.indexOf(10);
        const k = nl < 0 ? cur.length : nl + 1;
        b.rx.set(id, cur.subarray(k));
        return cur.subarray(0, k).toString("hex");
      },
      uart_write: (id, hex) => { if (live()) b.uartOut(id, Buffer.from(String(hex), "hex")); },
      time_pulse_us: (pin, level, timeout) => {
        const us = b.echo.get(pin);
        if (us === undefined) return b.readPin(pin) === level ? -1 : -2;
        return us > timeout ? -1 : us;
      },
      wdt_start: (timeout) => {
        if (!live()) return;
        if (b.wdt) clearTimeout(b.wdt.timer);
        b.wdt = { timeout: Number(timeout), timer: null };
        b.wdtArm();
      },
      wdt_feed: () => { if (live() && b.wdt) b.wdtArm(); },
      deepsleep: (ms) => { if (live()) b.deepsleep(Number(ms)); },
      reset: () => { if (live()) b.reset(CAUSE.HARD); },
      soft_reset: () => { if (live()) { b.console(Buffer.from("MPY: soft reboot\r\n")); b.reset(CAUSE.SOFT); } },
      reset_cause: () => b.resetCause,
      wake_reason: () => (b.resetCause === CAUSE.DEEPSLEEP ? b.wakeReason : WAKE.NONE),
      unique_id: () => b.uid.toString("hex"),
      wake_pins: (json, level) => { if (live()) { b.wakePins = JSON.parse(json); b.wakeLevel = level; } },
      nvs_get: (ns) => b.nvs[ns] ?? "",
      nvs_set: (ns, text) => { if (live()) b.nvs[ns] = String(text); },
      send: (ch, payload) => { if (live()) b.host.emit({ ev: "chan", board: b.id, ch: String(ch), p: String(payload) }); },
      on: (ch, fn) => { if (live()) b.channels.set(String(ch), fn); },
    };
  }

  wdtArm() {
    clearTimeout(this.wdt.timer);
    const gen = this.gen;
    this.wdt.timer = setTimeout(() => {
      if (gen !== this.gen) return;
      this.host.emit({ ev: "wdt", board: this.id });
      this.reset(CAUSE.WDT);
    }, this.wdt.timeout);
  }
}

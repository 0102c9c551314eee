// civicedge simulator host: runs one or many virtual boards (real MicroPython, WebAssembly) in
// one Node process on a shared virtual clock, driven by a Python supervisor over stdio.
//
// Protocol (one JSON object per line, both directions; bytes are base64 in "d"); see
// docs/simulator.md for the full list. Supervisor -> host: {"op": ...}; host -> supervisor:
// {"ev": ...}. Usage: node host.mjs [--start UNIX_MS] [--speed X]   (X = 0: as fast as possible,
// at wall rate while a board someone typed at waits at its REPL: see replWaiting)
import FakeTimers from "@sinonjs/fake-timers";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { Board, CAUSE } from "./js/board.mjs";
import { install as installContexts, wrapTimers } from "./js/mpcontext.mjs";
import { format } from "node:util";

// stdout carries the JSON-lines protocol only. The Emscripten glue prints through console.log
// (its default TTY, warnings); route every console method to stderr so nothing splices into it.
for (const name of ["log", "info", "warn", "debug"]) {
  console[name] = (...args) => process.stderr.write(`console.${name}: ${format(...args)}\n`);
}

const real = { setTimeout: globalThis.setTimeout, setInterval: globalThis.setInterval, setImmediate: globalThis.setImmediate, now: Date.now };
const HERE = path.dirname(fileURLToPath(import.meta.url));

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const startMs = Number(arg("--start", String(Date.now())));
let speed = Number(arg("--speed", "1"));

// Virtual time for every board in this process (captured real timers above drive it and our IPC).
const clock = FakeTimers.install({
  now: startMs,
  toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"],
});
installContexts(); // per-interpreter glue globals (see js/mpcontext.mjs)
wrapTimers(); // timer callbacks re-enter the interpreter that scheduled them

// Timers that Python code scheduled, per interpreter (its Emscripten module): asyncio's sleeps
// (js.setTimeout with a Python callable, which the glue passes as a function with a `_ref`).
// A board with none is not sleeping on a timer: at its REPL it waits for console input
// (see replWaiting). The board's own timers (watchdog, resets, pulses) are not Python's.
const pyTimers = new WeakMap(); // Module -> Set of timer ids
const pyTimerSet = new Map(); // timer id -> its Set in pyTimers
function trackPythonTimers() {
  for (const [setName, clearName] of [["setTimeout", "clearTimeout"], ["setInterval", "clearInterval"]]) {
    const set = globalThis[setName];
    const clear = globalThis[clearName];
    const once = setName === "setTimeout";
    globalThis[setName] = function (fn, ms, ...args) {
      if (typeof fn !== "function" || !("_ref" in fn)) return set(fn, ms, ...args);
      const mod = globalThis.Module; // the interpreter calling (mpcontext keeps it current)
      let ids = pyTimers.get(mod);
      if (ids === undefined) pyTimers.set(mod, (ids = new Set()));
      let key = null;
      const timer = set(function (...a) {
        if (once) { ids.delete(key); pyTimerSet.delete(key); }
        return fn.apply(this, a);
      }, ms, ...args);
      key = Number(timer);
      ids.add(key);
      pyTimerSet.set(key, ids);
      return timer;
    };
    globalThis[clearName] = function (timer) {
      const key = Number(timer);
      const ids = pyTimerSet.get(key);
      if (ids !== undefined) { ids.delete(key); pyTimerSet.delete(key); }
      return clear(timer);
    };
  }
}
trackPythonTimers();

const MPY_DIR = path.join(HERE, "mpy");
const mpyFiles = fs.readdirSync(MPY_DIR).filter((n) => n.endsWith(".py")).map((n) => [n, fs.readFileSync(path.join(MPY_DIR, n), "utf8")]);

const boards = new Map();
let outLines = [];
let flushScheduled = false;

const host = {
  clock,
  realImmediate: (fn) => real.setImmediate(fn),
  realDelay: (fn, ms) => real.setTimeout(fn, ms),
  emit(obj) {
    outLines.push(JSON.stringify(obj));
    host.scheduleFlush();
  },
  log(msg) { process.stderr.write(`simhost: ${msg}\n`); },
  scheduleFlush() {
    if (flushScheduled) return;
    flushScheduled = true;
    real.setImmediate(flush);
  },
};

function flush() {
  flushScheduled = false;
  const lines = [];
  for (const b of boards.values()) for (const m of b.flush()) lines.push(JSON.stringify(m));
  // console output first so a boot banner precedes its events; uart/chan events keep their order
  const all = lines.concat(outLines);
  outLines = [];
  if (all.length) process.stdout.write(all.join("\n") + "\n");
}

function reply(req, obj) {
  host.emit(Object.assign({ ev: "reply", rid: req.rid }, obj));
}

// ------------------------------------------------------------------ clock driver
let lastReal = real.now();
let carry = 0;
const DRIVE_BUDGET_MS = 30; // wall time per drive() spent running board timers
const MAX_BACKLOG_WALL_MS = 500; // virtual time owed beyond this is dropped (the host runs slower)
let advancing = false;
// Virtual time the free-running clock stops at (null: none). A scenario holds its boards at its end
// so that no reading is taken past it, whatever the speed (the clock can still be advanced).
let holdAt = null;

// Boards given console input (Ctrl-C, mpremote, a person typing) -> the boot (gen) it reached.
// One of them that sits at its REPL with no Python timer waits for the next input, which comes
// in wall time: at speed 0 the clock then runs at wall rate instead of jumping to the next timer
// (its watchdog's expiry, say), as a real board left at the REPL is not time-warped. A board
// nobody typed at (unprovisioned, or its firmware returned or crashed to the REPL) does not hold
// the clock back. Any boot (soft reset, reset, wake) ends the wait until input comes again.
const consoleUsers = new Map();

/** The first board that waits at its REPL for console input (see consoleUsers), or null. */
function replWaiting() {
  for (const [b, gen] of consoleUsers) {
    if (b.gen !== gen || boards.get(b.id) !== b) { consoleUsers.delete(b); continue; }
    if (b.state !== "running" || !b.mp) continue;
    const ids = pyTimers.get(b.mp._module);
    if (ids === undefined || ids.size === 0) return b;
  }
  return null;
}

/** The clock's rate now: `speed`, except 1 (wall rate) at speed 0 while a board waits at its REPL. */
function rate() {
  return speed === 0 && replWaiting() !== null ? 1 : speed;
}

/** Virtual ms until the earliest pending timer (Infinity when none). */
function nextTimerIn() {
  const first = clock.timerHeap && clock.timerHeap.peek ? clock.timerHeap.peek() : null;
  return first ? Math.max(0, first.callAt - clock.now) : Infinity;
}

function runTimers(fn) {
  try {
    fn();
  } catch (e) {
    // A timer callback raised (a board halting/resetting from inside a task): other boards go on.
    if (!(e && (e.name === "PowerLoss" || e.name === "PythonError"))) host.log(`timer error: ${e && e.stack ? e.stack : e}`);
  }
}

function drive() {
  const nowReal = real.now();
  const elapsed = nowReal - lastReal;
  lastReal = nowReal;
  const pace = rate();
  if (!advancing) {
    if (pace > 0) {
      // Run the timers due in the elapsed virtual time, but for at most DRIVE_BUDGET_MS of wall
      // time: a host that cannot keep up falls behind the requested speed (the backlog is capped)
      // instead of spending ever longer ticks and starving its own I/O.
      carry = Math.min(carry + elapsed * pace, MAX_BACKLOG_WALL_MS * pace);
      let target = clock.now + Math.floor(carry);
      if (holdAt !== null && target > holdAt) {
        target = Math.max(clock.now, holdAt);
        carry = 0;
      }
      const until = real.now() + DRIVE_BUDGET_MS;
      const chunk = Math.max(1, Math.ceil(pace * 5)); // 5 ms of wall time per tick at the asked speed
      while (clock.now < target && real.now() < until) {
        runTimers(() => clock.tick(Math.min(chunk, target - clock.now)));
      }
      carry = Math.max(0, carry - Math.floor(carry) + (target - clock.now));
    } else if (pace === 0) {
      // As fast as possible: fire timers in order for ~20 ms of wall time, then let I/O in.
      carry = 0;
      const until = real.now() + 20;
      while (real.now() < until && clock.countTimers() > 0) {
        if (holdAt !== null && clock.now >= holdAt) break;
        if (replWaiting() !== null) break; // its last Python timer fired: wall rate from here on
        // next() jumps to the next timer; at a hold, tick up to it instead (timers there still fire)
        if (holdAt !== null && clock.now + nextTimerIn() > holdAt) { runTimers(() => clock.tick(holdAt - clock.now)); break; }
        runTimers(() => clock.next());
      }
    }
  }
  host.scheduleFlush();
  const held = holdAt !== null && clock.now >= holdAt;
  if (rate() === 0 && clock.countTimers() > 0 && !held) real.setImmediate(drive);
  else real.setTimeout(drive, 5);
}

// A boot (reset, wake, soft reboot, power-on) loads the interpreter in wall time; real hardware
// spends no clock on that. A paused clock asked to advance therefore waits (in wall time) while
// a board is "booting" instead of moving past it. Bounded per board and per advance: a board is
// waited for at most bootWaitMs of wall time in one advance, and not at all once it booted more
// than BOOT_LOOP_BOOTS times within BOOT_LOOP_MS of virtual time (firmware that resets at start
// would otherwise cost a boot's wall time per virtual ms); either way the host says so with a
// "boot_wait_timeout" event naming the board, and the clock goes on, so nothing hangs.
let bootWaitMs = 60000;
const BOOT_LOOP_BOOTS = 5;
const BOOT_LOOP_MS = 1000;

/** What one advance() knows about the boots it waited for (per board id). */
function bootWaits() {
  return { waited: new Map(), skip: new Set(), boots: new Map(), seen: new Map() };
}

/** The boards loading their interpreter (state "booting") that this advance still waits for. */
function bootingBoards(w) {
  const out = [];
  for (const b of boards.values()) {
    if (b.state !== "booting" || w.skip.has(b.id)) continue;
    if (w.seen.get(b.id) !== b.gen) { // a new boot of it: a boot loop is given up on
      w.seen.set(b.id, b.gen);
      const recent = (w.boots.get(b.id) ?? []).filter((t) => clock.now - t < BOOT_LOOP_MS);
      recent.push(clock.now);
      w.boots.set(b.id, recent);
      if (recent.length > BOOT_LOOP_BOOTS) {
        giveUp(w, b, `it booted ${recent.length} times within ${BOOT_LOOP_MS} virtual ms (a boot loop)`, "boot_loop");
        continue;
      }
    }
    out.push(b);
  }
  return out;
}

function giveUp(w, b, why, reason) {
  w.skip.add(b.id);
  const waited = Math.round(w.waited.get(b.id) ?? 0);
  host.log(`board ${b.id}: the paused clock stops waiting for its boots in this advance: ${why}`);
  host.emit({ ev: "boot_wait_timeout", board: b.id, reason, waited_ms: waited });
}

/**
 * Tick the paused clock by step ms, timer by timer, waiting out any boot that starts (or is
 * under way) before the clock moves on, within the limits of `w` (bootWaits(), one per advance).
 */
async function tickPastBoots(step, w) {
  let left = step;
  for (;;) {
    let booting = bootingBoards(w);
    while (booting.length) {
      const t0 = real.now();
      await new Promise((r) => real.setTimeout(r, 2));
      const dt = real.now() - t0;
      for (const b of booting) {
        const waited = (w.waited.get(b.id) ?? 0) + dt;
        w.waited.set(b.id, waited);
        if (waited >= bootWaitMs && b.state === "booting") giveUp(w, b, `still booting after ${Math.round(waited)} ms of wall time`, "timeout");
      }
      booting = bootingBoards(w);
    }
    if (left <= 0) return;
    // Up to the next timer only: one that resets or wakes a board starts its boot, waited out above.
    // A time.sleep() in a timer moves the clock by itself (setSystemTime): that is not counted in step.
    // (An overdue timer, were there one, is one no tick fires: tick the rest as one tick(step) would.)
    const first = clock.timerHeap ? clock.timerHeap.peek() : null; // no heap before the first timer
    const due = first ? first.callAt - clock.now : Infinity;
    const dt = due >= 0 ? Math.min(due, left) : left;
    runTimers(() => clock.tick(dt));
    left -= dt;
  }
}

// Bounds of one advance request (docs/simulator.md): chunks of at least 1 virtual ms, at most 366
// virtual days, and at most 10 million chunks (a chunk with nothing due costs a few wall us; 10 million
// is under a minute), so no request keeps the host busy for hours while later requests wait behind it.
const MIN_CHUNK_MS = 1;
const MAX_ADVANCE_MS = 366 * 86400 * 1000;
const MAX_ADVANCE_CHUNKS = 10_000_000;

/** Advance virtual time by ms in chunks, letting I/O through between chunks. */
async function advance(ms, chunk) {
  if (!(chunk >= MIN_CHUNK_MS)) throw new Error(`advance needs a "chunk" >= ${MIN_CHUNK_MS} ms, not ${chunk}`);
  if (ms > MAX_ADVANCE_MS) throw new Error(`advance "ms" must be at most ${MAX_ADVANCE_MS} (366 days), not ${ms}`);
  const chunks = Math.ceil(ms / chunk);
  if (chunks > MAX_ADVANCE_CHUNKS) {
    throw new Error(`advance of ${ms} ms in chunks of ${chunk} ms is ${chunks} chunks, at most ${MAX_ADVANCE_CHUNKS}: ` +
      `use a "chunk" of at least ${Math.ceil(ms / MAX_ADVANCE_CHUNKS)} ms`);
  }
  advancing = true;
  try {
    const waits = bootWaits();
    if (bootWaitMs === 0) for (const b of boards.values()) waits.skip.add(b.id); // 0: never wait
    let left = ms;
    while (left > 0) {
      const step = Math.min(left, chunk);
      if (speed < 0 && bootWaitMs > 0) await tickPastBoots(step, waits);
      else runTimers(() => clock.tick(step)); // a running clock does not wait for boots
      left -= step;
      flush();
      await new Promise((r) => real.setImmediate(r));
    }
  } finally {
    advancing = false;
  }
}

// ------------------------------------------------------------------ requests
function need(req, key) {
  if (req[key] === undefined) throw new Error(`op ${req.op} needs "${key}"`);
  return req[key];
}

/** req[key] as a number >= 0 (wall or virtual ms), or a clear error (null, "", true are not numbers). */
function msOf(req, key) {
  const v = need(req, key);
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new Error(`"${key}" must be a number of ms >= 0, not ${JSON.stringify(v)}`);
  }
  return v;
}

// The clock's speed: virtual ms per wall ms, 0 as fast as possible, < 0 paused (host.py sends -1);
// at most the gateway's [sim_clock] bound. hold_at: a virtual unix ms within Date's range, or null.
const MAX_SPEED = 1e6;
const MAX_TIME_MS = 8.64e15;

/** req.speed as a finite number <= MAX_SPEED (negative: paused), or a clear error ("nan", 1e309 are not). */
function speedOf(req) {
  const v = req.speed;
  if (typeof v !== "number" || !Number.isFinite(v) || v > MAX_SPEED) {
    throw new Error(`"speed" must be a number <= ${MAX_SPEED} (0: as fast as possible, < 0: paused), not ${JSON.stringify(v)}`);
  }
  return v;
}

/** req.hold_at as null or a virtual unix time in ms within 0..MAX_TIME_MS, or a clear error. */
function holdAtOf(req) {
  const v = req.hold_at;
  if (v === null) return null;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > MAX_TIME_MS) {
    throw new Error(`"hold_at" must be null or a virtual time in ms within 0..${MAX_TIME_MS}, not ${JSON.stringify(v)}`);
  }
  return v;
}

function board(req) {
  const b = boards.get(need(req, "board"));
  if (!b) throw new Error(`no board ${req.board}`);
  return b;
}

function schedule(b, at, fn) {
  const delay = Math.max(0, Number(at) - Date.now());
  setTimeout(fn, delay);
}

function applyStimulus(b, s) {
  switch (s.kind) {
    case "pin": b.setPin(need(s, "pin"), need(s, "level")); break;
    case "pulse": b.pulse(need(s, "pin"), s.level ?? 1, need(s, "ms")); break;
    case "adc": b.adc.set(need(s, "pin"), need(s, "uv")); break;
    case "adc_auto": b.adc.delete(need(s, "pin")); break;
    case "echo": b.echo.set(need(s, "pin"), need(s, "us")); break;
    case "lamp_failed": b.lampFailed = !!s.value; break;
    default: throw new Error(`unknown stimulus kind ${s.kind}`);
  }
}

function applyFault(b, f) {
  const now = Date.now();
  switch (f.kind) {
    case "drop":
      b.faults.dropUntil[f.link || "all"] = now + need(f, "ms");
      // BLE: the link goes down now (the bridge drops connections); UART bytes are lost meanwhile.
      if ((f.link || "all") !== "uart") host.emit({ ev: "fault", board: b.id, kind: "ble_disconnect" });
      break;
    case "corrupt": b.faults.corrupt[f.link || "all"] = { rate: need(f, "rate"), until: f.ms ? now + f.ms : undefined }; break;
    case "reset": b.reset(CAUSE.HARD); break;
    case "power_loss": b.powerLoss(f.off_ms ?? 100); break;
    case "power_loss_write": b.faults.cutWrite = { match: f.match || null, fraction: f.fraction ?? 0.5, off_ms: f.off_ms ?? 100 }; break;
    case "clock_skew": b.clockOffsetMs += need(f, "ms"); break;
    case "slow_boot": b.slowBootMs = msOf(f, "ms"); break; // test hook: wall ms per boot
    case "ble_disconnect": host.emit({ ev: "fault", board: b.id, kind: "ble_disconnect" }); break;
    default: throw new Error(`unknown fault kind ${f.kind}`);
  }
}

function timeline(b, events, apply) {
  // events: [{at: unix_ms, every?: ms, until?: unix_ms, ...payload}]
  for (const ev of events) {
    const fire = (at) => schedule(b, at, () => {
      runTimers(() => apply(b, ev));
      if (ev.every && (ev.until === undefined || at + ev.every <= ev.until)) fire(at + ev.every);
    });
    fire(ev.at ?? Date.now());
  }
}

async function handle(req) {
  switch (req.op) {
    case "create": {
      const id = need(req, "board");
      if (boards.has(id)) throw new Error(`board ${id} exists`);
      const b = new Board(host, id, Object.assign({}, req.opts, { mpyFiles }));
      boards.set(id, b);
      try {
        await b.boot(CAUSE.PWRON);
      } catch (e) {
        boards.delete(id); // a board that never came up is not left behind: a retry may create it
        throw e;
      }
      return reply(req, { ok: true, now: Date.now() });
    }
    case "destroy": { const b = board(req); b.halt(); boards.delete(b.id); return reply(req, { ok: true }); }
    case "console": {
      const b = board(req);
      consoleUsers.set(b, b.gen); // before the input runs: a Ctrl-D reboots, and that ends the wait
      b.consoleIn(Buffer.from(need(req, "d"), "base64"));
      return undefined;
    }
    case "uart": board(req).uartIn(need(req, "uart"), Buffer.from(need(req, "d"), "base64")); return undefined;
    case "chan": board(req).chanIn(need(req, "ch"), need(req, "p")); return undefined;
    case "stimulus": applyStimulus(board(req), need(req, "s")); return reply(req, { ok: true });
    case "fault": applyFault(board(req), need(req, "f")); return reply(req, { ok: true });
    case "stimuli": timeline(board(req), need(req, "events"), applyStimulus); return reply(req, { ok: true });
    case "faults": timeline(board(req), need(req, "events"), applyFault); return reply(req, { ok: true });
    case "state": {
      const b = board(req);
      return reply(req, { state: b.state, cause: b.resetCause, mode: b.mode, stats: b.stats,
        pwm: Object.fromEntries(b.pwm), out: Object.fromEntries(b.out), clock_offset_ms: b.clockOffsetMs, now: Date.now() });
    }
    case "clock": {
      // every field checked before any is applied: a refused request changes nothing
      const wait = req.boot_wait_ms !== undefined ? msOf(req, "boot_wait_ms") : bootWaitMs;
      const newSpeed = req.speed !== undefined ? speedOf(req) : speed;
      const newHold = req.hold_at !== undefined ? holdAtOf(req) : holdAt;
      speed = newSpeed;
      holdAt = newHold;
      bootWaitMs = wait;
      return reply(req, { now: Date.now(), speed, hold_at: holdAt, boot_wait_ms: bootWaitMs });
    }
    case "advance":
      await advance(msOf(req, "ms"), req.chunk === undefined ? 1000 : msOf(req, "chunk"));
      return reply(req, { now: Date.now() });
    case "shutdown":
      for (const b of boards.values()) b.halt();
      flush();
      process.exit(0);
      return undefined;
    case "ping": return reply(req, { now: Date.now(), rss: process.memoryUsage().rss, boards: boards.size });
    default: throw new Error(`unknown op ${req.op}`);
  }
}

const INPUT_OPS = new Set(["console", "uart", "chan"]);
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
let chain = Promise.resolve();
rl.on("line", (line) => {
  if (!line.trim()) return;
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    host.emit({ ev: "error", error: "bad JSON line" });
    return;
  }
  if (req === null || typeof req !== "object" || Array.isArray(req)) {
    // null, 1, "x", [...]: nothing to read an op (or a rid to answer) from; the host and its boards go on
    const shown = line.length > 40 ? line.slice(0, 40) + "..." : line;
    host.emit({ ev: "error", error: `request is not a JSON object: ${shown}` });
    return;
  }
  const fail = (e) => host.emit({ ev: "reply", rid: req.rid, error: String(e && e.message ? e.message : e) });
  // Bytes on a wire arrive when they arrive: console/UART/BLE-channel input for an existing board
  // is delivered at once, also while an "advance" is running (a gateway's ACK lands mid-advance,
  // as on a real link), and stays in order per board because it is never queued.
  if (INPUT_OPS.has(req.op) && boards.has(req.board)) {
    try {
      handle(req).catch(fail);
    } catch (e) {
      fail(e);
    }
    return;
  }
  // Other requests run strictly in order (a create finishes booting before the next request).
  chain = chain.then(() => handle(req)).catch(fail);
});
rl.on("close", () => { for (const b of boards.values()) b.halt(); flush(); process.exit(0); });
process.on("SIGTERM", () => process.exit(0));
// Never outlive the supervisor: if it died without closing our stdin (SIGKILL, a pipe still
// held elsewhere), we are re-parented; exit instead of running boards nobody can reach.
const parentPid = process.ppid;
const orphanCheck = real.setInterval(() => { if (process.ppid !== parentPid) process.exit(0); }, 1000);
orphanCheck.unref();
process.on("SIGINT", () => process.exit(0));
host.emit({ ev: "hello", now: Date.now(), pid: process.pid });
drive();

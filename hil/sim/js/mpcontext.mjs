// Several MicroPython interpreters in one Node process.
//
// The pyscript build's JS glue keeps its proxy state in globals: `globalThis.Module` (the
// Emscripten module used to call into wasm) and the tables of JS objects referenced from Python
// (`proxy_js_ref` ...). `loadMicroPython()` overwrites them, so after a second board loads, a call
// into the first board's Python (an IRQ handler, an asyncio timer callback, a channel handler)
// would run against the second board's memory ("memory access out of bounds") and its JS
// references would resolve to the second board's objects.
//
// This module gives each interpreter its own copy of that state and switches it in before any
// call into that interpreter: `enter(ctx)` before runPython/replProcessChar/proxy calls, and
// timers scheduled while an interpreter runs re-enter it when they fire (asyncio sleeps go
// through `js.setTimeout`).

const KEYS = [
  "Module",
  "proxy_js_ref",
  "proxy_js_ref_next",
  "proxy_js_ref_map",
  "proxy_js_map",
  "proxy_js_existing",
  "pyProxyFinalizationRegistry",
];

let current = null;

/** Call right before `loadMicroPython()`: the outgoing interpreter keeps its state. */
export function beginLoad() {
  if (current !== null) for (const k of KEYS) current.state[k] = globalThis[k];
  current = null;
}

/** Snapshot the glue state right after `loadMicroPython()` returned `mp`: that interpreter's context. */
export function capture(mp) {
  if (mp && globalThis.Module !== mp._module) {
    throw new Error("another interpreter was entered while this one loaded; load boards one at a time");
  }
  const ctx = { state: {} };
  for (const k of KEYS) ctx.state[k] = globalThis[k];
  // The glue frees a Python object when its JS proxy is garbage collected, through whatever
  // interpreter is current at that moment; give this interpreter a finaliser that frees in it.
  if (mp) {
    const module = mp._module;
    ctx.state.pyProxyFinalizationRegistry = new FinalizationRegistry((cRef) => {
      enter(ctx);
      globalThis.proxy_js_map.delete(cRef);
      try { module.ccall("proxy_c_free_obj", "null", ["number"], [cRef]); } catch { /* interpreter gone */ }
    });
    globalThis.pyProxyFinalizationRegistry = ctx.state.pyProxyFinalizationRegistry;
  }
  current = ctx;
  return ctx;
}

/** Make `ctx` the interpreter the glue talks to (saves the outgoing one's mutable counters). */
export function enter(ctx) {
  if (ctx === current || ctx == null) return;
  if (current !== null) for (const k of KEYS) current.state[k] = globalThis[k];
  for (const k of KEYS) globalThis[k] = ctx.state[k];
  current = ctx;
}

/** The interpreter context active now (null before any board loaded). */
export function active() {
  return current;
}

/** Run `fn` with `ctx` active (and leave it active: the next entry switches as needed). */
export function within(ctx, fn) {
  enter(ctx);
  return fn();
}

/**
 * Wrap the global timer functions so a callback re-enters the interpreter that was active when
 * it was scheduled. Call once, after any fake timers are installed.
 */
export function wrapTimers() {
  for (const name of ["setTimeout", "setInterval"]) {
    const original = globalThis[name];
    if (original.__mpcontext) continue;
    const wrapped = function (fn, ms, ...args) {
      if (typeof fn !== "function") return original(fn, ms, ...args);
      const ctx = current;
      return original(function (...a) {
        enter(ctx);
        return fn(...a);
      }, ms, ...args);
    };
    wrapped.__mpcontext = true;
    globalThis[name] = wrapped;
  }
}

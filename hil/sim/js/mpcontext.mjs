// Several MicroPython interpreters in one Node process.
//
// The pyscript build's JS glue keeps its proxy state in globals: `globalThis.Module` (the
// Emscripten module used to call into wasm) and the tables of JS objects referenced from Python
// (`proxy_js_ref` ...). Each `loadMicroPython()` overwrites them, so after a second board loads,
// a call into the first board's Python (an IRQ handler, an asyncio timer callback, a channel
// handler) would run against the second board's memory ("memory access out of bounds") and its
// JS references would resolve to the second board's objects.
//
// `install()` turns those globals into accessors that read and write the state of the *current*
// interpreter. A load's `globalThis.Module = Module` (done by the glue right before it builds its
// proxy tables) creates that interpreter's context, so nothing is copied and it does not matter
// what else runs while an interpreter loads. `enter(ctx)` makes an interpreter current; it must
// precede every call into it (runPython, replProcessChar, Python callbacks). Timers and the
// glue's finalisers re-enter the interpreter that was current when they were created (asyncio
// sleeps go through `js.setTimeout`).

const KEYS = [
  "Module",
  "proxy_js_ref",
  "proxy_js_ref_next",
  "proxy_js_ref_map",
  "proxy_js_map",
  "proxy_js_existing",
  "pyProxyFinalizationRegistry",
];

// Emscripten module -> context; weak, so a halted board's interpreter can be collected.
const contexts = new WeakMap();
let current = { state: {} };
let installed = false;

/** Make the glue's globals per-interpreter. Call once, after fake timers, before any load. */
export function install() {
  if (installed) return;
  installed = true;
  for (const key of KEYS) {
    const initial = globalThis[key];
    delete globalThis[key];
    Object.defineProperty(globalThis, key, {
      configurable: true,
      get() { return current.state[key]; },
      set(value) {
        if (key === "Module" && value && typeof value === "object" && !contexts.has(value)) {
          const ctx = { state: {} };
          contexts.set(value, ctx);
          current = ctx; // the glue builds this interpreter's proxy tables next, synchronously
        }
        current.state[key] = value;
      },
    });
    if (initial !== undefined) current.state[key] = initial;
  }
  const Base = globalThis.FinalizationRegistry;
  globalThis.FinalizationRegistry = class extends Base {
    constructor(cleanup) {
      const ctx = current;
      super((held) => {
        enter(ctx);
        try { cleanup(held); } catch { /* that interpreter is gone */ }
      });
    }
  };
  wrapTimers();
}

/** The context of the interpreter `mp` returned by `loadMicroPython()`; makes it current. */
export function capture(mp) {
  const ctx = contexts.get(mp._module);
  if (ctx === undefined) throw new Error("mpcontext.install() must run before loadMicroPython()");
  current = ctx;
  return ctx;
}

/** Make `ctx` the interpreter the glue talks to. */
export function enter(ctx) {
  if (ctx != null) current = ctx;
}

/** Timer callbacks re-enter the interpreter that was current when they were scheduled. */
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

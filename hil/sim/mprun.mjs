// Run one MicroPython script in the official WebAssembly runtime, like the
// `micropython` unix binary: `node mprun.mjs [--lib DIR]... [--seed N] [--heap BYTES] [--steps] SCRIPT|-`
//
// Used by the firmware test suite (tests never run firmware under CPython).
// Each --lib DIR is copied into the in-memory filesystem at /lib (the same place
// an ESP32 keeps libraries) and put on sys.path. `os.urandom` does not exist in
// this port: it is supplied from the host CSPRNG, or, with --seed, from a
// deterministic SHA-256 counter stream (simulation only). Filesystem calls raise
// MicroPython's errno numbers, as on a board (js/errno.mjs).
// --steps: after the script, call its `mprun_step()` from the top level until it returns
// something other than True. This port collects garbage only at the top level (a gc.collect()
// inside a script only marks a collection as pending), so each step starts on a heap holding
// only live objects when the previous step called gc.collect(): how memory benchmarks see the
// live heap.
// Exit status: 0 on success, 1 on an uncaught Python exception (traceback on stderr),
// 2 on bad usage.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import { ERRNO_PRELUDE } from "./js/errno.mjs";
import { byteSource } from "./js/random.mjs";

function usage(msg) {
  process.stderr.write(`mprun: ${msg}\nusage: node mprun.mjs [--lib DIR]... [--seed N] [--heap BYTES] [--steps] SCRIPT|-\n`);
  process.exit(2);
}

const libs = [];
let seed = null;
let heap = 1024 * 1024;
let script = null;
let steps = false;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--lib") libs.push(argv[++i] ?? usage("--lib needs a directory"));
  else if (a === "--seed") seed = argv[++i] ?? usage("--seed needs a value");
  else if (a === "--heap") heap = parseInt(argv[++i] ?? usage("--heap needs a size"), 10);
  else if (a === "--steps") steps = true;
  else if (script === null) script = a;
  else usage(`unexpected argument ${a}`);
}
if (script === null) usage("no script given");
const code = fs.readFileSync(script === "-" ? 0 : script, "utf8");

const source = byteSource(seed);
const randomBytes = (n) => new Uint8Array(source(n));

function copyTree(FS, src, dst) {
  try { FS.mkdir(dst); } catch { /* exists */ }
  for (const name of fs.readdirSync(src)) {
    if (name === "__pycache__") continue;
    const s = path.join(src, name);
    const d = `${dst}/${name}`;
    if (fs.statSync(s).isDirectory()) copyTree(FS, s, d);
    else FS.writeFile(d, fs.readFileSync(s));
  }
}

const mp = await loadMicroPython({
  heapsize: heap,
  linebuffer: false,
  stdout: (b) => process.stdout.write(b),
  stderr: (b) => process.stderr.write(b),
});
for (const lib of libs) copyTree(mp.FS, lib, "/lib");
mp.registerJsModule("_mprun_host", { urandom: (n) => randomBytes(n) });
try {
  mp.runPython(
    "import os, sys, _mprun_host\n" +
    "def _urandom(n, _h=_mprun_host):\n    return bytes(_h.urandom(n))\n" +
    "os.urandom = _urandom\n" +
    "if '/lib' not in sys.path: sys.path.append('/lib')\n" +
    "del _mprun_host, _urandom\n" + ERRNO_PRELUDE);
  mp.runPython(code);
  if (steps) {
    do mp.runPython("_mprun_more = mprun_step()\n");
    while (mp.globals.get("_mprun_more") === true);
  }
} catch (err) {
  if (err && err.name === "PythonError") {
    if (err.type === "SystemExit") process.exit(0);
    process.stderr.write(String(err.message));
    process.exit(1);
  }
  process.stderr.write(`mprun: host error: ${err && err.stack ? err.stack.split("\n")[0] : err}\n`);
  process.exit(1);
}

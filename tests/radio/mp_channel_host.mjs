// Test-only mini board for the BLE module: real MicroPython (wasm), a `_simhw` JS module
// with send/on for channels, and newline-delimited JSON over stdio:
//   stdout: {"ch": CHANNEL, "p": PAYLOAD}   (from _simhw.send) and {"out": TEXT} (print)
//   stdin:  {"ch": CHANNEL, "p": PAYLOAD}   (delivered to the _simhw.on handler)
//           {"exec": CODE}                  (run more Python in the same interpreter)
// usage: node mp_channel_host.mjs SIM_DIR LIB_DIR[:LIB_DIR...] [SCRIPT]  (SCRIPT runs first; exits when stdin closes)
import path from "node:path";
import fs from "node:fs";
import crypto from "node:crypto";
import readline from "node:readline";

const [simDir, libDir, script] = process.argv.slice(2);
const { loadMicroPython } = await import(
  path.join(simDir, "node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs"));
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const mp = await loadMicroPython({
  heapsize: 512 * 1024, linebuffer: true,
  stdout: (line) => emit({ out: line }), stderr: (line) => emit({ err: line }),
});
function copyTree(src, dst) {
  try { mp.FS.mkdir(dst); } catch { /* exists */ }
  for (const name of fs.readdirSync(src)) {
    if (name === "__pycache__") continue;
    const s = path.join(src, name);
    if (fs.statSync(s).isDirectory()) copyTree(s, `${dst}/${name}`);
    else if (name.endsWith(".py")) mp.FS.writeFile(`${dst}/${name}`, fs.readFileSync(s));
  }
}
for (const dir of libDir.split(path.delimiter)) copyTree(dir, "/lib");
const handlers = new Map();
mp.registerJsModule("_simhw", {
  send: (channel, payload) => emit({ ch: channel, p: payload }),
  on: (channel, fn) => { handlers.set(channel, fn); },
});
mp.registerJsModule("_mprun_host", { urandom: (n) => new Uint8Array(crypto.randomBytes(n)) });
function run(code) {
  try { mp.runPython(code); } catch (err) { emit({ err: String(err && err.message ? err.message : err) }); }
}
run("import os, sys, _mprun_host\nos.urandom = lambda n: bytes(_mprun_host.urandom(n))\nsys.path.append('/lib')\n");
if (script) run(fs.readFileSync(script, "utf8"));
emit({ ready: true });
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const msg = JSON.parse(line);
  if (msg.exec !== undefined) { run(msg.exec); emit({ done: true }); return; }
  const fn = handlers.get(msg.ch);
  if (fn) {
    try { fn(msg.p); } catch (err) { emit({ err: String(err && err.message ? err.message : err) }); }
  }
});
rl.on("close", () => process.exit(0));

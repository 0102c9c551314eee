// A bare MicroPython REPL on stdin/stdout: the official WebAssembly runtime's own REPL
// (replInit/replProcessChar), with no simulated hardware. The DUT transport tests talk to it
// through a pty, exactly as they talk to a board's console.
//
// usage: node mp_repl_peer.mjs SIM_DIR
// Raw-paste (Ctrl-E 'A' Ctrl-A) hangs this runtime's event REPL, so the peer speaks it itself
// (window flow control per the MicroPython docs) and hands the collected code to the raw REPL.
import path from "node:path";
import { pathToFileURL } from "node:url";

const simDir = process.argv[2];
const pkg = path.join(simDir, "node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs");
const { loadMicroPython } = await import(pathToFileURL(pkg).href);

let raw = false;
let tail = "";
let dropOK = 0; // raw REPL's "OK" is not part of the raw-paste protocol
const out = (bytes) => {
  if (dropOK > 0) {
    const b = Buffer.from(bytes);
    let i = 0;
    while (dropOK > 0 && i < b.length) { i++; dropOK--; }
    bytes = b.subarray(i);
    if (!bytes.length) return;
  }
  process.stdout.write(bytes);
  tail = (tail + Buffer.from(bytes).toString("latin1")).slice(-64);
  if (tail.endsWith("raw REPL; CTRL-B to exit\r\n>")) raw = true;
};

// Files survive a soft reboot, as on a board's flash: copied from the old interpreter's
// filesystem into the new one.
const SYSTEM_DIRS = new Set(["/dev", "/proc", "/tmp", "/home"]);
function snapshot(FS, dir, files) {
  for (const name of FS.readdir(dir)) {
    if (name === "." || name === "..") continue;
    const p = dir === "/" ? `/${name}` : `${dir}/${name}`;
    if (SYSTEM_DIRS.has(p)) continue;
    const st = FS.stat(p);
    if (FS.isDir(st.mode)) { files.push([p, null]); snapshot(FS, p, files); }
    else files.push([p, FS.readFile(p)]);
  }
  return files;
}

let mp;
async function boot() {
  const files = mp ? snapshot(mp.FS, "/", []) : [];
  mp = await loadMicroPython({ heapsize: 256 * 1024, linebuffer: false, stdout: out, stderr: out });
  for (const [p, data] of files) {
    if (data === null) { try { mp.FS.mkdir(p); } catch { /* exists */ } }
    else mp.FS.writeFile(p, data);
  }
  mp.replInit();
}
await boot();

const WINDOW = 256;
let pasteSkip = 0;
let paste = null; // bytes of code collected in raw-paste mode
const queue = [];
let busy = false;
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const c = queue.shift();
    if (pasteSkip > 0) {
      if (--pasteSkip === 0) {
        paste = [];
        process.stdout.write(Buffer.from([0x52, 0x01, WINDOW & 0xff, WINDOW >> 8]));
      }
      continue;
    }
    if (paste !== null) {
      if (c !== 0x04) {
        paste.push(c);
        if (paste.length % WINDOW === 0) process.stdout.write("\x01");
        continue;
      }
      process.stdout.write("\x04"); // end of data acknowledged; now compile and run
      const code = paste;
      paste = null;
      dropOK = 2;
      for (const k of code) mp.replProcessChar(k);
      mp.replProcessChar(0x04);
      continue;
    }
    if (raw && c === 0x05) { pasteSkip = 2; continue; }
    if (c === 0x02) raw = false;
    const ret = mp.replProcessChar(c);
    if (ret !== 0) { // soft reset request
      process.stdout.write("MPY: soft reboot\r\n");
      raw = false;
      await boot();
    }
  }
  busy = false;
}
process.stdin.on("data", (buf) => { for (const c of buf) queue.push(c); pump(); });
process.stdin.on("end", () => process.exit(0));

// Given to node with `--import <this file's URL>?dir=DIR` (hil/sim/runtime.py) when the simulator's
// npm packages are not beside the host scripts: an installed wheel whose packages
// `civicedge sim install-runtime` put in a per-user directory. Registers runtime_hooks.mjs, which
// resolves the bare imports Node cannot find from here (e.g. "@micropython/...") from DIR instead.
import { register } from "node:module";

const dir = new URL(import.meta.url).searchParams.get("dir");
if (!dir) {
  throw new Error("runtime_resolve.mjs: no ?dir= (the directory holding node_modules) in its URL");
}
register("./runtime_hooks.mjs", import.meta.url, { data: { dir } });

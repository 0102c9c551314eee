// Module resolve hook (registered by runtime_resolve.mjs): a bare specifier that Node cannot
// resolve from the importing file is resolved as if imported from DIR/package.json, so DIR's
// node_modules serves it. Relative, absolute, URL and node: specifiers are never redirected.
import path from "node:path";
import { pathToFileURL } from "node:url";

let runtimeParent = null;
const NOT_BARE = /^(\.{0,2}\/|[a-zA-Z][a-zA-Z0-9+.-]*:)/;

export async function initialize({ dir }) {
  runtimeParent = pathToFileURL(path.join(dir, "package.json")).href;
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    if (runtimeParent === null || err?.code !== "ERR_MODULE_NOT_FOUND" || NOT_BARE.test(specifier)) {
      throw err;
    }
    return nextResolve(specifier, { ...context, parentURL: runtimeParent });
  }
}

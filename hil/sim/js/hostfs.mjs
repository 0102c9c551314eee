// HOSTFS: an Emscripten filesystem type backed by a host directory (node:fs sync calls).
// Mounted at /flash in each board's interpreter, so a virtual board's flash IS a host directory:
// it persists across restarts, and a power loss in the middle of a write leaves a partial file
// on the host exactly like interrupted flash programming.
import fs from "node:fs";
import path from "node:path";

// Emscripten errno numbers (musl/wasi values used by the FS layer). Errors of the namespace
// operations (open, stat, mkdir, rename, remove, ...) are thrown with these, as Emscripten's own FS
// layer throws its errors: board.mjs's prelude maps them to MicroPython's numbers in those calls.
const ERRNO = { ENOENT: 44, EEXIST: 20, ENOTDIR: 54, EISDIR: 31, ENOTEMPTY: 55, EINVAL: 28,
  EACCES: 2, EPERM: 63, EIO: 29, ENOSPC: 51, EBADF: 8, EBUSY: 10, EXDEV: 75, ENAMETOOLONG: 37 };
// MicroPython's errno numbers (its errno module, as on a board: ENOSPC 28, EIO 5, EINVAL 22). The
// stream operations (a file object's read/write/seek/close) reach MicroPython unmapped: what they
// throw is the OSError's errno as is. With Emscripten's numbers a full flash raised OSError 51 (and
// a bad seek OSError 28, MicroPython's ENOSPC) where a board raises 28 (22).
const MP_ERRNO = { ENOENT: 2, EEXIST: 17, ENOTDIR: 20, EISDIR: 21, ENOTEMPTY: 39, EINVAL: 22,
  EACCES: 13, EPERM: 1, EIO: 5, ENOSPC: 28, EBADF: 9, EBUSY: 16, EXDEV: 18, ENAMETOOLONG: 36 };
// The flash partition a virtual board reports (statvfs) and is limited to: 4 MB of 4 KB blocks, like
// a typical ESP32 littlefs/FAT layout.
const BLOCK = 4096;
const BLOCKS = 1024;

/**
 * Build the HOSTFS filesystem type for one interpreter's FS object.
 * @param {object} FS Emscripten FS of a loaded MicroPython instance.
 * @param {object} hooks optional {beforeWrite(realPath, buffer, offset, length) -> length|undefined}
 *   lets the fault injector cut a write short (power loss mid-write).
 */
export function makeHostFS(FS, hooks = {}) {
  function wrap(fn, table = ERRNO) {
    try {
      return fn();
    } catch (e) {
      if (e && e.name === "ErrnoError") throw e;
      if (e && e.code && table[e.code] !== undefined) throw new FS.ErrnoError(table[e.code]);
      throw e; // not an fs error (e.g. a simulated power loss): let it unwind the interpreter
    }
  }
  // A stream operation: its errors reach MicroPython with the number thrown (see MP_ERRNO).
  const wrapStream = (fn) => wrap(fn, MP_ERRNO);
  // Blocks the files under a host directory take (each file rounded up to whole blocks, as on flash).
  function usedBlocks(dir) {
    let n = 0;
    let entries = [];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      return 0;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) n += 1 + usedBlocks(p);
      else {
        try {
          n += Math.ceil(fs.statSync(p).size / BLOCK);
        } catch (err) { /* removed meanwhile */ }
      }
    }
    return n;
  }
  function realPath(node) {
    const parts = [];
    while (node.parent !== node) {
      parts.push(node.name);
      node = node.parent;
    }
    parts.push(node.mount.opts.root);
    return path.join(...parts.reverse());
  }
  const HOSTFS = {
    realPath,
    mount(mount) {
      const st = wrap(() => fs.statSync(mount.opts.root));
      return HOSTFS.createNode(null, "/", st.mode, 0);
    },
    createNode(parent, name, mode, dev) {
      if (!FS.isDir(mode) && !FS.isFile(mode)) throw new FS.ErrnoError(ERRNO.EINVAL);
      const node = FS.createNode(parent, name, mode, dev);
      node.node_ops = HOSTFS.node_ops;
      node.stream_ops = HOSTFS.stream_ops;
      return node;
    },
    node_ops: {
      getattr(node) {
        const st = wrap(() => fs.statSync(realPath(node)));
        return { dev: 1, ino: node.id, mode: st.mode, nlink: 1, uid: 0, gid: 0, rdev: 0,
          size: st.isDirectory() ? 4096 : st.size, atime: st.atime, mtime: st.mtime, ctime: st.ctime,
          blksize: 4096, blocks: Math.ceil(st.size / 4096) };
      },
      setattr(node, attr) {
        const p = realPath(node);
        wrap(() => {
          if (attr.mode != null) { fs.chmodSync(p, attr.mode & 0o777); node.mode = attr.mode; }
          if (attr.size !== undefined) fs.truncateSync(p, attr.size);
          if (attr.mtime != null || attr.atime != null) {
            const st = fs.statSync(p);
            fs.utimesSync(p, new Date(attr.atime ?? st.atime), new Date(attr.mtime ?? st.mtime));
          }
        });
      },
      lookup(parent, name) {
        const p = path.join(realPath(parent), name);
        const st = wrap(() => fs.statSync(p));
        return HOSTFS.createNode(parent, name, st.mode, 0);
      },
      mknod(parent, name, mode, dev) {
        const node = HOSTFS.createNode(parent, name, mode, dev);
        const p = realPath(node);
        wrap(() => {
          if (FS.isDir(node.mode)) fs.mkdirSync(p, { mode: 0o755 });
          else fs.writeFileSync(p, "", { mode: 0o644 });
        });
        return node;
      },
      rename(oldNode, newDir, newName) {
        const from = realPath(oldNode);
        const to = path.join(realPath(newDir), newName);
        wrap(() => fs.renameSync(from, to));
        oldNode.name = newName;
      },
      unlink(parent, name) {
        wrap(() => fs.unlinkSync(path.join(realPath(parent), name)));
      },
      rmdir(parent, name) {
        wrap(() => fs.rmdirSync(path.join(realPath(parent), name)));
      },
      readdir(node) {
        return [".", "..", ...wrap(() => fs.readdirSync(realPath(node)))];
      },
      symlink() { throw new FS.ErrnoError(ERRNO.EPERM); },
      readlink() { throw new FS.ErrnoError(ERRNO.EINVAL); },
      statfs(arg) {
        // A 4 MB flash partition; free is what the board's files leave of it (and of the host disk),
        // so os.statvfs('/') tells a tool whether a copy fits, as on a board. Emscripten passes the
        // mount's opts.root (the host directory); older versions a node.
        const root = typeof arg === "string" ? arg : arg && arg.mount ? arg.mount.opts.root : undefined;
        let free = root === undefined ? BLOCKS / 2 : Math.max(0, BLOCKS - usedBlocks(root));
        if (root !== undefined && fs.statfsSync) {
          try {
            const host = fs.statfsSync(root);
            free = Math.min(free, Math.floor((host.bavail * host.bsize) / BLOCK));
          } catch (e) { /* keep the partition's figure */ }
        }
        return { bsize: BLOCK, frsize: BLOCK, blocks: BLOCKS, bfree: free, bavail: free, files: 0, ffree: 0,
          fsid: 0, flags: 0, namelen: 255 };
      },
    },
    stream_ops: {
      open(stream) {
        if (!FS.isFile(stream.node.mode)) return;
        const acc = stream.flags & 3;
        stream.nfd = wrap(() => fs.openSync(realPath(stream.node), acc === 0 ? "r" : "r+"));
      },
      close(stream) {
        if (stream.nfd !== undefined) wrapStream(() => fs.closeSync(stream.nfd));
        stream.nfd = undefined;
      },
      dup() {},
      read(stream, buffer, offset, length, position) {
        if (length === 0) return 0;
        return wrapStream(() => fs.readSync(stream.nfd, buffer, offset, length, position));
      },
      write(stream, buffer, offset, length, position) {
        let n = length;
        if (hooks.beforeWrite) {
          const cut = hooks.beforeWrite(realPath(stream.node), length);
          if (cut !== undefined) n = cut;
        }
        const written = wrapStream(() => fs.writeSync(stream.nfd, buffer, offset, n, position));
        if (n < length && hooks.afterCutWrite) hooks.afterCutWrite(realPath(stream.node), n, length);
        return written;
      },
      llseek(stream, offset, whence) {
        let pos = offset;
        if (whence === 1) pos += stream.position;
        else if (whence === 2 && FS.isFile(stream.node.mode)) pos += wrapStream(() => fs.fstatSync(stream.nfd).size);
        if (pos < 0) throw new FS.ErrnoError(MP_ERRNO.EINVAL);
        return pos;
      },
    },
  };
  return HOSTFS;
}

// HOSTFS: an Emscripten filesystem type backed by a host directory (node:fs sync calls).
// Mounted at /flash in each board's interpreter, so a virtual board's flash IS a host directory:
// it persists across restarts, and a power loss in the middle of a write leaves a partial file
// on the host exactly like interrupted flash programming.
import fs from "node:fs";
import path from "node:path";

// Emscripten errno numbers (musl/wasi values used by the FS layer).
const ERRNO = { ENOENT: 44, EEXIST: 20, ENOTDIR: 54, EISDIR: 31, ENOTEMPTY: 55, EINVAL: 28,
  EACCES: 2, EPERM: 63, EIO: 29, ENOSPC: 51, EBADF: 8, EXDEV: 75, ENAMETOOLONG: 37 };

/**
 * Build the HOSTFS filesystem type for one interpreter's FS object.
 * @param {object} FS Emscripten FS of a loaded MicroPython instance.
 * @param {object} hooks optional {beforeWrite(realPath, buffer, offset, length) -> length|undefined}
 *   lets the fault injector cut a write short (power loss mid-write).
 */
export function makeHostFS(FS, hooks = {}) {
  function wrap(fn) {
    try {
      return fn();
    } catch (e) {
      if (e && e.name === "ErrnoError") throw e;
      if (e && e.code && ERRNO[e.code] !== undefined) throw new FS.ErrnoError(ERRNO[e.code]);
      throw e; // not an fs error (e.g. a simulated power loss): let it unwind the interpreter
    }
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
      statfs() {
        // Report a 4 MB flash partition, like a typical ESP32 littlefs/FAT layout.
        return { bsize: 4096, frsize: 4096, blocks: 1024, bfree: 512, bavail: 512, files: 0, ffree: 0,
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
        if (stream.nfd !== undefined) wrap(() => fs.closeSync(stream.nfd));
        stream.nfd = undefined;
      },
      dup() {},
      read(stream, buffer, offset, length, position) {
        if (length === 0) return 0;
        return wrap(() => fs.readSync(stream.nfd, buffer, offset, length, position));
      },
      write(stream, buffer, offset, length, position) {
        let n = length;
        if (hooks.beforeWrite) {
          const cut = hooks.beforeWrite(realPath(stream.node), length);
          if (cut !== undefined) n = cut;
        }
        const written = wrap(() => fs.writeSync(stream.nfd, buffer, offset, n, position));
        if (n < length && hooks.afterCutWrite) hooks.afterCutWrite(realPath(stream.node), n, length);
        return written;
      },
      llseek(stream, offset, whence) {
        let pos = offset;
        if (whence === 1) pos += stream.position;
        else if (whence === 2 && FS.isFile(stream.node.mode)) pos += wrap(() => fs.fstatSync(stream.nfd).size);
        if (pos < 0) throw new FS.ErrnoError(ERRNO.EINVAL);
        return pos;
      },
    },
  };
  return HOSTFS;
}

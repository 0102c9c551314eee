"""Whether another process is checkpointing the store right now (its lock on the ``-shm``).

SQLite's unix VFS takes the WAL locks as POSIX advisory locks on single bytes of the ``-shm`` from offset 120
(``UNIX_SHM_BASE``): the write lock at 120, the checkpoint lock (``WAL_CKPT_LOCK``) at 121, the recovery and
read locks after. A checkpoint holds the checkpoint lock from before it writes the main file until after it
published what it copied (``nBackfill``, or the log started over by a TRUNCATE): while another process holds
it, a change of the main file may be that checkpoint half-way, not yet told by the ``-shm``.

Asked with ``F_GETLK`` on the descriptor SQLite holds the ``-shm`` open by: it takes and drops no lock (closing
or unlocking on any descriptor of this process would drop SQLite's own). A lock of this process is never
reported (POSIX locks are per process); the store's is the only connection of the gateway that checkpoints.
"""

from __future__ import annotations

import fcntl
import os
import struct

from gateway.storage.store_files import FileIdentity

#: The ``-shm`` byte SQLite's checkpoint lock is taken on (unix VFS: UNIX_SHM_BASE 120 + WAL_CKPT_LOCK 1).
CHECKPOINT_LOCK_BYTE = 121

# struct flock: l_type, l_whence (short), l_start, l_len (off_t: 64-bit, CPython builds with large file
# support), l_pid (pid_t); native alignment as the C compiler lays it out, and room for trailing padding.
_FLOCK = "@hhqqi"
_PAD = bytes(8)


def checkpoint_running(shm: FileIdentity | None) -> bool:
    """Whether another process holds SQLite's checkpoint lock on the ``-shm`` ``shm``
    (gateway.storage.store_files.shm_file); False when that cannot be told (no descriptor, not that file)."""
    if shm is None or shm.fd is None:
        return False
    try:
        st = os.fstat(shm.fd)
        if (st.st_dev, st.st_ino) != shm.ident:
            return False
        asked = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, CHECKPOINT_LOCK_BYTE, 1, 0) + _PAD
        answer = fcntl.fcntl(shm.fd, fcntl.F_GETLK, asked)
    except OSError:
        return False
    (kind,) = struct.unpack_from("@h", answer)
    return bool(kind != fcntl.F_UNLCK)

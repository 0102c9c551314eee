"""Atomic, checksummed small files on flash.

``write`` stores ``crc32(payload) (4 bytes BE) + payload`` in ``path + ".tmp"`` and then
``os.rename``s it over ``path``. On LittleFS (the ESP32 default) and POSIX a rename replaces the
target atomically, so after a power loss the file holds either the old or the new content, never
a mix; the CRC also catches a file damaged any other way. On FAT, where rename cannot replace,
the target is removed first; if power fails between the two steps, ``read`` finds the complete
(CRC-valid) temp file and returns it, which is the newer state.

Only a file that does not exist (``OSError`` ENOENT) reads as absent. Any other error opening or
reading it (a flash read error, EIO; a directory at the path) raises :class:`CorruptFile` like a
bad checksum: a caller that would start afresh on an absent file (the epsilon ledger: a full
budget) must not do so for one it merely failed to read.
"""

import binascii
import errno
import os
import struct

TMP_SUFFIX = ".tmp"


def exists(path):
    """Return True if ``path`` exists."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def remove(path):
    """Remove ``path``; a missing file is not an error."""
    try:
        os.remove(path)
    except OSError:
        pass


def makedirs(path):
    """Create directory ``path`` and its parents if missing (``/a/b`` style paths)."""
    cur = ""
    for part in path.split("/"):
        if not part:
            continue
        cur += "/" + part
        if not exists(cur):
            os.mkdir(cur)


def write(path, payload):
    """Atomically replace ``path`` with ``payload`` (bytes) plus a CRC32 header."""
    tmp = path + TMP_SUFFIX
    with open(tmp, "wb") as f:
        f.write(struct.pack(">I", binascii.crc32(payload) & 0xFFFFFFFF))
        f.write(payload)
    try:
        os.rename(tmp, path)
    except OSError:  # FAT: rename does not replace an existing file
        remove(path)
        os.rename(tmp, path)


class CorruptFile(ValueError):
    """A file written by :func:`write` failed its CRC check.

    Attributes:
        path: the damaged file.
    """

    def __init__(self, path, what="corrupt file: "):
        super().__init__(what + path)
        self.path = path


class ReadError(CorruptFile):
    """A file that exists could not be opened or read (an OSError other than ENOENT: a flash read
    error, EIO; a directory at the path). Its content may be intact: a caller that removes a
    damaged file keeps this one (a :class:`CorruptFile`, so callers that fail closed need not
    tell the two apart).

    Attributes:
        path: the file.
        errno: the OSError's number (None if it had none).
    """

    def __init__(self, path, err=None):
        super().__init__(path, "cannot read file: ")
        self.errno = err


def _load(path):
    """The file's bytes; None only if it does not exist (ENOENT); CorruptFile if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        if e.args and e.args[0] == errno.ENOENT:
            return None
        raise ReadError(path, e.args[0] if e.args else None)


def _valid(data):
    return len(data) >= 4 and struct.unpack(">I", data[:4])[0] == binascii.crc32(data[4:]) & 0xFFFFFFFF


def read(path):
    """Return the payload stored by :func:`write`, or None if ``path`` does not exist.

    If ``path`` is missing but a complete temp file is there (power lost between a FAT
    remove and rename), the temp file's payload is returned.

    Raises:
        CorruptFile: the file is shorter than its header or its CRC does not match, or it (or,
            with ``path`` missing, its temp file) exists but cannot be read (any OSError other
            than ENOENT): then the subclass :class:`ReadError`.
    """
    data = _load(path)
    if data is None:
        tmp = _load(path + TMP_SUFFIX)
        return tmp[4:] if tmp is not None and _valid(tmp) else None
    if not _valid(data):
        raise CorruptFile(path)
    return data[4:]

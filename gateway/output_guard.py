"""Refusing an output that would replace stored data (``export-log -o``, ``archive-log -o``, ``routes plan --out``,
``gateway init --force``; ``backup DEST`` asks :meth:`GatewayFiles.which`).

An output option names a file the command replaces. Before it does, :func:`check_output` refuses:

* any of the gateway's own files (:class:`GatewayFiles`: the report store and its ``-wal``, ``-shm``,
  ``-journal`` and ``.lock``, the registry directory, its ``devices.sqlite`` and journals, the keys
  directory and everything in it, the data directory, ``retention.json``, the config file, the admin token
  and the MQTT secrets), found by path with symlinks resolved (a file not there yet, e.g. a ``-wal`` while
  no gateway runs, too) and by identity (a hard link, a bind mount: the file's, its directory's); always,
  ``--force`` or not;
* the place of a directory the gateway keeps its files in, not made yet (``-o data/registry`` before the
  registry exists; ``-o data`` before the data directory does): a file there would keep the gateway from
  making it; always. An existing directory is left to the caller (it cannot be replaced by a file);
* a file that starts with the SQLite header (a store, a registry, a backup copy of one), a write-ahead log
  or a rollback journal (by their magic numbers), and a file named as the ``-wal``, ``-shm``,
  ``-journal`` or ``.lock`` of an SQLite database beside it (a store the command was not told about);
  always;
* any other existing regular file that is not empty and not evidently an earlier output of the same
  command (the caller's ``previous`` test), unless ``--force`` is given.

A FIFO or a device (``/dev/null``, ``/dev/stdout``) is written into, not replaced: it is not refused
(the caller must then open it as given, not replace it with a regular file).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: What an SQLite write-ahead log starts with (big-endian magic, the low bit the checksum byte order).
WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
#: What an SQLite rollback journal starts with.
JOURNAL_MAGIC = b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7"
#: The names of the files SQLite (and the gateway's single-writer lock) keeps beside a database.
SIDE_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")

_RETENTION_FILE = "retention.json"  # as gateway.cli.run_check.RETENTION_FILE (not imported: the web layer)
_CONFIRM_FILE = "retention-confirm"  # as gateway.retention_clock.CONFIRM_FILE


class OutputRefused(Exception):
    """The output file may not be written.

    Attributes:
        reason: ``gateway_file`` (one of the gateway's own files), ``sqlite_file`` (a database),
            ``exists`` (another file, without ``--force``), ``bad_path`` (it cannot be looked at).
        message: What is wrong and what to do, naming the file as given.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


#: Said of a directory's place when a file is (or would be) there instead.
_IN_ITS_PLACE = "anything else in its place would keep the gateway from making or using it"


@dataclass(frozen=True)
class _Entry:
    path: Path  # absolute, symlinks resolved
    what: str
    tree: bool = False  # a directory: everything under it is protected too
    directory: bool = False  # a directory the gateway keeps files in (it may not be made yet)


class GatewayFiles:
    """The gateway files an output must never replace, with what each one is (for the message)."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def add(self, path: Path, what: str, *, tree: bool = False, directory: bool = False) -> None:
        """Protect ``path`` (and, with ``tree``, everything under it), named ``what`` in messages.

        ``directory``: ``path`` is a directory the gateway keeps its files in, which a file must not take the
        place of before it is made (the message then says so). The directories above any protected path are
        refused as such places too (:meth:`which`), named by what they hold.
        """
        self._entries.append(_Entry(Path(os.path.realpath(path)), what, tree, directory or tree))

    def add_store(self, db: Path) -> None:
        """Protect the report store ``db`` and its SQLite and lock files (next to its name and to the file)."""
        for base in dict.fromkeys((Path(os.path.abspath(db)), Path(os.path.realpath(db)))):
            self.add(base, "the report store")
            self.add(base.with_name(base.name + "-wal"), "the report store's write-ahead log")
            self.add(base.with_name(base.name + "-shm"), "the report store's shared-memory index")
            self.add(base.with_name(base.name + "-journal"), "the report store's journal")
            self.add(base.with_name(base.name + ".lock"), "the report store's single-writer lock")

    def add_registry(self, registry_dir: Path) -> None:
        """Protect the device registry in ``registry_dir``: ``devices.sqlite``, its journals, the keys."""
        self.add(registry_dir, "the device registry directory", directory=True)
        db = registry_dir / "devices.sqlite"
        self.add(db, "the device registry")
        for suffix in ("-journal", "-wal", "-shm"):
            self.add(db.with_name(db.name + suffix), "the device registry's journal")
        self.add(registry_dir / "keys", "the device keys directory", tree=True)

    def add_data_dir(self, data_dir: Path) -> None:
        """Protect the data directory itself and the files the gateway keeps there besides the store and
        registry."""
        self.add(data_dir, "the gateway's data directory", directory=True)
        self.add(data_dir / _RETENTION_FILE, "the gateway's retention settings (retention.json)")
        self.add(data_dir / _CONFIRM_FILE, "the gateway's retention confirmation")

    def add_config(self, config: GatewayConfig) -> None:
        """Protect every file ``config`` names: store, registry, data directory files, the config, secrets."""
        self.add_store(config.storage.path)
        self.add_registry(config.registry_dir)
        self.add_data_dir(config.data_dir)
        if config.source is not None:
            self.add(config.source, "the gateway's config file")
        if config.http is not None and config.http.admin_token_file is not None:
            self.add(config.http.admin_token_file, "the admin token file")
        if config.mqtt is not None:
            for path, what in ((config.mqtt.password_file, "the MQTT password file"),
                               (config.mqtt.ca_file, "the MQTT CA file"),
                               (config.mqtt.cert_file, "the MQTT client certificate"),
                               (config.mqtt.key_file, "the MQTT client key")):
                if path is not None:
                    self.add(path, what)
        if config.sim_clock is not None and config.sim_clock.follow_file is not None:
            self.add(config.sim_clock.follow_file, "the simulated clock's file")

    def which(self, target: Path) -> str | None:
        """What ``target`` (symlinks resolved) is among the protected files, or None.

        By path, and always by identity too: an existing ``target`` that is a protected file under another
        name (a hard link, a bind mount: same device and inode), a ``target`` whose directory is a protected
        file's directory reached by another path (its name then compared: a ``-wal`` not there yet), and one
        inside the keys directory reached by another path (a parent directory's identity).

        A ``target`` that is not an existing directory is also refused where a directory above a protected
        path belongs (by path, or by its name and its parent's identity), with a protected directory (the
        registry's, the data directory) named as itself: a file there would keep the gateway from making it.
        An existing directory is only refused as a protected entry itself (it cannot be replaced by a file).
        """
        real = Path(os.path.realpath(target))
        is_dir = os.path.isdir(real)
        for e in self._entries:
            if real == e.path:
                return _said(e, is_dir)
            if e.tree and e.path in real.parents:
                return e.what
        ident = _identity(real)
        parent = _identity(real.parent)
        ancestors = [a for a in (_identity(d) for d in real.parents) if a is not None]
        for e in self._entries:
            e_ident = _identity(e.path)
            if ident is not None and e_ident == ident:
                return _said(e, is_dir)
            if parent is not None and e.path.name == real.name and _identity(e.path.parent) == parent:
                return _said(e, is_dir)
            if e.tree and e_ident is not None and e_ident in ancestors:
                return e.what
        if not is_dir:
            above = self._above(real, parent)
            if above is not None:
                return above
        if ident is None:
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if st.st_nlink < 2 or not stat.S_ISREG(st.st_mode):
            return None  # one name only: no other name inside a protected tree
        for e in self._entries:
            if e.tree and e.path.is_dir():
                for root, _dirs, names in os.walk(e.path):
                    if any(_identity(Path(root) / n) == ident for n in names):
                        return e.what
        return None

    def _above(self, real: Path, parent: tuple[int, int] | None) -> str | None:
        """What ``real`` (not a directory) is the place of, when a directory above a protected path belongs
        there: by path, or (a bind mount of a directory above) by name and its parent's identity."""
        for e in self._entries:
            if real in e.path.parents:
                return _above_said(e)
        if parent is None:
            return None
        for e in self._entries:
            if any(d.name == real.name and d.parent != d and _identity(d.parent) == parent for d in e.path.parents):
                return _above_said(e)
        return None


def _said(e: _Entry, is_dir: bool) -> str:
    """What a target that is the protected entry ``e`` is, for the message (a directory's place said so)."""
    return e.what if not e.directory or is_dir else "%s (%s)" % (e.what, _IN_ITS_PLACE)


def _above_said(e: _Entry) -> str:
    """What the place of a directory above the protected entry ``e`` is, for the message."""
    return "the place of a directory that holds %s (%s): %s" % (e.what, e.path, _IN_ITS_PLACE)


_SIDE_NAMES = {"-wal": "write-ahead log", "-shm": "shared-memory index", "-journal": "rollback journal",
               ".lock": "lock file"}


def _side_file_of(path: Path) -> tuple[str, Path] | None:
    """``(what, database)`` when ``path`` is named as a side file of an SQLite database beside it."""
    for suffix, what in _SIDE_NAMES.items():
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            base = path.with_name(path.name[:-len(suffix)])
            if _starts_with(base, SQLITE_HEADER):
                return what, base
    return None


def _starts_with(path: Path, magic: bytes) -> bool:
    """Whether ``path`` is a regular file starting with ``magic`` (opened without blocking: a FIFO does not)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(magic)) == magic
    except OSError:
        return False
    finally:
        os.close(fd)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output(output: Path, protected: GatewayFiles, *, force: bool, previous: Callable[[Path], bool],
                 command: str, kind: str) -> None:
    """Refuse to replace ``output`` unless it is new, empty, an earlier output or ``force`` is given.

    Args:
        output: The file as given on the command line (a symlink is judged by the file it points to).
        protected: The gateway's files, refused even with ``force``.
        force: ``--force``: replace another existing file.
        previous: Whether an existing, non-empty regular file is evidently an earlier output of the
            command (it is then replaced without ``force``); given the resolved path, never raises.
        command: The command, for messages (``export-log``).
        kind: What ``previous`` recognises, for messages (``a provenance log export``).

    Raises:
        OutputRefused: See the module docstring; nothing has been written.
    """
    real = Path(os.path.realpath(output))
    what = protected.which(real)
    if what is not None:
        raise OutputRefused("%s is %s; %s never writes over the gateway's own files, not even with --force: "
                            "give another file name" % (output, what, command), "gateway_file")
    side = _side_file_of(Path(os.path.abspath(output))) or _side_file_of(real)
    if side is not None:
        # the files of a store this command was not told about (a live one, while a backup is exported)
        raise OutputRefused("%s is the %s of the SQLite database %s; %s never writes over a database's files, not "
                            "even with --force: give another file name" % (output, side[0], side[1], command),
                            "sqlite_file")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputRefused("cannot look at %s: %s" % (output, exc.strerror or exc), "bad_path") from exc
    if not stat.S_ISREG(st.st_mode):
        return  # a directory is the caller's error; a FIFO or a device is written into, not replaced
    try:
        with open(real, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise OutputRefused("cannot read %s to check what it holds before replacing it: %s"
                            % (output, exc.strerror or exc), "bad_path") from exc
    if head == SQLITE_HEADER:
        raise OutputRefused("%s is an SQLite database (a report store, a registry or a copy of one?); %s never "
                            "writes over a database, not even with --force: give another file name"
                            % (output, command), "sqlite_file")
    if head[:4] in WAL_MAGICS or head[:8] == JOURNAL_MAGIC:
        raise OutputRefused("%s is an SQLite %s (of a database beside it or moved away); %s never writes over "
                            "a database's files, not even with --force: give another file name"
                            % (output, "write-ahead log" if head[:4] in WAL_MAGICS else "rollback journal",
                               command), "sqlite_file")
    if st.st_size == 0 or force or previous(real):
        return
    raise OutputRefused("%s exists and is not %s; give a new file name, or --force to replace it"
                        % (output, kind), "exists")

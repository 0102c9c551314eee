"""The report store's files on disk: which file it is, its single-writer lock, and its ``-wal``/``-shm``.

Everything :class:`gateway.storage.store.ReportStore` and ``gateway run --check`` decide about the store's
files before (and while) SQLite has them open: the file itself behind any symlink
(:func:`real_store_path`), its ``<db>.lock`` (:func:`lock_store`, :func:`store_writer`), the refusals of a
hard-linked database, a symlinked ``-wal``/``-shm`` or another user's file (:func:`check_store_free`),
the owner-only modes (:func:`make_private`), and the identities watched for a file deleted or replaced
while the gateway runs (:func:`file_identities`, :func:`file_problem`, :func:`unnamed`, :func:`copy_out`).
Reads and ``stat`` calls only, apart from the lock file and the chmod; no SQLite.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from pathlib import Path
from typing import NamedTuple

from gateway.errors import StorageError
from gateway.pid_lock import LockHeld, lock_holder, take_pid_lock
from gateway.storage.lock_holders import flock_pids, readers_text
from gateway.private_dirs import mkdir_private


class FileIdentity(NamedTuple):
    """A watched file of the store (from :func:`file_identities`).

    Attributes:
        name: the name it is looked up by (the configured ``[storage] path`` for the database).
        ident: its ``(st_dev, st_ino)`` when the store opened.
        opened: the file itself that was opened (``name`` with symlinks resolved, then): where the store
            belongs, and where a salvage copy of it goes when that directory is still there.
        dirs: the ``(st_dev, st_ino)`` of ``opened``'s directory and each one above it, at the open: a
            directory moved away is put back only once it is known to be that one.
        fd: the descriptor the store's writer connection holds it open by (it stays open as long as the
            store), or None: the one named in ``cp /proc/PID/fd/N`` advice, never a short-lived one.
    """

    name: Path
    ident: tuple[int, int]
    opened: Path
    dirs: tuple[tuple[int, int], ...] = ()
    fd: int | None = None


class _OpenFile(NamedTuple):
    """A file this process has open, found by its identity in ``/proc/self/fd`` (:func:`_open_file`)."""

    links: int  # its link count: 0 once it has no name left
    fd: int
    at: Path | None  # where it is now, read from its descriptor (readlink) and checked; None: unknown
    name: str  # what its descriptor names (readlink), checked or not; "" when unreadable
    detached: bool | None  # its mount is no longer in this process's mount table (umount -l); None: unknown


# What readlink of /proc/PID/fd/N appends to the last name of a file whose name was removed: with a link
# count above 0, another name (a hard link) still has it.
DELETED_SUFFIX = " (deleted)"


def file_problem(files: list[FileIdentity], salvaged: str | None = None) -> str | None:
    """Say which of ``files`` (from :func:`file_identities`) was deleted or replaced since they were
    recorded, and what became of the file the store writes; None when all are as they were.

    See :meth:`gateway.storage.store.ReportStore.file_problem`. A ``stat`` per file; for a file gone, a
    look through this process's open descriptors (``/proc/self/fd``). ``salvaged``: what the gateway did
    about a file with no name left (gateway.storage.salvage), said instead of the copy commands.
    """
    for f in files:
        path, ident = f.name, f.ident
        try:
            st = os.stat(path)
        except FileNotFoundError:
            found = _open_file(f)
            what = ("moved or deleted" if found is None else "deleted" if not found.links
                    else "hidden by a file system mounted over it" if _mounted_over(f, found) else "moved away")
            return "report store file %s was %s while the gateway ran%s" % (path, what, _fate(f, files, salvaged))
        except OSError:
            continue  # cannot tell (e.g. a directory made unreadable): SQLite's own errors will say
        if (st.st_dev, st.st_ino) != ident:
            now = real_store_path(path)
            fate = _fate(f, files, salvaged)
            if now != Path(os.path.abspath(path)):  # a symlink (or symlinked directory) on the way
                return ("report store file %s was replaced by another file while the gateway ran (it now "
                        "names %s)%s" % (path, now, fate))
            return "report store file %s was replaced by another file while the gateway ran%s" % (path, fate)
    return None


def unnamed(files: list[FileIdentity]) -> bool:
    """Whether one of ``files`` is open in this process with no name left (deleted, or replaced by a ``mv``
    over it: what it holds goes when the gateway stops), or the database is gone from its path and this
    cannot be told (no ``/proc``); not for a file moved away (it still has a name)."""
    for i, f in enumerate(files):
        found = _open_file(f)
        if found is not None and found.links == 0:
            return True
        if found is None and i == 0 and not os.path.lexists(f.name):
            return True
    return False


def _open_file(f: FileIdentity) -> _OpenFile | None:
    """The file ``f`` as this process has it open (Linux ``/proc/self/fd``): its link count, the
    descriptor (the writer's own, ``f.fd``, when it still is that file), and where it is now; None when it
    cannot be told.

    Where it is comes from the descriptor itself (readlink: the kernel's name of the open file, ``...
    (deleted)`` once that name is removed), checked by a ``stat`` of that name: never guessed from the
    configured path, whose directory may report another device than the file (overlayfs, btrfs subvolumes)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in ([f.fd] if f.fd is not None else []) + [int(n) for n in fds if n.isdigit()]:
        found = _look(fd, f.ident)
        if found is not None:
            return found
    return None


def _look(fd: int, ident: tuple[int, int]) -> _OpenFile | None:
    """The descriptor ``fd`` of this process as an :class:`_OpenFile` when it is the file ``ident``.

    A descriptor number is reused as soon as it is closed (a read connection, damage.py's short-lived
    quick_check): the file is held by a descriptor of its own (``O_PATH``) while it is looked at, so the
    identity, the name and the mount all come from one file. ``O_PATH``: closing it does not drop the
    POSIX locks SQLite holds on the file (closing any other descriptor of it would)."""
    try:
        st = os.stat("/proc/self/fd/%d" % fd)
    except OSError:
        return None
    if (st.st_dev, st.st_ino) != ident:
        return None
    try:
        own = os.open("/proc/self/fd/%d" % fd, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(own)
        if (st.st_dev, st.st_ino) != ident:
            return None  # closed and its number reused meanwhile
        try:
            name = os.readlink("/proc/self/fd/%d" % own)
        except OSError:
            name = ""
        detached = _detached(own)
    finally:
        os.close(own)
    at: Path | None = None
    if st.st_nlink and name.startswith("/") and name != "/":
        try:
            there = os.stat(name)
        except OSError:
            there = None
        if there is not None and (there.st_dev, there.st_ino) == ident:
            at = Path(name)
    return _OpenFile(st.st_nlink, fd, at, name, detached)


def _detached(fd: int) -> bool | None:
    """Whether the mount the descriptor ``fd`` was opened through is gone from this process's mount
    table (``umount -l``: the file system lives on for the open files, under no path); None when
    ``/proc`` cannot tell."""
    try:
        with open("/proc/self/fdinfo/%d" % fd, encoding="ascii") as info:
            mnt = next((int(line.split()[1]) for line in info if line.startswith("mnt_id:")), None)
        if mnt is None:
            return None
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as table:
            return not any(line.split(maxsplit=1)[0] == str(mnt) for line in table if line.strip())
    except (OSError, ValueError):
        return None


def _fate(f: FileIdentity, files: list[FileIdentity], salvaged: str | None) -> str:
    """What became of the store's file ``f``, for :func:`file_problem`'s message; for a file with no name
    left, ``salvaged`` (what the gateway did about it) or, before the gateway has looked at it,
    :func:`copy_out`."""
    found = _open_file(f)
    if found is None:
        return _where_moved(f.name, f.ident)
    if found.links == 0:
        return salvaged if salvaged is not None else copy_out(files)
    if found.at is not None:
        return _moved_to(f, found.at)
    if found.detached:
        return _unmounted(f.name)
    if _mounted_over(f, found):
        return _over_mount(found.name)
    return _unchecked(f, found.name, found.detached)


def _mounted_over(f: FileIdentity, found: _OpenFile) -> bool:
    """Whether the store's file ``f``, which has a name its descriptor gives but that name does not lead to it,
    is hidden by a file system mounted over its directory: the descriptor still names the path it was opened
    at (nothing renamed it), on a mount still in this process's table."""
    return (found.links > 0 and found.at is None and not found.detached
            and found.name in (str(f.opened), os.path.abspath(f.name)))


def _over_mount(named: str) -> str:
    """The message part for a store file still at ``named``, where a file system mounted later over its
    directory (or one above) hides it."""
    directory = os.path.dirname(named)
    return (" (the file it writes is still at %s, nothing is lost, but a file system was mounted over its directory "
            "since the gateway opened it: that path now leads into the other file system; findmnt -T %s shows "
            "it; stop the gateway, unmount it (umount <its TARGET>), and start it again)"
            % (named, shlex.quote(directory)))


def _moved_to(f: FileIdentity, at: Path) -> str:
    """The message part for the store's file ``f`` that its descriptor says is now at ``at``: where, and
    the ``mv`` that puts it back where it was opened: of the directory that moved, when the file's
    directory is gone with it (``mv data data.old``) and that directory is the one it was opened in
    (its identity recorded at the open); else of the file alone."""
    if at == f.opened:
        return (" (the file it writes is still at %s, nothing is lost, but %s no longer leads to it (a symlink on "
                "the way re-pointed or removed): while the gateway is stopped, point it back at %s, and start it "
                "again)" % (at, f.name, at))
    src, dst = at, f.opened
    if at.name == f.opened.name:  # a file renamed is put back alone: its directory holds it under another name
        for recorded in f.dirs:  # climb while the destination's directory is gone and what moved is that one
            if os.path.lexists(dst.parent) or src.parent == src.parent.parent or dst.parent == dst.parent.parent:
                break
            try:
                st = os.stat(src.parent)
            except OSError:
                break
            if (st.st_dev, st.st_ino) != recorded:
                break
            src, dst = src.parent, dst.parent
    what = "the file it writes" if src == at else "its directory"
    steps = "mv -T -n %s %s" % (shlex.quote(str(src)), shlex.quote(str(dst)))
    apart = ""
    if src == at and not os.path.isdir(dst.parent):
        steps = "%s && %s" % (make_dir(dst.parent), steps)
        apart = ("; it moved without its directory %s, whose other files (the device registry, the store's -wal) "
                 "are elsewhere now or gone: put them back beside it too" % dst.parent)
    return (" (the file it writes is now %s, as its open descriptor says: nothing is lost%s; to put %s back, stop the "
            "gateway; if %s exists %s, move it aside first; then %s, and start it again)"
            % (at, apart, what, dst, NEW_STORE_ASIDE, steps))


# Said wherever the advice moves aside what is at the store's path: not deleted, as an empty store would be.
NEW_STORE_ASIDE = ("(a gateway started meanwhile creates a new store there: keep what you move aside, it may hold "
                   "reports already acknowledged to boards, which then no longer hold them)")


def salvage_dir(files: list[FileIdentity]) -> tuple[Path, str]:
    """Where a copy of the store that is gone goes, and why there when not beside the file itself: beside
    the file that was opened (where its ``-wal`` and ``-shm`` are, on the file system chosen for the data,
    so that moving the copy into place keeps any ``[storage] path`` symlink), or, when that directory is
    gone or not writable (a symlink's target directory removed with ``rm -rf``), beside the configured
    path, or else the nearest directory above it this process can write: a copy made is never lost for
    want of its directory. When there is none, the nearest that exists, and the reason says no directory
    could be written (the copy, or the ``cp`` commands, fail there: the operator gives them another)."""
    opened, name = files[0].opened, Path(os.path.abspath(files[0].name))
    if _writable(opened.parent):
        return opened.parent, ""
    why = "gone" if not os.path.isdir(opened.parent) else "not writable"
    if name.parent != opened.parent and _writable(name.parent):
        return name.parent, " (its own directory %s is %s: beside %s instead)" % (opened.parent, why, name)
    here = opened.parent
    while here != here.parent:
        here = here.parent
        if _writable(here):
            return here, " (its own directory %s is %s: in %s instead, the nearest above it this user can write)" % (
                opened.parent, why, here)
    nearest = Path(_nearest_existing(str(opened.parent)))
    return nearest, (" (its own directory %s is %s, and no directory above it can be written by this user (read-only "
                     "mount?): the commands below name %s; give them a directory on a writable file system instead)"
                     % (opened.parent, why, nearest))


def _writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` by this process."""
    return os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)


def salvage_name(db: Path) -> Path:
    """Where a copy of the store ``db`` that is gone goes: ``<db>.salvaged``, or ``<db>.salvaged-<n>`` (n
    from 2) when that name, or its ``-wal``, is taken (nothing is overwritten). ``db`` is the store's name in
    the directory :func:`salvage_dir` chose."""
    n = 1
    while True:
        name = db.with_name("%s.salvaged%s" % (db.name, "" if n == 1 else "-%d" % n))
        if not os.path.lexists(name) and not os.path.lexists(str(name) + "-wal"):
            return name
        n += 1


def put_back(db: Path) -> str:
    """:func:`make_dir` of the directory of the store's file ``db`` and `` && `` when it is gone, else ""."""
    return "" if os.path.isdir(db.parent) else "%s && " % make_dir(db.parent)


def make_dir(directory: Path) -> str:
    """The command that recreates the data directory ``directory`` as the gateway would: for each missing
    directory, topmost first, ``mkdir -m 0700 D && chown USER:GROUP D``, USER and GROUP this process's (the
    gateway's). Not ``mkdir -p``: run with sudo, as such advice is, it creates them root's and 0755, and the
    gateway, under its own user, then fails with "Permission denied" (and the data directory must be 0700).
    Not ``install -d`` either: it also changes the owner and mode of a directory that exists by the time the
    command runs (recreated by systemd or tmpfiles meanwhile, a shared parent); ``mkdir`` without ``-p`` fails
    on one, and the ``&&`` chain stops there, changing nothing more."""
    missing: list[str] = []
    here = os.path.abspath(directory)
    while not os.path.lexists(here) and os.path.dirname(here) != here:
        missing.append(here)
        here = os.path.dirname(here)
    names = list(reversed(missing)) or [os.path.abspath(directory)]
    owner = "%s:%s" % (_user_name(os.geteuid()), _group_name(os.getegid()))
    return " && ".join("mkdir -m 0700 %s && chown %s %s" % (shlex.quote(n), shlex.quote(owner), shlex.quote(n))
                       for n in names)


def copy_out(files: list[FileIdentity], why: str = "") -> str:
    """For :func:`file_problem`'s message on a store file with no name left, ``why`` the gateway made no
    copy itself ("" before it looked): the ``cp`` commands that copy the database and its ``-wal`` out of
    this running process (``/proc/PID/fd/N``, N the writer connection's own descriptor, open as long as the
    store), owner and mode kept (``--preserve=mode,ownership``: run as root, the copies are still the
    gateway user's, 0600; they hold personal data), under names not taken, in the directory
    :func:`salvage_dir` chooses (one that exists).

    They are right only because the store commits nothing once it has found the file gone and no longer
    checkpoints (``wal_autocheckpoint=0``: gateway.storage.store): the two files do not change between the
    two copies."""
    db = files[0].opened
    where, moved = salvage_dir(files)
    dest = salvage_name(where / db.name)
    copies: list[tuple[str, str]] = []  # (cp command, name to move the copy to)
    for f in files:  # the -wal too, deleted or not: SQLite removes it by name at the stop
        found = _open_file(f)
        if found is not None:
            wal = "-wal" if str(f.name).endswith("-wal") else ""
            # Only while that descriptor is still this file: a PID reused after the gateway stopped (or a number
            # reused for another file) must not copy some other file into place.
            fd = "/proc/%d/fd/%d" % (os.getpid(), found.fd)
            copies.append(("test \"$(readlink %s)\" = %s && cp -n --preserve=mode,ownership %s %s"
                           % (fd, shlex.quote(found.name), fd, shlex.quote("%s%s" % (dest, wal))),
                           "%s%s" % (db, wal)))
    return (" (no name is left for the file it writes: what it held is lost when the gateway stops, unless a backup "
            "has it or it is copied out first%s; the gateway commits nothing more, so copy it out now, while it "
            "still runs, as its user or root%s: %s; then stop the gateway, move aside anything left at %s %s, "
            "%s-wal and %s-shm, %smove the copies into place as %s, together (mv -T -n), and start it)"
            % (why, moved, " && ".join(c for c, _ in copies), db, NEW_STORE_ASIDE, db, db,
               put_back(db).replace(" && ", ", then "), " and ".join(n for _, n in copies)))


def _where_moved(path: Path, ident: tuple[int, int]) -> str:
    """How to look for the store's file ``ident`` when no descriptor can be looked at (no ``/proc``), for
    :func:`_fate`: a guess from device numbers (which overlayfs and btrfs subvolumes can mislead): a
    ``find`` from the mount point of the nearest directory of ``path`` that still exists when that is on
    the file's file system, else that its file system may no longer be mounted there."""
    directory = os.path.dirname(os.path.abspath(path))
    existing = _nearest_existing(directory)
    try:
        on_its_fs = os.stat(existing).st_dev == ident[0]
    except OSError:
        on_its_fs = False
    if not on_its_fs:
        return _unmounted(path)
    return (" (if it was moved, not deleted, it is still on disk under another name%s: find it with %s and put it "
            "back while the gateway is stopped; this process cannot look at its open files to tell)"
            % (_gone(directory, existing), _find(existing, ident)))


def _unmounted(path: Path) -> str:
    """The message part for a store file on a file system that is no longer mounted where it was."""
    directory = os.path.dirname(os.path.abspath(path))
    return (" (the file it writes still exists, nothing is lost, but the file system it is on is no longer "
            "mounted where the store was%s: unmounted (umount -l?) or mounted elsewhere; see findmnt or mount "
            "for the data directory's mount, then stop the gateway and mount it back at %s)"
            % (_gone(directory, _nearest_existing(directory)), directory))


def _unchecked(f: FileIdentity, named: str, detached: bool | None = False) -> str:
    """The message part for the store's file ``f`` that has a name, on a file system still mounted, whose
    descriptor's name ``named`` (readlink) does not lead to it from here: a name removed while another hard
    link keeps it, a directory this process may not enter (``ProtectHome=``, a mode), one mounted over in its
    view (``PrivateTmp=``), or a place outside the tree mounted here (``/``: a bind mount's source).
    ``detached`` None: whether its mount is still in this process's table is not known (a kernel before 3.15
    gives no ``mnt_id``), so a file system no longer mounted is among the causes said (:func:`_hidden`)."""
    directory = os.path.dirname(os.path.abspath(f.name))
    existing = _nearest_existing(directory)
    if named.endswith(DELETED_SUFFIX):
        what = ("the name %s was removed but another name (a hard link) still has it"
                % named[:-len(DELETED_SUFFIX)])
    elif named.startswith("/") and named != "/":
        what = "its descriptor names %s (the gateway cannot check it from its own view%s)" % (
            named, _hidden(named, f.ident, detached))
    else:
        what = "its descriptor gives no usable name (moved out of the tree mounted here, as from a bind mount's source)"
    return (" (the file it writes still has a name, nothing is lost: %s%s; find it with %s and put it back while "
            "the gateway is stopped)" % (what, _gone(directory, existing), _find(existing, f.ident)))


def _hidden(named: str, ident: tuple[int, int], detached: bool | None) -> str:
    """``: ... on another file system ...`` when the nearest existing directory of the name ``named`` is on a
    device other than the file's ``ident`` (a rename never leaves its file system): one mounted over it hides
    the file (a ``PrivateTmp=`` /tmp), or, when ``detached`` is None (not known), the file's file system may no
    longer be mounted (``umount -l``); else ""."""
    existing = _nearest_existing(os.path.dirname(named))
    try:
        other = os.stat(existing).st_dev != ident[0]
    except OSError:
        return ""
    if not other:
        return ""
    return ": %s is on another file system than the file: one mounted over it hides the file (findmnt -T %s)%s" % (
        existing, shlex.quote(existing), "" if detached is not None else
        ", or the file's file system is no longer mounted (umount -l; this kernel does not say which)")


def _gone(directory: str, existing: str) -> str:
    """``; its directory D is gone too ...`` when ``directory`` no longer exists, else ""."""
    return "" if existing == directory else "; its directory %s is gone too (moved or renamed)" % directory


def _find(existing: str, ident: tuple[int, int]) -> str:
    """The ``find`` of the file ``ident``: from the mount point of ``existing`` when it is on the file's file
    system, else from that file system's mount point (findmnt names it)."""
    try:
        same = os.stat(existing).st_dev == ident[0]
    except OSError:
        same = False
    root = _mount_point(existing) if same else "<the mount point of device %d:%d (findmnt)>" % (
        os.major(ident[0]), os.minor(ident[0]))
    return "find %s -xdev -inum %d" % (shlex.quote(root) if same else root, ident[1])


def _nearest_existing(directory: str) -> str:
    """``directory`` if it exists, else its nearest ancestor that does (``/`` at the last)."""
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    return directory


def _mount_point(directory: str) -> str:
    """The mount point of the file system the existing ``directory`` is on (where a moved file can be)."""
    p = directory
    try:
        dev = os.stat(p).st_dev
        while p != "/" and os.stat(os.path.dirname(p)).st_dev == dev:
            p = os.path.dirname(p)
    except OSError:
        pass
    return p


def make_private(path: Path) -> None:
    """Make the database and any ``-wal``/``-shm`` owner-only (they hold per-device data) before SQLite
    opens them; a missing database is created empty, 0600.

    SQLite gives the ``-wal`` and ``-shm`` it creates the database file's mode, but leaves the mode
    of existing ones alone (left by a gateway that was killed, or by an older version), so all three
    are tightened here. chmod, not an open() of an existing file: run before SQLite opens it, but
    closing a descriptor of the database in this process would drop the POSIX locks SQLite holds
    on it. Only regular files are touched (SQLite's own open says what is wrong with anything else).

    ``path`` is the file itself (symlinks resolved). Nothing is followed from here (``lstat``): a
    ``-wal`` or ``-shm`` that is a symlink is refused with what to do. A chmod through it would change
    a file elsewhere (any file, for a gateway run as root), and SQLite either refuses the store with a
    bare "unable to open database file" (3.40 does) or writes the log into the file the link names. A
    file of another user (a backup restored as root) is refused with its owner and the ``chown``
    that fixes it, where the chmod or SQLite's open would fail with a bare "Operation not permitted".

    Raises:
        StorageError: reason ``symlinked`` or ``not_owned``.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
        finally:
            os.close(fd)
    for p, st in _store_files(path):
        if st.st_mode & 0o077:
            os.chmod(p, 0o600)


def _store_files(path: Path) -> list[tuple[Path, os.stat_result]]:
    """The store's database, ``-wal`` and ``-shm`` that exist as regular files, with their ``lstat``.

    ``path`` is the file itself (symlinks resolved). Reads only: a ``-wal`` or ``-shm`` that is a
    symlink, or a file of another user (for a gateway not run as root), is refused as
    :func:`make_private` describes, so ``run --check`` refuses what the open would.

    Raises:
        StorageError: reason ``symlinked`` or ``not_owned``.
    """
    files: list[tuple[Path, os.stat_result]] = []
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode) and p != path:
            what = "write-ahead log" if p.name.endswith("-wal") else "shared memory index"
            target = os.path.realpath(p)
            raise StorageError("report store file %s is a symlink (to %s): the store's %s must be a file of its own "
                               "next to the database (SQLite refuses such a link with a bare 'unable to open "
                               "database file', or writes through it into the file it names); put the file itself "
                               "in its place (mv %s %s) or, if the gateway was stopped cleanly, remove the link"
                               % (p, os.readlink(p), what, shlex.quote(target), shlex.quote(str(p))),
                               reason="symlinked")
        if stat.S_ISREG(st.st_mode):
            files.append((p, st))
    euid = os.geteuid()
    foreign = [(p, st.st_uid) for p, st in files if st.st_uid != euid]
    if foreign and euid != 0:  # root may chmod and open anyone's file; any other user can do neither
        names = " ".join(shlex.quote(str(p)) for p, _ in foreign)
        owners = ", ".join(sorted({_user_label(uid) for _, uid in foreign}))
        one = len(foreign) == 1
        raise StorageError("report store file%s %s %s owned by %s, not by the gateway's user %s (restored as root?): "
                           "SQLite cannot use %s; give %s back with: chown %s %s"
                           % ("" if one else "s", names, "is" if one else "are", owners, _user_label(euid),
                              "it" if one else "them", "it" if one else "them", _user_name(euid), names),
                           reason="not_owned")
    return files


def _user_name(uid: int) -> str:
    """The login name of ``uid``, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    """The name of the group ``gid``, or the number when it has none."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_label(uid: int) -> str:
    """``uid N (name)`` for messages."""
    name = _user_name(uid)
    return "uid %d" % uid if name == str(uid) else "uid %d (%s)" % (uid, name)


def file_identities(path: Path, real: Path) -> list[FileIdentity]:
    """The files to watch: the database under its configured name ``path`` and its ``-wal`` next to the
    file itself ``real`` (SQLite holds both open while the store is; a WAL that is reset is rewritten in
    place, and removed only at the last close), each with the file opened (:class:`FileIdentity`).

    The database's identity is that of the file opened (``real``), looked up later through ``path``
    (symlinks followed): should the link have been re-pointed since, the first check says so. Called right
    after the store's writer connection opened the files: the descriptor found then is that connection's.
    """
    found: list[FileIdentity] = []
    wal = real.with_name(real.name + "-wal")
    dirs: list[tuple[int, int]] = []
    for d in real.parents:
        try:
            st = os.stat(d)
        except OSError:
            break
        dirs.append((st.st_dev, st.st_ino))
    for name, p in ((path, real), (wal, wal)):
        try:
            st = os.stat(p)
        except OSError:
            continue
        ident = (st.st_dev, st.st_ino)
        opened = _open_file(FileIdentity(name, ident, p))  # only the writer's connection has it open yet
        found.append(FileIdentity(name, ident, p, tuple(dirs), None if opened is None else opened.fd))
    return found


def real_store_path(path: Path) -> Path:
    """The store's file itself: ``path`` with every symlink resolved (in its directories too).

    The single-writer lock, the ``-wal`` and the ``-shm`` belong next to that file: a second gateway
    configured with a symlink to a running gateway's store took a lock of its own next to the link.
    """
    return Path(os.path.realpath(path))


def _lock_file(real: Path) -> Path:
    """The single-writer lock file of the store file ``real`` (symlinks resolved): next to it."""
    return real.with_name(real.name + ".lock")


def _shown(path: Path, real: Path) -> str:
    """``path`` for messages, with the file it names when that is elsewhere (a symlink)."""
    return str(path) if real == Path(os.path.abspath(path)) else "%s (%s)" % (path, real)


def _in_use(path: Path, holder: str) -> StorageError:
    """The ``in_use`` error for a store whose single-writer lock could not be taken; ``holder`` is the pid text
    in the lock file, which names its last writer and may be stale: a store only read (its lock held shared)
    is said to be read, and a writer is named by the pid the kernel gives (:mod:`gateway.storage.lock_holders`)."""
    shown = _shown(path, real_store_path(path))
    readers = store_readers(path)
    if readers is not None:
        return StorageError("report store %s is being read by another civicedge command (%s), which holds its lock "
                            "shared while it reads (export-log, verify-log, routes plan, a backup); start again when "
                            "it ends" % (shown, readers), reason="in_use")
    writers = flock_pids(_lock_file(real_store_path(path)), write=True)
    pid = writers[0] if writers else holder or "unknown"
    # The holder is a gateway, or a `civicedge gateway backup` copying the store while no gateway runs.
    return StorageError("report store %s is in use by another gateway or a running civicedge gateway backup "
                        "(pid %s); stop the gateway first (a backup ends by itself: start again after it), or give "
                        "this one its own [storage] path" % (shown, pid), reason="in_use")


def store_readers(path: Path) -> str | None:
    """``pid N: <command line>`` of the processes holding the store's ``<db>.lock`` shared (one-shot reads:
    :class:`gateway.storage.sqlite_uri.ReadHold`), when no process holds it exclusive; None when a writer
    holds it, nobody does, or /proc/locks cannot tell."""
    lock = _lock_file(real_store_path(path))
    if flock_pids(lock, write=True) or not flock_pids(lock, write=False):
        return None
    return readers_text(lock, include_self=True)


def store_writer(path: Path) -> str | None:
    """The pid (as written in the lock file) of the gateway writing the store at ``path``, or None
    when no writer holds it (for tools that must not touch a store in use). ``path`` may be a
    symlink to the store; nothing is created."""
    holder = lock_holder(_lock_file(real_store_path(path)))
    return None if holder is None else holder or "unknown"


def check_store_free(path: Path) -> None:
    """Fail as opening a :class:`gateway.storage.store.ReportStore` on ``path`` would when a gateway writes it,
    it is hard-linked, its ``-wal``/``-shm`` is a symlink or a file is another user's (``gateway run --check``);
    creates nothing.

    Raises:
        StorageError: reason ``in_use``, ``hard_linked``, ``symlinked`` or ``not_owned``.
    """
    real = real_store_path(path)
    _refuse_hard_links(path, real)
    _store_files(real)
    holder = store_writer(path)
    if holder is not None:
        raise _in_use(path, holder)


def _refuse_hard_links(path: Path, real: Path) -> None:
    """Refuse a database file that has more than one name (hard links).

    Every name gets a lock, ``-wal`` and ``-shm`` of its own: a gateway started on another name
    would not see the running one's lock, and any connection through it (a second gateway, an
    operator's sqlite3) would miss the other name's WAL and write the database under it, damaging it.
    A lock named after the file's (st_dev, st_ino) would keep a second gateway out but not the second
    WAL, and would have to live in one place both names share. A hard-linked "backup" (``cp -al`` of
    the live data directory, a restore by ``cp -al``/``rsync --link-dest`` from a backup, a dedup
    tool's link) is no backup either: it changes with every commit. So a second name is refused, at
    every start: the message says how to break the link.

    Raises:
        StorageError: reason ``hard_linked``.
    """
    try:
        st = os.stat(real)
    except OSError:
        return  # absent (created by the open) or unreadable: the open says what is wrong
    links = st.st_nlink
    if links > 1 and stat.S_ISREG(st.st_mode):
        raise StorageError("report store %s has %d names (hard links): a gateway or sqlite3 opening it under another "
                           "name would use a lock and a -wal of its own and damage it, and a hard-linked copy is no "
                           "backup; give the store a file of its own while no gateway runs (cp -p %s %s.new && "
                           "mv %s.new %s), take the other names (find / -xdev -samefile %s) out of backup trees and "
                           "dedup runs, and make backups with civicedge gateway backup"
                           % ((_shown(path, real), links) + (shlex.quote(str(real)),) * 5), reason="hard_linked")


def lock_store(path: Path, real: Path) -> int:
    """Take the store's single-writer lock (``<db>.lock``, held until the store is closed).

    Two gateways writing one database would both extend the provenance chain from the same head;
    the second's every commit would fail. The lock is advisory (``flock``): released by the kernel
    when the process dies, so a crash never leaves a stale lock behind, and deleting the file while
    a gateway runs would defeat it (docs/gateway.md says to leave it). It is a file of its own, not
    the database: closing a descriptor of the database would drop SQLite's POSIX locks on it.

    The lock is next to the file itself, ``real`` (``path`` with symlinks resolved, once, by the
    caller, which opens that same file), and a file with several names (hard links) is refused (see
    :func:`_refuse_hard_links`). Once the lock is held, ``path`` must still resolve to ``real``: a
    link re-pointed in between would otherwise have the gateway hold one store's lock and write
    another (or skip the lock of the store the name now opens).

    Raises:
        StorageError: reason ``in_use`` when another process (or store in this one) holds it,
            ``hard_linked`` when the file has other names, ``path_changed`` when ``path`` no
            longer names ``real``.
    """
    _refuse_hard_links(path, real)
    try:
        mkdir_private(real.parent)
        fd = take_pid_lock(_lock_file(real), mode=0o600)
    except LockHeld as held:
        raise _in_use(path, held.holder) from None
    except OSError as exc:
        raise StorageError("cannot open report store %s: %s" % (path, exc), reason="open_failed") from exc
    now = real_store_path(path)
    if now != real:
        os.close(fd)
        raise StorageError("report store %s changed while it was opened: it named %s, now %s (a symlink re-pointed); "
                           "nothing was written; start the gateway again once the link is settled"
                           % (path, real, now), reason="path_changed")
    return fd


class MainStamp(NamedTuple):
    """What the database file looked like after the gateway's own last write to it (a checkpoint): in WAL
    mode SQLite writes the main file only when it checkpoints, and the store runs every checkpoint itself
    (``wal_autocheckpoint=0``), so any other change is another program writing it (:func:`main_stamp`)."""

    size: int
    mtime_ns: int
    header: bytes  # the 100-byte database header, b"" when it could not be read


def main_stamp(f: FileIdentity) -> MainStamp | None:
    """The :class:`MainStamp` of the database file ``f`` (the first of :func:`file_identities`), or None
    when it cannot be read.

    Read through the writer connection's own descriptor (``fstat``, ``pread``: no offset moved, nothing
    opened or closed, so SQLite's POSIX locks on the file stay), which is the file the store writes even
    when its name was taken away; without one (no ``/proc``), a ``stat`` of the file opened and no header
    (opening and closing a descriptor of it here would drop those locks)."""
    try:
        if f.fd is not None:
            st = os.fstat(f.fd)
            if (st.st_dev, st.st_ino) == f.ident:
                return MainStamp(st.st_size, st.st_mtime_ns, os.pread(f.fd, 100, 0))
        st = os.stat(f.opened)
        if (st.st_dev, st.st_ino) != f.ident:
            return None  # replaced: file_problem says so
        return MainStamp(st.st_size, st.st_mtime_ns, b"")
    except OSError:
        return None


def shm_file(real: Path) -> FileIdentity | None:
    """The ``-shm`` of the store file ``real`` with the descriptor SQLite holds it open by (one per process,
    shared by its connections, open as long as any is), or None when there is none (no ``/proc``). Read
    only through that descriptor (:func:`shm_head`): closing another one of this process would drop the
    POSIX locks SQLite holds on the ``-shm``."""
    shm = real.with_name(real.name + "-shm")
    try:
        st = os.stat(shm)
    except OSError:
        return None
    ident = (st.st_dev, st.st_ino)
    opened = _open_file(FileIdentity(shm, ident, shm))
    return None if opened is None else FileIdentity(shm, ident, shm, (), opened.fd)


def shm_head(f: FileIdentity) -> bytes:
    """The first 100 bytes of the ``-shm`` ``f`` (:func:`shm_file`; the WAL-index header copies and
    ``nBackfill``: gateway.storage.wal_index.wal_state), b"" when its descriptor is no longer that file."""
    if f.fd is None:
        return b""
    try:
        st = os.fstat(f.fd)
        return os.pread(f.fd, 100, 0) if (st.st_dev, st.st_ino) == f.ident else b""
    except OSError:
        return b""


def overwritten(f: FileIdentity, was: MainStamp, now: MainStamp) -> str | None:
    """Say so when the database file ``f`` changed from ``was`` to ``now`` (:func:`main_stamp`) though the
    gateway did not write it meanwhile: overwritten in place (``cp`` over it keeps the file, its inode, and
    replaces its content), which the identity check of :func:`file_problem` cannot see. None when unchanged.

    The message names what changed: the size, the database header, or only the modification time (size and
    header as before: maybe only a ``touch``, the content still the gateway's), and what to do in each case;
    the next start refuses while the ``-wal``/``-shm`` set aside are there (gateway.storage.wal_index)."""
    header_changed = bool(now.header and was.header and now.header != was.header)
    if now.size == was.size and now.mtime_ns == was.mtime_ns and not header_changed:
        return None
    what = []
    if was.size < 0:  # the gateway's own whole checkpoint did not leave the database's size (ReportStore._checkpoint)
        what.append("its size (%d bytes) is not the database's after a whole checkpoint" % now.size)
    elif now.size != was.size:
        what.append("its size went from %d to %d bytes" % (was.size, now.size))
    if header_changed:
        what.append("its database header changed")
    if now.mtime_ns != was.mtime_ns:
        what.append("its modification time changed")
    aside = wal_aside_names(f.opened)
    keep = ("so the gateway writes nothing more into it and, at its stop, does not checkpoint: it keeps that -wal "
            "and -shm aside as %s and %s, and the next start refuses until they are put back or moved away "
            "(docs/gateway.md, Overwritten in place)" % aside)
    if now.size == was.size and not header_changed and now.header and was.header:
        return ("report store file %s was changed in place while the gateway ran, by another program: only its "
                "modification time changed (size and database header as before): this may be only a touch, not "
                "a copy. It cannot be told apart from a copy of the same size, %s. If it was only touched, the "
                "file is the gateway's own and that -wal holds its last acknowledged reports: once the gateway "
                "is stopped, put both back (mv -n %s %s-wal && mv -n %s %s-shm) and start it"
                % (f.name, keep, shlex.quote(str(aside[0])), shlex.quote(str(f.opened)),
                   shlex.quote(str(aside[1])), shlex.quote(str(f.opened))))
    return ("report store file %s was overwritten in place while the gateway ran (the same file with new content, "
            "written by another program: %s, at no checkpoint of the gateway's own; e.g. a backup copied over it "
            "with cp): its pages no longer match the gateway's -wal, and a checkpoint would mix the two into a "
            "damaged store, %s. Reports the overwritten content held and the copy lacks "
            "(acknowledged after the copy was made) are lost: that -wal holds only the pages of the last commits, "
            "unreadable without the file they belong to. Never copy over a running "
            "gateway's store: stop the gateway, then restore a backup as docs/gateway.md, Restoring a backup says "
            "(with it stopped, copy the backup to %s again), and start it"
            % (f.name, ", ".join(what), keep, shlex.quote(str(f.opened))))


def wal_aside_names(real: Path) -> tuple[Path, Path]:
    """Where a store overwritten in place keeps its ``-wal`` and ``-shm`` at the stop (names not taken)."""
    n = 1
    while True:
        tail = ".overwritten" if n == 1 else ".overwritten-%d" % n
        wal, shm = (real.with_name(real.name + s + tail) for s in ("-wal", "-shm"))
        if not os.path.lexists(wal) and not os.path.lexists(shm):
            return wal, shm
        n += 1


def wal_frames_at_least(wal: Path, page_size: int, frames: int) -> bool:
    """Whether the ``-wal`` ``wal`` holds at least ``frames`` frames of its current log (SQLite's WAL format:
    a 32-byte header whose salts every frame header of the current log repeats at bytes 8..16; a log started
    over after a checkpoint rewrites the file from its start, with new salts). Two reads on a short-lived
    descriptor: SQLite takes no locks on the ``-wal`` (they are on the file and the ``-shm``), so closing it
    drops none. False when it cannot be read."""
    at = 32 + (frames - 1) * (page_size + 24)
    try:
        fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        head = os.pread(fd, 32, 0)
        frame = os.pread(fd, 24, at)
    except OSError:
        return False
    finally:
        os.close(fd)
    return len(head) == 32 and len(frame) == 24 and frame[8:16] == head[16:24]

"""The commands ``store_gone`` gives put the store back without harm, and its words match what happened.

Review findings (all failed before): the "put its directory back" ``mv`` climbed to whatever directory now
holds the file (``mv srv/backups var/data`` for a file moved into a backup directory); a deleted store
behind a ``[storage] path`` symlink whose target directory was removed was not salvaged at all; a hard link,
an over-mounted directory or a bind mount's source were all called "no longer mounted"; the ``cp`` advice
could name a read connection's short-lived descriptor; paths with spaces or newlines split the commands.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_gone import filled_store, rec, seqs

from gateway.storage import ReportStore

# the gateway's user and group, as the advice names them (this process is the gateway here)
USER = __import__("pwd").getpwuid(os.geteuid()).pw_name
GROUP = __import__("grp").getgrgid(os.getegid()).gr_name


def advised(problem: str) -> str:
    """The shell command of a "put it back" hint: after "then " up to ", and start it again"."""
    m = re.search(r"move it aside first; then (.*), and start it again\)", problem, re.S)
    assert m is not None, problem
    return m.group(1)


def test_a_file_moved_into_another_directory_is_moved_back_alone_not_that_directory(tmp_path: Path) -> None:
    data, backups = tmp_path / "var" / "data", tmp_path / "srv" / "backups"
    data.mkdir(parents=True)
    backups.mkdir(parents=True)
    (backups / "other-precious.tar").write_text("x")
    db = data / "reports.sqlite"
    with filled_store(db) as store:
        db.rename(backups / "reports.sqlite")
        data.rename(tmp_path / "var" / "data.trash")
        problem = store.file_problem() or ""
        command = advised(problem)
        assert shlex.split(command) == ["mkdir", "-m", "0700", str(data), "&&", "chown", "%s:%s" % (USER, GROUP),
                                        str(data), "&&", "mv", "-T", "-n", str(backups / "reports.sqlite"), str(db)], problem
        assert "moved without its directory %s" % data in problem and "device registry" in problem, problem
    subprocess.run(["bash", "-c", command], check=True)
    assert seqs(db) == [1] and (backups / "other-precious.tar").read_text() == "x"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_the_recreated_directories_are_the_gateway_users_and_0700_each_of_them_named(tmp_path: Path) -> None:
    """Every missing directory is made 0700 and the gateway user's, topmost first. Fails before (mkdir -p: umask's
    modes)."""
    from gateway.storage.store_files import make_dir

    dirs = (tmp_path / "a", tmp_path / "a" / "b c", tmp_path / "a" / "b c" / "data")
    command = make_dir(dirs[-1])
    assert command == " && ".join("mkdir -m 0700 %s && chown %s %s" % (shlex.quote(str(d)),
                                                                       shlex.quote("%s:%s" % (USER, GROUP)),
                                                                       shlex.quote(str(d))) for d in dirs)
    subprocess.run(["bash", "-c", "umask 022 && " + command], check=True)
    for d in dirs:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == os.geteuid(), d


def test_the_recreating_command_changes_nothing_of_a_directory_made_meanwhile(tmp_path: Path) -> None:
    """A directory that exists by the time the operator runs the command (systemd, tmpfiles, a shared parent)
    keeps its owner and mode, and nothing below it is made (install -d chowned and chmodded it: reviewer)."""
    from gateway.storage.store_files import make_dir

    command = make_dir(tmp_path / "shared" / "data")
    (tmp_path / "shared").mkdir(mode=0o755)
    (tmp_path / "shared").chmod(0o755)
    assert subprocess.run(["bash", "-c", command], capture_output=True).returncode != 0
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755
    assert not (tmp_path / "shared" / "data").exists()


def _as_user(uid: int, gid: int, work: Callable[[], str]) -> tuple[int, str]:
    """Run ``work`` in a forked child with the user and group ``uid``/``gid`` (no other group, umask 077, as the
    gateway's service would); its exit status and what it returned (or the error it raised). A fork, not a new
    interpreter: this one may live where that user cannot read (``/root``)."""
    import codecs

    codecs.lookup("ascii")  # looked up (imported) by the store's checks: the child may not read the interpreter's files
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.umask(0o077)
            os.write(w, work().encode())
            code = 0
        except BaseException as exc:  # noqa: BLE001 - said to the parent
            os.write(w, ("%s: %s" % (type(exc).__name__, exc)).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as out:
        said = out.read().decode()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), said


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="runs the gateway as another user: root")
def test_the_advice_run_by_root_leaves_a_directory_the_gateway_user_can_use() -> None:
    """The gateway runs as its own user (nobody here); its store's file moved alone and its directory removed; root
    (sudo, umask 022) runs the advised command; the gateway starts on the store again. Fails before (mkdir -p made
    the directory root's, 0755: the restart failed with "unable to open database file")."""
    import grp
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="storefix-advice-"))  # tmp_path is root's 0700: nobody cannot enter it
    db = base / "var" / "data" / "reports.sqlite"

    def gateway_breaks() -> str:
        (base / "var" / "data").mkdir(parents=True, mode=0o700)
        (base / "keep").mkdir(mode=0o700)
        with filled_store(db) as store:
            db.rename(base / "keep" / "reports.sqlite")
            (base / "var" / "data").rename(base / "var" / "trash")
            return store.file_problem() or ""

    def gateway_starts() -> str:
        store = ReportStore(db, gateway_id="gw1")
        try:
            return repr(store.max_seqs())
        finally:
            store.close()

    try:
        os.chmod(base, 0o755)
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        code, problem = _as_user(nobody.pw_uid, nobody.pw_gid, gateway_breaks)
        assert code == 0, problem
        command = advised(problem)
        subprocess.run(["bash", "-c", "umask 022 && " + command], check=True)
        code, seqs_after = _as_user(nobody.pw_uid, nobody.pw_gid, gateway_starts)
        assert (code, seqs_after) == (0, "{'b1': 1}"), command
        assert command.startswith("mkdir -m 0700 %s && chown %s %s && " % (
            db.parent, shlex.quote("nobody:%s" % grp.getgrgid(nobody.pw_gid).gr_name), db.parent)), command
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700 and db.parent.stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(base)


def test_a_data_directory_moved_with_its_parent_is_put_back_by_the_parent(tmp_path: Path) -> None:
    (tmp_path / "var" / "data").mkdir(parents=True)
    db = tmp_path / "var" / "data" / "reports.sqlite"
    with filled_store(db) as store:
        (tmp_path / "var").rename(tmp_path / "var.old")
        problem = store.file_problem() or ""
        assert shlex.split(advised(problem)) == ["mv", "-T", "-n", str(tmp_path / "var.old"), str(tmp_path / "var")]


def test_a_file_moved_to_a_directory_of_the_same_name_is_not_mistaken_for_its_directory(tmp_path: Path) -> None:
    """``/root/reports.sqlite`` once advised ``mv /root /var/lib/civicedge/data``: same last name, gone
    destination, so the old climb took /root for the data directory."""
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b" / "data").mkdir(parents=True)
    db = tmp_path / "a" / "data" / "reports.sqlite"
    with filled_store(db) as store:
        db.rename(tmp_path / "b" / "data" / "reports.sqlite")
        shutil.rmtree(tmp_path / "a")
        problem = store.file_problem() or ""
        assert shlex.split(advised(problem))[-2:] == [str(tmp_path / "b" / "data" / "reports.sqlite"), str(db)]


def test_paths_in_the_commands_are_quoted(tmp_path: Path) -> None:
    (tmp_path / "civic data").mkdir()
    db = tmp_path / "civic data" / "reports.sqlite"
    with filled_store(db) as store:
        moved = tmp_path / "civic data.old\nx"
        (tmp_path / "civic data").rename(moved)
        problem = store.file_problem() or ""
        command = advised(problem)
        assert shlex.split(command) == ["mv", "-T", "-n", str(moved), str(tmp_path / "civic data")], problem
    subprocess.run(["bash", "-c", command], check=True)
    assert seqs(db) == [1]


def test_the_directory_move_never_lands_inside_a_new_data_directory(tmp_path: Path) -> None:
    """After a restart created an empty data directory, ``mv data.old data`` would have moved into it."""
    data = tmp_path / "data"
    data.mkdir()
    db = data / "reports.sqlite"
    with filled_store(db) as store:
        data.rename(tmp_path / "data.old")
        problem = store.file_problem() or ""
        command = advised(problem)
        assert "if %s exists" % data in problem, problem
    data.mkdir()
    (data / "reports.sqlite").write_bytes(b"")  # the new, empty store of a gateway started meanwhile
    subprocess.run(["bash", "-c", command])
    assert not (data / "data.old").exists() and (data / "reports.sqlite").read_bytes() == b""
    assert seqs(tmp_path / "data.old" / "reports.sqlite") == [1]


def test_a_store_whose_symlinked_directory_was_removed_is_salvaged_beside_the_link(tmp_path: Path) -> None:
    disk, etc = tmp_path / "disk", tmp_path / "etc"
    disk.mkdir()
    etc.mkdir()
    real, link = disk / "reports.sqlite", etc / "reports.sqlite"
    link.symlink_to(real)
    with filled_store(link, reports=5) as store:
        shutil.rmtree(disk)
        problem = store.check_file() or ""
        copy = etc / "reports.sqlite.salvaged"
        assert "copied it, as of its last commit, to %s" % copy in problem, problem
        assert "its own directory %s is gone: beside %s instead" % (disk, link) in problem, problem
        m = re.search(r"move the copy into place \((.*)\) and start it again", problem)
        assert m is not None, problem
    assert seqs(copy) == [1, 2, 3, 4, 5]
    subprocess.run(["bash", "-c", m.group(1)], check=True)
    again = ReportStore(link, gateway_id="gw1")
    try:
        assert again.max_seqs() == {"b1": 5}
    finally:
        again.close()


def test_without_room_the_cp_commands_name_a_directory_that_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.storage import salvage

    monkeypatch.setattr(salvage, "free_bytes", lambda _path: 1_000)
    disk = tmp_path / "disk"
    disk.mkdir()
    link = tmp_path / "reports.sqlite"
    link.symlink_to(disk / "reports.sqlite")
    with filled_store(link) as store:
        shutil.rmtree(disk)
        problem = store.check_file() or ""
        found = re.search(r": (test .*?); then stop the gateway", problem)
        assert found is not None, problem
        assert len(re.findall(r"&& cp -n --preserve=mode,ownership /proc/\d+/fd/\d+ \S+", found.group(1))) == 2, problem
        subprocess.run(["bash", "-c", found.group(1)], check=True)
    assert seqs(tmp_path / "reports.sqlite.salvaged") == [1]


def test_the_cp_advice_names_the_writers_own_descriptor_not_a_reader(tmp_path: Path) -> None:
    """A reader opened on a lower descriptor number (freed before it) came first in /proc/self/fd."""
    db = tmp_path / "reports.sqlite"
    low = os.open("/dev/null", os.O_RDONLY)
    store = ReportStore(db, gateway_id="gw1")
    os.close(low)
    reader = sqlite3.connect(db)  # takes the lowest free number: below the writer's
    try:
        reader.execute("SELECT COUNT(*) FROM reports").fetchone()
        store.insert_batch([rec(1)])
        db.unlink()
        problem = store.file_problem() or ""
        named = [int(n) for n in re.findall(r"/proc/%d/fd/(\d+)" % os.getpid(), problem)]
        assert named and named[0] != low, problem
        reader.close()
        assert os.stat("/proc/self/fd/%d" % named[0]).st_nlink == 0  # still the deleted store
    finally:
        store.close()


def test_a_name_removed_while_a_hard_link_keeps_the_file_is_not_called_unmounted(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "keep").mkdir()
    db = tmp_path / "data" / "reports.sqlite"
    with filled_store(db) as store:
        os.link(db, tmp_path / "keep" / "reports.sqlite")
        db.unlink()
        problem = store.file_problem() or ""
        assert "no longer mounted" not in problem and "another name (a hard link) still has it" in problem, problem
        assert "-inum %d" % (tmp_path / "keep" / "reports.sqlite").stat().st_ino in problem, problem


@pytest.fixture
def can_mount(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points to undo (skips where this process may not mount)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(probe)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount here (needs root and mount permission)")
    mounted = [probe]
    yield mounted
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_file_moved_under_a_directory_mounted_over_is_named_not_called_unmounted(
        tmp_path: Path, can_mount: list[Path]) -> None:
    """What the descriptor names but this process cannot reach (PrivateTmp=, ProtectHome=)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "tmp").mkdir()
    db = tmp_path / "data" / "reports.sqlite"
    with filled_store(db) as store:
        (tmp_path / "data").rename(tmp_path / "tmp" / "data.old")
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmp_path / "tmp")], check=True)
        can_mount.append(tmp_path / "tmp")
        problem = store.file_problem() or ""
        assert "no longer mounted" not in problem, problem
        assert ("its descriptor names %s (the gateway cannot check it from its own view: %s is on another file "
                "system than the file: one mounted over it hides the file (findmnt -T %s))"
                % (tmp_path / "tmp" / "data.old" / "reports.sqlite", tmp_path / "tmp", tmp_path / "tmp")) in problem, \
            problem
        assert "-inum" in problem


def test_a_file_system_mounted_over_the_data_directory_is_said_not_moved_away(
        tmp_path: Path, can_mount: list[Path]) -> None:
    """A late mount over the data directory (a disk's fstab entry mounted while the gateway runs): the descriptor
    names the configured path itself. Fails before ("moved away ... its descriptor names <the same path>")."""
    data = tmp_path / "data"
    data.mkdir()
    db = data / "reports.sqlite"
    with filled_store(db) as store:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(data)], check=True)
        can_mount.append(data)
        problem = store.file_problem() or ""
        assert problem.startswith("report store file %s was hidden by a file system mounted over it while the "
                                  "gateway ran (the file it writes is still at %s, nothing is lost" % (db, db)), problem
        assert "findmnt -T %s" % data in problem and "unmount it" in problem and "moved away" not in problem, problem
    subprocess.run(["umount", str(data)], check=True)  # what the advice says: the store is there again
    can_mount.remove(data)
    assert seqs(db) == [1]


def test_without_mnt_id_an_unmounted_file_system_is_among_the_causes_said(
        tmp_path: Path, can_mount: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """umount -l of the data directory's mount on a kernel whose fdinfo has no mnt_id (before 3.15; this one has
    it, so _detached answers None as there). Fails before (only "moved away", a find on that device)."""
    import gateway.storage.store_files as store_files

    mnt = tmp_path / "m"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    (mnt / "data").mkdir()
    with filled_store(mnt / "data" / "reports.sqlite") as store:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
        monkeypatch.setattr(store_files, "_detached", lambda fd: None)
        problem = store.file_problem() or ""
        assert "or the file's file system is no longer mounted (umount -l" in problem, problem


def test_a_file_moved_out_of_a_bind_mounts_tree_is_not_called_unmounted(
        tmp_path: Path, can_mount: list[Path]) -> None:
    (tmp_path / "srv" / "civic" / "data").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "srv" / "civic"), str(tmp_path / "var")], check=True)
    can_mount.append(tmp_path / "var")
    db = tmp_path / "var" / "data" / "reports.sqlite"
    with filled_store(db) as store:
        (tmp_path / "srv" / "civic" / "data").rename(tmp_path / "srv" / "data.old")
        problem = store.file_problem() or ""
        assert "no longer mounted" not in problem and "gives no usable name" in problem, problem
        assert "-inum %d" % (tmp_path / "srv" / "data.old" / "reports.sqlite").stat().st_ino in problem


def test_a_link_re_pointed_at_another_file_names_both(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    real, other = tmp_path / "a" / "reports.sqlite", tmp_path / "b" / "reports.sqlite"
    link = tmp_path / "reports.sqlite"
    link.symlink_to(real)
    with filled_store(link) as store:
        other.write_bytes(b"")
        link.unlink()
        link.symlink_to(other)
        problem = store.file_problem() or ""
        assert "was replaced by another file while the gateway ran (it now names %s)" % other in problem, problem
        assert "the file it writes is still at %s, nothing is lost, but %s no longer leads to it" % (real, link) \
            in problem, problem
    assert seqs(real) == [1]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="runs the gateway as another user: root")
def test_the_salvage_directory_is_one_the_gateway_user_can_write_never_the_one_refused() -> None:
    """The store's directory (and the one above it) exist but are not the gateway user's to write: the copy goes to
    the nearest directory above them it can write. Fails before (the refused directory itself was returned, as
    "the nearest that exists")."""
    import pwd
    import tempfile

    from gateway.storage.store_files import FileIdentity, salvage_dir

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="storefix-salvage-"))  # tmp_path is root's 0700: nobody cannot enter it
    try:
        os.chmod(base, 0o755)
        os.chown(base, nobody.pw_uid, nobody.pw_gid)  # the gateway's to write
        (base / "ro" / "data").mkdir(parents=True)  # root's, 0755
        os.chmod(base / "ro", 0o755)
        os.chmod(base / "ro" / "data", 0o755)
        db = base / "ro" / "data" / "reports.sqlite"
        code, said = _as_user(nobody.pw_uid, nobody.pw_gid, lambda: repr(salvage_dir([FileIdentity(db, (0, 0), db)])))
        assert code == 0, said
        assert said == repr((base, " (its own directory %s is not writable: in %s instead, the nearest above it this "
                                   "user can write)" % (db.parent, base))), said
    finally:
        shutil.rmtree(base)


def test_the_cp_advice_copies_nothing_once_its_descriptor_names_another_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cp commands name /proc/PID/fd/N: run after the gateway stopped, that PID (or N) may be another process's
    file. Each cp runs only while the descriptor still names the deleted store. Fails before (the other file was
    copied, as the store, into place for the mv)."""
    from gateway.storage import salvage

    monkeypatch.setattr(salvage, "free_bytes", lambda _path: 1_000)  # no room: the cp advice
    db = tmp_path / "reports.sqlite"
    with filled_store(db) as store:
        db.unlink()
        problem = store.check_file() or ""
    found = re.search(r": (test .*?); then stop the gateway", problem)
    assert found is not None, problem
    numbers = [int(n) for n in re.findall(r"cp -n --preserve=mode,ownership /proc/%d/fd/(\d+)" % os.getpid(),
                                          found.group(1))]
    assert len(numbers) == 2, problem
    other = tmp_path / "someone-elses.txt"
    other.write_text("not the store")
    with pytest.raises(OSError):
        os.fstat(numbers[0])  # closed with the store (dup2 below must not take a number something else holds)
    fd = os.open(other, os.O_RDONLY)
    try:
        os.dup2(fd, numbers[0])  # the number reused for another file
        done = subprocess.run(["bash", "-c", found.group(1)], capture_output=True)
    finally:
        os.close(numbers[0])
        os.close(fd)
    assert done.returncode != 0 and not list(tmp_path.glob("reports.sqlite.salvaged*")), done


def test_one_report_salvaged_is_said_in_the_singular(tmp_path: Path) -> None:
    """Fails before ("(1 reports, ...")."""
    db = tmp_path / "reports.sqlite"
    with filled_store(db) as store:
        db.unlink()
        problem = store.check_file() or ""
    assert "copied it, as of its last commit, to %s.salvaged (1 report, " % db in problem, problem

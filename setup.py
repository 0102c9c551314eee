"""Build step of the ``civicedge`` distribution (the rest of its metadata is in pyproject.toml).

``firmware/`` (the MicroPython code, its privacy policy) and ``boards/`` (board definitions, freeze
manifest) sit at the top of the repository, outside the import packages, yet the installed
commands read them: the gateway's policy gate, ``flash``, ``sim``, ``boards``, ``hil``. ``build_py``
copies their files into the built ``gateway`` package as ``gateway/_bundle/firmware`` and
``gateway/_bundle/boards``; :mod:`gateway.resources` finds them there in an installed wheel, and at
the top of the checkout otherwise. A new firmware module, sub-package or board file ships without a
pyproject.toml edit.

What a user of the installed package reads but never sees in a checkout ships the same way: the
documentation (``docs/*.md``, which messages and ``--help`` texts point to), ``CHANGELOG.md`` (what
docs/upgrading.md has one read before an upgrade), the systemd unit and the Prometheus alert rules
(``scripts/...``), at the same relative paths under ``gateway/_bundle``; ``civicedge docs`` finds
them.

Which files ship (:func:`bundled_files`): in a git checkout, exactly the files git tracks of those
trees and files (``git ls-files``), so an untracked key backup, an editor's ``~`` file or a tool's
cache never does; elsewhere (an unpacked sdist, which holds only those files) the files on disk.
Caches and backups are left out in both cases. A symlink is shipped as the file it points to only
when that file is inside the same tree (the repository, for a single file) and would ship itself: in
a git checkout tracked, and never a cache or backup, nor (in a tree) a file its pattern leaves out;
any other link (out of the tree, at a directory, at nothing, at an untracked or left-out file) stops
the build with an error naming it and its target. The sdist gets the same list
through ``get_source_files`` (setuptools adds a ``build_py``'s source files to the sdist), so
MANIFEST.in does not graft the trees.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent
BUNDLED_TREES = ("firmware", "boards", "docs")
# Of a tree named here only the files matching a pattern ship (docs/: the pages and the data files
# they give integrators, protocol-vectors.json of docs/protocol.md §7).
TREE_PATTERNS = {"docs": ("*.md", "*.json")}
BUNDLED_FILES = ("CHANGELOG.md", "scripts/civicedge-gateway.service", "scripts/prometheus/civicedge-alerts.yml")
BUNDLE_DIR = Path("gateway") / "_bundle"  # gateway.resources.BUNDLE_DIR
# Never shipped, tracked or not: byte-code, tool caches, npm's packages, editor and manual backups.
NOT_SHIPPED = ("__pycache__", "*.py[cod]", ".mypy_cache", ".pytest_cache", ".hypothesis", ".ruff_cache",
               "node_modules", ".DS_Store", "*~", "*.bak", "*.orig", "*.rej", "*.swp", ".#*")


def _not_shipped(rel: PurePosixPath) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in rel.parts for pattern in NOT_SHIPPED)


def _wanted(rel: PurePosixPath) -> bool:
    """``rel`` is one of the bundled files, or in a bundled tree and matching one of its patterns."""
    if rel.as_posix() in BUNDLED_FILES:
        return True
    patterns = TREE_PATTERNS.get(rel.parts[0])
    return rel.parts[0] in BUNDLED_TREES and (
        patterns is None or any(fnmatch.fnmatch(rel.name, pattern) for pattern in patterns))


def _git_tracked(root: Path) -> list[str]:
    """The files git tracks in the checkout (index entries, so a staged new file too): those of the bundled
    trees and files ship; a shipped link's target must be one."""
    git = shutil.which("git")
    if git is None:
        raise FileError(f"{root} is a git checkout but git is not on PATH: it decides which files of "
                        f"{', '.join(BUNDLED_TREES)}/ ship (only tracked ones); install git")
    proc = subprocess.run([git, "-C", str(root), "ls-files", "-z"], capture_output=True, check=False)
    if proc.returncode != 0:
        raise FileError(f"git ls-files in {root} failed (exit status {proc.returncode}): "
                        f"{proc.stderr.decode(errors='replace').strip()}")
    return [name for name in proc.stdout.decode().split("\0") if name]


def _on_disk(root: Path) -> list[str]:
    """The files under the bundled trees and the bundled files (symlinks listed, never followed; caches pruned)."""
    found = [rel for rel in BUNDLED_FILES if (root / rel).is_symlink() or (root / rel).exists()]
    for tree in BUNDLED_TREES:
        for dirpath, dirnames, filenames in os.walk(root / tree):  # followlinks=False
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not _not_shipped(PurePosixPath(d)))
            for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
                found.append((here / name).relative_to(root).as_posix())
    return found


def _check_link(root: Path, rel: str, tracked: set[str] | None) -> None:
    """Refuse a symlink that points out of its tree (a single file's: the repository), at a directory, at
    nothing, or at a file that would not ship itself: untracked (``tracked``: git's files, None outside a
    checkout), a cache or backup, or (in a tree) not matching the tree's patterns."""
    path = root / rel
    single = rel in BUNDLED_FILES
    tree = (root if single else root / PurePosixPath(rel).parts[0]).resolve()
    where = f"{rel} -> {os.readlink(path)}"
    target = path.resolve()
    if not target.is_relative_to(tree):
        out_of = "the repository" if single else f"{tree.name}/"
        if not target.is_relative_to(root.resolve()):
            raise FileError(f"{where} points out of {out_of}: refusing to ship a file from outside the "
                            "repository; replace the link with the file, or remove it")
        # In the repository but another tree's (or none's) file: a tree's link ships only its own tree's files.
        name = target.relative_to(root.resolve()).as_posix()
        raise FileError(f"{where} points out of {out_of} at {name}: a link in {out_of} may only point at a file "
                        f"of {out_of}; copy the file into {out_of}, or remove the link")
    if not target.exists():
        raise FileError(f"{where} is a dangling symlink; fix or remove it")
    if not target.is_file():
        raise FileError(f"{where} points at a directory; only files are shipped: put the files in place of the link")
    # The link ships the target's bytes: the target must be a file that would ship itself.
    name = PurePosixPath(target.relative_to(root.resolve()).as_posix())
    if tracked is not None and name.as_posix() not in tracked:
        raise FileError(f"{where} points at {name}, which git does not track: refusing to ship an untracked "
                        "file's contents; commit the file, or remove the link")
    if _not_shipped(name):
        raise FileError(f"{where} points at {name}, a cache or backup file, which never ships; remove the link")
    if not single and not _wanted(name):
        raise FileError(f"{where} points at {name}, which {name.parts[0]}/ does not ship (only "
                        f"{', '.join(TREE_PATTERNS[name.parts[0]])}); remove the link")


def bundled_files(root: Path = ROOT) -> list[str]:
    """The files that ship in ``gateway/_bundle``, as paths relative to ``root`` (sorted): those of
    :data:`BUNDLED_TREES` (matching :data:`TREE_PATTERNS`) and :data:`BUNDLED_FILES`.

    Raises:
        FileError: a tree or file is missing, git cannot list a checkout's files, or a shipped path is a
            symlink out of its tree, to a directory, dangling, or to a file that would not ship itself.
    """
    for tree in BUNDLED_TREES:
        if not (root / tree).is_dir():
            raise FileError(f"{root / tree} is missing: the civicedge distribution cannot be built without it")
    for rel in BUNDLED_FILES:
        if not (root / rel).is_file():
            raise FileError(f"{root / rel} is missing: the civicedge distribution cannot be built without it")
    # A tracked file deleted on disk is not shipped (the build is of the working tree).
    tracked = set(_git_tracked(root)) if (root / ".git").exists() else None
    listed = _on_disk(root) if tracked is None else [
        rel for rel in tracked if PurePosixPath(rel).parts[0] in BUNDLED_TREES or rel in BUNDLED_FILES]
    files = []
    for rel in sorted(set(listed)):
        path = root / rel
        if not _wanted(PurePosixPath(rel)) or _not_shipped(PurePosixPath(rel)):
            continue
        if not (path.is_symlink() or path.exists()):
            continue
        if path.is_symlink():
            _check_link(root, rel, tracked)
        elif not path.is_file():
            continue  # a submodule entry; none is expected
        files.append(rel)
    return files


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies :func:`bundled_files` (``firmware/``, ``boards/``, the docs, ...) into
    ``gateway/_bundle/``."""

    def get_source_files(self) -> list[str]:
        """The package sources and the bundled files: what the sdist carries."""
        return [*super().get_source_files(), *bundled_files()]

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's own files
        files = bundled_files()
        target = Path(self.build_lib) / BUNDLE_DIR
        shutil.rmtree(target, ignore_errors=True)  # a file deleted since the last build must not linger
        for rel in files:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, dest)  # a link checked by bundled_files: its file's bytes
            shutil.copymode(ROOT / rel, dest)


setup(cmdclass={"build_py": BuildPyWithBundle})

"""The built distribution carries what the installed commands read (firmware/, boards/, the policy,
the licence) and what their users read (docs/*.md and *.json, CHANGELOG.md, the systemd unit, the alert rules),
and those commands work from an installed wheel, far from any checkout.

The sdist is built from a git copy of the checkout, and the wheel from the unpacked sdist (what
``python -m build`` does), with this venv's setuptools and no network (``--no-build-isolation``).
Of firmware/, boards/, docs/*.md and *.json and the single files exactly the files git tracks ship: the copy
also holds untracked files, caches and symlinks out of the tree, which must stay out of both.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

import gateway

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUNDLED_TREES = ("firmware", "boards", "docs")
BUNDLED_FILES = ("CHANGELOG.md", "scripts/civicedge-gateway.service", "scripts/prometheus/civicedge-alerts.yml")
# Not sources: what installs, builds, caches and test runs leave in a working tree.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", "*.py[cod]", ".mypy_cache",
                                     ".hypothesis", ".pytest_cache", "artifacts", "var", "build", "dist",
                                     "*.egg-info", "tests", "bench")


def _need_setuptools() -> None:
    have = Version(importlib.metadata.version("setuptools"))
    if have < Version("77"):
        pytest.skip(f"this venv's setuptools {have} cannot build offline (pyproject needs >= 77; scripts/setup "
                    "installs it with the [test] extra)")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout


def _shipped(name: str) -> bool:
    """A path git lists that ships: all of firmware/ and boards/, the pages and data files of docs/, the
    single files."""
    return name in BUNDLED_FILES or name.split("/")[0] in ("firmware", "boards") or (
        name.startswith("docs/") and name.endswith((".md", ".json")))


def _tracked(src: Path) -> dict[str, bytes]:
    """The files git tracks of ``src`` that ship (path -> bytes)."""
    names = _git(src, "ls-files", "-z", "--", *BUNDLED_TREES, *BUNDLED_FILES).split("\0")
    return {name: (src / name).read_bytes() for name in names if name and _shipped(name)}


def _vectors_in(wheel: Path) -> bytes:
    """The protocol's test vectors as the wheel carries them."""
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("gateway/_bundle/docs/protocol-vectors.json")


def _build_sdist(src: Path, dist: Path) -> subprocess.CompletedProcess[str]:
    dist.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
                          cwd=src, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    """(sdist, wheel, tracked files of firmware/ and boards/) built from a git copy of the checkout; the
    copy also holds npm's packages, byte-code, untracked files, backups, caches and symlinks out of the
    tree, which must stay out of both."""
    _need_setuptools()
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    _git(src, "init", "-q")
    _git(src, "add", "--", *BUNDLED_TREES, *BUNDLED_FILES)
    tracked = _tracked(src)
    assert "firmware/policy.json" in tracked and "boards/manifest.py" in tracked
    assert {"docs/gateway.md", "docs/upgrading.md", *BUNDLED_FILES} <= set(tracked)
    assert "docs/protocol-vectors.json" in tracked  # docs/protocol.md §7 sends integrators to it
    outside = tmp / "outside"
    (outside / "certs").mkdir(parents=True)
    (outside / "hostname").write_text("gateway-host\n")
    (outside / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    untracked = {
        "firmware/identity.json.bak": '{"id": "sl-0001", "key": "00112233445566778899aabbccddeeff"}',
        "firmware/notes.txt": "scratch notes, never committed",
        "firmware/lib/civic/report.py~": "# an editor's backup",
        "firmware/node_modules/left-pad/package.json": "{}",
        "boards/.mypy_cache/3.11/manifest.data.json": "{}",
        "docs/draft-notes.md": "# an untracked draft page",
        "docs/draft-vectors.json": "{}",
        "docs/notes.txt": "not a page",
        "scripts/prometheus/local-extra-alerts.yml": "groups: []",
        "firmware/lib/civic/__pycache__/report.cpython-311.pyc": "\0",
        "hil/sim/node_modules/left-pad/package.json": "{}",
        # A stale bundle in the source tree (an old in-tree build): never shipped in its place.
        "gateway/_bundle/firmware/policy.json": '{"stale": true}',
        "gateway/_bundle/firmware/lib/old_module.py": "# removed from firmware/ since",
    }
    for rel, text in untracked.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (src / "firmware" / "hostlink").symlink_to(outside / "hostname")
    (src / "boards" / "certs").symlink_to(outside / "certs", target_is_directory=True)
    dist = tmp / "dist"
    proc = _build_sdist(src, dist)
    assert proc.returncode == 0, proc.stderr
    (sdist,) = dist.glob("civicedge-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(unpacked)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = dist.glob("civicedge-*.whl")
    return sdist, wheel, tracked


def test_sdist_carries_exactly_the_tracked_firmware_boards_docs_unit_alerts_and_the_licence(
        built: tuple[Path, Path, dict[str, bytes]]) -> None:
    sdist, _, tracked = built
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        bundled = {name: tar.extractfile(m).read() for name, m in members.items()  # type: ignore[union-attr]
                   if _shipped(name) and m.isfile()}
    names = set(members)
    assert bundled == tracked
    assert "docs/draft-notes.md" not in names and "scripts/prometheus/local-extra-alerts.yml" not in names
    assert "docs/draft-vectors.json" not in names and "docs/notes.txt" not in names
    assert not [n for n in names if n.split("/")[0] in BUNDLED_TREES and not members[n].isfile()
                and not members[n].isdir()], "a link or special file in the sdist"
    assert {"LICENSE", "setup.py", "MANIFEST.in", "pyproject.toml"} <= names
    assert not [n for n in names if "node_modules" in n or n.endswith(".pyc") or n.startswith("gateway/_bundle")]


def test_wheel_carries_exactly_the_tracked_firmware_boards_docs_changelog_unit_alerts_and_licence(
        built: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, wheel, tracked = built
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        prefix = "gateway/_bundle/"
        bundled = {n[len(prefix):]: zf.read(n) for n in names if n.startswith(prefix)}
        assert bundled == tracked
        dist_info = f"civicedge-{gateway.__version__}.dist-info"
        assert zf.read(f"{dist_info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "gateway/_bundle/firmware/policy.json" in names
    assert "gateway/_bundle/boards/manifest.py" in names
    pages = {f"gateway/_bundle/docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert pages and pages <= names
    assert {f"gateway/_bundle/{rel}" for rel in BUNDLED_FILES} <= names
    assert _vectors_in(wheel) == (REPO / "docs" / "protocol-vectors.json").read_bytes()
    assert f"\nVersion: {gateway.__version__}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "\nLicense-File: LICENSE\n" in metadata
    assert not [n for n in names if "node_modules" in n or n.endswith(".pyc")]
    # The simulator's Node host ships, for `civicedge sim install-runtime` and the boards.
    assert {"hil/sim/package.json", "hil/sim/package-lock.json", "hil/sim/host.mjs", "hil/sim/mprun.mjs",
            "hil/sim/js/runtime_resolve.mjs", "hil/sim/js/runtime_hooks.mjs", "hil/sim/mpy/machine.py"} <= names


def test_installed_wheel_commands_work_outside_the_checkout(built: tuple[Path, Path, dict[str, bytes]],
                                                           tmp_path: Path) -> None:
    _, wheel, _ = built
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=120)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The venv's site-packages gives the dependencies (and an editable civicedge, which PYTHONPATH
    # comes before); -P and the cwd keep the checkout off sys.path.
    env = {**os.environ, "PYTHONPATH": str(target)}

    def civicedge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-P", "-m", "hil.cli.main", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60)

    where = subprocess.run([sys.executable, "-P", "-c", "import hil, gateway.resources as r; "
                            "print(hil.__file__); print(r.project_root()); print(r.load_policy()['kinds'].keys())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=True)
    hil_file, root, kinds = where.stdout.splitlines()
    assert Path(hil_file).is_relative_to(target), hil_file
    assert Path(root) == target / "gateway" / "_bundle"
    assert "streetlight" in kinds and "bin" in kinds

    boards = civicedge("boards", "list")
    assert boards.returncode == 0, boards.stderr
    listed = {line.split()[0] for line in boards.stdout.splitlines() if line.strip()}
    assert listed == {p.stem for p in (REPO / "boards").glob("*.toml")}

    config = elsewhere / "gateway.toml"
    init = civicedge("gateway", "init", str(config))
    assert init.returncode == 0, init.stderr
    check = civicedge("gateway", "run", "--check", "--config", str(config))
    assert check.returncode == 0, check.stderr
    assert "config OK" in check.stdout + check.stderr


def test_installed_wheel_finds_its_docs_changelog_unit_and_alert_rules(built: tuple[Path, Path, dict[str, bytes]],
                                                                       tmp_path: Path) -> None:
    _, wheel, _ = built
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=120)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    # `civicedge docs` through its own parser (main.py's list of command modules is not this test's).
    program = ("import argparse, sys\n"
               "import gateway.resources as r\n"
               "from hil.cli import docs_cmd\n"
               "print(r.docs_dir()); print(r.changelog_path())\n"
               "print(r.service_unit_path()); print(r.alert_rules_path())\n"
               "parser = argparse.ArgumentParser(prog='civicedge')\n"
               "docs_cmd.register(parser.add_subparsers(dest='command'))\n"
               "args = parser.parse_args(sys.argv[1:])\n"
               "sys.exit(args.func(args))\n")

    def docs(*args: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        proc = subprocess.run([sys.executable, "-P", "-c", program, "docs", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines(keepends=True)
        return [line.rstrip("\n") for line in lines[:4]], proc

    bundle = target / "gateway" / "_bundle"
    where, listed = docs()
    assert [Path(p) for p in where] == [bundle / "docs", bundle / "CHANGELOG.md",
                                        bundle / "scripts" / "civicedge-gateway.service",
                                        bundle / "scripts" / "prometheus" / "civicedge-alerts.yml"]
    rows = dict(line.split(None, 1) for line in listed.stdout.splitlines()[4:])
    assert rows["gateway"] == str(bundle / "docs" / "gateway.md")
    assert rows["changelog"] == str(bundle / "CHANGELOG.md")
    assert set(rows) == ({p.stem for p in (REPO / "docs").glob("*.md")}
                         | {p.name for p in (REPO / "docs").glob("*.json")} | {"changelog", "--unit", "--alerts"})
    assert rows["protocol-vectors.json"] == str(bundle / "docs" / "protocol-vectors.json")
    for rel in ("docs/gateway.md", "docs/upgrading.md", *BUNDLED_FILES):
        assert (bundle / rel).read_bytes() == (REPO / rel).read_bytes(), rel

    _, path = docs("docs/upgrading.md")
    assert path.stdout.splitlines()[4:] == [str(bundle / "docs" / "upgrading.md")]
    _, vectors = docs("protocol-vectors", "--show")
    assert "".join(vectors.stdout.splitlines(keepends=True)[4:]) == \
        (REPO / "docs" / "protocol-vectors.json").read_text()
    _, changelog = docs("changelog", "--show")
    assert "".join(changelog.stdout.splitlines(keepends=True)[4:]) == (REPO / "CHANGELOG.md").read_text()
    _, alerts = docs("--alerts")
    assert "".join(alerts.stdout.splitlines(keepends=True)[4:]) == (REPO / BUNDLED_FILES[2]).read_text()
    _, unit = docs("--unit")
    printed = unit.stdout.splitlines()[4:]
    # The unit's Documentation= names the installed page, which exists; the rest is the shipped file.
    assert f"Documentation={(bundle / 'docs' / 'gateway.md').as_uri()}" in printed
    original = (REPO / BUNDLED_FILES[1]).read_text().splitlines()
    assert [line for line in printed if not line.startswith("Documentation=")] == \
        [line for line in original if not line.startswith("Documentation=")]


def _small_project(root: Path) -> Path:
    """The build files of the checkout with a small firmware/ and boards/ (a build in a second or two)."""
    root.mkdir()
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md"):
        shutil.copyfile(REPO / name, root / name)
    (root / "gateway").mkdir()
    shutil.copyfile(REPO / "gateway" / "__init__.py", root / "gateway" / "__init__.py")
    (root / "firmware").mkdir()
    (root / "firmware" / "policy.json").write_text("{}")
    (root / "boards").mkdir()
    (root / "boards" / "manifest.py").write_text("# freeze manifest\n")
    (root / "docs").mkdir()
    (root / "docs" / "gateway.md").write_text("# Gateway\n")
    for rel in BUNDLED_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    return root


@pytest.mark.parametrize("case", ["tracked link out of the tree", "link out of the tree in an sdist",
                                  "dangling link in an sdist", "link to a directory",
                                  "single file linked out of the repository"])
def test_a_symlink_out_of_the_tree_dangling_or_to_a_directory_stops_the_build_naming_it(
        tmp_path: Path, case: str) -> None:
    _need_setuptools()
    src = _small_project(tmp_path / "src")
    (tmp_path / "hostname").write_text("gateway-host\n")
    if case == "tracked link out of the tree":
        link, points_to, says = src / "firmware" / "hostlink", tmp_path / "hostname", "points out of firmware/"
    elif case == "link out of the tree in an sdist":  # no .git: the files on disk are the list
        link, points_to, says = src / "boards" / "certs", tmp_path, "points out of boards/"
    elif case == "dangling link in an sdist":
        link, points_to, says = src / "boards" / "gone.toml", src / "boards" / "old.toml", "is a dangling symlink"
    elif case == "single file linked out of the repository":
        link, points_to, says = src / "CHANGELOG.md", tmp_path / "hostname", "points out of the repository"
        link.unlink()
    else:
        link, points_to, says = src / "firmware" / "lib", src / "firmware" / "inner", "points at a directory"
        (points_to).mkdir()
        (points_to / "x.py").write_text("")
    link.symlink_to(points_to)
    if case.startswith("tracked"):
        _git(src, "init", "-q")
        _git(src, "add", "--", *BUNDLED_TREES)
    proc = _build_sdist(src, tmp_path / "dist")
    assert proc.returncode != 0
    rel = link.relative_to(src).as_posix()
    assert f"{rel} -> {points_to} {says}" in proc.stderr, proc.stderr
    assert not list((tmp_path / "dist").glob("*.tar.gz"))


@pytest.mark.parametrize("rel", ["CHANGELOG.md", "scripts/civicedge-gateway.service",
                                 "scripts/prometheus/civicedge-alerts.yml", "docs"])
def test_a_missing_page_tree_changelog_unit_or_alert_rules_stops_the_build_naming_it(tmp_path: Path, rel: str) -> None:
    _need_setuptools()
    src = _small_project(tmp_path / "src")
    shutil.rmtree(src / rel) if (src / rel).is_dir() else (src / rel).unlink()
    proc = _build_sdist(src, tmp_path / "dist")
    assert proc.returncode != 0
    assert f"{src / rel} is missing: the civicedge distribution cannot be built without it" in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", ["untracked page", "untracked firmware file", "tracked backup", "tracked non-page"])
def test_a_tracked_symlink_to_a_file_that_would_not_ship_itself_stops_the_build_naming_both(
        tmp_path: Path, case: str) -> None:
    # The link is tracked and inside its tree, so only what it points at can keep the file out.
    _need_setuptools()
    src = _small_project(tmp_path / "src")
    if case == "untracked page":  # an unfinished page, linked from a committed one
        link, target, says = "docs/leak.md", "docs/draft.md", "which git does not track"
    elif case == "untracked firmware file":  # would go onto every board
        link, target, says = "firmware/config.py", "firmware/secrets.py", "which git does not track"
    elif case == "tracked backup":
        link, target, says = "firmware/main.py", "firmware/main.py.bak", "a cache or backup file, which never ships"
    else:
        link, target, says = "docs/leak.md", "docs/notes.txt", "which docs/ does not ship (only *.md, *.json)"
    (src / target).write_text("KEY = 'not for the wheel'\n")
    (src / link).symlink_to(Path(target).name)
    _git(src, "init", "-q")
    _git(src, "add", "--", *BUNDLED_TREES, *BUNDLED_FILES)
    if case == "untracked page" or case == "untracked firmware file":
        _git(src, "rm", "-q", "--cached", "--", target)
    else:
        _git(src, "add", "-f", "--", target)
    assert _git(src, "ls-files", "--", link).strip() == link
    proc = _build_sdist(src, tmp_path / "dist")
    assert proc.returncode != 0
    assert f"{link} -> {Path(target).name} points at {target}, {says}" in proc.stderr, proc.stderr
    assert not list((tmp_path / "dist").glob("*.tar.gz"))


def test_a_tracked_symlink_to_a_tracked_page_ships_the_pages_text(tmp_path: Path) -> None:
    _need_setuptools()
    src = _small_project(tmp_path / "src")
    (src / "docs" / "gw.md").symlink_to("gateway.md")
    (src / "docs" / "vectors.json").write_text('{"v": 1}\n')
    _git(src, "init", "-q")
    _git(src, "add", "--", *BUNDLED_TREES, *BUNDLED_FILES)
    proc = _build_sdist(src, tmp_path / "dist")
    assert proc.returncode == 0, proc.stderr
    (sdist,) = (tmp_path / "dist").glob("civicedge-*.tar.gz")
    with tarfile.open(sdist) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.isfile() and "/docs/" in m.name}
    assert files == {"docs/gateway.md": b"# Gateway\n", "docs/gw.md": b"# Gateway\n",
                     "docs/vectors.json": b'{"v": 1}\n'}


@pytest.mark.parametrize("tracked", [True, False])
def test_a_symlink_into_another_bundled_tree_is_refused_for_pointing_out_of_its_tree_not_out_of_the_repository(
        tmp_path: Path, tracked: bool) -> None:
    # The target is in the repository (and ships itself, from firmware/): the message used to say the link
    # shipped "a file from outside the repository".
    _need_setuptools()
    src = _small_project(tmp_path / "src")
    (src / "boards" / "policy.json").symlink_to(Path("..") / "firmware" / "policy.json")
    if tracked:
        _git(src, "init", "-q")
        _git(src, "add", "--", *BUNDLED_TREES, *BUNDLED_FILES)
    proc = _build_sdist(src, tmp_path / "dist")
    assert proc.returncode != 0
    says = ("boards/policy.json -> ../firmware/policy.json points out of boards/ at firmware/policy.json: a link "
            "in boards/ may only point at a file of boards/; copy the file into boards/, or remove the link")
    assert says in proc.stderr, proc.stderr
    assert "outside the repository" not in proc.stderr
    assert not list((tmp_path / "dist").glob("*.tar.gz"))

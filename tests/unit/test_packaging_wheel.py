"""The built distribution carries what the installed commands read (firmware/, boards/, the policy,
the licence), and those commands work from an installed wheel, far from any checkout.

The sdist is built from a copy of the checkout, and the wheel from the unpacked sdist (what
``python -m build`` does), with this venv's setuptools and no network (``--no-build-isolation``).
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
BUNDLED_TREES = ("firmware", "boards")
# Not sources: what installs, builds, caches and test runs leave in a working tree.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", "*.py[cod]", ".mypy_cache",
                                     ".hypothesis", ".pytest_cache", "artifacts", "var", "build", "dist",
                                     "*.egg-info", "tests", "bench")


def _checkout_files(name: str) -> dict[str, bytes]:
    """The files of the checkout's ``name/`` tree (relative path -> bytes), caches left out."""
    root = REPO / name
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built from a copy of the checkout; the copy also holds npm's packages and byte-code,
    which must stay out of both."""
    have = Version(importlib.metadata.version("setuptools"))
    if have < Version("77"):
        pytest.skip(f"this venv's setuptools {have} cannot build offline (pyproject needs >= 77; scripts/setup "
                    "installs it with the [test] extra)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    (src / "hil" / "sim" / "node_modules" / "left-pad").mkdir(parents=True)
    (src / "hil" / "sim" / "node_modules" / "left-pad" / "package.json").write_text("{}")
    (src / "firmware" / "lib" / "civic" / "__pycache__").mkdir()
    (src / "firmware" / "lib" / "civic" / "__pycache__" / "report.cpython-311.pyc").write_bytes(b"\0")
    dist = tmp / "dist"
    dist.mkdir()
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
                   cwd=src, check=True, capture_output=True, timeout=120)
    (sdist,) = dist.glob("civicedge-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(unpacked)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = dist.glob("civicedge-*.whl")
    return sdist, wheel


def test_sdist_carries_firmware_boards_and_licence(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for tree in BUNDLED_TREES:
        missing = {f"{tree}/{rel}" for rel in _checkout_files(tree)} - names
        assert not missing, f"not in the sdist: {sorted(missing)}"
    assert {"LICENSE", "setup.py", "MANIFEST.in", "pyproject.toml"} <= names
    assert not [n for n in names if "node_modules" in n or n.endswith(".pyc")]


def test_wheel_carries_firmware_boards_policy_and_licence(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for tree in BUNDLED_TREES:
            for rel, data in _checkout_files(tree).items():
                assert zf.read(f"gateway/_bundle/{tree}/{rel}") == data, f"{tree}/{rel}"
        dist_info = f"civicedge-{gateway.__version__}.dist-info"
        assert zf.read(f"{dist_info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "gateway/_bundle/firmware/policy.json" in names
    assert "gateway/_bundle/boards/manifest.py" in names
    assert f"\nVersion: {gateway.__version__}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "\nLicense-File: LICENSE\n" in metadata
    assert not [n for n in names if "node_modules" in n or n.endswith(".pyc")]
    # The simulator's Node host ships, for `civicedge sim install-runtime` and the boards.
    assert {"hil/sim/package.json", "hil/sim/package-lock.json", "hil/sim/host.mjs", "hil/sim/mprun.mjs",
            "hil/sim/js/runtime_resolve.mjs", "hil/sim/js/runtime_hooks.mjs", "hil/sim/mpy/machine.py"} <= names


def test_installed_wheel_commands_work_outside_the_checkout(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = built
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

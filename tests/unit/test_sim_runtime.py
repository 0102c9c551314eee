"""Where the simulator's Node packages are looked for (hil.sim.runtime): the checkout's hil/sim first,
then $CIVICEDGE_SIM_RUNTIME, then the per-user directory; the message when none has them; Node
importing them from a directory outside hil/sim (an installed wheel's case)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hil.sim import SIM_DIR
from hil.sim import runtime
from hil.sim.runtime import ENV_VAR, RuntimeMissingError, find_runtime, lock_digest, node_command

PACKAGE = Path("node_modules") / "@micropython" / "micropython-webassembly-pyscript"
CHECKOUT_MODULES = SIM_DIR / "node_modules"


def _sim_dir(tmp_path: Path, *, with_modules: bool) -> Path:
    """A copy of hil/sim's Node host (scripts, package.json, lockfile), as a wheel installs it."""
    sim = tmp_path / "site" / "hil" / "sim"
    sim.mkdir(parents=True)
    for name in ("package.json", "package-lock.json", "mprun.mjs", "host.mjs"):
        shutil.copyfile(SIM_DIR / name, sim / name)
    shutil.copytree(SIM_DIR / "js", sim / "js")
    if with_modules:
        (sim / PACKAGE).mkdir(parents=True)
    return sim


def _runtime(path: Path, sim: Path, *, stamp: str | None = None, link: bool = False) -> Path:
    """A runtime directory as install-runtime leaves it (stamp = the lockfile's digest unless given)."""
    path.mkdir(parents=True)
    if link:  # the checkout's real packages, without running npm
        (path / "node_modules").symlink_to(CHECKOUT_MODULES, target_is_directory=True)
    else:
        (path / PACKAGE).mkdir(parents=True)
    (path / runtime.STAMP).write_text((lock_digest(sim) if stamp is None else stamp) + "\n")
    return path


def test_the_checkout_comes_first(tmp_path: Path) -> None:
    sim = _sim_dir(tmp_path, with_modules=True)
    env_dir = _runtime(tmp_path / "env", sim)
    _runtime(tmp_path / "xdg" / "civicedge" / "sim-runtime", sim)
    environ = {ENV_VAR: str(env_dir), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert find_runtime(environ, sim_dir=sim) == sim
    assert node_command(environ, sim_dir=sim) == [shutil.which("node")]  # Node finds hil/sim/node_modules itself


def test_then_the_environment_variable_then_the_user_directory(tmp_path: Path) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    user = _runtime(tmp_path / "xdg" / "civicedge" / "sim-runtime", sim)
    env_dir = _runtime(tmp_path / "env", sim)
    assert find_runtime({ENV_VAR: str(env_dir), "XDG_DATA_HOME": str(tmp_path / "xdg")}, sim_dir=sim) == env_dir
    # Set but empty of a runtime: the user directory still serves.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_runtime({ENV_VAR: str(empty), "XDG_DATA_HOME": str(tmp_path / "xdg")}, sim_dir=sim) == user
    assert find_runtime({"XDG_DATA_HOME": str(tmp_path / "xdg")}, sim_dir=sim) == user


def test_a_runtime_for_another_lockfile_or_unfinished_is_not_used(tmp_path: Path) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    user = _runtime(tmp_path / "xdg" / "civicedge" / "sim-runtime", sim)
    old = _runtime(tmp_path / "old", sim, stamp="0" * 64)
    environ = {ENV_VAR: str(old), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert find_runtime(environ, sim_dir=sim) == user
    (user / runtime.STAMP).unlink()  # npm ci did not finish
    with pytest.raises(RuntimeMissingError) as info:
        find_runtime(environ, sim_dir=sim)
    assert "another civicedge version or an unfinished install" in str(info.value)
    assert str(old) in str(info.value) and str(user) in str(info.value)


def test_none_found_names_every_place_and_the_install_command(tmp_path: Path) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    environ = {ENV_VAR: str(tmp_path / "env"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    with pytest.raises(RuntimeMissingError) as info:
        find_runtime(environ, sim_dir=sim)
    message = str(info.value)
    for place in (sim, tmp_path / "env", tmp_path / "xdg" / "civicedge" / "sim-runtime"):
        assert f"{place}/node_modules" in message
    assert message.index(str(sim)) < message.index(str(tmp_path / "env")) < message.index(str(tmp_path / "xdg"))
    assert "run `civicedge sim install-runtime`" in message
    assert info.value.details["searched"] == [str(sim), str(tmp_path / "env"),
                                              str(tmp_path / "xdg" / "civicedge" / "sim-runtime")]


def test_user_directory_follows_xdg(tmp_path: Path) -> None:
    assert runtime.default_user_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "civicedge" / "sim-runtime"
    # XDG: a relative XDG_DATA_HOME is invalid and ignored, as an unset one.
    home_default = Path.home() / ".local" / "share" / "civicedge" / "sim-runtime"
    assert runtime.default_user_dir({"XDG_DATA_HOME": "rel/dir"}) == home_default
    assert runtime.default_user_dir({}) == home_default
    assert runtime.install_dir({ENV_VAR: str(tmp_path / "rt"), "XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "rt"
    assert runtime.install_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "civicedge" / "sim-runtime"


@pytest.mark.skipif(not (SIM_DIR / PACKAGE).is_dir() or shutil.which("node") is None,
                    reason="needs node and the checkout's hil/sim/node_modules (scripts/setup)")
def test_node_imports_a_runtime_outside_hil_sim(tmp_path: Path) -> None:
    # A wheel's hil/sim has no node_modules; the runtime is elsewhere (here the checkout's, linked).
    sim = _sim_dir(tmp_path, with_modules=False)
    env_dir = _runtime(tmp_path / "env", sim, link=True)
    command = node_command({ENV_VAR: str(env_dir), "XDG_DATA_HOME": str(tmp_path / "xdg")}, sim_dir=sim)
    assert command[1] == "--import"
    code = "import sys, hashlib, binascii\nprint(sys.implementation.name, binascii.hexlify(hashlib.sha256(b'a').digest()[:4]))\n"
    proc = subprocess.run([*command, str(sim / "mprun.mjs"), "-"], input=code, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "micropython b'ca978112'"
    # Without the hook the same script cannot import the runtime: the hook is what makes it work.
    bare = subprocess.run([command[0], str(sim / "mprun.mjs"), "-"], input=code, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert bare.returncode != 0 and "@micropython/micropython-webassembly-pyscript" in bare.stderr


def test_install_runtime_refuses_a_directory_of_another_project(tmp_path: Path) -> None:
    theirs = tmp_path / "project"
    theirs.mkdir()
    (theirs / "package.json").write_text('{"name": "their-app", "dependencies": {"left-pad": "1.3.0"}}')
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", "install-runtime", "--dir", str(theirs)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{theirs} holds another project's package.json (not civicedge-sim)" in proc.stderr
    assert (theirs / "package.json").read_text() == '{"name": "their-app", "dependencies": {"left-pad": "1.3.0"}}'
    assert sorted(p.name for p in theirs.iterdir()) == ["package.json"]

"""Where the simulator's Node packages are looked for (hil.sim.runtime): the checkout's hil/sim first,
then $CIVICEDGE_SIM_RUNTIME, then the per-user directory; the message when none has them; Node
importing them from a directory outside hil/sim (an installed wheel's case)."""

from __future__ import annotations

import fcntl
import os
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
    assert (f"{theirs} is not empty (package.json) and was not made by install-runtime (no {runtime.MARKER} in it): "
            "refusing to run npm ci there; choose a new or empty directory") in proc.stderr
    assert (theirs / "package.json").read_text() == '{"name": "their-app", "dependencies": {"left-pad": "1.3.0"}}'
    assert sorted(p.name for p in theirs.iterdir()) == ["package.json"]


# A stand-in for npm (the registry is not reached in unit tests): `npm ci` in its working directory
# installs the runtime package holding $FAKE_NPM_TAG, or, with FAKE_NPM_FAIL set, does what a failing
# npm ci does (deletes node_modules first) and exits 1. Each call is logged to $FAKE_NPM_LOG.
FAKE_NPM = """#!/bin/sh
echo "$PWD $*" >> "$FAKE_NPM_LOG"
rm -rf node_modules
if [ -n "$FAKE_NPM_FAIL" ]; then
  echo "npm ERR! code ECONNRESET" >&2
  exit 1
fi
mkdir -p node_modules/@micropython/micropython-webassembly-pyscript
printf '%s' "$FAKE_NPM_TAG" > node_modules/@micropython/micropython-webassembly-pyscript/TAG
"""


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in npm first on PATH; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    calls = tmp_path / "npm-calls.log"
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_LOG", str(calls))
    monkeypatch.setenv("FAKE_NPM_TAG", "v1")
    monkeypatch.delenv("FAKE_NPM_FAIL", raising=False)
    return calls


def _tag(target: Path) -> str:
    return (target / PACKAGE / "TAG").read_text()


def test_a_failed_reinstall_keeps_the_working_runtime(tmp_path: Path, fake_npm: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    target = tmp_path / "rt"
    environ = {ENV_VAR: str(target), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    first = runtime.install_runtime(target, sim_dir=sim)
    assert first == runtime.InstallResult(target, already_installed=False)
    assert find_runtime(environ, sim_dir=sim) == target and _tag(target) == "v1"
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    monkeypatch.setenv("FAKE_NPM_TAG", "v2")
    with pytest.raises(runtime.RuntimeInstallError) as info:
        runtime.install_runtime(target, force=True, sim_dir=sim)
    message = str(info.value)
    assert f"in {target}: npm ci failed (exit status 1):\nnpm ERR! code ECONNRESET" in message
    assert "(the runtime installed before is kept)" in message
    # The runtime that worked still does, and nothing of the failed run is left.
    assert find_runtime(environ, sim_dir=sim) == target and _tag(target) == "v1"
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["node_modules", "package.json", "package-lock.json", runtime.STAMP, runtime.LOCK_FILE, runtime.MARKER])
    calls = fake_npm.read_text().splitlines()
    assert len(calls) == 2
    for call in calls:  # npm ran in a directory of its own inside the target, never in the runtime itself
        cwd, args = call.split(" ", 1)
        assert Path(cwd).parent == target and Path(cwd).name.startswith(".civicedge-staging-")
        # no install scripts; no dev packages (axe-core, for the project's browser tests only)
        assert args.split()[:3] == ["ci", "--omit=dev", "--ignore-scripts"]


def test_a_current_runtime_is_left_as_it_is_unless_forced(tmp_path: Path, fake_npm: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    target = tmp_path / "rt"
    runtime.install_runtime(target, sim_dir=sim)
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")  # would fail, were it run
    assert runtime.install_runtime(target, sim_dir=sim) == runtime.InstallResult(target, already_installed=True)
    assert len(fake_npm.read_text().splitlines()) == 1
    monkeypatch.delenv("FAKE_NPM_FAIL")
    monkeypatch.setenv("FAKE_NPM_TAG", "v2")
    assert not runtime.install_runtime(target, force=True, sim_dir=sim).already_installed
    assert _tag(target) == "v2"
    # After an upgrade (another lockfile) the stamp no longer matches: installed again.
    (sim / "package-lock.json").write_text('{"lockfileVersion": 3, "packages": {}}')
    monkeypatch.setenv("FAKE_NPM_TAG", "v3")
    assert not runtime.install_runtime(target, sim_dir=sim).already_installed
    assert _tag(target) == "v3" and (target / "package-lock.json").read_text() == (sim / "package-lock.json").read_text()
    assert find_runtime({ENV_VAR: str(target)}, sim_dir=sim) == target


def test_one_install_at_a_time(tmp_path: Path, fake_npm: Path) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    target = tmp_path / "rt"
    runtime.install_runtime(target, sim_dir=sim)
    with (target / runtime.LOCK_FILE).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(runtime.RuntimeInstallError) as info:
            runtime.install_runtime(target, force=True, sim_dir=sim)
    assert f"another `civicedge sim install-runtime` is installing into {target}" in str(info.value)
    assert len(fake_npm.read_text().splitlines()) == 1  # only the first install ran npm


def test_install_runtime_command_says_already_installed_on_a_second_run(tmp_path: Path, fake_npm: Path) -> None:
    target = tmp_path / "rt"
    command = [sys.executable, "-m", "hil.cli.main", "sim", "install-runtime", "--dir", str(target)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"installed: {target}/node_modules" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "FAKE_NPM_FAIL": "1"})
    assert second.returncode == 0, second.stderr
    assert f"already installed: {target}/node_modules is the runtime of this civicedge (--force to reinstall)" \
        in second.stdout
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "FAKE_NPM_FAIL": "1"})
    assert forced.returncode == 1
    assert "npm ci failed (exit status 1)" in forced.stderr and "the runtime installed before is kept" in forced.stderr
    assert _tag(target) == "v1"


def test_install_runtime_refuses_any_non_empty_directory_it_did_not_make(tmp_path: Path, fake_npm: Path) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    # Another civicedge checkout's hil/sim (its package.json is ours by name), and a home directory
    # with some node_modules but no package.json: neither was made by install-runtime.
    other_checkout = _sim_dir(tmp_path / "other", with_modules=True)
    home = tmp_path / "home"
    (home / "node_modules" / "left-pad").mkdir(parents=True)
    (home / ".bashrc").write_text("# mine\n")
    for target in (other_checkout, home):
        before = sorted(p.relative_to(target) for p in target.rglob("*"))
        with pytest.raises(runtime.RuntimeInstallError) as info:
            runtime.install_runtime(target, sim_dir=sim)
        assert f"{target} is not empty (" in str(info.value)
        assert "was not made by install-runtime" in str(info.value)
        assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert fake_npm.read_text() == ""
    # An empty directory (e.g. a mount point) is taken, and marked; so is one a marker-less install made.
    empty = tmp_path / "empty"
    empty.mkdir()
    runtime.install_runtime(empty, sim_dir=sim)
    assert (empty / runtime.MARKER).is_file()
    older = _runtime(tmp_path / "older", sim, stamp="0" * 64)
    assert not runtime.install_runtime(older, sim_dir=sim).already_installed
    assert (older / runtime.MARKER).is_file() and _tag(older) == "v1"


@pytest.mark.parametrize("version, works", [("v20.5.1", False), ("v18.19.0", False), ("v20.6.0", True),
                                            ("v22.11.0", True)])
def test_a_runtime_outside_hil_sim_needs_node_20_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str,
                                                   works: bool) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    env_dir = _runtime(tmp_path / "env", sim)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "node").write_text(f"#!/bin/sh\necho {version}\n")
    (bin_dir / "node").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    environ = {ENV_VAR: str(env_dir), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    if works:
        assert node_command(environ, sim_dir=sim)[:2] == [str(bin_dir / "node"), "--import"]
    else:
        with pytest.raises(RuntimeMissingError) as info:
            node_command(environ, sim_dir=sim)
        assert f"{bin_dir / 'node'} is Node {version}; the simulator's packages in {env_dir}" in str(info.value)
        assert "which needs Node >= 20.6" in str(info.value)
    # The checkout's own node_modules needs no hook, so no version check.
    (sim / PACKAGE).mkdir(parents=True)
    assert node_command(environ, sim_dir=sim) == [str(bin_dir / "node")]


def test_usage_note_after_an_install(tmp_path: Path) -> None:
    sim = _sim_dir(tmp_path, with_modules=False)
    real_data = tmp_path / "data"
    real_data.mkdir()
    (tmp_path / "xdg-link").symlink_to(real_data, target_is_directory=True)
    environ = {"XDG_DATA_HOME": str(tmp_path / "xdg-link")}
    # Installed into the user directory reached through a symlink (install_runtime resolves it): no note.
    user = _runtime(real_data / "civicedge" / "sim-runtime", sim)
    assert runtime.usage_note(user, environ, sim_dir=sim) is None
    # Installed where the lookup does not reach: the user directory serves; name the variable.
    elsewhere = _runtime(tmp_path / "opt", sim)
    assert runtime.usage_note(elsewhere, environ, sim_dir=sim) == (
        f"the simulator uses {tmp_path / 'xdg-link' / 'civicedge' / 'sim-runtime'} (user) now; "
        f"set {ENV_VAR}={elsewhere} to use this one")
    # In a checkout with its own packages, the variable would not help: they are looked in first.
    (sim / PACKAGE).mkdir(parents=True)
    note = runtime.usage_note(elsewhere, {**environ, ENV_VAR: str(elsewhere)}, sim_dir=sim)
    assert note == (f"this checkout's {sim}/node_modules is looked in first, so the simulator run from it uses "
                    f"that one; {elsewhere} serves an installed civicedge (a wheel)")

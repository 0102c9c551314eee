"""Where the simulator's Node packages (``node_modules``) are, and installing them for a pip user.

A checkout gets them in ``hil/sim/node_modules`` from ``scripts/setup`` (``npm ci``). An installed
wheel has no ``scripts/setup`` and often cannot write its own package directory, so
``civicedge sim install-runtime`` runs ``npm ci`` from the shipped ``package.json`` and
``package-lock.json`` into a per-user directory. The runtime is looked for, in order, in:

1. the package's own ``hil/sim`` (a checkout);
2. ``$CIVICEDGE_SIM_RUNTIME``, when set;
3. the user's data directory, ``$XDG_DATA_HOME/civicedge/sim-runtime`` (default
   ``~/.local/share/civicedge/sim-runtime``).

A directory of 2 or 3 counts only when its install stamp names the shipped lockfile: a runtime
installed for another civicedge version, or an ``npm ci`` that did not finish, is not used. Node
resolves the packages of a runtime outside ``hil/sim`` through a resolve hook
(``js/runtime_resolve.mjs``, given with ``--import``).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import urlencode

from hil.sim import SIM_DIR
from hil.sim.errors import SimError

log = logging.getLogger(__name__)

ENV_VAR = "CIVICEDGE_SIM_RUNTIME"
"""Environment variable naming a runtime directory (looked in, and where ``install-runtime`` installs)."""
INSTALL_COMMAND = "civicedge sim install-runtime"
STAMP = ".civicedge-runtime"
"""File a finished install writes: the SHA-256 of the lockfile it installed."""
LOCK_FILE = ".civicedge-install.lock"
"""File in the runtime directory that ``install-runtime`` holds an ``flock`` on while it installs."""
_STAGING_PREFIX = ".civicedge-staging-"  # npm ci runs in target/<this>XXXX, renamed into place when it worked
MARKER = ".civicedge-runtime-dir"
"""File ``install-runtime`` writes into a directory it installs into first: only such a directory, or an
empty one, is installed into (never someone's project or home directory)."""
_RUNTIME_PACKAGE = Path("node_modules") / "@micropython" / "micropython-webassembly-pyscript"
_MANIFESTS = ("package.json", "package-lock.json")
NPM_TIMEOUT_S = 900.0
HOOK_NODE_VERSION = (20, 6, 0)
"""Oldest Node with ``module.register``, which a runtime outside ``hil/sim`` needs (js/runtime_resolve.mjs)."""
NODE_MINIMUM = ".".join(map(str, HOOK_NODE_VERSION[:2]))
"""The Node.js version messages ask for (``20.6``): a wheel's runtime is always outside ``hil/sim``."""


class RuntimeMissingError(SimError):
    """Node or the simulator's Node packages are not installed (``details``: searched)."""


class RuntimeInstallError(SimError):
    """``install-runtime`` could not install into the directory (``details``: path, and npm's status)."""


@dataclass(frozen=True)
class Candidate:
    """A directory where the runtime may be, and why it is looked in."""

    path: Path
    source: str  # "checkout", "$CIVICEDGE_SIM_RUNTIME" or "user"


def default_user_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user runtime directory: ``$XDG_DATA_HOME/civicedge/sim-runtime`` (XDG default ``~/.local/share``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or ""
    root = Path(base) if Path(base).is_absolute() else Path.home() / ".local" / "share"  # XDG: relative is invalid
    return root / "civicedge" / "sim-runtime"


def install_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``install-runtime`` installs without ``--dir``: ``$CIVICEDGE_SIM_RUNTIME``, else the user directory."""
    env = os.environ if environ is None else environ
    named = env.get(ENV_VAR)
    return Path(named).expanduser() if named else default_user_dir(env)


def candidates(environ: Mapping[str, str] | None = None, *, sim_dir: Path = SIM_DIR) -> list[Candidate]:
    """The directories looked in, in order (checkout, ``$CIVICEDGE_SIM_RUNTIME``, user directory)."""
    env = os.environ if environ is None else environ
    found = [Candidate(sim_dir, "checkout")]
    if env.get(ENV_VAR):
        found.append(Candidate(Path(env[ENV_VAR]).expanduser(), f"${ENV_VAR}"))
    found.append(Candidate(default_user_dir(env), "user"))
    return found


def lock_digest(sim_dir: Path = SIM_DIR) -> str:
    """SHA-256 (hex) of the shipped ``package-lock.json``: what an installed runtime must have been made from."""
    return hashlib.sha256((sim_dir / "package-lock.json").read_bytes()).hexdigest()


def _usable(candidate: Candidate, sim_dir: Path) -> bool:
    if not (candidate.path / _RUNTIME_PACKAGE).is_dir():
        return False
    if candidate.source == "checkout":
        return True  # scripts/setup keeps it current with the lockfile beside it
    try:
        return (candidate.path / STAMP).read_text().strip() == lock_digest(sim_dir)
    except OSError:
        return False


def _first_usable(environ: Mapping[str, str] | None, sim_dir: Path) -> Candidate | None:
    return next((c for c in candidates(environ, sim_dir=sim_dir) if _usable(c, sim_dir)), None)


def usage_note(installed: Path, environ: Mapping[str, str] | None = None, *, sim_dir: Path = SIM_DIR) -> str | None:
    """What to tell the user after installing into ``installed`` when the simulator will not use it, else None.

    Paths are compared resolved (a symlinked home or ``$XDG_DATA_HOME`` names the same directory).
    """
    found = _first_usable(environ, sim_dir)
    if found is not None and found.path.resolve() == installed.resolve():
        return None
    if found is not None and found.source == "checkout":
        return (f"this checkout's {found.path}/node_modules is looked in first, so the simulator run from it uses "
                f"that one; {installed} serves an installed civicedge (a wheel)")
    where = f"{found.path} ({found.source})" if found is not None else "no runtime"
    return f"the simulator uses {where} now; set {ENV_VAR}={installed} to use this one"


def find_runtime(environ: Mapping[str, str] | None = None, *, sim_dir: Path = SIM_DIR) -> Path:
    """Return the first directory holding a usable ``node_modules`` for the simulator.

    Raises:
        RuntimeMissingError: none does; the message names the directories and ``civicedge sim install-runtime``.
    """
    looked = candidates(environ, sim_dir=sim_dir)
    for candidate in looked:
        if _usable(candidate, sim_dir):
            return candidate.path
    stale = [c for c in looked[1:] if (c.path / _RUNTIME_PACKAGE).is_dir()]
    where = ", ".join(f"{c.path}/node_modules" for c in looked)
    hint = (f"; {', '.join(str(c.path) for c in stale)} holds a runtime for another civicedge version "
            "or an unfinished install") if stale else ""
    raise RuntimeMissingError(
        f"the simulator's Node packages are not installed (looked in {where}){hint}; run `{INSTALL_COMMAND}` "
        f"(in a checkout, scripts/setup installs them)", searched=[str(c.path) for c in looked])


def node_binary() -> str:
    """Return the path of ``node``.

    Raises:
        RuntimeMissingError: ``node`` is not on PATH.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeMissingError(f"node is not on PATH: install Node.js >= {NODE_MINIMUM} (in a checkout, "
                                  f"scripts/setup installs it), then `{INSTALL_COMMAND}` if the simulator's packages are missing",
                                  searched=[])
    return node


@lru_cache(maxsize=8)
def node_version(node: str) -> tuple[int, int, int]:
    """Return ``node --version`` as (major, minor, patch).

    Raises:
        RuntimeMissingError: it cannot be run or prints no version.
    """
    try:
        proc = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeMissingError(f"cannot run {node} --version: {exc}", searched=[], node=node) from exc
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)\S*", proc.stdout.strip())
    if proc.returncode != 0 or match is None:
        raise RuntimeMissingError(f"{node} --version printed {proc.stdout.strip()!r} (exit status {proc.returncode}), "
                                  "not a Node.js version", searched=[], node=node)
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def node_command(environ: Mapping[str, str] | None = None, *, sim_dir: Path = SIM_DIR) -> list[str]:
    """``node`` and the options that let the scripts in ``hil/sim`` import the runtime found.

    Raises:
        RuntimeMissingError: no ``node``, no runtime (:func:`find_runtime`), or a runtime outside
            ``sim_dir`` and a Node older than 20.6 (no ``module.register`` for the resolve hook).
    """
    node = node_binary()
    runtime = find_runtime(environ, sim_dir=sim_dir)
    if runtime == sim_dir:
        return [node]  # Node finds hil/sim/node_modules by itself
    version = node_version(node)
    if version < HOOK_NODE_VERSION:
        raise RuntimeMissingError(
            f"{node} is Node v{'.'.join(map(str, version))}; the simulator's packages in {runtime} (outside hil/sim) "
            f"are loaded through a resolve hook (module.register), which needs Node >= {NODE_MINIMUM}: install a newer "
            "Node.js", searched=[str(runtime)], node=node)
    hook = (sim_dir / "js" / "runtime_resolve.mjs").as_uri() + "?" + urlencode({"dir": str(runtime)})
    return [node, "--import", hook]


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_runtime` did."""

    path: Path  # the runtime directory (resolved)
    already_installed: bool  # its stamp named the shipped lockfile: npm was not run


def _stamp_matches(target: Path, sim_dir: Path) -> bool:
    try:
        return (target / STAMP).read_text().strip() == lock_digest(sim_dir) and (target / _RUNTIME_PACKAGE).is_dir()
    except OSError:
        return False


@contextmanager
def _install_lock(target: Path) -> Iterator[None]:
    """Hold ``target/.civicedge-install.lock`` (``flock``) for one install at a time."""
    try:
        fd = os.open(target / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RuntimeInstallError(f"cannot write {target}: {exc.strerror or exc}", path=str(target)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeInstallError(f"another `{INSTALL_COMMAND}` is installing into {target}; "
                                      "let it finish, then run this again if it failed", path=str(target)) from exc
        yield
    finally:
        os.close(fd)  # releases the lock


def _npm_ci(npm: str, where: Path, timeout_s: float) -> None:
    log.info("npm ci in %s", where)
    try:
        # --omit=dev: the dev packages (axe-core) are for the project's own browser tests, not the simulator.
        proc = subprocess.run([npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
                               "--loglevel=error"],
                              cwd=where, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeInstallError(f"npm ci did not finish in {timeout_s:.0f} s", timeout_s=timeout_s) from exc
    except OSError as exc:
        raise RuntimeInstallError(f"cannot run {npm}: {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeInstallError(f"npm ci failed (exit status {proc.returncode}):\n{tail}", status=proc.returncode)
    if not (where / _RUNTIME_PACKAGE).is_dir():
        raise RuntimeInstallError(f"npm ci did not install {_RUNTIME_PACKAGE.relative_to('node_modules')}")


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging/node_modules`` in place of ``target/node_modules`` (the old one goes to ``staging``)."""
    current = target / "node_modules"
    if current.is_symlink() or current.exists():
        current.rename(staging / "node_modules.old")
    (staging / "node_modules").rename(current)


def _check_ours(target: Path) -> None:
    """Refuse a non-empty ``target`` that ``install-runtime`` did not make (it holds no marker or stamp)."""
    try:
        entries = sorted(p.name for p in target.iterdir())
    except FileNotFoundError:
        return
    except NotADirectoryError as exc:
        raise RuntimeInstallError(f"{target} is not a directory", path=str(target)) from exc
    except OSError as exc:
        raise RuntimeInstallError(f"cannot read {target}: {exc.strerror or exc}", path=str(target)) from exc
    if not entries or MARKER in entries or STAMP in entries:  # STAMP: made by an install before markers
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise RuntimeInstallError(f"{target} is not empty ({shown}) and was not made by install-runtime (no {MARKER} "
                              "in it): refusing to run npm ci there; choose a new or empty directory",
                              path=str(target))


def install_runtime(target: Path, *, force: bool = False, sim_dir: Path = SIM_DIR,
                    timeout_s: float = NPM_TIMEOUT_S,
                    announce: Callable[[Path], None] | None = None) -> InstallResult:
    """Install the simulator's Node packages into ``target`` with ``npm ci`` from the shipped lockfile.

    A runtime whose stamp already names the shipped lockfile is left as it is (``force`` reinstalls).
    ``announce`` is called with the resolved target just before ``npm ci`` starts, once every check
    passed, so a refused install is never announced as starting.
    ``npm ci`` runs in a temporary directory inside ``target``; only when it succeeded is its
    ``node_modules`` renamed into place, so a failed or interrupted run leaves a working runtime
    working. The stamp that makes the directory usable is written last. One install at a time
    (``flock`` on ``target/.civicedge-install.lock``); npm's install scripts are not run.

    Raises:
        RuntimeInstallError: no ``npm``, ``target`` is a non-empty directory install-runtime did not make,
            cannot be written, another install into it is running, or ``npm ci`` failed or timed out.
    """
    target = target.expanduser().resolve()
    checkout = target == sim_dir.resolve()
    if not checkout:
        _check_ours(target)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeInstallError(f"npm is not on PATH: install Node.js >= {NODE_MINIMUM} with npm", path=str(target))
    try:
        target.mkdir(parents=True, exist_ok=True)
        if not checkout:
            (target / MARKER).touch()  # before anything else: from now on the directory is install-runtime's
    except OSError as exc:
        raise RuntimeInstallError(f"cannot write {target}: {exc.strerror or exc}", path=str(target)) from exc
    with _install_lock(target):
        if not force and not checkout and _stamp_matches(target, sim_dir):
            return InstallResult(target, already_installed=True)
        if announce is not None:
            announce(target)
        for stale in target.glob(f"{_STAGING_PREFIX}*"):  # left by an install that was killed
            shutil.rmtree(stale, ignore_errors=True)
        try:
            staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=target))
            for name in _MANIFESTS:
                shutil.copyfile(sim_dir / name, staging / name)
        except OSError as exc:
            raise RuntimeInstallError(f"cannot write {target}: {exc.strerror or exc}", path=str(target)) from exc
        try:
            try:
                _npm_ci(npm, staging, timeout_s)
            except RuntimeInstallError as exc:
                kept = " (the runtime installed before is kept)" if (target / _RUNTIME_PACKAGE).is_dir() else ""
                raise RuntimeInstallError(f"in {target}: {exc}{kept}", path=str(target), **exc.details) from exc
            try:
                (target / STAMP).unlink(missing_ok=True)  # no stamp while node_modules and manifests change
                _swap_in(staging, target)
                if not checkout:
                    for name in _MANIFESTS:
                        shutil.copyfile(sim_dir / name, target / name)
                    partial = target / (STAMP + ".new")
                    partial.write_text(lock_digest(sim_dir) + "\n")
                    partial.replace(target / STAMP)
            except OSError as exc:
                raise RuntimeInstallError(f"cannot write {target}: {exc.strerror or exc}; run `{INSTALL_COMMAND}` "
                                          "again", path=str(target)) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return InstallResult(target, already_installed=False)

"""What ``pip install civicedge`` and its extras install, read from pyproject.toml and the installed
metadata, and a ``sitecustomize`` that hides the rest in a child interpreter.

Shared by the tests of a gateway-only install (tests/unit/test_install_extras.py,
tests/hil/test_plugin_without_extras.py, tests/unit/test_module_imports_extras.py) and of the plugin's
packaging (tests/hil/test_plugin_packaging.py): the hidden modules come from metadata, not from a
hand-written list, so a dependency an extra brings only transitively (websockets through Bumble) is
hidden as it is missing on a real gateway-only install.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def dist_name(text: str) -> str:
    """A distribution name normalized as PEP 503 does (``littlefs_python`` -> ``littlefs-python``)."""
    return re.sub(r"[-_.]+", "-", text).lower()


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def closure(extras: tuple[str, ...] = (), *, core: bool = True, roots: tuple[str, ...] = ()) -> set[str]:
    """Normalized names of the distributions that ``pip install 'civicedge[extras]'`` brings: the
    dependencies of pyproject.toml (``core``), those of ``extras`` (and of the extras they name,
    ``civicedge[field]``), the distributions ``roots`` and, from the installed metadata, theirs (without
    their own extras)."""
    project = _project()
    optional: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    core_deps: list[str] = project["dependencies"]  # type: ignore[assignment]
    env = {**default_environment(), "extra": ""}
    todo = [(Requirement(r), "") for r in (core_deps if core else [])] + [(Requirement(r), "") for r in roots]
    pending, done = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in done:
            continue
        done.add(extra)
        for text in optional[extra]:
            req = Requirement(text)
            if dist_name(req.name) == "civicedge":
                pending.extend(req.extras)
            else:
                todo.append((req, ""))
    # (distribution, extra) pairs: a dependency's own extras (esptool wants esp-pylib[cli,ide,serial]) bring
    # what their markers ("extra == 'cli'") name, evaluated with that extra
    seen: set[tuple[str, str]] = set()
    dists: set[str] = set()
    while todo:
        req, under = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": under}):
            continue
        name = dist_name(req.name)
        wanted = [e for e in ("", *sorted(req.extras)) if (name, e) not in seen]
        if not wanted:
            continue
        seen.update((name, e) for e in wanted)
        dists.add(name)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        todo.extend((Requirement(r), extra) for extra in wanted for r in requires)
    return dists


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()  # scans every installed distribution: once per process


def modules_of(dists: set[str]) -> set[str]:
    """Top-level modules installed only by ``dists`` (a namespace package another distribution shares
    is not one of them)."""
    out = set()
    for module, owners in _packages_distributions().items():
        if module.isidentifier() and owners and all(dist_name(d) in dists for d in owners):
            out.add(module)
    return out


def distributions_of(module: str) -> set[str]:
    """Normalized names of the installed distributions that provide top-level ``module``."""
    return {dist_name(d) for d in _packages_distributions().get(module, [])}


def extras_only(*, keep: tuple[str, ...] = ()) -> tuple[set[str], set[str]]:
    """``(distributions, modules)`` that ``civicedge[all]`` installs and ``civicedge`` alone does not,
    less those of the distributions ``keep`` (and their dependencies) a box may have for other reasons."""
    dists = closure(("all",)) - closure() - closure(core=False, roots=keep)
    return dists, modules_of(dists)


SITECUSTOMIZE = """
import importlib.machinery, re, sys

HIDDEN = {modules!r}
HIDDEN_DISTS = {dists!r}


def _name(text):
    return re.sub(r"[-_.]+", "-", text).lower()


class _WithoutExtras:
    # Stands in for the path finder: a hidden module is not found (find_spec None, as when it is not
    # installed: importlib.util.find_spec answers None, an import raises ModuleNotFoundError), nor its
    # distribution's metadata (so no entry point of its own loads; civicedge's stays visible).
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        for dist in importlib.machinery.PathFinder.find_distributions(*args, **kwargs):
            if _name(dist.metadata["Name"] or "") not in HIDDEN_DISTS:
                yield dist

    @classmethod
    def invalidate_caches(cls):
        importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [_WithoutExtras if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""


def write_sitecustomize(directory: Path, *, keep: tuple[str, ...] = ()) -> tuple[set[str], set[str]]:
    """Write into ``directory`` a ``sitecustomize.py`` hiding what :func:`extras_only` names; return
    that ``(distributions, modules)``."""
    dists, modules = extras_only(keep=keep)
    (directory / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(modules=tuple(sorted(modules)), dists=tuple(sorted(dists))))
    return dists, modules

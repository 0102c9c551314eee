"""The pytest plugin is a product feature: what it needs at run time is installed with civicedge's
``hil`` extra (``pip install 'civicedge[hil]'``), not only with this repo's ``[test]`` extra."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _runtime_closure() -> set[str]:
    """Distributions ``pip install 'civicedge[hil]'`` brings: the dependencies of pyproject.toml, those
    of the ``hil`` extra (and of the extras it names, ``civicedge[field]``) and, from the installed
    metadata, theirs (without extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {**default_environment(), "extra": ""}
    todo = [Requirement(r) for r in project["dependencies"]]
    extras, done = ["hil"], set()
    while extras:
        extra = extras.pop()
        done.add(extra)
        for text in project["optional-dependencies"][extra]:
            req = Requirement(text)
            if _name(req.name) == "civicedge":
                extras.extend(e for e in req.extras if e not in done)
            else:
                todo.append(req)
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = _name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(Requirement(r) for r in md.requires(req.name) or [])
        except md.PackageNotFoundError:
            pass
    return seen


def test_what_the_plugin_imports_at_load_is_a_runtime_dependency() -> None:
    # A fresh interpreter: which third-party distributions does loading the plugin import?
    out = subprocess.run([sys.executable, "-c", "import json, sys, hil.pytest_plugin; "
                          "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    modules = [m for m in json.loads(out) if m not in sys.stdlib_module_names and not m.startswith("_")]
    by_module = md.packages_distributions()
    needed = {_name(dist) for m in modules for dist in by_module.get(m, [])} - {"civicedge"}
    assert "pytest" in needed
    missing = needed - _runtime_closure()
    assert not missing, f"imported by hil.pytest_plugin but not installed by civicedge[hil]: {missing}"


def test_pytest_embedded_is_installed_with_civicedge_as_the_docs_say() -> None:
    assert "pytest-embedded is installed with civicedge's `hil` extra" in (ROOT / "docs" / "hil.md").read_text()
    closure = _runtime_closure()
    assert {"pytest-embedded", "pytest-embedded-serial"} <= closure

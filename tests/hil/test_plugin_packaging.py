"""The pytest plugin is a product feature: what it needs at run time is installed with civicedge's
``hil`` extra (``pip install 'civicedge[hil]'``), not only with this repo's ``[test]`` extra."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys

from install_closure import ROOT, closure, dist_name


def _runtime_closure() -> set[str]:
    """Distributions ``pip install 'civicedge[hil]'`` brings (core, the extra and what they need)."""
    return closure(("hil",))


def test_what_the_plugin_imports_at_load_is_a_runtime_dependency() -> None:
    # A fresh interpreter: which third-party distributions does loading the plugin import?
    out = subprocess.run([sys.executable, "-c", "import json, sys, hil.pytest_plugin; "
                          "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    modules = [m for m in json.loads(out) if m not in sys.stdlib_module_names and not m.startswith("_")]
    by_module = md.packages_distributions()
    needed = {dist_name(dist) for m in modules for dist in by_module.get(m, [])} - {"civicedge"}
    assert "pytest" in needed
    missing = needed - _runtime_closure()
    assert not missing, f"imported by hil.pytest_plugin but not installed by civicedge[hil]: {missing}"


def test_pytest_embedded_is_installed_with_civicedge_as_the_docs_say() -> None:
    assert "pytest-embedded is installed with civicedge's `hil` extra" in (ROOT / "docs" / "hil.md").read_text()
    closure = _runtime_closure()
    assert {"pytest-embedded", "pytest-embedded-serial"} <= closure

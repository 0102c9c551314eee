"""pytest loads civicedge's plugin (entry point ``pytest11``) wherever civicedge is installed, also on a
gateway box that has pytest for other reasons but not the ``hil`` extra (no mpremote, Bumble,
pytest-embedded): its tests must run, and only the fixtures that drive boards or the radio fail,
naming the extra.

What the extras install and the core does not (read from the metadata: also websockets, which came only
through Bumble), less pytest and its own dependencies, is hidden in the pytest subprocess by a
``sitecustomize`` that stands in for the path finder (tests/install_closure.py: a hidden module is not
found, nor its distribution's metadata, as when it is not installed; civicedge's own stays visible, so
its entry point loads the plugin).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from install_closure import write_sitecustomize

ROOT = Path(__file__).resolve().parents[2]
TESTS = """
def test_plain():
    assert sum([1, 2]) == 3


def test_board(hil_board):
    pass


def test_radio(hil_radio):
    pass


def test_gateway_alone(hil_gateway):
    assert hil_gateway is not None
"""


def test_pytest_runs_with_the_plugin_and_board_fixtures_name_the_extra(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _, hidden = write_sitecustomize(site, keep=("pytest",))  # the box has pytest for other reasons
    assert {"bumble", "websockets", "mpremote", "pytest_embedded"} <= hidden and "pytest" not in hidden
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_box.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA",
                           "--trace-config", "test_box.py"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout
    assert "hil.pytest_plugin" in out  # the plugin was loaded (by its entry point)
    assert "pytest_embedded" not in out.split("active plugins:")[-1]
    assert "PASSED test_box.py::test_plain" in out, out
    assert "PASSED test_box.py::test_gateway_alone" in out, out  # the gateway is core: no extra needed
    assert "ERROR test_box.py::test_board" in out and "ERROR test_box.py::test_radio" in out
    assert "hil_board needs the 'hil' extra: pip install 'civicedge[hil]' (missing module mpremote)" in out
    # the relay imports websockets first, then Bumble: either is the hil extra's
    assert re.search(r"hil_radio needs the 'hil' extra: pip install 'civicedge\[hil\]' \(missing module "
                     r"(bumble|websockets)\)", out), out
    assert "INTERNALERROR" not in out + done.stderr
    assert done.returncode == 1, out + done.stderr

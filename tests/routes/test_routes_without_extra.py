"""Without the ``routes`` extra (neither OR-Tools nor numpy installed) planning says which extra to
install: the plan endpoint answers 503 ``solver_unavailable`` and ``routes plan`` exits 7, as without
OR-Tools alone (test_routes_lazy_ortools.py), instead of failing on numpy's import.

Each case runs a fresh interpreter whose ``sitecustomize`` makes both imports fail (also in the
planning worker it spawns: they share the environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from routes_helpers import T0
from routes_store import WINDOW_S, CityData
from test_routes_lazy_ortools import GATEWAY_SCRIPT

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
WITHOUT_ROUTES_EXTRA = "import sys\nsys.modules['ortools'] = None\nsys.modules['numpy'] = None\n"


@pytest.fixture
def gateway_toml(tmp_path: Path) -> Path:
    data = CityData(tmp_path / "data")
    for i in range(2):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    data.close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-no-extra"\ndata_dir = "{tmp_path / "data"}"\n[http]\nport = 0\n\n'
                   '[routes]\ndepot = "52.37,4.89"\ntime_limit_s = 0\n')
    return cfg


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(WITHOUT_ROUTES_EXTRA)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=100)


def test_the_plan_answers_503_naming_the_extra(gateway_toml: Path, tmp_path: Path) -> None:
    done = _run(["-c", GATEWAY_SCRIPT, str(gateway_toml)], tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["status"] == 503, seen["body"]
    error = seen["body"]["error"]
    assert error["code"] == "solver_unavailable" and error["package"] == "numpy"
    assert "pip install 'civicedge[routes]'" in error["message"]


def test_routes_plan_exits_7_naming_the_extra(gateway_toml: Path, tmp_path: Path) -> None:
    cli = "import sys; from hil.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = _run(["-c", cli, "routes", "plan", "--date", "2026-11-23", "--config", str(gateway_toml)], tmp_path)
    assert done.returncode == 7, (done.stdout, done.stderr)
    assert "the numpy package cannot be imported" in done.stderr
    assert "pip install 'civicedge[routes]'" in done.stderr and done.stdout == ""

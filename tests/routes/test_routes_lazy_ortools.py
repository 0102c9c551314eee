"""OR-Tools is loaded by the planning worker on the first plan, never by the gateway process itself.

On a Raspberry Pi-class box OR-Tools cost a gateway ~35 MB of memory and ~100 mapped shared libraries it
never used unless someone asked for a plan; on a platform without its wheels (32-bit ARM) the gateway
must still run and only the plan endpoint fails, with a code that names the missing package.

Each case runs a fresh interpreter (sys.modules of this test process has ortools from other tests).
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

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]

#: Starts the gateway of argv[1] (HTTP on), asks for a plan, then stops it; prints what it saw as JSON.
GATEWAY_SCRIPT = r"""
import asyncio, json, sys, urllib.request, urllib.error

import gateway.service
seen = {"after_import": "ortools" in sys.modules}

from gateway.config import load_config
from gateway.service import Gateway


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def main():
    gw = Gateway(load_config(sys.argv[1]))
    await gw.start()
    try:
        seen["after_start"] = "ortools" in sys.modules
        url = "http://127.0.0.1:%d/api/routes/plan?date=2026-11-23" % gw.http_port
        seen["status"], seen["body"] = await asyncio.to_thread(fetch, url)
        seen["after_plan"] = "ortools" in sys.modules
    finally:
        await gw.stop()

asyncio.run(main())
print(json.dumps(seen))
"""

#: Makes ``import ortools`` fail in this interpreter and in the worker it spawns (they share the environment),
#: as on a platform without its wheels.
NO_ORTOOLS = "import sys\nsys.modules['ortools'] = None\n"


@pytest.fixture
def gateway_toml(tmp_path: Path) -> Path:
    data = CityData(tmp_path / "data")
    for i in range(3):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90 if i else 30] * 4)
    data.close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-lazy"\ndata_dir = "{tmp_path / "data"}"\n[http]\nport = 0\n\n'
                   '[routes]\ndepot = "52.37,4.89"\ntime_limit_s = 0\n')
    return cfg


def _run(args: list[str], tmp_path: Path, *, without_ortools: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if without_ortools:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(NO_ORTOOLS)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=100)


def test_the_gateway_never_imports_ortools_and_still_plans(gateway_toml: Path, tmp_path: Path) -> None:
    done = _run(["-c", GATEWAY_SCRIPT, str(gateway_toml)], tmp_path, without_ortools=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["status"] == 200, seen["body"]
    assert sorted(s["bin_id"] for r in seen["body"]["routes"] for s in r["stops"]) == ["bin-1", "bin-2"]
    # the plan was solved by OR-Tools in the worker process; the gateway process never loaded it
    assert (seen["after_import"], seen["after_start"], seen["after_plan"]) == (False, False, False)


def test_without_ortools_the_gateway_runs_and_the_plan_answers_503_naming_it(gateway_toml: Path,
                                                                              tmp_path: Path) -> None:
    done = _run(["-c", GATEWAY_SCRIPT, str(gateway_toml)], tmp_path, without_ortools=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["status"] == 503, seen["body"]
    error = seen["body"]["error"]
    assert error["code"] == "solver_unavailable" and error["package"] == "ortools"
    assert "ortools" in error["message"] and error["date"] == "2026-11-23"
    # said once at start too, before anyone asks for a plan
    assert "route planning unavailable: ortools not installed (the 'routes' extra: pip install 'civicedge[routes]'" \
        in done.stderr


def test_without_ortools_the_routes_command_exits_7_naming_it(gateway_toml: Path, tmp_path: Path) -> None:
    cli = "import sys; from hil.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = _run(["-c", cli, "routes", "plan", "--date", "2026-11-23", "--config", str(gateway_toml)], tmp_path,
                without_ortools=True)
    assert done.returncode == 7, (done.stdout, done.stderr)
    assert "the ortools package cannot be imported" in done.stderr and done.stdout == ""

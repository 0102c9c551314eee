"""Two `hil run`s on one work directory: the second is refused at once (exit 2) instead of wiping the
first one's flash and store; the lock is released when the holder ends, even by a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.workdir import WorkdirInUseError, lock_path, lock_workdir

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_a_workdir_held_by_another_run_is_refused_up_front(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".civicedge-scenario").write_text("created by civicedge hil run\n")
    (work / "gateway.log").write_text("the running run's log\n")
    junit = tmp_path / "j.xml"
    with lock_workdir(work.resolve()):  # this process plays the running run
        proc = _run("link-outage", "--workdir", str(work), "--junit", str(junit))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"work directory {work.resolve()} is in use by another run (pid {os.getpid()})" in proc.stderr
    assert "Traceback" not in proc.stderr and "scenario link-outage:" not in proc.stderr  # before the banner
    assert (work / "gateway.log").read_text() == "the running run's log\n"  # not wiped
    err = ET.parse(junit).getroot().find("testsuite/testcase/error")
    assert err is not None and "in use by another run" in (err.get("message") or "")


def test_the_lock_is_released_with_its_holder(tmp_path: Path) -> None:
    work = (tmp_path / "w").resolve()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from hil.workdir import lock_workdir; l = lock_workdir(Path(sys.argv[1])); "
                               "print('locked', flush=True); time.sleep(60)", str(work)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirInUseError) as info:
            lock_workdir(work)
        assert info.value.details["holder_pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait(10)
    with lock_workdir(work) as lock:  # released by the kernel when the holder died
        assert lock.held
    assert not lock.held and lock_path(work) == tmp_path.resolve() / ".w.lock"
    assert not work.exists()  # the lock lives next to the directory, which recreating it never removes
    lock_workdir(work).release()


async def test_run_scenario_refuses_a_held_workdir(tmp_path: Path) -> None:
    from hil.scenarios import load_scenario
    from hil.scenarios.runner import run_scenario

    work = (tmp_path / "work").resolve()
    with lock_workdir(work):
        with pytest.raises(WorkdirInUseError):
            await run_scenario(load_scenario("link-outage"), workdir=work, handle_signals=False)
    assert not work.exists()

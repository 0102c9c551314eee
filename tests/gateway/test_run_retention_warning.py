"""`gateway run` warns of a retention shorter than ``[retention] interval_s`` from the retentions its gateway
loaded: ``retention.json`` is parsed into retention settings once at start, not once for the warning and again
for the gateway (two reads could also disagree if the admin API rewrote the file in between).

A real ``civicedge gateway run`` subprocess; its reads of ``retention.json`` are seen through a Python audit
hook (``open`` events), which changes nothing of what the gateway does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_env
from procs import REPO, stop_process

from hil.cli.main import main

pytestmark = pytest.mark.timeout(90)

# Runs the CLI with an audit hook that says on stderr which function opened retention.json.
AUDITED_CLI = """
import runpy, sys

def hook(event, args):
    if event == "open" and str(args[0]).endswith("retention.json"):
        frame = sys._getframe(1)
        while frame is not None and (frame.f_code.co_filename.endswith(("pathlib.py", "small_files.py"))
                                     or frame.f_code.co_name == "read_retention_bytes"):
            frame = frame.f_back  # the helpers that open files: the reader is their caller
        if frame is not None:
            sys.stderr.write("AUDIT retention.json read by %s.%s\\n"
                             % (frame.f_globals.get("__name__"), frame.f_code.co_qualname))
            sys.stderr.flush()

sys.addaudithook(hook)
sys.argv = ["civicedge", *sys.argv[1:]]
runpy.run_module("hil.cli.main", run_name="__main__")
"""

CAPPED = "keeps bin.bat for 5 days, longer than the gateway config's 3: using 3"


def _run_until_ready(config: Path, log: Path, timeout: float = 30.0) -> str:
    """Start the audited ``gateway run``, wait for its ready line, stop it (SIGTERM) and return its stderr."""
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", AUDITED_CLI, "gateway", "run", "--config", str(config)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            end = time.monotonic() + timeout
            line = ""
            while "ready" not in line:
                assert time.monotonic() < end and proc.poll() is None, "no ready line:\n" + log.read_text()
                line = proc.stdout.readline()
            proc.terminate()
            assert proc.wait(20) == 0, log.read_text()
        finally:
            stop_process(proc)
            if proc.stdout is not None:
                proc.stdout.close()
    return log.read_text()


def test_run_warns_from_the_retentions_its_gateway_loaded_reading_them_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bin.temp 1 day in retention.json, interval_s 2 days: warned once, in the words of `run --check`; bin.bat 5
    days there, capped at the config's 3: said once. Fails before: retention.json was parsed by the warning's own
    RetentionSettings and again by the gateway's (two ``gateway.web.retention`` reads)."""
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 172800\n[retention.bin]\nbat = 3\n")
    (tmp_path / "data" / "retention.json").write_text(json.dumps({"overrides": [
        {"kind": "bin", "field": "temp", "days": 1}, {"kind": "bin", "field": "bat", "days": 5}]}))
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0
    [checked] = [line for line in capsys.readouterr().err.splitlines() if "interval_s" in line]
    assert checked.startswith("warning: [retention] interval_s = 172800 (2 days) is longer than bin.temp = 1 day"), \
        checked
    words = checked[len("warning: "):]

    err = _run_until_ready(cfg, tmp_path / "gw.log")
    reads = [line for line in err.splitlines() if line.startswith("AUDIT ")]
    parsed = [line for line in reads if "gateway.web.retention.RetentionSettings._load" in line]
    assert len(parsed) == 1, reads
    # the warning: a log line at start with the text --check prints, once
    warned = [line for line in err.splitlines() if "interval_s" in line and not line.startswith("AUDIT ")]
    assert len(warned) == 1, err
    assert warned[0].endswith(words) and "WARNING" in warned[0], warned[0]
    assert "[retention.bin] bat" not in words  # 3 days: longer than the interval
    # the capped value: logged once, by the gateway as it starts
    assert len([line for line in err.splitlines() if CAPPED in line]) == 1, err

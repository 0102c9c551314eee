"""``verify-log`` refuses empty input unless told an empty log is expected.

QA finding: ``export-log -c gateway.toml | verify-log -`` printed ``OK: 0 entries, chain intact`` and
exited 0 when the export had failed and written nothing (``printf '' | verify-log -`` the same).
With ``--allow-empty`` an empty log passes; with an expectation (``--expect-count``, ``--expect-head``)
it is compared like any other log (``MISMATCH:`` on stdout unless it expects 0 entries or the GENESIS head).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.storage import ReportStore
from gateway.storage.provenance import GENESIS
from hil.cli.main import main

REPO = Path(__file__).resolve().parents[2]
EMPTY = "error (empty): no log entries to verify: the input is empty (did the export fail?)"


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.mark.parametrize("data", [b"", b"\n\n", b"  \n"])
def test_empty_input_is_refused(data: bytes, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    stdin(monkeypatch, data)
    assert main(["gateway", "verify-log", "-"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(EMPTY) and "--allow-empty" in err


def test_an_empty_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "chain.jsonl"
    log.write_text("")
    assert main(["gateway", "verify-log", str(log)]) == 1
    assert capsys.readouterr().err.startswith(EMPTY)


def test_an_empty_stores_log_verifies_when_expected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "reports.sqlite"
    ReportStore(db, gateway_id="gw1").close()
    assert main(["gateway", "export-log", "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "exported 0 entries, head %s" % GENESIS in err  # an empty store's log is empty
    for flags in (["--allow-empty"], ["--expect-count", "0"]):
        stdin(monkeypatch, out.encode())
        assert main(["gateway", "verify-log", "-", *flags]) == 0
        assert capsys.readouterr().out == "OK: 0 entries, chain intact, head %s\n" % GENESIS
    stdin(monkeypatch, out.encode())
    assert main(["gateway", "verify-log", "-", "--expect-count", "1"]) == 1  # entries expected: a count mismatch
    assert capsys.readouterr().out.startswith("MISMATCH: the chain links but has 0 entries")


@pytest.mark.parametrize("data", [b"", b"\n"])
def test_empty_input_with_an_expected_count_is_a_mismatch(data: bytes, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Review finding: docs/gateway.md says --expect-count N exits 1 with MISMATCH on stdout when the count
    differs; for empty input it gave 'error (empty)' on stderr instead (a script reading stdout saw nothing)."""
    stdin(monkeypatch, data)
    assert main(["gateway", "verify-log", "-", "--expect-count", "3"]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert out == ("MISMATCH: the chain links but has 0 entries, head %s; expected 3 entries (the input is empty: "
                   "did the export fail?)\n" % GENESIS)


def test_empty_input_is_judged_by_an_expected_head(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Only an empty log ends at the GENESIS head: expecting it accepts empty input; expecting another is a mismatch."""
    stdin(monkeypatch, b"")
    assert main(["gateway", "verify-log", "-", "--expect-head", GENESIS]) == 0
    assert capsys.readouterr() == ("OK: 0 entries, chain intact, head %s\n" % GENESIS, "")
    stdin(monkeypatch, b"")
    assert main(["gateway", "verify-log", "-", "--expect-head", "ab" * 32]) == 1
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("MISMATCH: the chain links but has 0 entries, head %s; expected head %s"
                                        % (GENESIS, "ab" * 32))
    stdin(monkeypatch, b"")
    assert main(["gateway", "verify-log", "-", "--expect-head", GENESIS, "--expect-count", "2"]) == 1
    assert capsys.readouterr().out.startswith("MISMATCH:")


def test_a_failed_export_piped_into_verify_fails(tmp_path: Path) -> None:
    """The QA repro as a shell pipeline (pipefail off, as in a default shell: the pipe's status is verify-log's)."""
    cli = "%s -m hil.cli.main" % sys.executable
    missing = tmp_path / "nowhere" / "reports.sqlite"
    proc = subprocess.run(["sh", "-c", "%s gateway export-log --db %s | %s gateway verify-log -" % (cli, missing, cli)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no report store at" in proc.stderr and EMPTY in proc.stderr and "OK" not in proc.stdout

"""Why `gateway run` will not start is an error in the journal too: with stderr the journal stream
($JOURNAL_STREAM), the final `error (...)` line starts with the syslog priority <3>, as the ERROR log
lines do, so `journalctl -p err` shows it.

Was: the log lines had priorities, the final `error (unknown_key) [gatway]: ...` line had none (stored at
the unit's default level, info), so `journalctl -p err` showed nothing about a service that would not start."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from hil.cli.main import JournalMessages

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, config: str, *, journal: bool) -> tuple[int, str]:
    """`civicedge gateway run` of ``config`` with stderr a file, JOURNAL_STREAM naming it (or another inode)."""
    path = tmp_path / "gateway.toml"
    path.write_text(config)
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        st = os.fstat(err.fileno())
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino + (0 if journal else 1))
        rc = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "-c", str(path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=120).returncode
    return rc, err_path.read_text()


def test_a_refused_config_is_an_error_in_the_journal(tmp_path: Path) -> None:
    rc, err = _run(tmp_path, '[gatway]\nid = "gw-1"\n', journal=True)
    assert rc == 1
    assert err.startswith("<3>error (unknown_key) [gatway]: "), err
    assert all(line.startswith("<3>") for line in err.splitlines()), err


def test_a_store_that_cannot_be_opened_is_an_error_in_the_journal(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reports.sqlite").write_bytes(b"not a database" * 100)
    rc, err = _run(tmp_path, '[gateway]\nid = "gw-1"\ndata_dir = "data"\n[http]\nenabled = false\n', journal=True)
    assert rc == 1
    assert err.startswith("<3>error (open_failed): report store ") and "is not a database" in err, err


def test_a_stderr_that_is_not_the_journal_gets_no_prefix(tmp_path: Path) -> None:
    rc, err = _run(tmp_path, '[gatway]\nid = "gw-1"\n', journal=False)
    assert rc == 1 and err.startswith("error (unknown_key) [gatway]: "), err


def test_every_line_of_a_message_gets_its_priority_other_text_none() -> None:
    out = io.StringIO()
    stream = JournalMessages(out)
    print("error (corrupt): the store is damaged\nrestore the last backup", file=stream)  # type: ignore[arg-type]
    print("warning: disk low", file=stream)  # type: ignore[arg-type]
    stream.write("config OK: gateway gw-1\n")
    stream.write("error (x): in ")
    stream.write("two writes\n")
    assert out.getvalue() == ("<3>error (corrupt): the store is damaged\n<3>restore the last backup\n"
                              "<4>warning: disk low\nconfig OK: gateway gw-1\n<3>error (x): in two writes\n")
    assert stream.encoding == out.encoding  # the rest is the real stream's

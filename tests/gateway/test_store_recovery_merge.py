"""docs/gateway.md "Damaged while running": the recovery and the merge with the last backup, run as the
operator runs them (the doc's shell blocks, through bash and the sqlite3 CLI) on a real store damaged as
the QA drill did (pages overwritten with random bytes after a checkpoint). Before, the doc recovered
with .dump alone and compared MAX(seq)/COUNT(*), which made the recovered file (15 of 81 reports in the
drill) look newer than the backup (75): nothing acknowledged may be lost that either file still holds,
and the provenance chain must link again where either file has its entries."""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from gateway.storage import ReportRecord, ReportStore
from gateway.errors import ProvenanceError
from gateway.storage.provenance import export_chain, verify_export

pytestmark = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 CLI the doc uses")
DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"
T0 = 1_700_000_100 - (1_700_000_100 % 3600)
DEVICES = ("bin-1", "bin-2", "sl-1")


def rec(device: str, seq: int) -> ReportRecord:
    alarm = seq % 10 == 0
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="alarm" if alarm else "win",
                        w=T0 + 900 * seq, l=0 if alarm else 900, m={} if alarm else {"fill": seq % 100},
                        e={}, a=["tilt"] if alarm else [], fw="1.0", received_at=T0 + 900 * seq + 5.0,
                        link="serial:/dev/x", digest="%064x" % (hash((device, seq)) & (2**256 - 1)))


def _blocks() -> tuple[str, str]:
    """The recovery block and the merge block of the doc's *Damaged while running*."""
    text = DOC.read_text()
    blocks = [textwrap_dedent(b) for b in re.findall(r"\n( *)```sh\n(.*?)\n\1```", text, re.S)]
    recover = [b for b in blocks if b.startswith("mkdir damaged")]
    merge = [b for b in blocks if b.startswith("B=") and "ATTACH" in b]
    assert len(recover) == 1 and len(merge) == 1, "the doc's recovery and merge blocks"
    return recover[0], merge[0]


def textwrap_dedent(block: tuple[str, str]) -> str:
    indent, body = block
    return "\n".join(line[len(indent):] if line.startswith(indent) else line for line in body.split("\n"))


def _damage(db: Path, seed: int) -> None:
    """Overwrite leaf pages with random bytes, as dd did in the drill: two of the reports table's older
    pages (in the backup), its newest page (acknowledged after the backup: lost in both), a page of the
    chain's older entries and two of its newest (the entries between them only a read by pos finds)."""
    conn = sqlite3.connect(db)
    leaves = {name: [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf'"
                                                 " ORDER BY pageno", (name,))] for name in ("reports", "chain")}
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    assert len(leaves["reports"]) > 6 and len(leaves["chain"]) > 3, leaves
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        for page in (leaves["reports"][1], leaves["reports"][3], leaves["reports"][-1], leaves["chain"][1],
                     leaves["chain"][-3], leaves["chain"][-1]):
            f.seek((page - 1) * page_size)
            f.write(rng.randbytes(page_size))


def _readable(db: Path, table: str, key: str, ids: range) -> set[tuple[str, int]]:
    """The rows (device, seq) a point read by ``key`` still finds in the damaged file (what is not truly
    unreadable)."""
    conn = sqlite3.connect(db)
    found: set[tuple[str, int]] = set()
    for i in ids:
        try:
            row = conn.execute("SELECT device, seq FROM %s WHERE %s = ?" % (table, key), (i,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            found.add((row[0], row[1]))
    conn.close()
    return found


def _pairs(db: Path, table: str = "reports") -> set[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return {(d, s) for d, s in conn.execute("SELECT device, seq FROM %s" % table)}
    finally:
        conn.close()


def test_the_documented_recovery_and_merge_keep_what_either_file_holds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = ReportStore(data / "reports.sqlite", gateway_id="gw1")
    for seq in range(1, 101):
        store.insert_batch([rec(d, seq) for d in DEVICES])
        if seq == 80:  # the nightly backup (SQLite's online backup API, as `civicedge gateway backup`)
            (tmp_path / "backup").mkdir()
            src = sqlite3.connect(data / "reports.sqlite")
            dst = sqlite3.connect(tmp_path / "backup" / "reports.sqlite")
            src.backup(dst)
            src.close()
            dst.close()
    store.save_floors({d: 100 for d in DEVICES})
    store.close()  # a clean stop: checkpointed, the -wal emptied
    everything = {(d, s) for d in DEVICES for s in range(1, 101)}
    _damage(data / "reports.sqlite", seed=7)
    readable = _readable(data / "reports.sqlite", "reports", "id", range(1, 301))
    readable_chain = _readable(data / "reports.sqlite", "chain", "pos", range(1, 301))
    in_backup = _pairs(tmp_path / "backup" / "reports.sqlite")
    chain_in_backup = _pairs(tmp_path / "backup" / "reports.sqlite", "chain")

    recover, merge = _blocks()
    done = subprocess.run(["bash", "-c", recover], cwd=data, capture_output=True, text=True)
    assert done.stdout.split() == ["ok"], done
    recovered = _pairs(data / "reports.sqlite")
    # The drill's situation: each file holds reports the other lacks.
    assert recovered - in_backup and in_backup - recovered, (len(recovered), len(in_backup), len(readable))
    merge = re.sub(r"^B=.*$", "B=%s" % (tmp_path / "backup"), merge, count=1, flags=re.M)
    out = subprocess.run(["bash", "-e", "-c", merge], cwd=data, check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["0", "ok"], out  # same store's chain; quick_check; no backup row missing

    merged = _pairs(data / "reports.sqlite")
    assert merged == recovered | in_backup
    assert merged >= readable | in_backup
    lost = everything - merged
    assert lost and not lost & in_backup and not lost & readable  # only what is unreadable in both
    conn = sqlite3.connect(data / "reports.sqlite")
    try:
        alarms = {(d, s) for d, s in conn.execute("SELECT device, seq FROM alarms")}
        assert alarms >= {(d, s) for d, s in merged if s % 10 == 0}  # alarm rows of lost reports stay too
        assert dict(conn.execute("SELECT device, floor FROM ack_floor")) == {d: 100 for d in DEVICES}
        assert conn.execute("SELECT count(*) FROM alarms a JOIN reports r ON r.id = a.report_id"
                            " WHERE r.device != a.device OR r.seq != a.seq").fetchone()[0] == 0
    finally:
        conn.close()
    # The chain holds every entry either file still has, and links wherever no entry is lost in both:
    # the export verifies up to the first entry lost in both.
    chain = _pairs(data / "reports.sqlite", "chain")
    assert chain >= readable_chain | chain_in_backup and len(chain) < 300
    conn = sqlite3.connect(data / "reports.sqlite")
    first_gap = 1 + conn.execute("SELECT count(*) FROM chain c WHERE pos = (SELECT count(*) FROM chain d"
                                 " WHERE d.pos <= c.pos)").fetchone()[0]
    conn.close()
    export = tmp_path / "chain.jsonl"
    with open(export, "w") as f:
        export_chain(data / "reports.sqlite", f)
    with open(export) as f, pytest.raises(ProvenanceError) as gap:
        verify_export(f)
    assert gap.value.reason == "prev_mismatch" and gap.value.line == first_gap > 240
    # The gateway opens the merged store and goes on storing.
    store = ReportStore(data / "reports.sqlite", gateway_id="gw1")
    try:
        store.insert_batch([rec("bin-1", 101)])
    finally:
        store.close()
    assert os.path.exists(data / "damaged" / "reports.sqlite")

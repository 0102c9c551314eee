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


def _damage(db: Path, seed: int, pages: dict[str, list[int]] | None = None) -> None:
    """Overwrite leaf pages with random bytes, as dd did in the drill. ``pages``: table -> indexes into its
    leaf pages (in page order). By default two of the reports table's older pages (in the backup), its
    newest page (acknowledged after the backup: lost in both), a page of the chain's older entries and two
    of its newest (the entries between them only a read by pos finds)."""
    if pages is None:
        pages = {"reports": [1, 3, -1], "chain": [1, -3, -1]}
    conn = sqlite3.connect(db)
    leaves = {name: [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf'"
                                                 " ORDER BY pageno", (name,))] for name in ("reports", "chain")}
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    assert len(leaves["reports"]) > 6 and len(leaves["chain"]) > 5, leaves
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        for name, indexes in pages.items():
            for i in indexes:
                f.seek((leaves[name][i] - 1) * page_size)
                f.write(rng.randbytes(page_size))


def _store(path: Path, gateway_id: str, seqs: range, devices: tuple[str, ...] = DEVICES,
           backup_at: int | None = None, backup: Path | None = None) -> None:
    """A store of ``seqs`` reports per device, stopped cleanly (checkpointed, the -wal emptied); with
    ``backup_at``, the nightly backup into ``backup`` after that seq (SQLite's online backup API, as
    `civicedge gateway backup`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = ReportStore(path, gateway_id=gateway_id)
    for seq in seqs:
        store.insert_batch([rec(d, seq) for d in devices])
        if seq == backup_at:
            assert backup is not None
            backup.mkdir(parents=True)
            src = sqlite3.connect(path)
            dst = sqlite3.connect(backup / "reports.sqlite")
            src.backup(dst)
            src.close()
            dst.close()
    store.close()


def _recover(data: Path) -> list[str]:
    """Run the doc's recovery block in ``data``; its output lines (checked: the per-id reads met only damaged
    pages, no other error)."""
    recover, _ = _blocks()
    done = subprocess.run(["bash", "-c", recover], cwd=data, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and lines[-1] == "ok", done
    return lines


def _merge(data: Path, backup: Path) -> subprocess.CompletedProcess[str]:
    """Run the doc's merge block in ``data`` with ``B`` set to ``backup`` (bash -e: stops at a failure)."""
    _, merge = _blocks()
    merge = re.sub(r"^B=.*$", "B=%s" % backup, merge, count=1, flags=re.M)
    return subprocess.run(["bash", "-e", "-c", merge], cwd=data, capture_output=True, text=True)


def _positions(db: Path) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {p for (p,) in conn.execute("SELECT pos FROM chain")}
    finally:
        conn.close()


def _orphan_alarms(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM alarms WHERE report_id NOT IN (SELECT id FROM reports)"
                                ).fetchone()[0])
    finally:
        conn.close()


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
    _store(data / "reports.sqlite", "gw1", range(1, 101), backup_at=80, backup=tmp_path / "backup")
    store = ReportStore(data / "reports.sqlite", gateway_id="gw1")
    store.save_floors({d: 100 for d in DEVICES})
    store.close()
    everything = {(d, s) for d in DEVICES for s in range(1, 101)}
    _damage(data / "reports.sqlite", seed=7)
    readable = _readable(data / "reports.sqlite", "reports", "id", range(1, 301))
    readable_chain = _readable(data / "reports.sqlite", "chain", "pos", range(1, 301))
    in_backup = _pairs(tmp_path / "backup" / "reports.sqlite")
    chain_in_backup = _pairs(tmp_path / "backup" / "reports.sqlite", "chain")

    lines = _recover(data)
    recovered = _pairs(data / "reports.sqlite")
    # It says what it did: every failed read was one that met a damaged page (in the log), how many rows
    # the new file holds, and no alarm row is left without its report (the dump copies them all).
    failed = (data / "damaged" / "by-id.log").read_text().splitlines()
    assert failed and all("disk image is malformed" in line for line in failed)
    assert re.fullmatch(r"ids 1\.\.(\d+) read one by one: %d reads met a damaged page" % len(failed), lines[0]), lines
    assert re.fullmatch(r"(\d+) alarm rows of unreadable reports left out; %d reports and %d chain entries "
                        r"recovered" % (len(recovered), len(_pairs(data / "reports.sqlite", "chain"))), lines[1]), lines
    assert _orphan_alarms(data / "reports.sqlite") == 0
    # The drill's situation: each file holds reports the other lacks.
    assert recovered - in_backup and in_backup - recovered, (len(recovered), len(in_backup), len(readable))
    shared = len(_positions(data / "reports.sqlite") & _positions(tmp_path / "backup" / "reports.sqlite"))
    out = _merge(data, tmp_path / "backup")
    assert out.returncode == 0, out
    # the chain entries both files hold; quick_check; no backup row missing
    assert out.stdout.splitlines() == ["%d chain entries in both files, all the same" % shared, "ok"], out

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


@pytest.mark.parametrize("gateway_id, devices, refusal", [
    # another gateway's store: its ids are not the recovered file's
    ("gw2", ("bin-9", "sl-9"), "backup_names_another_gateway"),
    # a store of another history under the same id (a gateway set up afresh): no entry to compare
    ("gw1", ("bin-9", "sl-9"), "no_chain_entry_in_both_files"),
])
def test_a_backup_of_another_store_is_not_merged_when_no_chain_entry_is_in_both(
        tmp_path: Path, gateway_id: str, devices: tuple[str, ...], refusal: str) -> None:
    # The recovered file lost its chain's oldest entries: exactly the positions a smaller backup holds, so
    # no position can show their hashes differ (the check counted differing entries: 0, and merged).
    data = tmp_path / "data"
    _store(data / "reports.sqlite", "gw1", range(1, 101))
    _store(tmp_path / "other" / "reports.sqlite", gateway_id, range(1, 21), devices=devices)
    _damage(data / "reports.sqlite", seed=3, pages={"chain": [0, 1, 2, 3, 4, 5]})
    _recover(data)
    before = (data / "reports.sqlite").read_bytes()
    assert not _positions(data / "reports.sqlite") & _positions(tmp_path / "other" / "reports.sqlite")

    out = _merge(data, tmp_path / "other")
    assert out.returncode != 0 and "CHECK constraint failed: %s" % refusal in out.stderr, out
    assert out.stdout == ""
    assert (data / "reports.sqlite").read_bytes() == before  # nothing merged


def test_the_backup_rows_whose_ids_new_reports_took_get_new_ids(tmp_path: Path) -> None:
    # The newest reports page is lost (the backup, taken after them, holds it), and the gateway ran on the
    # recovered file before the merge: its new reports took those ids (MAX(id) + 1).
    data = tmp_path / "data"
    _store(data / "reports.sqlite", "gw1", range(1, 101), backup_at=100, backup=tmp_path / "backup")
    _damage(data / "reports.sqlite", seed=5, pages={"reports": [-1]})
    _recover(data)
    lost = _pairs(tmp_path / "backup" / "reports.sqlite") - _pairs(data / "reports.sqlite")
    assert any(s % 10 == 0 for _, s in lost)  # with alarm rows
    store = ReportStore(data / "reports.sqlite", gateway_id="gw1")
    try:
        store.insert_batch([rec(d, seq) for seq in range(101, 111) for d in DEVICES])
    finally:
        store.close()

    def ids(db: Path) -> dict[tuple[str, int], int]:
        conn = sqlite3.connect(db)
        try:
            return {(d, s): i for i, d, s in conn.execute("SELECT id, device, seq FROM reports")}
        finally:
            conn.close()

    new = {k: i for k, i in ids(data / "reports.sqlite").items() if k[1] > 100}
    backup_ids = ids(tmp_path / "backup" / "reports.sqlite")
    taken = {k for k in lost if backup_ids[k] in new.values()}
    assert taken  # the branch: a backup row's id is a new report's now
    kept = ids(data / "reports.sqlite")

    out = _merge(data, tmp_path / "backup")
    assert out.returncode == 0 and out.stdout.splitlines()[1:] == ["ok"], out
    merged = ids(data / "reports.sqlite")
    assert set(merged) == set(backup_ids) | set(new)
    assert all(merged[k] == i for k, i in kept.items())  # the recovered file's rows keep their ids
    assert all(merged[k] == backup_ids[k] for k in lost - taken)
    assert all(merged[k] > max(kept.values()) for k in taken)  # new ids
    conn = sqlite3.connect(data / "reports.sqlite")
    try:
        # every alarm row is its report's (device, seq), and every alarm report has its rows
        assert conn.execute("SELECT count(*) FROM alarms a LEFT JOIN reports r ON r.id = a.report_id"
                            " WHERE r.id IS NULL OR r.device != a.device OR r.seq != a.seq").fetchone()[0] == 0
        alarmed = {(d, s) for d, s in conn.execute("SELECT device, seq FROM alarms")}
    finally:
        conn.close()
    assert alarmed == {k for k in merged if k[1] % 10 == 0}


def test_the_recovery_shows_errors_other_than_damaged_pages(tmp_path: Path) -> None:
    # A target that cannot take the rows (a full file system; here a file size limit at the size the dump
    # made) fails every per-id insert: the recovery said only "ok" (2>/dev/null), with rows missing.
    data = tmp_path / "data"
    _store(data / "reports.sqlite", "gw1", range(1, 101))
    _damage(data / "reports.sqlite", seed=7)
    probe = tmp_path / "probe"
    shutil.copytree(data, probe)
    recover, _ = _blocks()
    dump_only = recover.split("\nN=")[0]
    subprocess.run(["bash", "-c", dump_only], cwd=probe, check=True, capture_output=True)
    size = (probe / "reports.sqlite").stat().st_size
    assert size % 1024 == 0
    limited = "ulimit -f %d; trap '' XFSZ\n%s" % (size // 1024, recover)
    done = subprocess.run(["bash", "-c", limited], cwd=data, capture_output=True, text=True)
    assert "disk I/O error" in done.stdout or "disk is full" in done.stdout, done
    assert "%d reports and" % len(_pairs(probe / "reports.sqlite")) in done.stdout  # what the dump alone kept

"""Report store (real SQLite): batching, de-duplication, read API, retention, outbox cap, provenance."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ProvenanceError, StorageError
from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.storage.provenance import chain_hashes, entry_hash, export_chain, verify_export
from gateway.storage.schema import SCHEMA_VERSION

T0 = 1_700_000_100 - (1_700_000_100 % 3600)


def rec(device: str, seq: int, *, w: int | None = None, kind: str = "bin", m: dict[str, int] | None = None,
        a: list[str] | None = None, zone: str = "north") -> ReportRecord:
    """A report of ``device``; by default a ``win`` of its own window (``T0 + 900 * seq``: each seq its
    own period, as a device sends them)."""
    if w is None:
        w = T0 if a else T0 + 900 * seq
    return ReportRecord(
        device=device, seq=seq, kind=kind, zone=zone, type="alarm" if a else "win", w=w, l=60 if a else 900,
        m={"fill": 40, "temp": 12} if m is None else m, e={}, a=a or [], fw="1.0", received_at=w + 5.0,
        link="serial:/dev/x", digest="%064x" % seq,
    )


def test_batch_dedup_and_persisted_window(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    res = store.insert_batch([rec("b1", 1), rec("b1", 2), rec("b2", 5), rec("b1", 1)])
    assert res.inserted == [("b1", 1), ("b1", 2), ("b2", 5)] and res.duplicates == [("b1", 1)]
    store.close()
    store = ReportStore(db, gateway_id="gw1")
    assert store.max_seqs() == {"b1": 2, "b2": 5}
    assert store.insert_batch([rec("b1", 2)]).duplicates == [("b1", 2)]
    assert store.has("b2", 5) and not store.has("b2", 4)
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_alarms_and_chain_point_at_their_own_report_rows_with_and_without_duplicates(tmp_path: Path) -> None:
    """All-new batches take ids from MAX(id) (no lookup); batches with duplicates look them up."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("b1", 1), rec("b2", 1, m={}, a=["fire"]), rec("b1", 2, m={}, a=["tilt"])])  # all new
    store.insert_batch([rec("b2", 1), rec("b3", 7, m={}, a=["fire"]), rec("b3", 7)])  # a stored one, a repeat
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT a.device, a.seq, a.code, r.device, r.seq FROM alarms a JOIN reports r"
                        " ON r.id = a.report_id ORDER BY a.rowid").fetchall()
    assert rows == [("b2", 1, "fire", "b2", 1), ("b1", 2, "tilt", "b1", 2), ("b3", 7, "fire", "b3", 7)]
    chain = conn.execute("SELECT c.device, c.seq, r.digest = c.digest FROM chain c JOIN reports r"
                         " ON r.device = c.device AND r.seq = c.seq ORDER BY c.pos").fetchall()
    assert chain == [("b1", 1, 1), ("b2", 1, 1), ("b1", 2, 1), ("b3", 7, 1)]


@pytest.mark.parametrize("bound", [None, 999, 40])
def test_large_batches_keep_order_ids_and_chain_whatever_the_parameter_bound(tmp_path: Path,
                                                                             bound: int | None) -> None:
    """Rows go in through multi-row INSERTs of several sizes; 40 bound parameters allow one row at a time."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    if bound is not None:
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, bound)  # noqa: SLF001 - an older SQLite's bound
    # 1024 + 256 + 64 + 16 + 4 + 4 + 3: every chunk size (those over the bound are skipped)
    first = [rec("d%d" % (i % 7), i + 1, m={"fill": i % 100}) for i in range(1371)]
    assert len(store.insert_batch(first).inserted) == 1371
    again = first[100:110] + [rec("d9", i + 1, a=["fire"], m={}) for i in range(299)] + first[:3]
    result = store.insert_batch(again)
    assert len(result.inserted) == 299 and len(result.duplicates) == 13
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT id, device, seq, m FROM reports ORDER BY id").fetchall()
    expected = [(r.device, r.seq) for r in first] + [("d9", i + 1) for i in range(299)]
    assert [(d, s) for _, d, s, _ in stored] == expected
    assert [i for i, _, _, _ in stored] == list(range(1, len(expected) + 1))
    assert stored[5][3] == '{"fill":5}'
    chain = conn.execute("SELECT pos, device, seq FROM chain ORDER BY pos").fetchall()
    assert [(d, s) for _, d, s in chain] == expected and chain[-1][0] == len(expected)
    alarms = conn.execute("SELECT a.seq, r.seq, r.device FROM alarms a JOIN reports r ON r.id = a.report_id").fetchall()
    assert len(alarms) == 299 and all(a == s and d == "d9" for a, s, d in alarms)
    conn.close()
    store.close()
    buf = io.StringIO()
    assert export_chain(db, buf) == len(expected)
    assert verify_export(buf.getvalue().splitlines()) == len(expected)


def test_read_api(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1")
    store.insert_batch([
        rec("b1", 1, w=T0, m={"fill": 30}), rec("b1", 2, w=T0 + 900, m={"fill": 50}),
        rec("b2", 1, w=T0 + 900, m={"fill": 90}, zone="south"), rec("b1", 3, w=T0 + 3600, m={"fill": 70}),
        rec("b2", 2, w=T0 + 960, m={}, a=["fire"], zone="south"),
    ])
    q = ReportQueries(tmp_path / "r.sqlite")
    latest = {r.device: r for r in q.latest_per_device(kind="bin")}
    assert latest["b1"].m == {"fill": 70} and latest["b2"].seq == 1
    rs = q.readings(field="fill", start=T0, end=T0 + 3600)
    assert [(r.device, r.value) for r in rs] == [("b1", 30), ("b1", 50), ("b2", 90)]
    assert [r.value for r in q.readings(field="fill", start=T0, end=T0 + 7200, zone="south")] == [90]
    agg = q.hourly_aggregates(field="fill", start=T0, end=T0 + 7200)
    assert [(a.zone, a.hour, a.count, a.total, a.minimum, a.maximum) for a in agg] == [
        ("north", T0, 2, 80, 30, 50), ("south", T0, 1, 90, 90, 90), ("north", T0 + 3600, 1, 70, 70, 70)]
    assert agg[0].mean == 40.0
    alarms = q.alarms(start=T0, end=T0 + 7200)
    assert [(a.device, a.code, a.seq) for a in alarms] == [("b2", "fire", 2)]
    acts = {d.device: d for d in q.devices()}
    assert acts["b1"].last_seq == 3 and acts["b1"].reports == 3 and acts["b2"].reports == 2
    assert q.count_reports() == 5
    with pytest.raises(StorageError):
        ReportQueries(tmp_path / "missing.sqlite")


def test_retention_removes_old_fields_only(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1")
    old, new = T0 - 100 * 86400, T0
    store.insert_batch([rec("b1", 1, w=old), rec("b1", 2, w=new)])
    removed = store.apply_retention({("bin", "temp"): 90, ("bin", "fill"): 730}, now=T0 + 1000)
    assert removed == 1
    q = ReportQueries(tmp_path / "r.sqlite")
    reports = {r.seq: r for r in q.reports(device="b1")}
    assert reports[1].m == {"fill": 40} and reports[2].m == {"fill": 40, "temp": 12}
    assert [r.w for r in q.readings(field="temp", start=0, end=2**40)] == [new]


def test_the_store_overwrites_what_retention_removes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # secure_delete: a removed value is overwritten on disk, not only unlinked. Many SQLite builds
    # default to off (this one may not): stand one in, the store must turn it on itself.
    import sqlite3

    from gateway.storage import store as store_mod

    real_connect = sqlite3.connect

    def connect_off(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.execute("PRAGMA secure_delete=OFF")
        return conn

    monkeypatch.setattr(store_mod.sqlite3, "connect", connect_off)
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1")
    try:
        assert store._conn.execute("PRAGMA secure_delete").fetchone()[0] == 1  # noqa: SLF001
    finally:
        store.close()


V1_READINGS = """
CREATE TABLE readings (report_id INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE, device TEXT NOT NULL,
    kind TEXT NOT NULL, zone TEXT NOT NULL, field TEXT NOT NULL, w INTEGER NOT NULL, l INTEGER NOT NULL,
    value INTEGER NOT NULL);
CREATE INDEX readings_field_w ON readings (field, w);
"""


def test_a_version_1_store_is_migrated_without_losing_a_reading(tmp_path: Path) -> None:
    """Schema v1 kept readings in a table; v2 derives them from reports.m. Opening a v1 file with the
    new gateway drops the table and every reading is still there, read from the reports."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("b1", 1, w=T0, m={"fill": 30, "temp": 9}), rec("b2", 1, w=T0 + 900, m={"fill": 90})])
    store.close()
    conn = sqlite3.connect(db)  # turn it into a v1 file as an older gateway left it
    conn.executescript("DROP VIEW readings;" + V1_READINGS)
    conn.execute("INSERT INTO readings SELECT r.id, r.device, r.kind, r.zone, j.key, r.w, r.l, j.value"
                 " FROM reports r, json_each(r.m) j")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    v1 = sorted(conn.execute("SELECT device, field, w, value FROM readings").fetchall())
    conn.close()
    assert len(v1) == 3

    ReportStore(db, gateway_id="gw1").close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'readings'").fetchone() == ("view",)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert sorted(conn.execute("SELECT device, field, w, value FROM readings").fetchall()) == v1
    conn.close()
    q = ReportQueries(db)
    assert [(r.device, r.value) for r in q.readings(field="fill", start=T0, end=T0 + 3600)] == [("b1", 30), ("b2", 90)]


def test_readings_view_matches_field_names_exactly(tmp_path: Path) -> None:
    """A field name is a key, not a JSON path: "fill.x" or a quote finds nothing and changes nothing."""
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1")
    store.insert_batch([rec("b1", 1, w=T0 - 100 * 86400, m={"fill": 30, "temp": 9})])
    q = ReportQueries(tmp_path / "r.sqlite")
    for name in ("fill.x", '"fill"', "$.fill", "fil"):
        assert q.readings(field=name, start=0, end=2**40) == []
    assert store.apply_retention({("bin", 'te"mp'): 1, ("bin", "temp.x"): 1}, now=T0) == 0
    assert q.reports(device="b1")[0].m == {"fill": 30, "temp": 9}
    assert store.apply_retention({("bin", "temp"): 1}, now=T0) == 1
    assert q.reports(device="b1")[0].m == {"fill": 30}


def test_outbox_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    def enc(r: ReportRecord) -> tuple[str, bytes]:
        return "t/%s" % r.device, json.dumps({"seq": r.seq}).encode().ljust(100)

    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1", outbox_encoder=enc, outbox_max_bytes=350)
    res = store.insert_batch([rec("b1", s) for s in range(1, 6)])
    assert res.outbox_dropped == 2 and store.outbox_depth == 3 and store.counter("outbox_dropped") == 2
    msgs = store.outbox_peek(10)
    assert [json.loads(m.payload)["seq"] for m in msgs] == [3, 4, 5]
    store.outbox_delete([msgs[0].id])
    assert store.outbox_depth == 2 and store.outbox_bytes == 200
    store.close()
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1", outbox_encoder=enc, outbox_max_bytes=350)
    assert store.outbox_depth == 2 and store.counter("outbox_dropped") == 2


def test_provenance_export_verify_and_tamper(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("b1", 1), rec("b1", 2)])
    store.insert_batch([rec("b1", 2), rec("b2", 1)])  # duplicate adds no link
    store.close()
    store = ReportStore(db, gateway_id="gw1")  # chain continues after reopen
    store.insert_batch([rec("b2", 2)])
    buf = io.StringIO()
    assert export_chain(db, buf) == 4
    lines = buf.getvalue().splitlines()
    assert verify_export(lines) == 4
    altered = json.loads(lines[2])
    altered["seq"] = 99
    with pytest.raises(ProvenanceError) as info:
        verify_export(lines[:2] + [json.dumps(altered)] + lines[3:])
    assert info.value.line == 3 and info.value.reason == "hash_mismatch"
    with pytest.raises(ProvenanceError) as info:
        verify_export(lines[:1] + lines[2:])
    assert info.value.line == 2 and info.value.reason == "prev_mismatch"
    with pytest.raises(ProvenanceError) as info:
        verify_export(lines[:3] + ["{not json"])
    assert info.value.line == 4 and info.value.reason == "syntax"


def test_outbox_cap_drop_newest(tmp_path: Path) -> None:
    def enc(r: ReportRecord) -> tuple[str, bytes]:
        return "t", json.dumps({"seq": r.seq}).encode().ljust(100)

    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw1", outbox_encoder=enc, outbox_max_bytes=350,
                        outbox_policy="drop_newest")
    res = store.insert_batch([rec("b1", s) for s in range(1, 6)])
    assert res.inserted == [("b1", s) for s in range(1, 6)]  # every report is stored regardless
    assert res.outbox_dropped == 2 and [json.loads(m.payload)["seq"] for m in store.outbox_peek(9)] == [1, 2, 3]


_PLAIN = st.from_regex(r"[A-Za-z0-9 ._:-]{0,40}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(device=st.one_of(_PLAIN, st.text(max_size=20)), gateway=st.one_of(_PLAIN, st.text(max_size=20)),
       digest=st.one_of(_PLAIN, st.text(max_size=8)), prev=_PLAIN, seq=st.integers(-(2**40), 2**40))
def test_chain_entry_hash_is_sha256_of_the_canonical_json(device: str, gateway: str, digest: str, prev: str,
                                                         seq: int) -> None:
    """The chain's definition (docs/gateway.md): SHA-256 of json.dumps(sort_keys, no spaces) of the
    entry. The store's fast path for plain ids must give the same hash for every input."""
    canon = json.dumps({"device": device, "seq": seq, "gateway": gateway, "digest": digest, "prev": prev},
                       sort_keys=True, separators=(",", ":"))
    assert entry_hash(device=device, seq=seq, gateway=gateway, digest=digest, prev=prev) == \
        hashlib.sha256(canon.encode("utf-8")).hexdigest()


_HEX = st.text("0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=150, deadline=None)
@given(entries=st.lists(st.tuples(st.one_of(_PLAIN, st.text(max_size=12)), st.integers(-(2**40), 2**40),
                                  st.one_of(_HEX, _PLAIN, st.text(max_size=8))), max_size=6),
       gateway=st.one_of(_PLAIN, st.text(max_size=12)), prev=st.one_of(_HEX, _PLAIN, st.text(max_size=8)))
def test_chain_hashes_of_a_batch_are_its_entry_hashes_in_turn(entries: list[tuple[str, int, str]], gateway: str,
                                                               prev: str) -> None:
    """The store hashes a batch's entries at once: each hash the entry_hash of its entry with the one
    before as prev, whatever the strings (ids and digests written verbatim or escaped, the first prev
    read from a store another program may have written)."""
    expected = []
    for device, seq, digest in entries:
        prev_hash = expected[-1] if expected else prev
        expected.append(entry_hash(device=device, seq=seq, gateway=gateway, digest=digest, prev=prev_hash))
    assert chain_hashes(entries, gateway, prev) == expected


def test_a_store_under_a_path_with_uri_characters_is_read(tmp_path: Path) -> None:
    """Read-only connections use a ``file:`` URI; a hand-built one ended the name at "#" or "?"."""
    from gateway.storage import ReportQueries

    db = tmp_path / "city #1?" / "reports.sqlite"
    ReportStore(db, gateway_id="gw").close()
    queries = ReportQueries(db)
    try:
        assert queries.count_reports() == 0
    finally:
        queries.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city #1?"]  # nothing created beside it


def test_a_store_of_a_newer_schema_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    """A newer gateway's store must not be opened and have its schema_version written back down."""
    from gateway.storage.schema import SCHEMA_VERSION

    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw1")
    store.insert_batch([rec("b1", 1)])
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError) as info:
        ReportStore(db, gateway_id="gw1")
    assert info.value.reason == "schema_too_new"
    message = str(info.value)
    assert str(db) in message and "schema version %d" % (SCHEMA_VERSION + 1) in message
    assert "gateway's %d" % SCHEMA_VERSION in message
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION + 1),)
    conn.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    conn.commit()
    conn.close()
    ReportStore(db, gateway_id="gw1").close()  # the refused open released the writer lock


def test_a_new_data_directory_and_its_new_parents_are_private(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        ReportStore(tmp_path / "srv" / "data" / "reports.sqlite", gateway_id="gw1").close()
    finally:
        os.umask(old)
    assert (tmp_path / "srv").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "srv" / "data").stat().st_mode & 0o777 == 0o700
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    ReportStore(existing / "reports.sqlite", gateway_id="gw1").close()
    assert existing.stat().st_mode & 0o777 == 0o755  # an existing directory is the operator's choice


def test_run_check_reports_the_store_schema_without_migrating_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``gateway run --check`` said "config OK" for a store a newer gateway wrote, and ``run`` then failed
    with schema_too_new. It reads the version read-only now: no store, an older one (migrated by ``run``,
    not by the check), the same, or a newer one (the error ``run`` would give)."""
    from gateway.storage.schema import SCHEMA_VERSION
    from hil.cli.main import main

    db = tmp_path / "data" / "reports.sqlite"
    config = tmp_path / "gateway.toml"
    config.write_text('[http]\nenabled = false\n[gateway]\ndata_dir = "%s"\n[storage]\npath = "%s"\n'
                      % (tmp_path / "data", db))
    check = ["gateway", "run", "--config", str(config), "--check"]

    def set_version(v: int) -> None:
        conn = sqlite3.connect(db)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(v),))
        conn.commit()
        conn.close()

    def version() -> str:
        conn = sqlite3.connect(db)
        try:
            return str(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        finally:
            conn.close()

    assert main(check) == 0
    assert "(no store yet: created at start with schema version %d)" % SCHEMA_VERSION in capsys.readouterr().out
    assert not db.exists()
    ReportStore(db, gateway_id="gw1").close()
    assert main(check) == 0
    assert capsys.readouterr().out.rstrip().endswith("(schema version %d)" % SCHEMA_VERSION)
    set_version(SCHEMA_VERSION - 1)
    assert main(check) == 0
    assert ("(schema version %d: migrated to %d at start)" % (SCHEMA_VERSION - 1, SCHEMA_VERSION)
            in capsys.readouterr().out)
    assert version() == str(SCHEMA_VERSION - 1)  # the check migrated nothing
    set_version(SCHEMA_VERSION + 1)
    assert main(check) == 1
    captured = capsys.readouterr()
    assert "config OK" not in captured.out
    # the message names the store (QA: which file, on a host with several gateways?)
    assert captured.err.startswith("error (schema_too_new): the report store %s has schema version %d, newer than "
                                   "this gateway's %d" % (db, SCHEMA_VERSION + 1, SCHEMA_VERSION))
    assert version() == str(SCHEMA_VERSION + 1)

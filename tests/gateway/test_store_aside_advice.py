"""The refusal of a store whose -wal/-shm were set aside as ``.overwritten`` (review E, LOW 1 and LOW 3)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportStore

from test_store_overwrite_races import cp, rec, seqs, side, snapshot

pytestmark = pytest.mark.timeout(120)


def overwrite_then_refuse(db: Path, first: int) -> StorageError:
    """A store of ``first`` reports, a backup of it copied over it after 100 more, stopped, then started."""
    store = ReportStore(db, gateway_id="gw-test")
    for seq in range(first + 1, first + 300):
        store.insert_batch([rec(seq)])
    bk = db.with_name("bk.sqlite")
    snapshot(db, bk)
    for seq in range(first + 300, first + 400):
        store.insert_batch([rec(seq)])
    cp(bk, db)
    store.close()
    with pytest.raises(StorageError) as refused:
        ReportStore(db, gateway_id="gw-test")
    assert refused.value.reason == "overwritten_aside"
    return refused.value


def test_a_second_overwrite_is_moved_out_of_the_way_too(tmp_path: Path) -> None:
    """LOW 1, fails before: the advice named one fixed directory and mv -n, so the second incident's files were
    silently left beside the store (mv -n skips names taken) and the start was refused again."""
    db = tmp_path / "data" / "reports.sqlite"
    db.parent.mkdir()
    for round_, first in enumerate((0, 299)):
        refused = overwrite_then_refuse(db, first)
        advice = str(refused).split("move them out of the way: ")[1].split(" and start;")[0]
        subprocess.run(advice, shell=True, check=True)
        assert not list(db.parent.glob("*.overwritten*")), round_
        ReportStore(db, gateway_id="gw-test").close()  # starts: the copy is the store
    assert seqs(db) == (598, 598)
    assert len(list(db.parent.glob("reports.sqlite.set-aside-*"))) == 2
    assert not side(db, "-wal.overwritten").exists()


def test_the_touch_advice_warns_of_a_copy_of_the_same_size(tmp_path: Path) -> None:
    """LOW 3: putting the -wal back is only right for a touch, and a copy of the same size looks the same."""
    db = tmp_path / "reports.sqlite"
    refused = str(overwrite_then_refuse(db, 0))
    touch = refused.split("if only its modification time changed")[1]
    assert touch.index("only if you know nothing was copied over it") < touch.index("put them back")

"""ReportStore.save_meta writes only the rows the gateway writes, of a bounded size.

The web layer holds this writer (what the public open data published is saved through it), so it
refused only ``schema_version``: any other key, of any length, could be written from there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.retention_clock import META_KEY as RETENTION_META_KEY
from gateway.storage import ReportQueries, ReportStore
from gateway.storage.store import MAX_META_KEY, MAX_META_VALUE, PUBLISHED_META_PREFIX
from gateway.web import publication


def test_only_published_keys_and_the_retention_state_are_written(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw-m")
    queries = ReportQueries(tmp_path / "r.sqlite")
    try:
        store.save_meta(publication.published_key("entities"), "1 2 3")
        store.save_meta(RETENTION_META_KEY, "{}")
        for key in ("data_version", "gateway_id", "published", "Published:csv", "", "x" * 10_000):
            with pytest.raises(StorageError) as err:
                store.save_meta(key, "1")
            assert err.value.reason == "bad_value", key
        assert queries.meta_values("").keys() >= {"published:entities", RETENTION_META_KEY}
        assert not {"data_version", "gateway_id", "published", "Published:csv", ""} & set(queries.meta_values(""))
    finally:
        queries.close()
        store.close()


def test_a_key_or_value_too_long_is_refused(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw-m")
    queries = ReportQueries(tmp_path / "r.sqlite")
    try:
        store.save_meta("published:" + "k" * (MAX_META_KEY - len("published:")), "v" * MAX_META_VALUE)
        for key, value in (("published:" + "k" * MAX_META_KEY, "1"), ("published:csv", "v" * (MAX_META_VALUE + 1))):
            with pytest.raises(StorageError) as err:
                store.save_meta(key, value)
            assert err.value.reason == "bad_value"
        assert "published:csv" not in queries.meta_values("published:")
    finally:
        queries.close()
        store.close()


def test_the_prefix_is_the_open_datas() -> None:
    assert PUBLISHED_META_PREFIX == publication.PUBLISHED_KEY_PREFIX

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
from gateway.storage.meta_keys import MAX_META_KEY, MAX_META_VALUE
from gateway.web import publication
from gateway.web.published_marks import published_meta_writer


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


async def test_the_web_layers_writer_cannot_write_the_retention_clocks_row(tmp_path: Path) -> None:
    """Review LOW-7: the web was handed the retention loop's writer, so it could overwrite (or clear) the
    retention clock's row, which holds a data-protection hold."""
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw-m")
    queries = ReportQueries(tmp_path / "r.sqlite")

    async def save(key: str, value: str) -> None:  # what the gateway's _save_meta does, minus the thread
        store.save_meta(key, value)

    web_writer = published_meta_writer(save)
    try:
        held = '{"hold": {"reason": "clock_ahead"}}'
        await save(RETENTION_META_KEY, held)
        for key in (RETENTION_META_KEY, "data_version", "Published:csv"):
            with pytest.raises(StorageError) as err:
                await web_writer(key, "{}")
            assert err.value.reason == "bad_value", key
        await web_writer(publication.published_key("csv"), "1 2 3")
        written = queries.meta_values("")
        del written["schema_version"]
        assert written == {RETENTION_META_KEY: held, "published:csv": "1 2 3"}
    finally:
        queries.close()
        store.close()

"""ReportStore.save_meta: the writer's side of the store's key/value ``meta`` table."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.storage import ReportQueries, ReportStore
from gateway.storage.schema import SCHEMA_VERSION


def test_a_meta_row_is_written_replaced_and_read_back_and_the_schema_version_is_refused(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw-m")
    queries = ReportQueries(tmp_path / "r.sqlite")
    try:
        store.save_meta("published:csv", "0 100")
        store.save_meta("published:csv", "3 200")
        assert queries.meta_values("published:") == {"published:csv": "3 200"}
        with pytest.raises(StorageError) as err:
            store.save_meta("schema_version", "9")
        assert err.value.reason == "bad_value"
        assert queries.meta_values("schema_version") == {"schema_version": str(SCHEMA_VERSION)}
    finally:
        queries.close()
        store.close()

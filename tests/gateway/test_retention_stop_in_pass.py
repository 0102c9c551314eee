"""A stop that cuts off a retention pass keeps the clock step that pass found (review clock2, C).

Found in review: the pass recorded a forward step of the wall clock (removal_time) and went on to the store
work (counting, removing: long on a big store); a SIGTERM then cancelled it before its state was saved, and the
stop saw no step since that pass began, so it saved nothing: the next start trusted the jumped clock and
removed 200 days early. Now the pass saves the row as soon as the step is recorded, before the store work, and
the stop saves whatever differs from what was last saved.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_env
from helpers import SteppedTime, until

from gateway.config import load_config
from gateway.service import Gateway
from gateway.storage import ReportStore

pytestmark = pytest.mark.timeout(60)

DAY = 86400.0


async def test_a_stop_during_the_pass_that_found_a_step_keeps_the_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: ``step`` was saved as null, and the restarted gateway removed by the jumped clock."""
    import gateway.service

    stepped = SteppedTime()
    monkeypatch.setattr(gateway.service, "time", stepped)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    gw = Gateway(load_config(cfg))
    await gw.start()
    entered = threading.Event()
    in_pass: list[Any] = []
    try:
        await until(lambda: gw._retention_saved is not None, "no first pass")  # noqa: SLF001
        real = gw.store.begin_retention

        def slow(*a: Any, **k: Any) -> Any:
            # On the store's thread: what is saved when the store work begins, then a long count.
            in_pass.append(json.loads(gw.store.retention_meta() or "{}").get("step"))
            entered.set()
            time.sleep(1.5)
            return real(*a, **k)

        monkeypatch.setattr(gw.store, "begin_retention", slow)
        stepped.step = 200 * DAY
        await until(entered.is_set, "the pass after the step did not begin its store work", 10)
    finally:
        await gw.stop()  # SIGTERM while the pass counts
    assert in_pass[0] is not None and in_pass[0]["offset"] == pytest.approx(200 * DAY, abs=600)
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    try:
        step = json.loads(store.retention_meta() or "{}")["step"]
    finally:
        store.close()
    assert step is not None and step["offset"] == pytest.approx(200 * DAY, abs=600)
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: gw.metrics.value("civicedge_retention_clock_offset_seconds") > 0,
                    "the restarted gateway forgot the step")
        assert gw.retention_clock.stepped_ahead(gw.clock())
    finally:
        await gw.stop()

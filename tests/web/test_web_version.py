"""The running version on the operations endpoints: a label of civicedge_gateway_info, and /healthz."""

from __future__ import annotations

from importlib.metadata import version

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

INSTALLED = version("civicedge")


async def test_metrics_info_and_healthz_name_the_installed_version(client: TestClient) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200
    info = [s for fam in text_string_to_metric_families(await resp.text()) for s in fam.samples
            if s.name == "civicedge_gateway_info"]
    assert [(s.labels, s.value) for s in info] == [({"gateway": "gw-test", "version": INSTALLED}, 1.0)]
    resp = await client.get("/healthz")
    assert (await resp.json())["version"] == INSTALLED

"""Each field's plausible range (policy ``valid_range``) is published next to its quantum and unit.

The gateway drops a value outside it (docs/protocol.md "Plausible values"), so a reader of the open
data needs it to know why a sensor's value is missing, and what a value can be: the catalogue's data
dictionary (``validRange``), the transparency page and its JSON form say it, from the policy.
"""

from __future__ import annotations

import copy
import html
import re

from aiohttp.test_utils import TestClient

from gateway.resources import load_policy
from gateway.web.transparency import build_transparency, render_transparency_html


async def test_the_data_dictionary_gives_each_fields_valid_range(client: TestClient) -> None:
    policy = load_policy()
    resp = await client.get("/opendata")
    assert resp.status == 200
    fields = {(f["kind"], f["field"]): f for f in (await resp.json())["dataDictionary"]["fields"]}
    assert set(fields) == {(k, n) for k, spec in policy["kinds"].items() for n in spec["fields"]}
    for (kind, name), entry in fields.items():
        spec = policy["kinds"][kind]["fields"][name]
        assert entry["validRange"] == spec.get("valid_range"), (kind, name)
        assert (entry["quantum"], entry["unit"]) == (spec.get("quantum"), spec["unit"])
    assert fields[("bin", "fill")]["validRange"] == [0, 100]
    assert fields[("streetlight", "mot")]["validRange"] is None  # a people count has none


async def test_the_transparency_json_gives_it(client: TestClient) -> None:
    doc = await (await client.get("/transparency.json")).json()
    got = {(k["kind"], f["field"]): f.get("valid_range") for k in doc["kinds"] for f in k["fields"]}
    policy = load_policy()
    assert got == {(k, n): s.get("valid_range") for k, kspec in policy["kinds"].items()
                   for n, s in kspec["fields"].items()}


def test_the_transparency_page_shows_it_next_to_the_rounding() -> None:
    policy = copy.deepcopy(load_policy())
    policy["kinds"]["bin"]["fields"]["temp"]["valid_range"] = [-40, 900]
    page = render_transparency_html(build_transparency(policy))
    for kind, kspec in policy["kinds"].items():
        for name, spec in kspec["fields"].items():
            row = re.search(r'<tr data-field="%s">(.*?)</tr>' % re.escape(name), page, re.S)
            assert row, name
            if "valid_range" in spec:
                low, high = spec["valid_range"]
                said = html.escape(f"a value outside {low} to {high} {spec['unit']} (a faulty sensor) is dropped")
                assert said in row.group(1), (kind, name)
            else:
                assert "is dropped" not in row.group(1), (kind, name)

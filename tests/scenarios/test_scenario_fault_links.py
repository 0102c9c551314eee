"""A fault on a link the board group does not report over would do nothing: refused at validate time."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenarios import ScenarioError, load_scenario


LINK = """
name = "links"
duration = "30m"
start = "2026-11-21T20:00:00Z"
[[boards]]
board = "streetlight-esp32"
link = "{link}"
faults = [{{ time = "+10m", fault = "{fault}" }}]
[expect]
reports_min = 1
"""


@pytest.mark.parametrize("link, fault, says", [
    ("ble", "drop uart 5m", "fault 'drop uart 5m' at '+10m' would do nothing: it acts on the uart link, and the "
                            "group's boards report over ble (link = \"ble\") (use drop ble or drop all)"),
    ("ble", "corrupt uart 0.1 for 5m", "it acts on the uart link, and the group's boards report over ble"),
    ("uart", "drop ble 5m", "it acts on the ble link, and the group's boards report over uart (link = \"uart\") "
                            "(use drop uart or drop all)"),
    ("uart", "ble_disconnect", "it acts on the ble link"),
])
def test_a_fault_on_a_link_the_group_does_not_use_is_refused(tmp_path: Path, link: str, fault: str,
                                                             says: str) -> None:
    """A BLE streetlight accepted `drop uart` faults that then did nothing (it has a UART, unused)."""
    path = tmp_path / "links.toml"
    path.write_text(LINK.format(link=link, fault=fault))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert says in str(info.value), str(info.value)
    assert info.value.details["key"] == "faults" and info.value.details["value"] == fault


@pytest.mark.parametrize("link, fault", [("ble", "drop ble 5m"), ("ble", "drop all 5m"), ("ble", "ble_disconnect"),
                                         ("uart", "drop uart 5m"), ("uart", "corrupt 0.1 for 5m")])
def test_faults_on_the_groups_link_are_accepted(tmp_path: Path, link: str, fault: str) -> None:
    path = tmp_path / "links.toml"
    path.write_text(LINK.format(link=link, fault=fault))
    assert load_scenario(path).boards[0].link == link

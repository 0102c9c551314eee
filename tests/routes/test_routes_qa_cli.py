"""QA of `civicedge routes plan` as a waste-operations manager runs it: config errors, --help, the clock."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from routes_helpers import T0, run_cli
from routes_store import WINDOW_S, CityData


@pytest.mark.parametrize(("text", "needle"), [
    ("[routes\nvehicles = 2\n", "not valid TOML"),
    (None, "No such file"),
])
def test_a_bad_config_file_is_named_as_the_config_file(tmp_path: Path, text: str | None, needle: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "malformed.toml"
    if text is not None:
        cfg.write_text(text)
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89",
                              "--config", str(cfg)], capsys)
    assert code == 5 and out == ""
    assert f"cannot read the config file {cfg}: " in err and needle in err, err
    assert "bin data" not in err, err


def test_help_says_the_config_gives_the_defaults_and_what_the_time_limit_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(["routes", "plan", "--help"], capsys)
    text = " ".join(capsys.readouterr().out.split())
    for key, value in (("vehicles", "2"), ("capacity_l", "10000"), ("time_limit_s", "5"), ("threshold", "0.8")):
        assert f"(default: [routes] {key} of --config, else {value})" in text
    assert "(default 2)" not in text and "(default 10000)" not in text and "(default 5)" not in text
    assert "the whole limit is always used" in text and "0 keeps the first solution" in text


def test_today_follows_the_configs_simulated_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's gateway runs on [sim_clock]; `routes plan --config` must plan the demo's day, not the machine's."""
    city = CityData(tmp_path / "data")
    city.add_device("bin-1")
    city.windows("bin-1", T0 - 2 * WINDOW_S, [90, 90])
    city.close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-t"\ndata_dir = "{tmp_path / "data"}"\n'
                   f"[sim_clock]\nspeed = 1\nvirtual_at = {T0 + 4 * 3600}\nwall_at = {time.time()}\n"
                   '[routes]\ndepot = "52.37,4.89"\ntime_limit_s = 0\n')
    code, out, err = run_cli(["routes", "plan", "--config", str(cfg)], capsys)
    assert code == 0, err
    assert json.loads(out)["date"] == "2026-11-23"

"""``--location`` south or west of the prime meridian/equator (a value starting with a minus) is a
value, not an unknown option, in ``provision`` and ``gateway devices add/move``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.cli.main import main as civicedge_main

pytestmark = [pytest.mark.timeout(60)]

SYDNEY = "-33.8688,151.2093"


@pytest.mark.parametrize("location", [["--location", SYDNEY], [f"--location={SYDNEY}"],
                                      ["--location", "-33.8688,-70.5"], ["--location", "40.7,-74.0"]])
def test_provision_takes_a_negative_location(location: list[str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = civicedge_main(["provision", "--port", str(tmp_path / "ttyUSB9"), "--id", "sl-1", "--zone", "centre",
                         *location, "--registry", str(tmp_path)])
    err = capsys.readouterr().err
    # Parsed and validated: it got as far as the (missing) port.
    assert rc == 2 and "expected one argument" not in err and "does not exist" in err, err


def test_provision_help_shows_the_equals_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        civicedge_main(["provision", "--help"])
    assert "--location=-33.8688,151.2093" in " ".join(capsys.readouterr().out.split())


def test_devices_add_and_move_take_a_negative_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg_dir = tmp_path / "registry"
    rc = civicedge_main(["gateway", "devices", "add", "--registry", str(reg_dir), "--id", "sl-syd", "--kind",
                         "streetlight", "--zone", "harbour", "--location", SYDNEY])
    assert rc == 0, capsys.readouterr().err
    rc = civicedge_main(["gateway", "devices", "move", "sl-syd", "--registry", str(reg_dir), "--location",
                         "-33.87,-151.2"])
    assert rc == 0, capsys.readouterr().err
    reg = Registry(reg_dir)
    try:
        rec = reg.get("sl-syd")
        assert (rec.lat, rec.lon) == ("-33.87", "-151.2")
    finally:
        reg.close()
    with pytest.raises(SystemExit):
        civicedge_main(["gateway", "devices", "move", "--help"])
    assert "--location=-33.8688,151.2093" in " ".join(capsys.readouterr().out.split())

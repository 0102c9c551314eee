"""`gateway run --check` refuses what `gateway run` would refuse or crash on, naming the key.

Each case was a QA finding: --check said "config OK" and run then failed (or raised a traceback).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from hil.cli.main import main


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text("[http]\nenabled = false\n" + text if "[http]" not in text else text)
    return path


def check_fails(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``gateway run --check`` and then ``gateway run``: both exit 1 with the same one-line error."""
    path = write(tmp_path, text)
    assert main(["gateway", "run", "--config", str(path), "--check"]) == 1
    captured = capsys.readouterr()
    assert "config OK" not in captured.out
    assert main(["gateway", "run", "--config", str(path)]) == 1
    assert capsys.readouterr().err == captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    return captured.err


def test_ble_virtual_radio_url_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = check_fails(tmp_path, '[ble]\nenabled = true\nbackend = "virtual"\nradio = "http://x"\n', capsys)
    assert "[ble.radio]" in err and "ws://" in err
    ok = write(tmp_path, '[ble]\nenabled = true\nbackend = "virtual"\nradio = "ws://127.0.0.1:9000/civic"\n')
    assert load_config(ok).ble.radio == "ws://127.0.0.1:9000/civic"
    # A disabled section is kept for later, not used: it does not need the simulator nor a valid URL.
    off = write(tmp_path, '[ble]\nenabled = false\nbackend = "virtual"\nradio = "garbage"\n')
    assert load_config(off).ble.enabled is False


@pytest.mark.parametrize("radio", ["ws://127.0.0.1/civic", "ws://:9000/civic", "ws://h:9000/bad room"])
def test_ble_radio_url_errors_name_the_key(tmp_path: Path, radio: str) -> None:
    path = write(tmp_path, '[ble]\nenabled = true\nbackend = "virtual"\nradio = "%s"\n' % radio)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.reason, info.value.key) == ("bad_value", "ble.radio")


@pytest.mark.parametrize(
    ("text", "reason", "key"),
    [
        ("foo = 1\n", "unknown_key", "routes.foo"),
        ('vehicles = "x"\n', "bad_value", "routes.vehicles"),
        ('tz = "Mars/Olympus"\n', "bad_value", "routes.tz"),
        ('depot = "abc"\n', "bad_value", "routes.depot"),
        ('start = "25:00"\n', "bad_value", "routes.start"),
        ('matrix = "absent.csv"\n', "bad_value", "routes.matrix"),
        ('bin_volumes = "absent.csv"\n', "bad_value", "routes.bin_volumes"),
        ('osrm = "ftp://osrm.local"\n', "bad_value", "routes.osrm"),
    ],
)
def test_routes_table_is_validated_by_the_loader(tmp_path: Path, text: str, reason: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[routes]\n" + text))
    assert (info.value.reason, info.value.key) == (reason, key)
    assert key.split(".", 1)[1] in str(info.value)


def test_routes_check_and_run_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "[routes.tz]" in check_fails(tmp_path, '[routes]\ntz = "Mars/Olympus"\n', capsys)
    good = write(tmp_path, '[routes]\ndepot = "52.37,4.89"\ntz = "Europe/Amsterdam"\nvehicles = 2\n')
    assert main(["gateway", "run", "--config", str(good), "--check"]) == 0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('host = ""\n', "mqtt.host"),
        ('host = "not a host"\n', "mqtt.host"),
        ('host = "999.1.1.1"\n', "mqtt.host"),
        ('host = "broker.city.example"\nclient_id = ""\n', "mqtt.client_id"),
    ],
)
def test_mqtt_host_and_client_id_must_not_be_empty(tmp_path: Path, text: str, key: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert "[%s]" % key in check_fails(tmp_path, "[mqtt]\n" + text, capsys)


def test_mqtt_host_may_be_a_name_or_an_address(tmp_path: Path) -> None:
    for host in ("broker.city.example", "mosquitto", "10.0.0.7", "::1"):
        cfg = load_config(write(tmp_path, '[mqtt]\nhost = "%s"\nclient_id = "gw-1"\n' % host))
        assert cfg.mqtt is not None and cfg.mqtt.host == host and cfg.mqtt.client_id == "gw-1"


@pytest.mark.skipif(not Path("/proc/self/mountinfo").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[gateway]\ndata_dir = "/proc/civicedge-data"\n', "gateway.data_dir"),
        ('[registry]\npath = "/proc/civicedge-registry"\n', "registry.path"),
        ('[storage]\npath = "/sys/civicedge/reports.sqlite"\n', "storage.path"),
    ],
)
def test_paths_on_kernel_file_systems_are_refused(tmp_path: Path, text: str, key: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # As root access() allows anything, so this needs the file-system type; run failed here with
    # "error (permissions): cannot open registry".
    err = check_fails(tmp_path, text, capsys)
    assert "bad_path" in err and "[%s]" % key in err


def test_check_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[gateway]\ndata_dir = "new/data"\n[storage]\npath = "db/reports.sqlite"\n')
    assert main(["gateway", "run", "--config", str(path), "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.toml"]


@pytest.mark.parametrize(
    ("layout", "text", "key"),
    [
        ("store_is_dir", '[storage]\npath = "store"\n', "storage.path"),
        ("registry_db_is_dir", '[registry]\npath = "reg"\n', "registry.path"),
        ("registry_keys_is_file", '[registry]\npath = "reg"\n', "registry.path"),
        ("read_only_data_dir", '[gateway]\ndata_dir = "ro"\n', "gateway.data_dir"),
        ("read_only_parent", '[gateway]\ndata_dir = "ro/data"\n', "gateway.data_dir"),
        ("token_is_dir", '[http]\nenabled = true\nadmin_token_file = "store"\n', "http.admin_token_file"),
    ],
)
def test_paths_run_would_fail_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, text: str,
                                 key: str) -> None:
    (tmp_path / "store").mkdir()
    if layout == "registry_db_is_dir":
        (tmp_path / "reg" / "devices.sqlite").mkdir(parents=True)
    if layout == "registry_keys_is_file":
        (tmp_path / "reg").mkdir()
        (tmp_path / "reg" / "keys").write_text("")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    real_access = os.access
    # As root access() would pass a 0500 directory, so emulate an ordinary user's answer for it.
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and not (Path(p) == ro and mode & os.W_OK))
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert (info.value.reason, info.value.key) == ("bad_path", key)


@pytest.mark.parametrize("listen", ["not a host", "999.1.1.1", "", "no-such-host.invalid"])
def test_http_listen_must_be_an_address_or_a_resolvable_name(tmp_path: Path, listen: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    err = check_fails(tmp_path, '[http]\nlisten = "%s"\nport = 0\n' % listen, capsys)
    assert "bad_value" in err and "[http.listen]" in err


@pytest.mark.parametrize("listen", ["127.0.0.1", "0.0.0.0", "::", "localhost"])
def test_http_listen_accepts_addresses_and_names(tmp_path: Path, listen: str) -> None:
    http = load_config(write(tmp_path, '[http]\nlisten = "%s"\n' % listen)).http
    assert http is not None and http.listen == listen

"""Secret files saved by Notepad start with a UTF-8 byte-order mark (i18n QA #2): it is no part of the
secret. Before, an MQTT password file passed ``--check`` and the broker refused the login (the mark was
sent as part of the password), and an admin token file was refused as "not printable ASCII"."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config.loader import read_admin_token

BOM = "\ufeff"
TOKEN = "3f9c2a7be1d04c5f8a6b9e2d7c1f0a4b"


def _secret(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    path.chmod(0o600)
    return path


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nid = "gw"\ndata_dir = "data"\n' + body)
    return path


@pytest.mark.parametrize("text", [BOM + "s3cret äö\r\n", BOM + "s3cret äö\n", BOM + "s3cret äö"])
def test_the_mqtt_password_is_read_without_the_bom(tmp_path: Path, text: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    _secret(tmp_path / "mqtt.pw", text)
    config = _config(tmp_path, '[mqtt]\nhost = "127.0.0.1"\nusername = "gw"\npassword_file = "mqtt.pw"\n')
    with caplog.at_level(logging.DEBUG, logger="gateway.config.loader"):
        mqtt = load_config(config).mqtt
    assert mqtt is not None and mqtt.password == "s3cret äö"
    assert "s3cret" not in caplog.text and "byte-order mark" in caplog.text


def test_a_bom_in_the_middle_stays_part_of_the_password(tmp_path: Path) -> None:
    _secret(tmp_path / "mqtt.pw", "ab" + BOM + "cd\n")
    config = _config(tmp_path, '[mqtt]\nhost = "127.0.0.1"\nusername = "gw"\npassword_file = "mqtt.pw"\n')
    mqtt = load_config(config).mqtt
    assert mqtt is not None and mqtt.password == "ab" + BOM + "cd"


def test_the_admin_token_is_read_without_the_bom(tmp_path: Path) -> None:
    token = _secret(tmp_path / "admin.token", BOM + TOKEN + "\r\n")
    assert read_admin_token(token) == TOKEN
    config = _config(tmp_path, '[http]\nenabled = true\nport = 0\nadmin_token_file = "admin.token"\n')
    http = load_config(config).http
    assert http is not None and http.admin_token_file == token

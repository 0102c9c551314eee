"""``[mqtt] client_id`` is checked as MQTT 3.1.1 §1.5.3 says a string must be (i18n QA #5): before, an id
over 65535 bytes of UTF-8 passed ``--check`` and the upstream looped on "'H' format requires 0 <= number
<= 65535", and one with U+0000 was reported as a connection timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError


def _load(tmp_path: Path, client_id: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nid = "gw"\ndata_dir = "data"\n[mqtt]\nhost = "127.0.0.1"\nclient_id = "%s"\n'
                    % client_id, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize(("client_id", "words"), [
    ("中" * 22000, "is 66000 bytes of UTF-8, above 65535 (the most an MQTT string holds)"),
    ("a\\u0000b", "must not contain the control character U+0000"),
    ("a\\u001bb", "must not contain the control character U+001B"),
    ("a\\u0085b", "must not contain the control character U+0085"),
    ("a\\tb", "must not contain the control character U+0009"),
])
def test_a_client_id_mqtt_cannot_carry_is_refused(tmp_path: Path, client_id: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, client_id)
    message = str(info.value)
    assert info.value.reason == "bad_value" and info.value.key == "mqtt.client_id"
    assert "mqtt.client_id" in message and words in message and "\n" not in message
    assert len(message) < 400  # the id is shown cut, not 22000 characters


@pytest.mark.parametrize("client_id", ["中" * 21845, "gw-köln-1", "a" * 23])
def test_a_client_id_within_the_limits_is_kept(tmp_path: Path, client_id: str) -> None:
    mqtt = _load(tmp_path, client_id).mqtt
    assert mqtt is not None and mqtt.client_id == client_id

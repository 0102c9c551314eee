"""``[http] admin_networks``: networks whose clients the admin throttle's global cap never refuses (review
MEDIUM-1). Checked at load: each bad entry is refused with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError


def _load(tmp_path: Path, networks: str) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text("[http]\nadmin_networks = %s\n" % networks)
    return load_config(path)


def test_admin_networks_are_read_and_normalised(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '["192.0.2.0/24", " 2001:db8:5::/48", "198.51.100.7", "::ffff:10.1.0.0/112",'
                          ' "192.0.2.0/24"]')
    assert cfg.http is not None
    assert cfg.http.admin_networks == ("192.0.2.0/24", "2001:db8:5::/48", "198.51.100.7/32", "10.1.0.0/16")


def test_admin_networks_default_to_none(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[http]\nport = 8080\n")
    http = load_config(path).http
    assert http is not None and http.admin_networks == ()


@pytest.mark.parametrize(("networks", "reason", "words"), [
    ('"192.0.2.0/24"', "wrong_type", "must be an array"),
    ('[24]', "wrong_type", "http.admin_networks[0] must be a string, not 24"),
    ('["192.0.2.0/24", "office"]', "bad_value", "http.admin_networks[1] = 'office' is not a network"),
    ('["192.0.2.1/24"]', "bad_value", "host bits set: did you mean 192.0.2.0/24?"),
    ('["192.0.2.0/33"]', "bad_value", "http.admin_networks[0] = '192.0.2.0/33' is not a network"),
    ('["0.0.0.0/0"]', "bad_value", "is every address"),
    ('["::/0"]', "bad_value", "is every address"),
])
def test_a_bad_admin_network_is_refused_naming_it(tmp_path: Path, networks: str, reason: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, networks)
    assert (info.value.reason, info.value.key) == (reason, "http.admin_networks")
    assert words in str(info.value)

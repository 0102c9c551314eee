"""``[http] trusted_proxies`` and ``admin_networks`` refuse link-local entries and IPv6 zone ids (review M3).

A link-local address names a host only on one link (RFC 4007; 169.254/16 likewise), and the gateway is not
told which link a client came in on: a proxy listed as ``fe80::1`` was believed from any host that gave
itself that address on any link the gateway listens on, and ``fe80::1%eth0`` was taken with its zone
silently ignored when matching. Before, every entry below loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError


def _load(tmp_path: Path, key: str, value: str) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndata_dir = "%s"\n[http]\n%s = %s\n' % (tmp_path / "data", key, value))
    return load_config(path)


@pytest.mark.parametrize(("value", "words"), [
    ('["fe80::1"]', "http.trusted_proxies[0]: 'fe80::1' is link-local (fe80::/10)"),
    ('["127.0.0.1", "fe80::1%eth0"]', "http.trusted_proxies[1]: 'fe80::1%eth0' is link-local (fe80::/10)"),
    ('["169.254.10.1"]', "'169.254.10.1' is link-local (169.254.0.0/16)"),
    ('["fe00::/7"]', "'fe00::/7' includes link-local addresses (fe80::/10)"),
    ('["2001:db8::7%eth0"]', "'2001:db8::7%eth0' has an IPv6 zone id (%eth0) that could not be matched"),
])
def test_a_link_local_or_zoned_trusted_proxy_is_refused(tmp_path: Path, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "trusted_proxies", value)
    assert (info.value.reason, info.value.key) == ("bad_value", "http.trusted_proxies")
    assert words in str(info.value), info.value
    if "link-local" in words:
        # What to do instead, and why it matters.
        assert "would then be believed naming any client in X-Forwarded-For" in str(info.value)
        assert 'bind the gateway to loopback (listen = "127.0.0.1")' in str(info.value)


@pytest.mark.parametrize(("value", "words"), [
    ('["fe80::/10"]', "http.admin_networks[0] = 'fe80::/10' is link-local (fe80::/10)"),
    ('["10.20.0.0/24", "fe80::/64"]', "http.admin_networks[1] = 'fe80::/64' is link-local"),
    ('["169.254.0.0/16"]', "is link-local (169.254.0.0/16)"),
    ('["::ffff:169.254.0.0/112"]', "is link-local (169.254.0.0/16)"),
    ('["fc00::/6"]', "'fc00::/6' includes link-local addresses (fe80::/10)"),
    ('["fd00:5::%eth0/48"]', "'fd00:5::%eth0/48' has an IPv6 zone id (%eth0)"),
])
def test_a_link_local_or_zoned_admin_network_is_refused(tmp_path: Path, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "admin_networks", value)
    assert (info.value.reason, info.value.key) == ("bad_value", "http.admin_networks")
    assert words in str(info.value), info.value
    if "link-local" in words:
        assert "spared the global cap of wrong admin tokens" in str(info.value)
        assert "list the operators' global or unique-local network" in str(info.value)


def test_global_and_unique_local_entries_still_load(tmp_path: Path) -> None:
    """A guard: the refusal is of link-local ranges only (neighbours of them included)."""
    http = _load(tmp_path, "trusted_proxies", '["fd00:5::1", "fec0::1", "169.255.0.1", "169.253.255.254",'
                                               ' "::ffff:127.0.0.1"]').http
    assert http is not None
    assert http.trusted_proxies == ("fd00:5::1/128", "fec0::1/128", "169.255.0.1/32", "169.253.255.254/32",
                                    "127.0.0.1/32")
    http = _load(tmp_path, "admin_networks", '["fd00:5::/48", "fe40::/10", "169.255.0.0/16"]').http
    assert http is not None and http.admin_networks == ("fd00:5::/48", "fe40::/10", "169.255.0.0/16")

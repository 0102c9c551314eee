"""Config errors that point the operator at the fix (QA findings of the city-IT pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError


def error_of(tmp_path: Path, text: bytes) -> ConfigError:
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"[http]\nenabled = false\n" + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_empty_file_key_hint_names_a_file_not_dot(tmp_path: Path) -> None:
    err = error_of(tmp_path, b'[storage]\npath = ""\n')
    assert err.key == "storage.path" and "'reports.sqlite'" in str(err) and '"."' not in str(err)
    # a directory key keeps the "." hint, which fits it
    err = error_of(tmp_path, b'[gateway]\ndata_dir = ""\n')
    assert err.key == "gateway.data_dir" and 'write "."' in str(err)


def test_a_leading_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[gateway]\nid = "gw-bom"\n[http]\nenabled = false\n')
    assert load_config(path).id == "gw-bom"


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    err = error_of(tmp_path, b"[storage]\nbatchms = 5\n")
    assert err.reason == "unknown_key" and "did you mean 'batch_ms'?" in str(err)
    assert "did you mean" not in str(error_of(tmp_path, b"[storage]\nzzz = 5\n"))


@pytest.mark.parametrize("days", [0, 91, -3])
def test_retention_override_names_the_policys_bound(tmp_path: Path, days: int) -> None:
    err = error_of(tmp_path, b"[retention.streetlight]\nlux = %d\n" % days)
    assert err.key == "retention.streetlight.lux" and "outside 1..90 days" in str(err)
    assert "100000" not in str(err)

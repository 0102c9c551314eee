"""A secret file replaced while it is read: the mode that decides is the mode of the file read."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gateway import small_files
from gateway.config import load_config
from gateway.config.loader import read_admin_token
from gateway.errors import ConfigError

OPEN_TOKEN = "a6fc3b1077ee9c5f2fb7c30db32e85fa"
PRIVATE_TOKEN = "21eeb7a56332dafb44f18867ab8cdbee"


def _swap_after_open(monkeypatch: pytest.MonkeyPatch, target: Path, replacement: Path) -> None:
    """Rename ``replacement`` over ``target`` just after ``target`` is opened (a rotation by rename)."""
    real_open = small_files._open

    def opening(path: str | Path) -> int:
        fd = real_open(path)
        if Path(path) == target and replacement.exists():
            os.replace(replacement, target)
        return fd

    monkeypatch.setattr(small_files, "_open", opening)


def test_a_world_readable_token_read_before_a_swap_is_refused(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The text read came from a 0644 file: an owner-only file renamed over it afterwards must not make
    that text acceptable (the check read the path's mode after reading its content)."""
    token, fresh = tmp_path / "admin.token", tmp_path / "admin.token.new"
    token.write_text(OPEN_TOKEN + "\n")
    token.chmod(0o644)
    fresh.write_text(PRIVATE_TOKEN + "\n")
    fresh.chmod(0o600)
    _swap_after_open(monkeypatch, token, fresh)
    with pytest.raises(ConfigError, match="readable by other users") as info:
        read_admin_token(token)
    assert OPEN_TOKEN not in str(info.value) and PRIVATE_TOKEN not in str(info.value)
    assert token.read_text() == PRIVATE_TOKEN + "\n"  # the swap did happen
    assert read_admin_token(token) == PRIVATE_TOKEN  # and the owner-only file is then taken


def test_an_owner_only_token_read_before_a_swap_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token, fresh = tmp_path / "admin.token", tmp_path / "admin.token.new"
    token.write_text(PRIVATE_TOKEN + "\n")
    token.chmod(0o600)
    fresh.write_text(OPEN_TOKEN + "\n")
    fresh.chmod(0o644)
    _swap_after_open(monkeypatch, token, fresh)
    assert read_admin_token(token) == PRIVATE_TOKEN


def test_a_mqtt_password_file_swapped_after_open_is_judged_by_the_file_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw, fresh = tmp_path / "mqtt.pw", tmp_path / "mqtt.pw.new"
    pw.write_text("leaked-password\n")
    pw.chmod(0o644)
    fresh.write_text("new-password\n")
    fresh.chmod(0o600)
    config = tmp_path / "gateway.toml"
    config.write_text('[mqtt]\nhost = "127.0.0.1"\nusername = "gw"\npassword_file = "mqtt.pw"\n')
    _swap_after_open(monkeypatch, pw, fresh)
    with pytest.raises(ConfigError, match="readable by other users") as info:
        load_config(config)
    assert info.value.key == "mqtt.password_file"


def test_a_directory_named_as_the_token_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "admin.token").mkdir()
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        read_admin_token(tmp_path / "admin.token")

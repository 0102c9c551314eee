"""A user with no home directory (a container run as a uid without a passwd entry and no ``HOME``): the
built-in defaults' data directory is a clean ``bad_path`` error, and the commands that only look at the
defaults to protect their files go on. Each was a ``RuntimeError: Could not determine home directory``
traceback (``gateway init PATH`` since it checks a new PATH against the default gateway's files)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from gateway.config import EXAMPLE_CONFIG
from gateway.config.loader import default_data_dir
from gateway.errors import ConfigError
from hil.cli.main import main


@pytest.fixture
def no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError("getpwuid(): uid not found: %d" % uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(RuntimeError):
        Path.home()  # what the defaults met before


def test_the_defaults_data_dir_is_a_clean_error(no_home: None) -> None:
    with pytest.raises(ConfigError) as caught:
        default_data_dir()
    assert caught.value.reason == "bad_path"
    assert "no home directory" in str(caught.value) and "XDG_DATA_HOME" in str(caught.value)


def test_xdg_data_home_is_enough(no_home: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "civicedge" / "gateway"


def test_init_writes_a_config_without_a_home(no_home: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "etc" / "gateway.toml"
    assert main(["gateway", "init", str(target)]) == 0, capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == EXAMPLE_CONFIG


def test_export_log_from_a_store_without_a_home(no_home: None, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.storage import ReportStore

    db = tmp_path / "data" / "reports.sqlite"
    ReportStore(db, gateway_id="gw-test").close()
    out = tmp_path / "chain.jsonl"
    assert main(["gateway", "export-log", "--db", str(db), "-o", str(out)]) == 0, capsys.readouterr().err
    assert out.exists()


def test_a_config_path_under_a_missing_home_is_a_clean_error(no_home: None, tmp_path: Path) -> None:
    from gateway.config import load_config

    for section, key, value in (("gateway", "data_dir", "~/civic"), ("http", "admin_token_file", "~/admin.token")):
        config = tmp_path / ("%s.toml" % key)
        config.write_text('[%s]\n%s = "%s"\n' % (section, key, value), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        assert caught.value.reason == "bad_path" and caught.value.key == "%s.%s" % (section, key)
        assert "starts with ~ but this user has no home directory" in str(caught.value)


def test_an_unknown_users_home_is_a_clean_error(tmp_path: Path) -> None:
    from gateway.config import load_config

    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\ndata_dir = "~no-such-user-civicedge/data"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.reason == "bad_path" and "there is no such user" in str(caught.value)


def test_an_empty_home_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Python takes HOME="" and puts ~/x at /x; the passwd entry's home is meant."""
    monkeypatch.setenv("HOME", "")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    entry = pwd.getpwuid(os.getuid()).pw_dir
    assert default_data_dir() == Path(entry) / ".local" / "share" / "civicedge" / "gateway"
    from gateway.config.home import expand_user

    assert expand_user("~/x") == Path(entry) / "x"
    assert expand_user("~") == Path(entry)
    assert expand_user("plain/x") == Path("plain/x")


@pytest.mark.parametrize("text", ["~", "~/", "~/x", "~//x", "~///etc/passwd", "~/a/../b", "x/~/y", "/abs", "rel"])
def test_with_a_home_paths_expand_as_python_does(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No change for a user with a home: ``~//x`` stays under it (joining ``/x`` onto it would give /x)."""
    from gateway.config.home import expand_user

    monkeypatch.setenv("HOME", "/home/someone")
    assert expand_user(text) == Path(os.path.expanduser(text))


@pytest.mark.parametrize("text", ["~", "~/x", "~//x"])
def test_with_an_empty_home_paths_are_under_the_passwd_home(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config.home import expand_user

    entry = pwd.getpwuid(os.getuid()).pw_dir
    monkeypatch.setenv("HOME", entry)
    expected = Path(os.path.expanduser(text))
    monkeypatch.setenv("HOME", "")
    assert expand_user(text) == expected

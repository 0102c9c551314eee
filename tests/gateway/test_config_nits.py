"""Small config and command findings from QA: each said something misleading or accepted a mistake.

``run --check`` said "config OK" while another gateway held the store; ``[gatway]`` was called an
unknown key of a ``[config]`` section that does not exist; ``init DIR`` suggested --force, which then
failed "Is a directory"; ``data_dir = ""`` put the store next to the config file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.storage import ReportStore
from hil.cli.main import main


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text('[http]\nenabled = false\n' + text)
    return path


# --- run --check and the store lock ---------------------------------------------------------------------

def test_check_says_when_another_gateway_holds_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, '[gateway]\ndata_dir = "data"\n')
    running = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw1")
    try:
        # checking the running gateway's config before restarting it (like nginx -t) is the usual case
        assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0
        checked = capsys.readouterr()
        assert "config OK" in checked.out and checked.err == ""
        assert "in use by the running gateway (pid %d)" % os.getpid() in checked.out
        # a second gateway is still refused
        assert main(["gateway", "run", "--config", str(cfg)]) == 1
        assert capsys.readouterr().err.startswith("error (in_use): report store %s is in use by another gateway "
                                                  "or a running civicedge gateway backup (pid %d)" % (tmp_path / "data" / "reports.sqlite", os.getpid()))
    finally:
        running.close()
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 0
    assert "config OK" in capsys.readouterr().out


def test_check_refuses_a_hard_linked_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, '[gateway]\ndata_dir = "data"\n')
    ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw1").close()
    os.link(tmp_path / "data" / "reports.sqlite", tmp_path / "copy.sqlite")
    assert main(["gateway", "run", "--config", str(cfg), "--check"]) == 1
    assert capsys.readouterr().err.startswith("error (hard_linked): report store")


# --- unknown sections ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('[gatway]\nid = "g"\n', "gatway", "unknown section [gatway] (did you mean [gateway]?)"),
        ('[storge]\n', "storge", "unknown section [storge] (did you mean [storage]?)"),
        ('[[seria]]\nport = "/dev/x"\n', "seria", "unknown section [[seria]] (did you mean [[serial]]?)"),
        ('[nonsense]\n', "nonsense", "unknown section [nonsense] (sections: [gateway], [registry], [storage], "
                                     "[[serial]], [ble], [mqtt], [http], [retention], [sim_clock], [routes], [opendata])"),
    ],
)
def test_an_unknown_section_is_named_as_one(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.reason, info.value.key) == ("unknown_key", key)
    assert str(info.value) == "%s: %s" % (path, message)
    assert "[config]" not in str(info.value)


def test_a_key_outside_any_section_says_so(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('data_dir = "data"\n[gateway]\nid = "g"\n')
    with pytest.raises(ConfigError, match=r"key 'data_dir' is outside any section; keys belong in a section") as info:
        load_config(path)
    assert (info.value.reason, info.value.key) == ("unknown_key", "data_dir")


def test_the_cli_names_the_unknown_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[gatway]\nid = "g"\n')
    assert main(["gateway", "run", "--config", str(path), "--check"]) == 1
    assert capsys.readouterr().err == ("error (unknown_key) [gatway]: %s: unknown section [gatway] (did you mean"
                                       " [gateway]?)\n" % path)


# --- init on a directory --------------------------------------------------------------------------------

@pytest.mark.parametrize("force", [[], ["--force"]])
def test_init_refuses_a_directory_at_once(tmp_path: Path, force: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "dir"
    target.mkdir()
    assert main(["gateway", "init", str(target), *force]) == 1
    err = capsys.readouterr().err
    assert err == ("error (bad_path): %s is a directory; give the config file's name, e.g. %s\n"
                   % (target, target / "gateway.toml"))
    assert list(target.iterdir()) == []


# --- empty paths ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[gateway]\ndata_dir = ""\n', "gateway.data_dir"),
        ('[gateway]\ndata_dir = "  "\n', "gateway.data_dir"),
        ('[storage]\npath = ""\n', "storage.path"),
        ('[registry]\npath = ""\n', "registry.path"),
        ('[http]\nadmin_token_file = ""\n', "http.admin_token_file"),
    ],
)
def test_an_empty_path_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="must not be empty") as info:
        load_config(path)
    assert (info.value.reason, info.value.key) == ("bad_value", key)


def test_dot_still_names_the_config_directory(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[gateway]\ndata_dir = "."\n')).data_dir == tmp_path / "."

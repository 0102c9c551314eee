"""A ``retention.json`` edited by hand on Windows (i18n QA #1): Notepad's UTF-8 byte-order mark stopped
the gateway ("is not valid JSON (line 1, column 1)"), a JSON error did not say what was wrong, and a
file saved as "ANSI" gave Python's codec message. The file is only read: its bytes stay as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_env

from gateway.cli.run_check import check_retention_file
from gateway.errors import StorageError
from gateway.resources import load_policy
from gateway.web.errors import BadParameter
from gateway.web.retention import RetentionSettings
from hil.cli.main import main

BOM = b"\xef\xbb\xbf"
DOC = {"overrides": [{"kind": "bin", "field": "temp", "days": 5}]}


def test_a_bom_is_skipped_by_check_and_start_up_and_the_file_is_kept(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = make_env(tmp_path)
    path = tmp_path / "data" / "retention.json"
    data = BOM + json.dumps(DOC, indent=2).replace("\n", "\r\n").encode()
    path.write_bytes(data)
    assert main(["gateway", "run", "--config", str(config), "--check"]) == 0, capsys.readouterr().err
    assert "1 retention override(s)" in capsys.readouterr().out
    settings = RetentionSettings(load_policy(), path=path)
    assert settings.effective()[("bin", "temp")] == 5
    assert path.read_bytes() == data


def test_a_json_error_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "retention.json"
    path.write_bytes(BOM + b'{"overrides": [\n  {"kind": "bin", "field": "temp", "days": 5},\n]}')
    with pytest.raises(StorageError) as info:
        check_retention_file(path, load_policy())
    assert "is not valid JSON (line 3, column 1): Expecting value; fix it or remove it" in str(info.value)
    with pytest.raises(BadParameter) as start:
        RetentionSettings(load_policy(), path=path)
    assert "is not valid JSON (line 3, column 1): Expecting value; fix it or remove it" in start.value.message


def test_windows_1252_text_is_named_as_for_a_config_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "retention.json"
    data = '{"overrides": [], "note": "Grünflächen"}'.encode("cp1252")
    path.write_bytes(data)
    with pytest.raises(BadParameter) as info:
        RetentionSettings(load_policy(), path=path)
    assert (f"retention settings file {path} is not UTF-8 text (line 1, column 30: byte 0xfc at offset 29, "
            "ü in Windows-1252?); save the file as UTF-8; fix it or remove it") in info.value.message
    assert path.read_bytes() == data
    with pytest.raises(StorageError) as check:  # run and run --check read it through check_retention_file
        check_retention_file(path, load_policy())
    assert "is not UTF-8 text (line 1, column 30: byte 0xfc at offset 29, ü in Windows-1252?)" in str(check.value)
    assert path.read_bytes() == data

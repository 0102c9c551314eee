"""One version: the host's lives in gateway.__version__ (pyproject reads it, hil re-exports it); the
firmware keeps its own literal, civic.VERSION (a device has no package metadata), which must match."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import gateway
import hil

REPO = Path(__file__).resolve().parents[2]


def test_firmware_version_literal_equals_the_host_version() -> None:
    text = (REPO / "firmware" / "lib" / "civic" / "__init__.py").read_text()
    found = re.findall(r'^VERSION\s*=\s*"([^"]+)"', text, re.M)
    assert found == [gateway.__version__]


def test_host_version_has_one_source() -> None:
    assert hil.__version__ == gateway.__version__
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gateway.__version__"}

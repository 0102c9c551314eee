"""Every command the docs give under /opt/civicedge runs from the venv the example systemd unit runs.

docs/upgrading.md told operators to upgrade with /opt/civicedge/bin/pip while the unit ran
/opt/civicedge/.venv/bin/civicedge: the upgrade went into another (or no) venv and the service kept the old release.
"""

from __future__ import annotations

import re
from pathlib import Path

UNIT = Path("scripts/civicedge-gateway.service")
#: An executable under /opt/civicedge: its bin directory and its name.
_COMMAND = re.compile(r"(/opt/civicedge/(?:[\w.-]+/)*?bin)/([\w.-]+)")


def _venv_bin(repo_root: Path) -> str:
    exec_start = re.search(r"^ExecStart=(\S+)", (repo_root / UNIT).read_text(), re.M)
    assert exec_start is not None
    command = _COMMAND.fullmatch(exec_start.group(1))
    assert command is not None and command.group(2) == "civicedge", exec_start.group(1)
    return command.group(1)


def test_every_opt_civicedge_command_uses_the_units_venv(repo_root: Path) -> None:
    venv_bin = _venv_bin(repo_root)
    files = [repo_root / "README.md", repo_root / UNIT, *sorted((repo_root / "docs").glob("*.md"))]
    found: dict[str, list[str]] = {}
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            for m in _COMMAND.finditer(line):
                found.setdefault(m.group(1), []).append(f"{path.relative_to(repo_root)}:{n}")
    assert set(found) == {venv_bin}, {d: where for d, where in found.items() if d != venv_bin}
    # the upgrade steps are among them (pip and civicedge of that venv)
    assert any(w.startswith("docs/upgrading.md") for w in found[venv_bin])
    assert f"{venv_bin}/pip install" in (repo_root / "docs/upgrading.md").read_text()

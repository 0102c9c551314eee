"""The device keeps of policy.json only what it uses: a field's documentation and the gateway's own
checks (``valid_range``: plausible values, docs/protocol.md §2) are dropped at load, under MicroPython."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from gateway.resources import load_policy


def test_the_device_loads_the_policy_and_drops_the_keys_it_has_no_use_for(
        flash_run: Callable[..., Any], tmp_path: Path, repo_root: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "policy.json").write_bytes((repo_root / "firmware" / "policy.json").read_bytes())
    code = (
        "from civic import policy\n"
        "for k in ('streetlight', 'bin'):\n"
        "    p = policy.load(k, '/flash/policy.json')\n"
        "    for f in sorted(p.fields):\n"
        "        print(k, f, ' '.join(sorted(p.fields[f])))\n"
    )
    lines = flash_run(code, flash).stdout.splitlines()
    dropped = {"label", "unit", "source", "purpose", "retention_days", "valid_range"}
    expected = [f"{k} {f} {' '.join(sorted(set(spec) - dropped))}"
                for k in ("streetlight", "bin") for f, spec in sorted(load_policy()["kinds"][k]["fields"].items())]
    assert lines == expected
    assert any("valid_range" in spec for k in load_policy()["kinds"].values() for spec in k["fields"].values())

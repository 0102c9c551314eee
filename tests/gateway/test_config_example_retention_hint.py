"""The config ``gateway init`` writes points a package user at where the policy's retention days can be
seen (the gateway's /transparency.json and GET /api/admin/retention), not at ``firmware/policy.json``, a
path of the checkout that an installed package does not have (package-install QA)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config, write_example
from gateway.web import admin_api, pages


def test_the_retention_comment_names_what_a_running_gateway_serves(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    write_example(path)
    text = path.read_text(encoding="utf-8")
    assert "firmware/policy.json" not in text
    assert ("# Retention comes from the privacy policy shipped with civicedge (retention_days per field: the public\n"
            "# GET /transparency.json, or policy_max_days in GET /api/admin/retention); it may only be shortened:\n"
            ) in text
    # Both exist as named: the public page and the admin API's answer with policy_max_days.
    assert "/transparency.json" in pages.PUBLIC_PATHS
    assert ("GET", "/api/admin/retention") in {(r.method, r.path) for r in admin_api.ROUTES}  # type: ignore[attr-defined]
    load_config(path)  # still a loadable config

"""``GET /policy.json`` and ``policy_sha256`` are the bytes the gateway loaded at start, not the file
as it is on disk now: a file re-formatted since (or with ``1`` written ``1.0``) parses to the same
policy, and was served and hashed although the gateway never loaded those bytes."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway import resources
from gateway.resources import load_policy
from gateway.web.app import create_app

from .support import ADMIN_TOKEN, NOW, Fleet


@pytest.fixture
async def started(fleet: Fleet, tmp_path: Path) -> AsyncIterator[tuple[TestClient, Path, bytes]]:
    """A gateway started on a copy of the shipped policy file: the client, the file and its bytes at start."""
    path = tmp_path / "firmware" / "policy.json"
    path.parent.mkdir()
    shipped = resources.policy_path().read_bytes()
    path.write_bytes(shipped)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(resources, "firmware_dir", lambda: path.parent)  # what policy_path() names
        load_policy.cache_clear()
        try:
            app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                             metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN,
                             retention=fleet.retention, clock=lambda: float(NOW))
            client = TestClient(TestServer(app, host="127.0.0.1", port=0))
            await client.start_server()
            try:
                yield client, path, shipped
            finally:
                await client.close()
        finally:
            load_policy.cache_clear()
    load_policy()  # the shipped file is again what was loaded, for the tests after this one


async def _served(client: TestClient) -> tuple[bytes, str, str | None]:
    resp = await client.get("/policy.json")
    assert resp.status == 200, await resp.text()
    doc = await (await client.get("/transparency.json")).json()
    return await resp.read(), resp.headers["ETag"], doc["policy_sha256"]


def _reformatted(body: bytes) -> bytes:
    """The same policy written differently: indented by 1, its ``"version": 1`` as ``1.0``."""
    text = json.dumps(json.loads(body), indent=1, ensure_ascii=False).replace('"version": 1,', '"version": 1.0,', 1)
    assert '"version": 1.0,' in text
    return text.encode("utf-8")


async def test_a_file_reformatted_after_start_is_not_served_or_hashed(
        started: tuple[TestClient, Path, bytes], caplog: pytest.LogCaptureFixture) -> None:
    client, path, shipped = started
    digest = hashlib.sha256(shipped).hexdigest()
    assert await _served(client) == (shipped, f'"{digest}"', digest)

    changed = _reformatted(shipped)
    assert json.loads(changed) == json.loads(shipped) and changed != shipped  # parses equal, other bytes
    path.write_bytes(changed)
    with caplog.at_level(logging.WARNING, logger="gateway.web.policy_file"):
        assert await _served(client) == (shipped, f'"{digest}"', digest)
        assert await _served(client) == (shipped, f'"{digest}"', digest)
    warned = [r.getMessage() for r in caplog.records if r.name == "gateway.web.policy_file"]
    # said to the operator once per change of the file, not on every request
    assert len(warned) == 1 and str(path) in warned[0] and "restart" in warned[0], warned


async def test_a_file_replaced_after_start_leaves_the_policy_in_force_served(
        started: tuple[TestClient, Path, bytes]) -> None:
    """An upgrade without a restart: the gateway still applies the policy it loaded, and a citizen's
    hash names that release (a 503 would leave nothing to compare while the policy in force is known)."""
    client, path, shipped = started
    other: dict[str, Any] = json.loads(shipped)
    other["statement"] = "a later release's statement"
    path.write_text(json.dumps(other), encoding="utf-8")
    digest = hashlib.sha256(shipped).hexdigest()
    assert await _served(client) == (shipped, f'"{digest}"', digest)
    path.unlink()
    assert await _served(client) == (shipped, f'"{digest}"', digest)

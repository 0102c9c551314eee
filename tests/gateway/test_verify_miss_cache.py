"""The verifier's registry cache under frames from made-up device ids: misses stay few, hits unchanged."""

from __future__ import annotations

import time

import pytest
from conftest import KEYS
from helpers import report_frame

from gateway.errors import RejectedReport
from gateway.pipeline import Verifier
from gateway.pipeline.verify import MISS_CACHE_MAX
from gateway.protocol import FRAME_REPORT, build_frame
from gateway.registry import DeviceRecord, Registry
from gateway.resources import load_policy


NEW_KEYS = {"bin-9": bytes(range(9, 41)), "bin-10": bytes(range(10, 42))}


class CountingLookups:
    """Counts the registry lookups the verifier makes; made-up ids (``x...``) are answered without SQL
    so that 150,000 of them run in seconds (the registry's own lookup is not what is tested here)."""

    def __init__(self, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {}
        real = registry.lookup

        def lookup(dev_id: str) -> DeviceRecord | None:
            self.calls[dev_id] = self.calls.get(dev_id, 0) + 1
            return None if dev_id.startswith("x") else real(dev_id)

        monkeypatch.setattr(registry, "lookup", lookup)


def _unknown(verifier: Verifier, dev: str) -> None:
    with pytest.raises(RejectedReport) as info:
        verifier.verify(build_frame(FRAME_REPORT, dev, 1, {"k": "bin"}, bytes(32), 2), link="l", now=0)
    assert info.value.reason == "unknown_device"


def test_a_flood_of_made_up_ids_keeps_the_cache_small_and_known_devices_cached(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = CountingLookups(registry, monkeypatch)
    verifier = Verifier(registry, load_policy(), cache_s=60)  # nothing expires during the flood
    verifier.verify(report_frame("bin-1", 1, KEYS["bin-1"]), link="l", now=0)
    reasons: set[str] = set()
    for i in range(150_000):
        try:
            verifier.verify(build_frame(FRAME_REPORT, "x%031d" % i, 1, {"k": "bin"}, bytes(32), 2), link="l", now=0)
        except RejectedReport as exc:
            reasons.add(exc.reason)
    assert reasons == {"unknown_device"}
    assert len(verifier._misses) == MISS_CACHE_MAX  # the oldest misses made room for the newest
    assert list(verifier._cache) == ["bin-1"]       # only registered devices are in the hits' cache
    assert len(lookups.calls) == 150_001 and max(lookups.calls.values()) == 1
    # the known device was not pushed out: no new lookup for it
    verifier.verify(report_frame("bin-1", 2, KEYS["bin-1"]), link="l", now=0)
    assert lookups.calls["bin-1"] == 1
    # the newest misses are remembered (no lookup), an evicted one is looked up again
    _unknown(verifier, "x%031d" % 149_999)
    assert lookups.calls["x%031d" % 149_999] == 1
    _unknown(verifier, "x%031d" % 0)
    assert lookups.calls["x%031d" % 0] == 2
    assert len(verifier._misses) == MISS_CACHE_MAX


def test_an_unknown_id_sending_again_is_looked_up_once_per_cache_time(registry: Registry,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = CountingLookups(registry, monkeypatch)
    verifier = Verifier(registry, load_policy(), cache_s=0.2)
    for _ in range(50):
        _unknown(verifier, "x-spammer")
    assert lookups.calls["x-spammer"] == 1
    time.sleep(0.25)
    _unknown(verifier, "x-spammer")
    assert lookups.calls["x-spammer"] == 2
    assert list(verifier._misses) == ["x-spammer"]


def test_a_device_registered_after_a_miss_is_found(registry: Registry) -> None:
    """Registered through another process (another Registry on the directory): found once the cache time
    has passed, as a revoke is; through the gateway's own Registry: found at once."""
    verifier = Verifier(registry, load_policy(), cache_s=0.2)
    with pytest.raises(RejectedReport) as info:
        verifier.verify(report_frame("bin-9", 1, NEW_KEYS["bin-9"]), link="l", now=0)
    assert info.value.reason == "unknown_device"
    cli = Registry(registry.path)
    cli.add("bin-9", kind="bin", zone="north", lat="52.37", lon="4.89", key=NEW_KEYS["bin-9"])
    cli.close()
    with pytest.raises(RejectedReport):  # still remembered as unknown within the cache time
        verifier.verify(report_frame("bin-9", 2, NEW_KEYS["bin-9"]), link="l", now=0)
    time.sleep(0.25)
    assert verifier.verify(report_frame("bin-9", 3, NEW_KEYS["bin-9"]), link="l", now=0).frame.device_id == "bin-9"
    assert "bin-9" not in verifier._misses and "bin-9" in verifier._cache

    with pytest.raises(RejectedReport):
        verifier.verify(report_frame("bin-10", 1, NEW_KEYS["bin-10"]), link="l", now=0)
    registry.add("bin-10", kind="bin", zone="north", lat="52.37", lon="4.89", key=NEW_KEYS["bin-10"])
    assert verifier.verify(report_frame("bin-10", 2, NEW_KEYS["bin-10"]), link="l", now=0).frame.device_id == "bin-10"

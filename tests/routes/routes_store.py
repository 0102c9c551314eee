"""A real gateway data directory (report store + device registry) filled with bin reports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from gateway.registry import Registry
from gateway.storage import ReportRecord, ReportStore

WINDOW_S = 900


@dataclass
class CityData:
    """Writes reports the way the gateway's pipeline stores them (real SQLite, real registry)."""

    root: Path
    seqs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.db_path = self.root / "reports.sqlite"
        self.registry_dir = self.root / "registry"
        self.store = ReportStore(self.db_path, gateway_id="gw-test")
        self.registry = Registry(self.registry_dir)

    def close(self) -> None:
        self.store.close()
        self.registry.close()

    def add_device(self, device: str, *, kind: str = "bin", zone: str = "centre", lat: str = "52.37",
                   lon: str = "4.89") -> None:
        self.registry.add(device, kind=kind, zone=zone, lat=lat, lon=lon)

    def _record(self, device: str, kind: str, type_: str, w: int, l: int, m: dict[str, int],
                a: Sequence[str] = ()) -> ReportRecord:
        seq = self.seqs.get(device, 0) + 1
        self.seqs[device] = seq
        digest = hashlib.sha256(f"{device}/{seq}".encode()).hexdigest()
        zone = self.registry.get(device).zone
        return ReportRecord(device=device, seq=seq, kind=kind, zone=zone, type=type_, w=w, l=l, m=m, e={},
                            a=list(a), fw="test", received_at=float(w + l), link="serial:test", digest=digest)

    def windows(self, device: str, start: int, percents: Sequence[int], *, tilt: int = 0,
                lid: int | None = None) -> None:
        """One ``win`` report per 15 min from ``start`` with the given fills (and an optional lid count)."""
        recs = []
        for i, p in enumerate(percents):
            m = {"fill": p, "tilt": tilt, "temp": 12, "bat": 90}
            recs.append(self._record(device, "bin", "win", start + i * WINDOW_S, WINDOW_S, m))
        if lid is not None:
            day = start - start % 86400
            recs.append(self._record(device, "bin", "day", day, 86400, {"lid": lid}))
        self.store.insert_batch(recs)

    def fill_releases(self, device: str, start: int, percents: Sequence[int], period_s: int = 21600) -> None:
        """The bin's fill as it leaves a device now: the level at the end of each 6 h, alone in a ``win``
        report over that period (firmware/policy.json release_every_s), from the period at ``start``."""
        self.store.insert_batch([self._record(device, "bin", "win", start + i * period_s, period_s, {"fill": p})
                                 for i, p in enumerate(percents)])

    def alarm(self, device: str, t: int, code: str) -> None:
        """An ``alarm`` report raised at ``t`` (rounded down to the minute, as on the wire)."""
        self.store.insert_batch([self._record(device, "bin", "alarm", t - t % 60, 60, {}, [code])])

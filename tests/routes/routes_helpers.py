"""Helpers for the collection-route tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import argparse
import os
import random
from datetime import date, datetime, timezone
from typing import Iterable, Sequence

import pytest

from gateway.routes import cli
from gateway.routes.model import BinStatus, Depot, FillReading

DAY = date(2026, 11, 23)
ROUND_START = datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)
T0 = int(ROUND_START.timestamp())
HOUR = 3600
DEPOT = Depot(52.3700, 4.8900)
#: Hypothesis examples: modest by default, more with CIVICEDGE_FULL=1.
MAX_EXAMPLES = 300 if os.environ.get("CIVICEDGE_FULL") == "1" else 40


def history(percents: Sequence[int], *, step_s: int = HOUR, end: int = T0) -> tuple[FillReading, ...]:
    """Fill readings (percent -> fraction) ending at ``end``, one every ``step_s``."""
    n = len(percents)
    return tuple(FillReading(end - (n - 1 - i) * step_s, p / 100.0) for i, p in enumerate(percents))


def make_bin(
    bin_id: str,
    percents: Sequence[int] = (),
    *,
    lat: float = 52.37,
    lon: float = 4.90,
    alarms: Iterable[str] = (),
    zone: str = "centre",
    step_s: int = HOUR,
    volume_l: float | None = None,
) -> BinStatus:
    """A bin whose latest reading is at the round start."""
    return BinStatus(bin_id, zone, lat, lon, history(percents, step_s=step_s), frozenset(alarms), volume_l)


def scattered_bins(n: int, seed: int, *, full_share: float = 0.5, alarm_every: int = 0) -> list[BinStatus]:
    """``n`` bins scattered ~5 km around the depot; about ``full_share`` of them full."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        level = 90 if rng.random() < full_share else 30
        alarms = ("fire",) if alarm_every and i % alarm_every == 0 else ()
        out.append(make_bin(f"b{i:03d}", [level] * 3, lat=DEPOT.lat + rng.uniform(-0.04, 0.04),
                            lon=DEPOT.lon + rng.uniform(-0.06, 0.06), alarms=alarms, zone=f"z{i % 4}"))
    return out


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``civicedge <argv>`` (the routes commands) in this process: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="civicedge")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err

"""The demo's live summary: what the gateway stored, per board, read from its SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rich.table import Table

from gateway.storage.sqlite_uri import read_only_uri
from hil.cli.text import plain


@dataclass
class BoardRow:
    """One board's line in the summary."""

    device: str
    kind: str
    link: str
    reports: int = 0
    last_window: int | None = None
    latest: dict[str, int] = field(default_factory=dict)
    alarms: list[str] = field(default_factory=list)


@dataclass
class FleetSummary:
    """Totals and per-board rows."""

    rows: list[BoardRow]
    total_reports: int
    total_alarms: int


def read_summary(db: Path, *, boards: Iterable[Any]) -> FleetSummary:
    """Read the store (read-only; the gateway may be writing) and summarise it per board.

    Args:
        db: the gateway's SQLite file (may not exist yet).
        boards: objects with ``device_id``, ``config`` (``/board.json``, its ``kind``), ``data_path``
            (virtual boards).
    """
    rows = {b.device_id: BoardRow(b.device_id, str(b.config["kind"]), "uart" if b.data_path else "ble")
            for b in boards}
    total = alarms_total = 0
    if db.exists():
        conn = sqlite3.connect(read_only_uri(db), uri=True, timeout=2)
        try:
            for device, count, last_w in conn.execute(
                    "SELECT device, COUNT(*), MAX(w) FROM reports WHERE type != 'alarm' GROUP BY device"):
                if device in rows:
                    rows[device].reports, rows[device].last_window = int(count), last_w
                total += int(count)
            # The newest value of each field across report types and periods: windows ("win") carry some
            # fields, 6-hourly "win" releases others (mot, a bin's fill level), hourly and daily reports
            # others again (wh, lid); by period end, oldest first, so newer values win.
            for device, m in conn.execute(
                    "SELECT device, m FROM reports r WHERE type != 'alarm' AND w = "
                    "(SELECT MAX(w) FROM reports WHERE device = r.device AND type = r.type AND l = r.l)"
                    " ORDER BY w + l, rowid"):
                if device in rows:
                    try:
                        values = json.loads(m)
                    except (TypeError, ValueError):
                        continue
                    if isinstance(values, dict):
                        rows[device].latest.update(values)
            for device, code in conn.execute("SELECT device, code FROM alarms ORDER BY w"):
                alarms_total += 1
                if device in rows and code not in rows[device].alarms:
                    rows[device].alarms.append(code)
        except sqlite3.OperationalError:
            pass  # schema not created yet
        finally:
            conn.close()
    return FleetSummary(rows=list(rows.values()), total_reports=total, total_alarms=alarms_total)


def render(summary: FleetSummary, *, virtual_now_s: float | None, url: str, elapsed_s: float) -> Table:
    """A rich table for the live display."""
    when = "" if virtual_now_s is None else dt.datetime.fromtimestamp(virtual_now_s, dt.timezone.utc).strftime(
        "%a %H:%M UTC")
    # plain(): an ASCII or Latin-1 terminal gets '-' for the dashes (the table goes to sys.stdout)
    table = Table(title=plain(f"civicedge demo — virtual time {when} — dashboard {url}"),
                  caption=plain(f"{_plural(summary.total_reports, 'report')} stored, "
                                f"{_plural(summary.total_alarms, 'alarm')}, {elapsed_s:.0f} s wall time — Ctrl-C to stop"))
    for col in ("board", "kind", "link", "reports", "last window", "latest released values", "alarms"):
        table.add_column(col)
    for row in summary.rows:
        last = "" if row.last_window is None else dt.datetime.fromtimestamp(row.last_window, dt.timezone.utc).strftime(
            "%H:%M")
        latest = " ".join(f"{k}={v}" for k, v in sorted(row.latest.items()))
        table.add_row(row.device, row.kind, row.link, str(row.reports), last, latest, ", ".join(row.alarms))
    return table


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

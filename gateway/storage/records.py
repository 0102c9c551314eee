"""The report store's records: what is stored (:class:`ReportRecord`), what a batch insert answers
(:class:`BatchResult`, :class:`WindowDuplicate`), the outbox's messages, and the key a release is kept once per
period under (:func:`release_key`). Data only; gateway.storage.store writes them (and re-exports every name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple


class ReportRecord(NamedTuple):
    """A verified report ready to store (immutable; a NamedTuple because one is built per report).

    Attributes:
        device: device id. seq: report seq. kind: device kind. zone: registry zone at ingest.
        type: report type (``win``/``hour``/``day``/``alarm``/``boot``). w, l: period start and length.
        m: measurements. e: milli-epsilon spent. a: alarm codes. fw: firmware version or None.
        received_at: unix time of reception. link: ``serial:<port>`` or ``ble:<address>``.
        digest: hex SHA-256 of the authenticated frame (provenance).
    """

    device: str
    seq: int
    kind: str
    zone: str
    type: str
    w: int
    l: int  # noqa: E741 - protocol field name
    m: dict[str, int]
    e: dict[str, int]
    a: list[str]
    fw: str | None
    received_at: float
    link: str
    digest: str


# Report types whose releases are kept once per period (see release_key). ``alarm`` and ``boot`` are
# events, not periods: their ``w`` is the minute they happened in, and two fire/tip alarms (or two
# reboots) in one minute are two events, so every one is stored.
RELEASE_PERIOD_TYPES = frozenset({"win", "hour", "day"})

ReleaseKey = tuple[str, str, int, int, tuple[str, ...]]


def release_key(rec: ReportRecord) -> ReleaseKey | None:
    """The key under which only the first stored report counts, or None when ``rec`` is always stored.

    Only releases are keyed: ``win``/``hour``/``day`` reports with a non-empty ``e`` (a noised value of
    a personal count, spending ε). Firmware after a time sync that set its clock back by more than
    STEP_BACK_S (protocol §3) releases the periods since again under new seqs; one published value
    per ``(device, type, w, l, fields of e)`` keeps open data single-valued (the device's ε ledger has
    counted both spends either way). ``l`` and the field names are part of the key: a streetlight sends
    its window aggregate (no ``e``) and, every ``release_every_s``, its ``mot`` release as ``win``
    reports that can share ``w`` and ``l``. Aggregates without ``e`` (lux, lamp, energy, fill, ...) are
    non-personal measurements and always stored: a second ``hour`` energy report after a step back
    within the hour carries energy counted nowhere else.
    """
    if not rec.e or rec.type not in RELEASE_PERIOD_TYPES:
        return None
    return (rec.device, rec.type, rec.w, rec.l, tuple(sorted(rec.e)))


class WindowDuplicate(NamedTuple):
    """A release not stored because its period's release was stored under another seq (a
    ``window_duplicates`` row, which also keeps its ``e`` spend map and digest).

    Attributes:
        device, seq: the report not stored. type, w, l: its period. fields: the fields of its ``e``.
        kept_seq: the seq of the release stored for that period (the first; it may be in the same batch).
    """

    device: str
    seq: int
    type: str
    w: int
    l: int  # noqa: E741 - protocol field name
    kept_seq: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class OutboxMessage:
    """One upstream message waiting for delivery."""

    id: int
    topic: str
    payload: bytes


@dataclass
class BatchResult:
    """Outcome of :meth:`ReportStore.insert_batch`.

    Attributes:
        inserted: (device, seq) pairs newly stored.
        duplicates: (device, seq) pairs that were already stored (or already recorded as a window duplicate).
        window_duplicates: releases newly recorded as not stored because their period's release was
            (their seqs are committed all the same: acknowledged, and known as duplicates when re-sent).
        outbox_dropped: messages dropped from the outbox because of its size cap.
    """

    inserted: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    window_duplicates: list[WindowDuplicate] = field(default_factory=list)
    outbox_dropped: int = 0


OutboxEncoder = Callable[[ReportRecord], tuple[str, bytes]]

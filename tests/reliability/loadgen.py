"""Paced load over a real pty into a gateway process, with RSS and /metrics sampling (loopback only).

Used by test_load.py. The sender behaves like a fleet of devices behind one serial link: it offers frames
at a fixed rate, never blocks (a write that would block is link backpressure and is counted), reads ACKs,
and after the overload phase re-sends every un-acknowledged frame as a device outbox would.
"""

from __future__ import annotations

import bisect
import os
import re
import select
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from gateway.protocol import SerialDeframer, encode_serial, parse_frame

_SAMPLE = re.compile(r"^(civicedge_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (from /proc)."""
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def scrape(url: str) -> dict[str, float]:
    """Civicedge samples of a /metrics page, keyed ``name{labels}``."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1) + (m.group(2) or ""): float(m.group(3)) for m in _SAMPLE.finditer(text)}


def in_flight(sample: dict[str, float]) -> float:
    """Frames received but not yet resolved (stored, duplicate, rejected or shed), from the counters
    (a cross-check of the ``civicedge_ingest_backlog`` gauge)."""
    received = sum(v for k, v in sample.items() if k.startswith("civicedge_reports_in_total"))
    done = sample.get("civicedge_reports_stored_total", 0.0) + sample.get("civicedge_reports_duplicate_total", 0.0)
    done += sum(v for k, v in sample.items() if k.startswith("civicedge_rejections_total"))
    done += sample.get("civicedge_ingest_shed_total", 0.0)
    return received - done


@dataclass
class Sampler:
    """Samples the gateway's RSS and /metrics every ``interval`` seconds in a thread."""

    pid: int
    metrics_url: str
    interval: float = 0.5
    rss: list[int] = field(default_factory=list)
    backlog: list[float] = field(default_factory=list)
    paused: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.rss.append(rss_kib(self.pid))
                sample = scrape(self.metrics_url)
                self.backlog.append(sample.get("civicedge_ingest_backlog", in_flight(sample)))
                self.paused.append(sample.get("civicedge_ingest_paused", 0.0))
            except (OSError, RuntimeError):
                return  # the process is gone

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


class PacedSerialFleet:
    """Frames for one pty master: offered at a rate, ACKs tracked per device."""

    def __init__(self, master_fd: int, frames: dict[tuple[str, int], bytes]) -> None:
        self.fd = master_fd
        os.set_blocking(self.fd, False)
        self.frames = frames
        self.acks: dict[str, int] = {}
        self.blocked_s = 0.0
        self.offered = 0
        self._deframer = SerialDeframer()
        self._out = bytearray()

    def _pump(self, timeout: float) -> None:
        want_w = [self.fd] if self._out else []
        t0 = time.monotonic()
        r, w, _ = select.select([self.fd], want_w, [], timeout)
        if self._out and not w:
            self.blocked_s += time.monotonic() - t0
        if w:
            try:
                n = os.write(self.fd, self._out)
                del self._out[:n]
            except BlockingIOError:
                pass
        if r:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, OSError):
                data = b""
            for item in self._deframer.feed(data):
                if isinstance(item, bytes):
                    ack = parse_frame(item)
                    self.acks[ack.device_id] = max(self.acks.get(ack.device_id, 0), ack.seq)

    def offer(self, order: list[tuple[str, int]], rate: float, duration: float) -> int:
        """Offer frames of ``order`` at ``rate``/s for ``duration`` s; return how many were handed to the link.

        Frames due while the link is backed up wait in this sender (a device's outbox), bounded by ``order``.
        """
        start = time.monotonic()
        sent = 0
        while sent < len(order):
            now = time.monotonic()
            if now - start >= duration:
                break
            due = min(len(order), int((now - start) * rate) + 1)
            while sent < due and len(self._out) < 256 * 1024:
                self._out += encode_serial(self.frames[order[sent]])
                sent += 1
            self._pump(0.002)
        self.offered += sent
        return sent

    def drain(self, limit_s: float, chunk: int = 2000) -> bool:
        """Re-send every un-acknowledged frame (outbox behaviour) until all are ACKed or ``limit_s`` passes.

        Like a device's outbox: the oldest un-acknowledged frames go out ``chunk`` at a time, the next
        chunk as soon as the last one is acknowledged, or the same again after 2 s without that ACK.
        """
        by_dev: dict[str, list[int]] = {}
        for dev, seq in self.frames:
            by_dev.setdefault(dev, []).append(seq)
        for seqs in by_dev.values():
            seqs.sort()
        end = time.monotonic() + limit_s
        last_resend = 0.0
        sent_up_to: dict[str, int] = {}  # highest seq of each device in the chunk last sent
        while time.monotonic() < end:
            # index of each device's oldest un-acknowledged seq (no copy of the long tails per pump)
            starts = {dev: bisect.bisect_right(seqs, self.acks.get(dev, 0)) for dev, seqs in by_dev.items()}
            if all(starts[dev] == len(seqs) for dev, seqs in by_dev.items()):
                return True
            chunk_acked = all(self.acks.get(dev, 0) >= seq for dev, seq in sent_up_to.items())
            if not self._out and (chunk_acked or time.monotonic() - last_resend > 2.0):
                per_dev = max(1, chunk // len(by_dev))
                sent_up_to = {}
                for dev, seqs in by_dev.items():
                    head = seqs[starts[dev]:starts[dev] + per_dev]
                    for seq in head:
                        self._out += encode_serial(self.frames[(dev, seq)])
                    if head:
                        sent_up_to[dev] = head[-1]
                last_resend = time.monotonic()
            self._pump(0.01)
        return False

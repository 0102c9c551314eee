"""Bounded outbox of REPORT frames in flash, one file per frame (docs/protocol.md §6).

Each frame lives in ``<dir>/<seq as 8 hex digits>.<r|a>`` (``a`` = alarm), written with
:mod:`civic.store.atomic` (temp file + rename + CRC), so a power loss mid-write leaves either
no entry or a complete one. Leftover temp files and entries failing their CRC are removed
at start-up (counted in ``corrupt``). An entry that cannot be read (a flash read error) may be
intact, an alarm even: it is left on flash, out of the index (counted in ``unreadable``), and read
again at the next start-up. The index of entries is kept in RAM, sorted by seq. The
number of frames dropped at the cap is kept in ``<dir>/dropped`` so it survives reboots (written
only when a frame is dropped, which is rare).
"""

import os

from civic.store import atomic

MAX_RUNS = 8  # runs of held seqs a report states (protocol §2 ``h``)


class Outbox:
    """Persisted queue of frames waiting for a cumulative ACK.

    Args:
        directory: flash directory for the entries (created if missing).
        max_entries: capacity; when full, the oldest non-alarm entry is dropped.
        accept: callable(frame) -> bool run on every stored frame at start-up, or None. The
            runtime checks the device id and the tag under the current key: frames framed before
            a re-provisioning (new key or id) can never verify at the gateway, and kept they would
            be re-sent for ever while later frames state that the device still holds them
            (protocol §2 ``h``). Refused entries are removed and counted in ``foreign`` and
            ``dropped``.
        owner: bytes naming the identity the entries are framed under (a digest of id and key),
            or None. Stored beside the entries; ``accept`` runs only when it differs from the
            stored one (a bin boots at every wake: no HMAC over its outbox each time).
    """

    def __init__(self, directory, max_entries=64, accept=None, owner=None):
        if max_entries < 1:
            raise ValueError("outbox: max_entries must be >= 1")
        self.dir = directory.rstrip("/")
        self.max_entries = max_entries
        self.corrupt = 0
        self.foreign = 0
        self.unreadable = 0
        atomic.makedirs(self.dir)
        self._dropped_path = self.dir + "/dropped"
        self.dropped = self._load_dropped()
        owner_path = self.dir + "/owner"
        if owner is not None:
            try:
                if atomic.read(owner_path) == owner:
                    accept = None  # framed under this identity: nothing to check
            except atomic.CorruptFile:
                pass
        self._index = []  # sorted list of (seq, is_alarm)
        for name in os.listdir(self.dir):
            path = self.dir + "/" + name
            if name.endswith(atomic.TMP_SUFFIX):
                atomic.remove(path)
                continue
            entry = self._parse_name(name)
            if entry is None:
                continue
            try:
                data = atomic.read(path)
            except atomic.ReadError:
                self.unreadable += 1  # maybe intact: left for the next boot
                continue
            except atomic.CorruptFile:
                atomic.remove(path)
                self.corrupt += 1
                continue
            if data is None:
                continue  # gone since the listing
            if accept is not None and not accept(data):
                atomic.remove(path)
                self.foreign += 1
                continue
            self._index.append(entry)
        self._index.sort()
        if self.foreign:
            self.dropped += self.foreign
            atomic.write(self._dropped_path, b"%d" % self.dropped)
        if owner is not None and accept is not None:
            atomic.write(owner_path, owner)  # every entry left is this identity's

    def _load_dropped(self):
        try:
            raw = atomic.read(self._dropped_path)
            return int(raw) if raw else 0
        except (atomic.CorruptFile, ValueError):
            return 0  # a damaged counter restarts; the gateway still sees the seq gaps

    @staticmethod
    def _parse_name(name):
        if len(name) != 10 or name[8] != "." or name[9] not in "ra":
            return None
        try:
            return int(name[:8], 16), name[9] == "a"
        except ValueError:
            return None

    def _path(self, seq, alarm):
        return "%s/%08x.%s" % (self.dir, seq, "a" if alarm else "r")

    def __len__(self):
        return len(self._index)

    def append(self, seq, frame, alarm=False):
        """Persist ``frame`` under ``seq`` (must be above every stored seq).

        When full, drops the oldest non-alarm entry first (or the oldest alarm if all
        are alarms) and counts it in ``dropped``.
        """
        if self._index and seq <= self._index[-1][0]:
            raise ValueError("outbox: seq %d not above %d" % (seq, self._index[-1][0]))
        self.make_room()
        atomic.write(self._path(seq, alarm), bytes(frame))
        self._index.append((seq, bool(alarm)))

    def make_room(self):
        """Drop entries (oldest non-alarm first) until one more fits; count them in ``dropped``.

        :meth:`append` does this itself; a caller that states in the frame what the outbox holds
        (protocol §2 ``h``) calls it before building the frame.
        """
        while len(self._index) >= self.max_entries:
            victim = 0
            for i in range(len(self._index)):
                if not self._index[i][1]:
                    victim = i
                    break
            s, a = self._index.pop(victim)
            atomic.remove(self._path(s, a))
            self.dropped += 1
            atomic.write(self._dropped_path, b"%d" % self.dropped)

    def held_runs(self, limit=MAX_RUNS):
        """Return the stored seqs as a flat list of runs ``[first, last, first, last, ...]``.

        At most ``limit`` runs: the lowest ``limit - 1`` exactly, everything above as one run. The
        gateway's ACK waits at the lowest missing seq, so that is where it needs exact runs (a bin
        skips a seq block at every wake: each entry is a run of its own). The merged run claims
        a few dropped seqs as held: the gateway waits for them until a later report, framed when
        fewer runs are left, states them exactly; never the reverse.
        """
        runs = []
        for s, _ in self._index:
            if runs and runs[-1][1] + 1 == s:
                runs[-1][1] = s
            else:
                runs.append([s, s])
        if len(runs) > limit:
            runs[limit - 1][1] = runs[-1][1]
            del runs[limit:]
        flat = []
        for first, last in runs:
            flat.append(first)
            flat.append(last)
        return flat

    def pending(self):
        """Return the stored seqs in ascending order (a copy)."""
        return [s for s, _ in self._index]

    def next_after(self, seq):
        """Return the smallest stored seq greater than ``seq``, or None (no allocation)."""
        for s, _ in self._index:
            if s > seq:
                return s
        return None

    def read(self, seq):
        """Return the frame stored under ``seq``, or None if it is not (or no longer) stored."""
        for s, a in self._index:
            if s == seq:
                try:
                    return atomic.read(self._path(s, a))
                except atomic.ReadError:
                    # maybe intact: out of the index (frames stop claiming it held) but left on
                    # flash for the next boot's scan to read again
                    self._index.remove((s, a))
                    self.unreadable += 1
                    return None
                except atomic.CorruptFile:
                    self._forget(s, a)
                    self.corrupt += 1
                    return None
        return None

    def _forget(self, seq, alarm):
        atomic.remove(self._path(seq, alarm))
        self._index.remove((seq, alarm))

    def ack(self, upto):
        """Drop every entry with seq <= ``upto``; return how many were dropped."""
        n = 0
        while self._index and self._index[0][0] <= upto:
            s, a = self._index.pop(0)
            atomic.remove(self._path(s, a))
            n += 1
        return n

"""Link-independent uplink logic: what to send next, and handling ACK / CONFIG frames.

A :class:`Session` is shared by the links of a device; each link takes its own
:class:`Cursor` from it (a streetlight sends on UART and BLE, and a UART that nobody reads must
not hold back what BLE could deliver). A cursor sends the outbox in seq order, re-sends
everything still pending when no ACK arrives within its resend interval (``resend_ms``, doubled
after each unanswered round up to ``resend_max_ms``, back to ``resend_ms`` on an ACK that came in
on its link: a dead link costs little power or airtime) or when its link (re)connects. A link
holds a frame back for ``resend_ms`` while a link that took its cursor earlier works, so a
working UART carries the reports alone and BLE takes over when it stops answering. The
session applies cumulative ACKs (with RTC sync), whichever link they came on, and CONFIG updates
(persisted, only if newer than the last applied one).

Time sync trusts an ACK's time only when the ACK is fresh: it acknowledges a frame still in the
outbox, which the gateway can only have answered after receiving it. A recorded ACK replayed
later acknowledges nothing new. Times before 2024 or after 2099 are never taken.

Fresh is not recent: a man in the middle can relay a report, keep the gateway's ACK, drop the
later ones (the frame stays in the outbox) and deliver the kept ACK days later. The gateway signs
its real time, so a held ACK can only move the clock back; a clock that is set (2024 or later)
is therefore stepped forward freely but back only within an allowance that accrues at
``STEP_BACK_S`` per ``BACK_REFILL_S`` of clock time since the last sync (5 min an hour, with no
ceiling: a clock up to ~8 % fast is corrected however rarely it syncs, e.g. a bin waking every
6 h). A sync that steps the clock back uses the allowance up; one that steps it forward or finds
it right leaves at most ``STEP_BACK_S`` of it. A man in the middle who withholds every ACK for a
day thus drags the clock back about 2 h, not a day. Steps back beyond ``STEP_BACK_S`` close the
current periods (civic.sense.window, energy, the ledger's period ends). The allowance is kept in
flash (``timesync.json``), so a reboot or a deep-sleep wake does not refill it. A clock never set
since it lost power (before 2024) takes any valid time.
"""

import json
import time

from civic.hal.clock import VALID_AFTER
from civic.sense.window import STEP_BACK_S
from civic.store import atomic
from civic.wire import frame, msgpack

TIME_SYNC_TOLERANCE_S = 2
TIME_MAX = 4102444800  # 2100-01-01: an ACK time past this is not a clock reading
# A set clock goes back at most STEP_BACK_S per this many seconds of clock time since its last sync
# (a clock ahead by an hour takes 12 hours to come back; an RTC running fast by up to 8 % is
# corrected whatever its sync interval).
BACK_REFILL_S = 3600
# The allowance's start in flash may lag the one in RAM by this much (a sync that only confirms or
# moves the clock forward writes flash at most once per SAVE_LAG_S; a step back always writes).
SAVE_LAG_S = 3600
TIME_FILE = "timesync.json"  # beside the config file unless time_path says otherwise


def _storable(v, depth):
    """True if ``v`` is JSON-storable config data (no bytes, bounded nesting)."""
    if depth > 4:
        return False
    if v is None or v is True or v is False or isinstance(v, (int, str)):
        return True
    if isinstance(v, list):
        return all(_storable(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _storable(v[k], depth + 1) for k in v)
    return False


class Cursor:
    """One link's send position in the shared outbox (take it with :meth:`Session.cursor`).

    A link holds a frame back for up to ``resend_ms`` while a link that took its cursor earlier
    works (it is presumed to from its start until a round of it goes unanswered, and again from
    its next ACK): a streetlight whose UART delivers does not also send every report over BLE,
    where it would take one of the gateway's few BLE slots; once the UART misses an ACK, BLE
    carries the frames at once.

    Attributes:
        sent_upto: highest seq this link has sent in the current round.
        last_send: tick of the last send still waiting for an ACK, or None.
        wait_ms: this link's current resend interval (backoff).
        works: no round sent on this link went unanswered since its start or its last ACK.
        answered: since its (re)start an ACK came on this link that was fresh (it removed an outbox
            entry) or covers a frame this link sent since then (another link's ACK may have removed
            it first). A replayed ACK is neither: its frames left the outbox before any sent now.
    """

    def __init__(self, session):
        self.session = session
        self.sent_upto = 0
        self.last_send = None
        self.wait_ms = session.resend_ms
        self.works = True
        self.answered = False
        self._first = None  # seq of the first frame sent since the (re)start, or None
        self._held = None  # (seq, tick) of the frame held back for an earlier link, or None
        self._hold_ms = None  # how much longer it is held

    def restart(self):
        """Re-send every pending frame from the start (link came back, or boot)."""
        self.sent_upto = 0
        self.last_send = None
        self.wait_ms = self.session.resend_ms
        self.works = True
        self.answered = False
        self._first = None
        self._held = None

    def resend_in_ms(self, idle_ms):
        """Milliseconds until a frame is due: a re-send, or one held back for an earlier link
        (``idle_ms`` if neither).

        Call after :meth:`next_frame` returned None: until then something is due now.
        """
        ses = self.session
        wait = idle_ms
        if self._hold_ms is not None:
            wait = min(wait, self._hold_ms)
        if self.last_send is not None and len(ses.outbox):
            wait = min(wait, self.wait_ms - time.ticks_diff(ses.ticks_ms(), self.last_send))
        return max(1, wait)

    def next_frame(self):
        """Return ``(seq, frame)`` of the next frame to send, or None if nothing is due.

        Call :meth:`mark_sent` after the frame went out.
        """
        ses = self.session
        outbox = ses.outbox
        now = ses.ticks_ms()
        self._hold_ms = None
        if self.last_send is not None and len(outbox):
            if time.ticks_diff(now, self.last_send) >= self.wait_ms:
                self.sent_upto = 0  # no ACK in time: go round again, and wait longer next time
                self.last_send = None
                self.wait_ms = min(self.wait_ms * 2, ses.resend_max_ms)
                self.works = False
        s = outbox.next_after(self.sent_upto)
        while s is not None:
            data = outbox.read(s)
            if data is not None:
                if ses._earlier_link_works(self):
                    if self._held is None or self._held[0] != s:
                        self._held = (s, now)
                    left = ses.resend_ms - time.ticks_diff(now, self._held[1])
                    if left > 0:
                        self._hold_ms = left
                        return None
                return s, data
            s = outbox.next_after(s)  # entry vanished (damaged): skip it
        return None

    def mark_sent(self, s):
        """Record that the frame with seq ``s`` was handed to the link."""
        self.sent_upto = s
        if self._first is None:
            self._first = s
        self.last_send = self.session.ticks_ms()
        self._held = None
        self.session.stats["sent"] += 1

    def _acked(self, s, on_this_link, fresh):
        if on_this_link:
            self.wait_ms = self.session.resend_ms  # the link works: no backoff
            self.works = True
            first = self._first
            if fresh or (first is not None and s >= first):
                self.answered = True
        if self.sent_upto <= s:
            self.last_send = None  # everything this link sent is answered


class Session:
    """Uplink state for one device.

    Args:
        device_id: this device's id.
        key: 32-byte device key (ACK/CONFIG must verify under it).
        outbox: :class:`civic.store.outbox.Outbox`.
        seq: :class:`civic.store.seq.SeqCounter` (ACKs above its ``last`` are ignored).
        set_time: callable(unix_s) setting the RTC, or None.
        now: callable returning unix seconds (int).
        config_path: flash file with the last applied CONFIG ``{"seq": n, "values": {...}}``.
        config_keys: keys the device kind accepts (others are ignored).
        on_config: callable(dict) called with the accepted keys of a newer CONFIG.
        resend_ms: re-send pending frames if no ACK came this long after sending.
        resend_max_ms: longest resend interval the backoff reaches.
        ticks_ms: callable returning a millisecond tick (``time.ticks_ms``).
        time_path: flash file with the back-step allowance (None: ``timesync.json`` in the
            directory of ``config_path``).

    Attributes:
        config: ``{"seq": n, "values": {...}}`` last applied CONFIG (from flash at boot; apps
            apply ``config["values"]`` at start-up, and later get changes via ``on_config``).
        stats: counters (over all links) ``sent``, ``acks``, ``configs``, ``bad``, ``time_sync``
            (clock set from an ACK), ``stale_time`` (ACK times not taken: not fresh or not
            plausible), ``time_back_limited`` (ACK times further back than the allowance: the
            clock went back less or not at all; a held ACK, or a clock that was ahead),
            ``errors`` (flash errors while handling a frame).
    """

    def __init__(self, device_id, key, outbox, seq, set_time=None, now=time.time,
                 config_path="/config.json", config_keys=(), on_config=None,
                 resend_ms=5000, ticks_ms=time.ticks_ms, resend_max_ms=60000, time_path=None):
        self.device_id = device_id
        self.key = key
        self.outbox = outbox
        self.seq = seq
        self.set_time = set_time
        self.now = now
        self.config_path = config_path
        self.config_keys = frozenset(config_keys)
        self.on_config = on_config
        self.resend_ms = resend_ms
        self.resend_max_ms = max(resend_ms, resend_max_ms)
        self.ticks_ms = ticks_ms
        self._cursors = []
        self._signals = []
        self.stats = {"sent": 0, "acks": 0, "configs": 0, "bad": 0, "time_sync": 0, "stale_time": 0,
                      "time_back_limited": 0, "errors": 0}
        if time_path is None:
            time_path = config_path[:config_path.rfind("/") + 1] + TIME_FILE
        self.time_path = time_path
        self._saved = None  # allowance start last read from or written to flash (None: no file)
        self._since = self._load_since()
        self.config = {"seq": 0, "values": {}}
        try:
            raw = atomic.read(config_path)
            stored = json.loads(raw) if raw is not None else None
        except ValueError:
            stored = None  # damaged config file: keep defaults, the gateway will resend
        if isinstance(stored, dict) and isinstance(stored.get("seq"), int) and isinstance(stored.get("values"), dict):
            self.config = stored

    def watch(self, signal):
        """Have :meth:`notify` wake ``signal`` (a link's :class:`civic.hal.signal.Signal`)."""
        self._signals.append(signal)

    def notify(self):
        """Something is due to send (a new frame was stored): wake every link."""
        for sig in self._signals:
            sig.set()

    def cursor(self):
        """Return a new :class:`Cursor` for one link; ACKs are applied to every cursor.

        Links taken earlier are preferred: a later one holds a frame back while an earlier one
        works (see :class:`Cursor`). The runtime takes the UART's first.
        """
        cur = Cursor(self)
        self._cursors.append(cur)
        return cur

    def _earlier_link_works(self, cur):
        for other in self._cursors:
            if other is cur:
                return False
            if other.works:
                return True
        return False

    def handle(self, data, cursor=None):
        """Handle one received frame; return ``"ack"``, ``"config"``, ``"stale"``, ``"bad"`` or ``"error"``.

        ``cursor`` is the receiving link's :class:`Cursor`: an ACK ends the backoff of that link
        only (None: of every link), and sets its ``answered`` if it is not a replay.

        Frames that fail to parse, do not verify, are addressed to another id, or are
        not ACK/CONFIG are counted in ``stats["bad"]`` and otherwise ignored. A flash error
        while applying one (full or failing flash) is counted in ``stats["errors"]`` and
        returns ``"error"``: the link goes on, and the gateway sends the frame again.
        """
        try:
            ftype, dev, s, body = frame.parse(data, self.key)
            if dev != self.device_id:
                raise frame.FrameError("id", "frame for another device")
            obj = msgpack.decode(body)
            if not isinstance(obj, dict):
                raise ValueError("body is not a map")
        except ValueError:  # FrameError is a ValueError too
            self.stats["bad"] += 1
            return "bad"
        try:
            if ftype == frame.ACK:
                return self._ack(s, obj, cursor)
            if ftype == frame.CONFIG:
                return self._config(s, obj)
        except OSError:
            self.stats["errors"] += 1
            return "error"
        self.stats["bad"] += 1
        return "bad"

    def _ack(self, s, obj, cursor):
        if s > self.seq.last:
            self.stats["bad"] += 1
            return "bad"  # acknowledges something never sent
        fresh = self.outbox.ack(s) > 0  # answers a frame the gateway cannot have seen before it was sent
        for cur in self._cursors:
            cur._acked(s, cursor is None or cur is cursor, fresh)
        self.stats["acks"] += 1
        t = obj.get("t")
        set_time = self.set_time
        if set_time is not None and isinstance(t, int) and not isinstance(t, bool):
            if not fresh or not VALID_AFTER <= t < TIME_MAX:
                self.stats["stale_time"] += 1
            else:
                self._sync(t, set_time)
        return "ack"

    def _load_since(self):
        # The clock time from which the back-step allowance accrues. No file: STEP_BACK_S now. A
        # damaged file: none now (it only delays a correction). A start after the clock (it was
        # ahead, then lost power) allows nothing until the next sync forward resets it (_sync).
        now = self.now()
        try:
            raw = atomic.read(self.time_path)
            if raw is None:
                return now - BACK_REFILL_S
            obj = json.loads(raw)
            v = obj.get("since")
            if v is None and "full_at" in obj:  # 418a391's file: full (STEP_BACK_S) at full_at
                v = obj["full_at"] - BACK_REFILL_S
        except (ValueError, TypeError, AttributeError):
            v = None
        if not isinstance(v, int) or isinstance(v, bool):
            return now
        self._saved = v
        return v

    def back_allowance(self, now=None):
        """Seconds the clock may still be set back now (``STEP_BACK_S`` per ``BACK_REFILL_S`` of
        clock time since the allowance was last used, no ceiling)."""
        if now is None:
            now = self.now()
        return max(0, (now - self._since) * STEP_BACK_S // BACK_REFILL_S)

    def _save(self, since):
        atomic.write(self.time_path, json.dumps({"since": since}).encode())
        self._saved = since

    def _sync(self, t, set_time):
        now = self.now()
        back = now - t
        if back <= TIME_SYNC_TOLERANCE_S:  # forward (also a clock never set: t >= 2024 > now) or right
            if back < -TIME_SYNC_TOLERANCE_S:
                set_time(t)
                self.stats["time_sync"] += 1
                now = t
            # a clock just found right keeps at most STEP_BACK_S; a start after it (the clock was
            # ahead and lost power) is reset
            since = min(max(self._since, now - BACK_REFILL_S), now)
            self._since = since
            saved = self._saved
            if saved is None or since < saved or since - saved >= SAVE_LAG_S:
                try:
                    self._save(since)
                except OSError:  # the clock is right; after a reset the allowance may be larger
                    self.stats["errors"] += 1
            return
        step = min(back, self.back_allowance(now))
        if step < back:
            self.stats["time_back_limited"] += 1
        if step <= TIME_SYNC_TOLERANCE_S:
            return  # nothing (worth a flash write) left of the allowance
        to = now - step
        # used up, persisted first: a step whose allowance was not written would be granted again
        # after a reset
        self._save(to)
        self._since = to
        set_time(to)
        self.stats["time_sync"] += 1

    def _config(self, s, obj):
        if s <= self.config.get("seq", 0):
            return "stale"
        values = dict(self.config.get("values", {}))  # a CONFIG updates the keys it names
        for k in obj:
            if k in self.config_keys:
                if _storable(obj[k], 0):
                    values[k] = obj[k]
        config = {"seq": s, "values": values}
        atomic.write(self.config_path, json.dumps(config).encode())  # persisted first: a failed write applies nothing
        self.config = config
        self.stats["configs"] += 1
        if self.on_config is not None:
            self.on_config(values)
        return "config"

"""Build, frame and queue REPORTs (docs/protocol.md §2) with a device-side allowlist.

Typical use from an app::

    rep = Reporter(identity, kind_policy, SeqCounter("/seq.bin"), Outbox("/outbox"))
    val, eps = releaser.release("mot", count, now)
    m = {"lux": 120, "lvl": 40, "lamp": 0}
    e = {}
    if val is not None:
        m["mot"] = val
    if eps:
        e["mot"] = eps
    seq = rep.report("win", w, 900, m, e=e)
"""

from civic import VERSION
from civic.policy import PolicyError
from civic.wire import frame, msgpack

REPORT_TYPES = ("win", "hour", "day", "alarm", "boot")
ALARM_PERIOD_S = 60  # alarms and boot reports: w is the time rounded down to the minute


def _minute(now_s):
    return now_s - now_s % ALARM_PERIOD_S


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def build_body(kind_policy, t, w, l, m, e=None, a=None, fw=None):
    """Return the validated report body as a dict (keys only from protocol §2).

    Raises:
        PolicyError: a field in ``m`` or ``e`` not on the kind's allowlist, a people-related
            (noisy_count) field in ``m`` without its epsilon in ``e``, a field with a release
            period (``release_every_s``) outside its report type over that period, a field in an
            alarm report that none of its alarm codes carries, an alarm code not in the policy,
            or ``a`` in a non-alarm report.
        ValueError: bad report type, period, window start or a non-integer value.
    """
    if t not in REPORT_TYPES:
        raise ValueError("report: unknown type %r" % (t,))
    if not _is_int(w) or not _is_int(l) or l < 1 or w < 0:
        raise ValueError("report: w and l must be ints, l >= 1")
    if t in ("alarm", "boot") and l != ALARM_PERIOD_S:
        raise ValueError("report: %s period must be 60 s" % t)
    if t == "boot" and (m or e or a):
        raise ValueError("report: a boot report carries no measurements")
    if w % l:
        raise ValueError("report: w=%d is not a multiple of l=%d" % (w, l))
    if not isinstance(m, dict):
        raise ValueError("report: m must be a dict")
    e = e or {}
    for name in m:
        spec = kind_policy.field(name)  # raises PolicyError if not allowlisted
        if not _is_int(m[name]):
            raise ValueError("report: value of %s must be an int" % name)
        if name in kind_policy.personal and not e.get(name):
            raise PolicyError("people-related field %s released without epsilon accounting" % name, name)
        every = spec.get("release_every_s")
        if t == "alarm":
            # an alarm carries only what its alarms need (fire: temp): anything else would leave
            # at the minute of the alarm, bypassing its own release period (fill: 6 h)
            if not any(name in kind_policy.alarm_fields.get(c, ()) for c in a or ()):
                raise PolicyError("%s is not carried by alarm %s" % (name, ",".join(a or ())), name)
        elif every and (t != spec.get("report") or l != every):
            raise PolicyError("%s is released only in %s reports over %d s" % (name, spec.get("report"), every), name)
    for name in e:
        if name not in kind_policy.personal:
            raise PolicyError("epsilon given for %s, which is not a noisy_count field" % name, name)
        if not _is_int(e[name]) or e[name] < 1:
            raise ValueError("report: epsilon of %s must be an int >= 1 (milli)" % name)
    body = {"t": t, "k": kind_policy.kind, "w": w, "l": l, "m": m}
    if e:
        body["e"] = e
    if a:
        if t != "alarm":
            raise PolicyError("alarm codes outside an alarm report")
        for code in a:
            if code not in kind_policy.alarms:
                raise PolicyError("alarm %r not in the %s policy" % (code, kind_policy.kind), code)
        body["a"] = list(a)
    elif t == "alarm":
        raise ValueError("report: alarm report without alarm codes")
    if fw:
        body["fw"] = fw
    return body


class IdentityError(ValueError):
    """``/identity.json`` is missing or malformed.

    Attributes:
        key: the identity key concerned (may be None).
    """

    def __init__(self, detail, key=None):
        super().__init__("identity: " + detail)
        self.key = key


def parse_identity(doc):
    """Validate an identity dict (``id``, ``kind``, ``key`` hex of 32 bytes, ...).

    Returns:
        tuple (device_id, kind, key_bytes).
    """
    import binascii

    if not isinstance(doc, dict):
        raise IdentityError("not a JSON object")
    for k in ("id", "kind", "key"):
        if not isinstance(doc.get(k), str):
            raise IdentityError("missing or non-string %s" % k, k)
    try:
        frame.check_device_id(doc["id"])
    except frame.FrameError as exc:
        raise IdentityError(exc.detail, "id")
    try:
        key = binascii.unhexlify(doc["key"])
    except ValueError:
        raise IdentityError("key is not hex", "key")
    if len(key) != 32:
        raise IdentityError("key must be 32 bytes", "key")
    return doc["id"], doc["kind"], key


class Reporter:
    """Frames allowlisted report bodies and appends them to the outbox (before any send).

    Args:
        device_id: the device id from /identity.json.
        key: 32-byte device key.
        kind_policy: :class:`civic.policy.KindPolicy` of this device's kind.
        seq: :class:`civic.store.seq.SeqCounter`.
        outbox: :class:`civic.store.outbox.Outbox`.
        fw: firmware version string put in every report (None to omit).
        on_queued: callable() run after a frame was stored (wakes the links), or None; the
            runtime sets the attribute once the links exist.
    """

    def __init__(self, device_id, key, kind_policy, seq, outbox, fw=VERSION, on_queued=None):
        frame.check_device_id(device_id)
        if len(key) != 32:
            raise IdentityError("key must be 32 bytes", "key")
        self.device_id = device_id
        self.key = key
        self.policy = kind_policy
        self.seq = seq
        self.outbox = outbox
        self.fw = fw
        self.last_frame_len = 0
        self.on_queued = on_queued

    def report(self, t, w, l, m, e=None, a=None):
        """Validate, encode, frame and persist one report; return its seq.

        The body also carries ``h``: the seqs below this one still in the outbox, as runs
        (protocol §2).

        Raises:
            PolicyError, ValueError: see :func:`build_body`; frame.FrameError if oversize.
        """
        body = build_body(self.policy, t, w, l, m, e, a, self.fw)
        n = self.seq.next()
        # Say what the outbox holds (protocol §2 h, after the cap made room): the gateway then
        # knows which missing seqs are still coming and never acknowledges past one of those.
        self.outbox.make_room()
        body["h"] = self.outbox.held_runs()
        data = frame.build(frame.REPORT, self.device_id, n, msgpack.encode(body), self.key)
        self.outbox.append(n, data, alarm=(t == "alarm"))
        self.last_frame_len = len(data)
        if self.on_queued is not None:
            self.on_queued()
        return n

    def alarm(self, codes, now_s, m=None):
        """Queue an alarm report at once (time rounded down to the minute); return its seq."""
        return self.report("alarm", _minute(now_s), ALARM_PERIOD_S, m or {}, a=codes)

    def boot(self, now_s):
        """Queue a boot report (no measurements; time rounded down to the minute); return its seq.

        Sent when the device starts with a clock that was never set and nothing to send: the
        gateway's ACK to it carries the time (protocol §3), so a board whose RTC lost power
        gets its clock, and then reports, without waiting for an alarm. Also at the restart
        ``civicedge check`` makes, when it asks for one (``Runtime.answer_link_test``).
        """
        return self.report("boot", _minute(now_s), ALARM_PERIOD_S, {})

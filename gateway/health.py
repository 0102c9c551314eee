"""What ``/healthz`` and systemd's ``STATUS=`` say: health problems with stable codes and severities.

A problem is its human reason (the text ``/healthz`` has always listed in ``reasons``, which may name
paths and changing figures) plus a stable ``code`` and the ``severity`` of that code, so a monitor
can page on one and open a ticket on the other without parsing text:

* ``critical``: reports are not being stored or acknowledged, or soon will not be (the devices keep
  them and re-send, but the gateway has stopped collecting), or the state cannot be told;
* ``warning``: degraded, but what arrives is stored and acknowledged.

:class:`Problem` is a ``str`` (its reason), so a health check still returns a list of reasons; a
plain ``str`` from a check that gives no code counts as :data:`UNCLASSIFIED` (critical: unknown).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

CRITICAL = "critical"
WARNING = "warning"
OK = "ok"

# Code -> severity; the codes are an interface (docs/api.md, /healthz): never renamed.
SEVERITIES: Mapping[str, str] = {
    "store_damaged": CRITICAL,         # the store's file is damaged: nothing committed until a restart
    "store_gone": CRITICAL,            # the store's file was deleted or replaced under the gateway
    "commits_failing": CRITICAL,       # commits fail (disk full, I/O error, ...): nothing acknowledged
    "disk_critical": CRITICAL,         # below min_free_mb / 8: commits are minutes from failing
    "store_unreadable": CRITICAL,      # the web's store probe failed with an error
    "all_links_down": CRITICAL,        # every configured link is down: nothing is received at all
    "health_check_failed": CRITICAL,   # a health probe raised: the state is unknown
    "unclassified": CRITICAL,          # a reason without a code: the state is unknown
    "store_not_answering": WARNING,    # the web's store probe timed out (reads queue; commits say their own)
    "store_unavailable": WARNING,      # the web's store probe refused (e.g. the registry cannot be read)
    "disk_low": WARNING,               # below [storage] min_free_mb (and above an eighth of it): still storing
    "link_down": WARNING,              # a serial (or other) link is down (all of them: all_links_down too)
    "ble_down": WARNING,               # the BLE link is down
    "mqtt_down": WARNING,              # the broker is not reachable / refuses: reports are kept in the outbox
    "mqtt_stalled": WARNING,           # the broker keeps closing on one message: the outbox waits
    "retention_held": WARNING,         # retention held until the operator confirms (nothing removed)
    "retention_skipped": WARNING,      # retention passes skipped (clock doubts): nothing removed
    "retention_clock_offset": WARNING, # retention removes by the clock less unconfirmed forward steps (late)
    "ack_time_withheld": WARNING,      # ACKs go without the time to boards whose clocks disagree (clock suspect)
    "admin_token_unusable": WARNING,   # the admin token file was replaced by an unusable one (admin API 503)
    "reports_failing": WARNING,        # reports failing alone with a store bug; the others stored and acknowledged
    "store_wal_unchecked": WARNING,    # the store's -wal is over its limit and reads ran before it was checkpointed
}
UNCLASSIFIED = "unclassified"


class Problem(str):
    """A health reason (the ``str`` itself) with its stable ``code``, ``severity`` and, for a link,
    the ``subject`` it is about (``serial:/dev/ttyUSB1``; for ``disk_low`` the store's directory; for
    ``ack_time_withheld`` ``time_sync``).

    Args:
        code: a key of :data:`SEVERITIES`.
        reason: the text for people.
        subject: the link (or other part) the problem is about, or None.

    Raises:
        ValueError: ``code`` is not a known code.
    """

    code: str
    severity: str
    subject: str | None

    def __new__(cls, code: str, reason: str, subject: str | None = None) -> "Problem":
        if code not in SEVERITIES:
            raise ValueError("unknown health problem code %r (known: %s)" % (code, ", ".join(sorted(SEVERITIES))))
        self = super().__new__(cls, reason)
        self.code, self.severity, self.subject = code, SEVERITIES[code], subject
        return self

    def __reduce__(self) -> tuple[type["Problem"], tuple[str, str, str | None]]:
        # str's own would rebuild it from the text alone (no code): copies and pickles keep all three.
        return (Problem, (self.code, str(self), self.subject))


def all_links_down(links: Sequence[str]) -> Problem:
    """The critical problem for ``links``, every link the gateway has, all down: it receives nothing.

    Each down link keeps its own ``link_down``/``ble_down`` warning (codes keep one severity, so rules on
    them stay as they are); this one says that together they stop collection.
    """
    return Problem("all_links_down", "every link is down (%s): nothing is received or stored; the devices keep "
                   "their reports" % ", ".join(links))


def classify(reason: str) -> Problem:
    """``reason`` as a :class:`Problem`: itself when it is one, else :data:`UNCLASSIFIED`."""
    return reason if isinstance(reason, Problem) else Problem(UNCLASSIFIED, reason)


def overall(problems: Iterable[Problem]) -> str:
    """The worst severity of ``problems``: ``critical``, ``warning``, or ``ok`` when there is none."""
    found = {p.severity for p in problems}
    return CRITICAL if CRITICAL in found else WARNING if found else OK


def as_json(problem: Problem) -> dict[str, str]:
    """The ``/healthz`` form of one problem: code, severity, message (and subject when it has one)."""
    out = {"code": problem.code, "severity": problem.severity, "message": str(problem)}
    if problem.subject is not None:
        out["subject"] = problem.subject
    return out


def summary(problems: Iterable[Problem]) -> str:
    """Codes (with their subjects) in a stable, short form for ``STATUS=``: ``link_down serial:/dev/ttyUSB1;
    mqtt_down``; the same set of problems gives the same text whatever their figures."""
    seen: list[str] = []
    for p in problems:
        item = p.code if p.subject is None else "%s %s" % (p.code, p.subject)
        if item not in seen:
            seen.append(item)
    return "; ".join(seen)

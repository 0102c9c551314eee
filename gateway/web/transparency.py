"""Transparency page generated from the firmware's privacy policy (``firmware/policy.json``).

Nothing here is hand-written copy about the data: every sentence about a field, its privacy
parameters, retention and recipients is derived from the policy dict, so changing the policy
changes the page. ε values are kept as integer milli-ε and formatted without floats.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

from gateway.config.licence import NOT_SET
from gateway.web.errors import WebError

_RELEASE_TEXT = {
    "noisy_count": "count with random (discrete Laplace) noise added on the device; small counts are withheld",
    "aggregate": "aggregate over the period (no individual events)",
}
# A non-counted field with its own release period (a bin's fill) is not summarised over its period: the
# device sends its last reading in it (gateway.web.export calls that aggregate ``last``).
_LEVEL_AT_END_TEXT = "its value at the end of the period (the last reading in it, not a mean)"
_REPORT_TEXT = {"win": "per window", "hour": "per hour", "day": "per day", "alarm": "at once (alarm)"}


class PolicyFormatError(WebError):
    """The privacy policy lacks something the transparency page must show."""

    status = 500
    default_code = "policy_format"


def format_milli(milli: int) -> str:
    """Format an integer milli-unit (e.g. milli-ε) as a decimal string, exactly (no floats).

    >>> format_milli(500), format_milli(2000), format_milli(1250)
    ('0.5', '2', '1.25')
    """
    sign = "-" if milli < 0 else ""
    whole, frac = divmod(abs(milli), 1000)
    text = f"{whole}.{frac:03d}".rstrip("0").rstrip(".")
    return sign + text


def format_duration(seconds: int) -> str:
    """Format a period in seconds as the largest whole unit (``15 min``, ``6 h``, ``1 day``)."""
    for unit_s, name in ((86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= unit_s and seconds % unit_s == 0:
            n = seconds // unit_s
            if name == "day":
                return f"{n} day" + ("s" if n != 1 else "")
            return f"{n} {name}"
    return f"{seconds} s"


def format_days(days: int) -> str:
    """A whole number of days with its unit in the right number (``1 day``, ``90 days``)."""
    return f"{days} day" if days == 1 else f"{days} days"


def _need(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise PolicyFormatError(f"privacy policy: {where} has no '{key}'", param=f"{where}.{key}")
    return mapping[key]


def _release_text(release: str, spec: Mapping[str, Any]) -> str:
    """What leaves the device of a field, in words (a level released once per period: its end value)."""
    if release == "aggregate" and isinstance(spec.get("release_every_s"), int):
        return _LEVEL_AT_END_TEXT
    return _RELEASE_TEXT.get(release, release)


def _field_model(name: str, spec: Mapping[str, Any], kind: str, window_s: int,
                 retention: Mapping[str, Mapping[str, int]] | None) -> dict[str, Any]:
    where = f"kinds.{kind}.fields.{name}"
    release = str(_need(spec, "release", where))
    release_text = _release_text(release, spec)
    report = str(_need(spec, "report", where))
    period_s = {"win": window_s, "hour": 3600, "day": 86400}.get(report, window_s)
    if report == "win" and isinstance(spec.get("release_every_s"), int):
        # A field with its own release period travels in a "win" report covering that period (6 h
        # of passes, a bin's fill level at the end of 6 h), never per window: say what actually
        # leaves the device.
        period_s = int(spec["release_every_s"])
    field: dict[str, Any] = {
        "field": name,
        "label": str(_need(spec, "label", where)),
        "unit": str(spec.get("unit", "")),
        "source": str(spec.get("source", "")),
        "personal": bool(_need(spec, "personal", where)),
        "purpose": str(_need(spec, "purpose", where)),
        "release": release,
        "release_text": release_text,
        "report": report,
        "period_s": period_s,
        "leaves_device": (
            f"{release_text}, {_REPORT_TEXT.get(report, report)}"
            f" ({format_duration(period_s)})" if report != "win" or period_s == window_s
            else f"{release_text}, once every {format_duration(period_s)}"
        ),
        "retention_days": int(_need(spec, "retention_days", where)),
    }
    effective = (retention or {}).get(kind, {}).get(name)
    if effective is not None and effective < field["retention_days"]:
        # The city shortened it (admin API / config); the policy's value stays the promise.
        field["policy_retention_days"] = field["retention_days"]
        field["retention_days"] = int(effective)
    if "quantum" in spec:
        field["quantum"] = int(spec["quantum"])
    if "valid_range" in spec:  # checked at load (gateway.pipeline.verify): two whole numbers, min <= max
        low, high = spec["valid_range"]
        field["valid_range"] = [int(low), int(high)]
    if "release_every_s" in spec:
        field["release_every_s"] = int(spec["release_every_s"])
    if release == "noisy_count":
        for key in ("eps_per_release_milli", "eps_per_day_milli", "k"):
            field[key] = int(_need(spec, key, where))
        field["eps_per_release"] = format_milli(field["eps_per_release_milli"])
        # The policy's daily budget (what the device's ledger allows per UTC day), named as such beside
        # eps_per_day_max; eps_per_day(_milli) are the same values under their old, ambiguous names
        # (deprecated, docs/api.md: removed in the release after next).
        field["eps_daily_budget_milli"] = field["eps_per_day_milli"]
        field["eps_daily_budget"] = format_milli(field["eps_per_day_milli"])
        field["eps_per_day"] = field["eps_daily_budget"]
        # What one device can actually spend on a UTC day: the budget, or fewer releases' worth
        # when the release period allows fewer (the lid's one daily release: ε 0.5, not the ε 2 budget).
        field["releases_per_day"] = -(-86400 // period_s)
        field["eps_per_day_max_milli"] = min(field["eps_per_day_milli"],
                                             field["releases_per_day"] * field["eps_per_release_milli"])
        field["eps_per_day_max"] = format_milli(field["eps_per_day_max_milli"])
        if "refractory_s" in spec:
            field["refractory_s"] = int(spec["refractory_s"])
    return field


def build_transparency(
    policy: Mapping[str, Any], *, retention: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, Any]:
    """Derive the transparency document (the JSON form of the page) from a privacy policy.

    Args:
        policy: the parsed ``firmware/policy.json`` (or a modified copy of it).
        retention: effective retention in days (``kind -> field -> days``) where the city keeps
            data for less than the policy allows; longer values are ignored (the policy is the cap).

    Returns:
        A JSON-serialisable dict: statement, not-collected list, recipients, and per device kind
        its fields (what is measured, what leaves the device, ε per release and per day, k,
        retention, purpose) and alarms.

    Raises:
        PolicyFormatError: the policy lacks a key the page must show.
    """
    kinds_in = _need(policy, "kinds", "policy")
    defaults = policy.get("defaults", {})
    kinds: list[dict[str, Any]] = []
    for kind, spec in kinds_in.items():
        window_s = int(spec.get("window_s", defaults.get("window_s", 900)))
        fields = [_field_model(n, f, kind, window_s, retention)
                  for n, f in _need(spec, "fields", f"kinds.{kind}").items()]
        # what an alarm report carries besides its code (policy alarms.<code>.fields: the fire alarm's temp)
        alarms = [{"code": c, "label": str(a.get("label", c)), "fields": [str(f) for f in a.get("fields", [])]}
                  for c, a in spec.get("alarms", {}).items()]
        # As the store applies it (gateway/storage/row_retention.py): a report's record and its alarm codes
        # go with its kind's longest-kept field.
        records_days = max((int(f["retention_days"]) for f in fields), default=0)
        kinds.append({
            "kind": kind,
            "title": str(spec.get("title", kind)),
            "window_s": window_s,
            "fields": fields,
            "personal_fields": [f["field"] for f in fields if f["personal"]],
            "alarms": alarms,
            "report_records": {"retention_days": records_days, "kept": _record_items(bool(alarms)),
                               "text": _records_text(records_days, bool(alarms))},
            "config": [str(c) for c in spec.get("config", [])],
        })
    return {
        "policy_version": policy.get("version"),
        "statement": str(policy.get("statement", "")),
        "defaults": {
            k: v for k, v in defaults.items() if isinstance(v, int)
        },
        "not_collected": [str(x) for x in policy.get("not_collected", [])],
        "recipients": [{"who": str(r["who"]), "gets": str(r["gets"])} for r in policy.get("recipients", [])],
        "kinds": kinds,
        "kept_without_limit": list(KEPT_WITHOUT_LIMIT),
        "not_covered": not_covered(kinds),
    }


def _names(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def not_covered(kinds: list[dict[str, Any]]) -> list[str]:
    """What the guarantees on the page do not cover (docs/privacy.md), for the kinds of the policy.

    Args:
        kinds: the ``kinds`` of :func:`build_transparency`.

    Returns:
        One sentence per limit: the unencrypted radio, copies outside retention, a privacy ledger that
        can be lost (only when some field is a noisy count), the public device ids and locations.
    """
    titles = [str(k["title"]).lower() for k in kinds]
    what = _names(titles) if titles else "device"
    noisy = [f for k in kinds for f in k["fields"] if f["release"] == "noisy_count"]
    items = [
        f"Radio and cable are signed, not encrypted. Each {what} signs what it sends, so nobody can forge or "
        "change it, but anyone within Bluetooth range (tens of metres, more with a directional antenna) or "
        "tapping its cable can read it: the device's id (also its Bluetooth name), the released values, and "
        "when each message was sent, to the second (so an alarm is dated finer than the minute it carries).",
        "Copies are outside the retention times above: a backup the operators make (civicedge gateway backup) "
        "and the copy of the store made before a software upgrade changes its format "
        "(reports.sqlite.schema-v<N>.bak) keep every value as it was when copied, until the operators "
        "delete them.",
    ]
    if noisy:
        fields = _names([str(f["field"]) for f in noisy])
        items.append(
            f"The per-day ε of the noisy counts ({fields}) holds for as long as a device keeps its privacy "
            "ledger, a file in its memory that records what it released. If the ledger is lost or damaged, "
            "the device is re-flashed, or someone with access to the device deletes the file, the device can "
            "release the same period again with fresh noise, so the per-day bound holds per ledger lifetime. "
            "The gateway stores and publishes only the first release of each period, but a radio listener "
            "may receive both and average them.")
    items.append(
        "Each device's id, kind, zone and location (its coordinates as the city registered them) are public "
        "in the open data.")
    return items


def with_publication(doc: Mapping[str, Any], *, policy_sha256: str | None, publisher: str,
                     contact: str | None) -> dict[str, Any]:
    """The transparency document with what the gateway adds to the policy's content.

    Args:
        doc: from :func:`build_transparency`.
        policy_sha256: SHA-256 (hex) of the policy file the gateway runs with, served at ``policy.json``
            (:mod:`gateway.web.policy_file`); None when it cannot be served.
        publisher: ``[opendata] publisher`` ("not set" when the city set none).
        contact: ``[opendata] contact`` (an e-mail address or URL), None when not set.

    Returns:
        A copy of ``doc`` with ``policy_sha256``, ``publisher`` and ``contact``.
    """
    return {**doc, "policy_sha256": policy_sha256, "publisher": publisher, "contact": contact}


# What the gateway keeps of each report besides its values, until its row is deleted (the `reports` columns
# but the values: docs/gateway.md, Storage; docs/privacy.md, "How long what is kept").
REPORT_RECORD_ITEMS = ["device", "zone", "report number", "report type", "period",
                       "time received (to the millisecond)", "link it came on (serial port or Bluetooth address)",
                       "alarm codes", "firmware version", "the gateway that received it",
                       "fingerprint (SHA-256 hash) of the authenticated message"]

# What outlives every retention, and why (gateway/storage/row_retention.py); none of it holds a measured value.
KEPT_WITHOUT_LIMIT = (
    "For each device, the highest report number deleted (no time, no content): so that an old message "
    "replayed by someone else can never be stored again.",
    "For each device, the highest report number the gateway acknowledged (no time, no content): so that after "
    "a restart it knows which reports the device may still be holding and sending again.",
    "The provenance log: for each report ever stored, its device, report number and a fingerprint (SHA-256 "
    "hash) of the authenticated message; no time or link, and a hash from which the values cannot be read "
    "back without the device's key. Each entry also hashes the one before it, so that the city's operators "
    "or an auditor they give the log to can check that no entry was deleted or changed (civicedge gateway "
    "export-log, then verify-log); the log itself is not published.",
    "The most recent report the gateway received, whatever its age, until a newer one arrives: it keeps report "
    "numbering in order and lets the gateway check its own clock before deleting anything (its values still "
    "go after their own retention).",
    "For each kind of open data (the devices as NGSI-LD and GeoJSON entities, the CSV download), the number of the newest report published "
    "and when it was received, until a newer one is published: so that open data never goes back to older "
    "reports after a restart.",
)


def _record_items(alarms: bool) -> list[str]:
    """REPORT_RECORD_ITEMS of a kind (a kind without alarms has no alarm codes to keep)."""
    return [item for item in REPORT_RECORD_ITEMS if alarms or item != "alarm codes"]


def _records_text(days: int, alarms: bool) -> str:
    what = "Alarms (code and minute) and the record of each report" if alarms else "The record of each report"
    return (f"{what} are kept for {format_days(days)}, the longest retention of this kind's fields, then "
            f"deleted. A report's record: {', '.join(_record_items(alarms))}.")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _field_row(f: Mapping[str, Any]) -> str:
    if f["release"] == "noisy_count":
        n = int(f["releases_per_day"])
        event = f"one counted event of the {f['source']}" if f["source"] else "one counted event"
        privacy = (
            f"ε {_e(f['eps_per_release'])} per release, protecting {_e(event)}, not a person "
            f"(someone counted m times: up to m × ε); "
            f"at most ε {_e(f['eps_per_day_max'])} per day on one device "
            f"({n} release{'s' if n != 1 else ''} a day) for someone counted once in every release; "
            f"noisy counts below k = {_e(f['k'])} are withheld"
        )
        if "release_every_s" in f:
            privacy += f"; released at most every {_e(format_duration(f['release_every_s']))}"
        if "refractory_s" in f:
            privacy += f"; one event per {_e(f['refractory_s'])} s at most (someone who stays is counted again after it)"
    else:
        privacy = "not about people" if not f["personal"] else "people-related"
        if "quantum" in f:
            privacy += f"; rounded to {_e(f['quantum'])} {_e(f['unit'])}"
        if "valid_range" in f:
            low, high = f["valid_range"]
            privacy += (f"; a value outside {_e(low)} to {_e(high)} {_e(f['unit'])} (a faulty sensor) is dropped "
                        f"by the gateway")
        if "release_every_s" in f:
            # e.g. a bin's fill: it steps up at each deposit, so more often it would date them finer
            every = _e(format_duration(f["release_every_s"]))
            privacy += (f"; only its value at the end of each {every}, so its changes tell when people used "
                        f"the device only to the {every} period")
    personal = "yes" if f["personal"] else "no"
    kept = _e(format_days(int(f["retention_days"])))
    if "policy_retention_days" in f:
        kept += f" (policy allows {_e(f['policy_retention_days'])})"
    return (
        f'<tr data-field="{_e(f["field"])}"><th scope="row"><code>{_e(f["field"])}</code></th>'
        f'<td>{_e(f["label"])}</td>'
        f"<td>{_e(f['source'])}</td><td>{personal}</td><td>{_e(f['leaves_device'])}</td>"
        f'<td class="privacy">{privacy}</td><td class="kept">{kept}</td><td>{_e(f["purpose"])}</td></tr>'
    )


def _epsilon_section(doc: Mapping[str, Any]) -> list[str]:
    """What ε protects and how it adds up (only when some field is a noisy count)."""
    noisy = [f for k in doc["kinds"] for f in k["fields"] if f["release"] == "noisy_count"]
    if not noisy:
        return []
    eps = noisy[0]["eps_per_release_milli"]
    sources = " or the ".join(dict.fromkeys(str(f["source"]) for f in noisy if f["source"]))
    of = f" (one event of the {_e(sources)})" if sources else ""
    return [
        "<section id=\"epsilon\"><h2>What the privacy guarantee (ε) protects</h2>",
        f"<p>A noisy count hides <strong>one counted event</strong>{of} in one release: with or without "
        "that event, each published value is about "
        "equally likely, within a factor of <span aria-hidden=\"true\">e<sup>ε</sup></span>"
        "<span class=\"sr-only\">e to the power ε</span>"
        " (smaller ε, more noise). It protects an event, not a "
        "person. Someone who stays triggers the sensor again and is counted again after its refractory "
        "time (the 'one event per … s' below): m counted events of one person cost up to m × ε. "
        "ε also adds up across releases and devices: someone counted once under each of 20 lamps is in "
        f"20 releases, up to ε {_e(format_milli(20 * eps))} at ε {_e(format_milli(eps))} per release. "
        "The per-day figures below are for one device.</p>"
        f"<p>{_e(_days_add_up(noisy))}</p></section>",
    ]


def _days_add_up(noisy: list[Mapping[str, Any]]) -> str:
    """ε adds up across days too, over the days a count is kept (its field with the longest retention)."""
    f = max(noisy, key=lambda x: int(x["retention_days"]) * int(x["eps_per_day_max_milli"]))
    days = int(f["retention_days"])
    return (f"The per-day guarantee adds up across days as well: someone counted by one device every day for "
            f"the {format_days(days)} its {f['field']} counts are kept is in releases worth up to "
            f"ε {format_milli(days * int(f['eps_per_day_max_milli']))} ({days} × ε {f['eps_per_day_max']}).")


def _publisher_section(doc: Mapping[str, Any]) -> list[str]:
    """Who publishes the page and whom to ask (``[opendata]``), when the document has them."""
    if "publisher" not in doc:
        return []
    publisher = str(doc["publisher"])
    contact = doc.get("contact")
    who = (_e(publisher) if publisher != NOT_SET
           else "not set (the city has not named the publisher in the gateway's configuration)")
    ask = _e(contact) if contact else "not set (the city has not given a contact in the gateway's configuration)"
    return [f"<p id=\"publisher\">Published by: <span class=\"publisher\">{who}</span>. "
            f"Contact: <span class=\"contact\">{ask}</span>.</p>"]


def _breakable(text: str, every: int = 16) -> str:
    """``text`` escaped, with a line-break opportunity every ``every`` characters (``<wbr>``, which copies
    as nothing): a 64-digit hash would otherwise widen the page beyond a phone's screen."""
    return "<wbr>".join(_e(text[i:i + every]) for i in range(0, len(text), every))


def _policy_file_section(doc: Mapping[str, Any]) -> list[str]:
    """The policy file this page is generated from, its fingerprint and how to check it."""
    if "policy_sha256" not in doc:
        return []
    version = doc.get("policy_version")
    fmt = (f" The file's \"version\": {_e(version)} is the version of its layout, which devices and gateway "
           "must understand, not of what it says: the fingerprint changes with any change." if version is not None
           else "")
    if doc["policy_sha256"] is None:
        # None only when the policy in force was not read from the policy file (an app given another
        # policy by its caller): there are no file bytes to serve or hash (gateway/web/policy_file.py).
        body = ("The privacy policy this gateway runs with was not read from its policy file, so that file "
                "cannot be served as the policy in force and no fingerprint is shown.")
    else:
        body = ("This page is generated from the privacy policy file this gateway runs with: "
                "<a href=\"policy.json\">policy.json</a>, SHA-256 fingerprint "
                f"<code class=\"policy-sha256\">{_breakable(str(doc['policy_sha256']))}</code>. To check that it is the policy of a "
                "published civicedge release, download it and compare: <code>sha256sum policy.json</code> "
                "prints this fingerprint, as it does for the release's <code>firmware/policy.json</code>.")
    return ["<section id=\"policy-file\"><h2>The policy this page is made from</h2>"
            f"<p>{body}{fmt}</p></section>"]


def render_transparency_html(doc: Mapping[str, Any], *, stylesheet: str = "") -> str:
    """Render the transparency document from :func:`build_transparency` as a standalone HTML page.

    The page is for the public: it links only the other public resources (the open data and its own
    JSON form), never the operator's dashboard or API, and relatively (``opendata``), so the links
    work wherever a reverse proxy publishes it. ``stylesheet`` (CSS text) is inlined in a ``<style>``
    element, so the page needs no other path to be styled; the server allows it by its hash.
    """
    if "</" in stylesheet:
        raise ValueError("an inlined stylesheet must not contain '</' (it would end the <style> element)")
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>What our city sensors collect</title>",
        "<link rel=\"icon\" href=\"data:,\">" + (f"<style>{stylesheet}</style>" if stylesheet else "") + "</head><body>",
        "<header><h1>What our city sensors collect, and why</h1>",
        "<nav><a href=\"opendata\">Open data</a> · <a href=\"transparency.json\">This page as JSON</a></nav>"
        "</header><main>",
        f"<p class=\"statement\">{_e(doc['statement'])}</p>",
    ]
    parts.extend(_publisher_section(doc))
    parts.extend(_epsilon_section(doc))
    for kind in doc["kinds"]:
        heading = f"h-kind-{_e(kind['kind'])}"
        parts.append(f"<section class=\"kind\" id=\"kind-{_e(kind['kind'])}\">"
                     f"<h2 id=\"{heading}\">{_e(kind['title'])}</h2>")
        parts.append(f"<p>Measurements are summarised per window of {_e(format_duration(kind['window_s']))}.</p>")
        parts.append(
            # Eight columns: on a phone the table scrolls in its box, not the whole page (style.css).
            # A scroll box a keyboard can reach and a screen reader names (WCAG 2.1.1).
            f"<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-labelledby=\"{heading}\"><table>"
            f"<caption class=\"sr-only\">Fields of a {_e(kind['title'])} device</caption><thead><tr>"
            + "".join(f"<th scope=\"col\">{h}</th>" for h in (
                "field", "what is measured", "sensor", "about people", "what leaves the device",
                "privacy guarantee", "kept for", "why"))
            + "</tr></thead><tbody>"
        )
        parts.extend(_field_row(f) for f in kind["fields"])
        parts.append("</tbody></table></div>")
        if kind["alarms"]:
            parts.append("<h3>Safety alarms (sent at once, time rounded to the minute)</h3><ul>")
            parts.extend(f"<li><code>{_e(a['code'])}</code>: {_e(a['label'])}"
                         + (f" (carries {', '.join(_e(f) for f in a['fields'])})" if a.get("fields") else
                            " (carries no measurement)")
                         + "</li>" for a in kind["alarms"])
            parts.append("</ul>")
        records = kind.get("report_records")
        if records:
            parts.append(f"<p class=\"records\" data-retention-days=\"{_e(records['retention_days'])}\">"
                         f"{_e(records['text'])}</p>")
        parts.append("</section>")
    if doc.get("kept_without_limit"):
        parts.append("<section id=\"kept-without-limit\"><h2>Kept without a time limit (no values)</h2><ul>")
        parts.extend(f"<li>{_e(x)}</li>" for x in doc["kept_without_limit"])
        parts.append("</ul></section>")
    if doc["not_collected"]:
        parts.append("<section id=\"not-collected\"><h2>Never collected</h2><ul>")
        parts.extend(f"<li>{_e(x)}</li>" for x in doc["not_collected"])
        parts.append("</ul></section>")
    if doc.get("not_covered"):
        parts.append("<section id=\"not-covered\"><h2>What this does not cover</h2><ul>")
        parts.extend(f"<li>{_e(x)}</li>" for x in doc["not_covered"])
        parts.append("</ul></section>")
    parts.extend(_policy_file_section(doc))
    if doc["recipients"]:
        parts.append("<section id=\"recipients\"><h2 id=\"h-recipients\">Who receives what</h2>"
                     "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-labelledby=\"h-recipients\"><table>"
                     "<thead><tr><th scope=\"col\">who</th><th scope=\"col\">gets</th></tr></thead><tbody>")
        parts.extend(f"<tr><th scope=\"row\">{_e(r['who'])}</th><td>{_e(r['gets'])}</td></tr>"
                     for r in doc["recipients"])
        parts.append("</tbody></table></div></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)

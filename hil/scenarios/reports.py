"""Reports of a scenario run: JUnit XML (one testcase per expectation) and a self-contained HTML page
with an inline SVG per board: its stimuli timeline against the values the gateway stored.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.scenarios.checks import CheckResult
from hil.scenarios.runner import ScenarioResult
from hil.sim.stimuli import parse_at_ms, parse_duration_ms

MAX_EVENTS = 5000
WIDTH, LEFT, RIGHT = 900, 150, 20
LANE_H, GAP = 46, 10


# Characters XML 1.0 does not allow anywhere (not even as character references): C0 controls other
# than tab, LF and CR, lone surrogates, U+FFFE and U+FFFF.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with each character XML 1.0 forbids written as a visible ``\\uXXXX`` escape."""
    return _XML_FORBIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _write_xml(root: ET.Element, path: Path) -> Path:
    """Write ``root`` as a well-formed XML file (forbidden characters escaped; see :func:`xml_safe`)."""
    for el in root.iter():
        if el.text is not None:
            el.text = xml_safe(el.text)
        for key, value in el.attrib.items():
            el.set(key, xml_safe(value))
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


LOG_TAIL_LINES = 30
"""Lines of each log (gateway, board consoles) a failed run's reports show."""
LOG_TAIL_CHARS = 4000


def log_tail(path: Path, *, lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``lines`` lines of the log at ``path`` (at most ``chars`` characters), saying how many
    were left out; a note when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"[cannot read {path}: {exc.strerror or exc}]"
    all_lines = text.rstrip("\n").splitlines()
    tail = "\n".join(all_lines[-lines:])
    if len(tail) > chars:
        tail = "…" + tail[-chars:]
    return f"[last {lines} of {len(all_lines)} lines]\n{tail}" if len(all_lines) > lines else tail


def _log_name(key: str) -> str:
    return "gateway log" if key == "gateway" else f"{key} console"


def logs_text(result: ScenarioResult) -> str:
    """The run's log files, one per line (``gateway log: PATH``, ``sl-1 console: PATH``)."""
    return "\n".join(f"{_log_name(key)}: {path}" for key, path in result.logs.items())


def write_junit(result: ScenarioResult, path: Path) -> Path:
    """Write JUnit XML: a testsuite named after the scenario, one testcase per expectation.

    A failed expectation is a ``<failure>`` with what was expected and found; a run that was
    interrupted or whose gateway failed adds an ``<error>`` testcase ``run``, and expectations it
    could not evaluate are ``<skipped>``. The run's logs are suite properties (``log.gateway``,
    ``log.console.<device id>``: file paths); a failed or error testcase names them in its
    ``<system-out>``, and a run that did not pass has their tails in the suite's ``<system-out>``.
    """
    sc = result.scenario
    cases = list(result.checks)
    failures = sum(not c.passed and not c.skipped for c in cases)
    skipped = sum(c.skipped for c in cases)
    errors = list(result.errors) + (["interrupted before the scenario's duration"] if result.interrupted else [])
    suite = ET.Element("testsuite", name=f"scenario.{sc.name}", tests=str(len(cases) + (1 if errors else 0)),
                       failures=str(failures), errors=str(1 if errors else 0), skipped=str(skipped),
                       time=f"{result.wall_s:.3f}",
                       timestamp=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    for k, v in (("description", sc.description), ("duration", sc.duration_text), ("speed", f"{result.speed_run:g}"),
                 ("boards", " ".join(sc.device_ids)), ("workdir", str(result.workdir))):
        ET.SubElement(props, "property", name=k, value=v)
    for key, log_path in result.logs.items():
        name = "log.gateway" if key == "gateway" else f"log.console.{key}"
        ET.SubElement(props, "property", name=name, value=str(log_path))
    logs = logs_text(result)
    for c in cases:
        case = ET.SubElement(suite, "testcase", classname=f"scenario.{sc.name}", name=c.name, time="0")
        if c.skipped:
            ET.SubElement(case, "skipped", message=c.message)
        elif c.passed:
            ET.SubElement(case, "system-out").text = c.message
        else:
            fail = ET.SubElement(case, "failure", message=c.message, type="ExpectationFailed")
            fail.text = c.message
            if logs:
                ET.SubElement(case, "system-out").text = f"logs:\n{logs}"
    if errors:
        case = ET.SubElement(suite, "testcase", classname=f"scenario.{sc.name}", name="run", time=f"{result.wall_s:.3f}")
        ET.SubElement(case, "error", message="; ".join(errors), type="RunError").text = "\n".join(errors)
        if logs:
            ET.SubElement(case, "system-out").text = f"logs:\n{logs}"
    if not result.passed and result.logs:
        ET.SubElement(suite, "system-out").text = "\n\n".join(
            f"--- {_log_name(key)} ({log_path}) ---\n{log_tail(log_path)}" for key, log_path in result.logs.items())
    root = ET.Element("testsuites", name="civicedge hil run", tests=suite.get("tests", "0"),
                      failures=str(failures), errors=suite.get("errors", "0"))
    root.append(suite)
    return _write_xml(root, path)


def write_junit_error(path: Path, *, name: str, message: str, case_name: str = "input",
                      error_type: str = "BadInput") -> Path:
    """Write JUnit XML for a run that could not start (bad scenario or option, or interrupted before
    it started: ``case_name="run"``, ``error_type="RunError"``): one ``<error>`` testcase.

    So a CI job that asked for a report gets one that says why, instead of no file at all.
    """
    suite = ET.Element("testsuite", name=f"scenario.{name}", tests="1", failures="0", errors="1", time="0",
                       timestamp=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    case = ET.SubElement(suite, "testcase", classname=f"scenario.{name}", name=case_name, time="0")
    ET.SubElement(case, "error", message=message, type=error_type).text = message
    root = ET.Element("testsuites", name="civicedge hil run", tests="1", failures="0", errors="1")
    root.append(suite)
    return _write_xml(root, path)


def output_problem(path: Path) -> str | None:
    """Why a report cannot be written at ``path`` (None: it can), checked before a run starts.

    Writability is probed, not guessed from permission bits (root passes ``os.access`` on /proc):
    a missing file is created and removed again, an existing one opened for appending, and a
    missing directory's nearest existing ancestor must take a new directory (made and removed).
    Nothing is left behind. An OS error (a name too long, ...) is a message, never a traceback.
    """
    try:
        return _output_problem(path)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"


def _output_problem(path: Path) -> str | None:
    if path.is_dir():
        return f"{path} is a directory (give a file name)"
    parent = path.parent
    while not parent.exists():  # the nearest existing ancestor must let us create the rest
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    name_max = _name_max(parent)
    for part in path.relative_to(parent).parts:
        if len(os.fsencode(part)) > name_max:
            return f"cannot create {path}: File name too long (a name of more than {name_max} bytes)"
    if path.exists():
        # Opened for appending nothing (the report replaces it after the run); non-blocking so a
        # FIFO without a reader is an error, not a hang.
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
    elif path.parent.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            return f"cannot create {path}: {exc.strerror or exc}"
        os.close(fd)
        os.unlink(path)
    else:
        try:
            probe = tempfile.mkdtemp(prefix=".civicedge-probe-", dir=parent)
        except OSError as exc:
            return f"cannot create {path.parent}: {parent}: {exc.strerror or exc}"
        os.rmdir(probe)
    return None


def _name_max(directory: Path) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


@dataclass
class Series:
    """One lane of a plot: (virtual ms, value) points; ``pulses`` draws ticks instead of steps.

    A NaN value is a stretch with no number (``distance = "none"``: no echo; ``lamp_current =
    "auto"``: the lamp's own current): the step line breaks there and the lane shows the word from
    ``labels`` (by time) instead.
    """

    name: str
    points: list[tuple[int, float]]
    pulses: bool = False
    step: bool = True
    labels: dict[int, str] = field(default_factory=dict)


def stimulus_series(doc: dict[str, Any], start_ms: int, end_ms: int) -> tuple[list[Series], list[tuple[int, str]]]:
    """Expand a stimuli document into per-name series and fault markers between start and end."""
    series: dict[str, Series] = {}
    faults: list[tuple[int, str]] = []

    def add(name: str, t: int, value: Any) -> None:
        if isinstance(value, str) and value.strip().startswith("pulse"):
            # a level set to 0 and pulses of the same input get separate lanes (a step line cannot show pulses)
            series.setdefault(f"{name} pulses", Series(f"{name} pulses", [], pulses=True)).points.append((t, 1.0))
        elif isinstance(value, (int, float)):  # bool too: off/on as 0/1
            series.setdefault(name, Series(name, [])).points.append((t, float(value)))
        elif isinstance(value, str):  # a word for "no number" ("none", "auto"): a gap, labelled
            lane = series.setdefault(name, Series(name, []))
            lane.points.append((t, math.nan))
            lane.labels[t] = value.strip()

    for name, value in doc.get("set", {}).items():
        add(name, start_ms, value)
    for entry in doc.get("at", []):
        at = parse_at_ms(entry["time"], start_ms)
        every = parse_duration_ms(entry["every"]) if "every" in entry else None
        until = parse_at_ms(entry["until"], start_ms) if "until" in entry else end_ms
        times = [at]
        if every:
            times = []
            t = at
            while t <= min(until, end_ms) and len(times) < MAX_EVENTS:
                times.append(t)
                t += every
        for t in times:
            if t > end_ms:
                continue
            for name, value in entry.items():
                if name in ("time", "every", "until"):
                    continue
                if name == "fault":
                    for line in [value] if isinstance(value, str) else value:
                        faults.append((t, str(line)))
                else:
                    add(name, t, value)
    for s in series.values():
        s.points.sort(key=lambda p: p[0])  # stable: of two values at one time the later entry's wins
    return list(series.values()), sorted(faults)


def _x(t: int, t0: int, t1: int) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (t - t0) / max(1, t1 - t0)


def _lane(s: Series, y: float, t0: int, t1: int, color: str) -> list[str]:
    out = [f'<text x="{LEFT - 8}" y="{y + LANE_H / 2 + 4:.1f}" text-anchor="end" class="lbl">{html.escape(s.name)}</text>',
           f'<line x1="{LEFT}" y1="{y + LANE_H:.1f}" x2="{WIDTH - RIGHT}" y2="{y + LANE_H:.1f}" class="axis"/>']
    if not s.points:
        return out
    if s.pulses:
        for t, _ in s.points:
            x = _x(t, t0, t1)
            out.append(f'<line x1="{x:.1f}" y1="{y + 6:.1f}" x2="{x:.1f}" y2="{y + LANE_H:.1f}" stroke="{color}" '
                       f'stroke-width="1"/>')
        out.append(f'<text x="{WIDTH - RIGHT}" y="{y + 10:.1f}" text-anchor="end" class="rng">{len(s.points)} pulses</text>')
        return out
    finite = [v for _, v in s.points if not math.isnan(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    span = (hi - lo) or 1.0

    def yv(v: float) -> float:
        return y + LANE_H - 4 - (LANE_H - 10) * (v - lo) / span

    lines: list[list[str]] = []  # one polyline per stretch between gaps
    pts: list[str] = []
    gap_label: str | None = None
    for i, (t, v) in enumerate(s.points):
        x = _x(t, t0, t1)
        if math.isnan(v):
            label = s.labels.get(t, "?")
            if pts:  # the last value holds up to the gap
                if s.step:
                    pts.append(f"{x:.1f},{yv(s.points[i - 1][1]):.1f}")
                lines.append(pts)
                pts = []
            if label != gap_label:  # one marker per stretch of the same word
                end = next((u for u, w in s.points[i + 1:] if not math.isnan(w) or s.labels.get(u) != label), t1)
                out += _gap(label, x, _x(end, t0, t1), y, s.name, t)
            gap_label = label
            continue
        gap_label = None
        if s.step and pts:
            pts.append(f"{x:.1f},{yv(s.points[i - 1][1]):.1f}")
        pts.append(f"{x:.1f},{yv(v):.1f}")
    if pts:
        if s.step:
            pts.append(f"{_x(t1, t0, t1):.1f},{yv(s.points[-1][1]):.1f}")
        lines.append(pts)
    for line in lines:
        out.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    if not s.step:
        for t, v in s.points:
            out.append(f'<circle cx="{_x(t, t0, t1):.1f}" cy="{yv(v):.1f}" r="3" fill="{color}">'
                       f'<title>{html.escape(s.name)} = {v:g} at {_clock(t)}</title></circle>')
    words = ", ".join(sorted(set(s.labels.values())))
    rng = ", ".join(part for part in (f"{lo:g} … {hi:g}" if finite else "", words) if part)
    out.append(f'<text x="{WIDTH - RIGHT}" y="{y + 10:.1f}" text-anchor="end" class="rng">{html.escape(rng)}</text>')
    return out


def _gap(label: str, x0: float, x1: float, y: float, name: str, t: int) -> list[str]:
    """A stretch of a lane without a number: a grey band with the word (e.g. ``none``) at its start."""
    return [f'<rect x="{x0:.1f}" y="{y + 6:.1f}" width="{max(1.0, x1 - x0):.1f}" height="{LANE_H - 10}" class="gap">'
            f'<title>{html.escape(name)} = {html.escape(label)} from {_clock(t)}</title></rect>',
            f'<text x="{x0 + 3:.1f}" y="{y + LANE_H / 2 + 4:.1f}" class="gapl">{html.escape(label)}</text>']


# Round steps of the time axis, in ms: 1 ms .. 30 s for short runs, then 1 min .. 1 d.
TICK_STEPS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000,
                 *(m * 60_000 for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)))


def _tick_step(t0: int, t1: int, most: int) -> int:
    span = max(1, t1 - t0)
    step = next((s for s in TICK_STEPS_MS if span / s <= most), TICK_STEPS_MS[-1])
    while span / step > most:
        step *= 2
    return step


def axis_ticks(t0: int, t1: int, most: int = 8) -> list[int]:
    """Time-axis ticks (unix ms) on a round step (1 ms .. 30 s; 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6,
    12 h, 1 d) on the UTC grid, at most ``most`` of them within ``t0..t1``: 20:00, 20:05, 20:10, not
    20:03, 20:06. A span of a few seconds or less still gets ticks, on a step of seconds or ms."""
    step = _tick_step(t0, t1, most)
    first = -(-t0 // step) * step
    return list(range(first, t1 + 1, step))


def tick_labels(t0: int, t1: int, most: int = 8) -> list[tuple[int, str]]:
    """:func:`axis_ticks` with their labels: ``HH:MM``; with the date (``11-22 00:00``) when
    ``t0..t1`` crosses a UTC midnight, so the ticks of a multi-day plot are not all "00:00"; with
    seconds (``HH:MM:SS``) or milliseconds (``HH:MM:SS.mmm``) on steps shorter than a minute or a second."""
    step = _tick_step(t0, t1, most)
    fmt = "%H:%M" if step % 60_000 == 0 else "%H:%M:%S"
    if _day(t0) != _day(t1):
        fmt = "%m-%d " + fmt
    labels = []
    for t in axis_ticks(t0, t1, most):
        text = dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc).strftime(fmt)
        labels.append((t, text + (f".{t % 1000:03d}" if step % 1000 else "")))
    return labels


def _day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date()


def _span_text(t0: int, t1: int) -> str:
    """``20:00–20:20``, or with dates when the span crosses a UTC midnight."""
    if _day(t0) == _day(t1):
        return f"{_clock(t0)}–{_clock(t1)}"
    fmt = "%Y-%m-%d %H:%M"
    return "–".join(dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc).strftime(fmt) for t in (t0, t1))


def _clock(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%H:%M")


# Width of a character of the 10 px axis labels (class rng), a little more than a digit's in the usual
# sans-serif fonts: enough to keep a label inside the plot.
LABEL_CHAR_PX = 6.5
LABEL_MARGIN_PX = 2


def _label_position(x: float, label: str) -> tuple[float, str]:
    """``(x, text-anchor)`` for a tick label centred on ``x`` unless that would cut it at an edge of the
    SVG (the last tick sits on the right end of the axis, 20 px from the edge: ``11-22 00:20`` is wider
    than 40 px); there it is aligned to the edge instead."""
    half = len(label) * LABEL_CHAR_PX / 2
    if x + half > WIDTH - LABEL_MARGIN_PX:
        return WIDTH - LABEL_MARGIN_PX, "end"
    if x - half < LABEL_MARGIN_PX:
        return LABEL_MARGIN_PX, "start"
    return x, "middle"


def board_svg(stimuli: list[Series], faults: list[tuple[int, str]], released: list[Series], t0: int, t1: int) -> str:
    """An SVG of one board: stimuli lanes (blue), then released-value lanes (green), faults in red."""
    lanes = len(stimuli) + len(released)
    height = 30 + lanes * (LANE_H + GAP) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">']
    y = 20.0
    out.append(f'<text x="4" y="14" class="sec">stimuli (blue) vs values stored by the gateway (green, at the end of their period), '
               f'{_span_text(t0, t1)} UTC virtual</text>')
    for s in stimuli:
        out += _lane(s, y, t0, t1, "#1f6fb2")
        y += LANE_H + GAP
    for s in released:
        out += _lane(s, y, t0, t1, "#2e8b57")
        y += LANE_H + GAP
    for t, label in tick_labels(t0, t1):
        x, anchor = _label_position(_x(t, t0, t1), label)
        out.append(f'<text x="{x:.1f}" y="{y + 12:.1f}" text-anchor="{anchor}" class="rng">{label}</text>')
    for t, line in faults:
        x = _x(t, t0, t1)
        out.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{y:.1f}" stroke="#c0392b" stroke-dasharray="4 3">'
                   f'<title>fault at {_clock(t)}: {html.escape(line)}</title></line>')
        out.append(f'<text x="{x + 3:.1f}" y="{y - 2:.1f}" class="flt">{html.escape(line)}</text>')
    out.append("</svg>")
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.ok{color:#2e7d32;font-weight:bold}
.bad{color:#c62828;font-weight:bold}.lbl{font-size:12px}.rng{font-size:10px;fill:#666}.sec{font-size:12px;fill:#444}
.flt{font-size:10px;fill:#c0392b}.axis{stroke:#ddd}.gap{fill:#eee}.gapl{font-size:10px;fill:#555;font-style:italic}
pre{background:#f6f6f6;padding:6px;overflow-x:auto;max-height:30em}"""


def _verdict(check: CheckResult) -> str:
    return "skipped" if check.skipped else "pass" if check.passed else "FAIL"


def render_html(result: ScenarioResult) -> str:
    """The HTML report (self-contained: inline CSS and SVG, no external resources)."""
    sc = result.scenario
    t0 = sc.start_ms
    t1 = max(result.virtual_end_ms, sc.start_ms + sc.duration_ms)
    verdict = '<span class="ok">PASSED</span>' if result.passed else '<span class="bad">FAILED</span>'
    rows = "".join(
        f'<tr><td class="{"ok" if c.passed else "bad"}">{_verdict(c)}</td>'
        f"<td>{html.escape(c.name)}</td><td>{html.escape(c.message)}</td></tr>" for c in result.checks)
    errs = "".join(f'<li class="bad">{html.escape(e)}</li>' for e in result.errors)
    if result.interrupted:
        errs += '<li class="bad">interrupted before the scenario\'s duration</li>'
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>scenario {html.escape(sc.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Scenario {html.escape(sc.name)} — {verdict}</h1>",
        f"<p>{html.escape(sc.description)}</p>",
        f"<p>Virtual {_clock(t0)} + {html.escape(sc.duration_text)} at {result.speed_run:g}× real time; "
        f"{len(sc.device_ids)} board(s); {len(result.data.reports)} reports and {len(result.data.alarms)} alarms "
        f"stored; {result.wall_s:.0f} s wall time. Work directory: <code>{html.escape(str(result.workdir))}</code></p>",
        f"<ul>{errs}</ul>" if errs else "",
        f"<h2>Expectations</h2><table><tr><th></th><th>expectation</th><th>detail</th></tr>{rows}</table>",
        _logs_html(result),
    ]
    for group in sc.boards:
        stim, faults = stimulus_series(group.stimuli_doc, t0, t1)
        for dev in group.ids:
            fields: dict[str, Series] = {}
            for d, f, w, length, v in result.data.readings:
                # plotted when released: at the end of its period (window, hour, 6 h, day)
                if d == dev and t0 <= (w + length) * 1000 <= t1:
                    fields.setdefault(f, Series(f"{f} (stored)", [], step=False)).points.append(
                        ((w + length) * 1000, float(v)))
            alarm_pts = [(w * 1000, 1.0) for d, _c, w in result.data.alarms if d == dev and t0 <= w * 1000 <= t1]
            released = list(fields.values())
            if alarm_pts:
                released.append(Series("alarms", alarm_pts, pulses=True))
            gen = len(result.generated.get(dev, ()))
            stored = sum(1 for r in result.data.reports if r[0] == dev)
            parts.append(f"<h2>{html.escape(dev)} <small>({html.escape(Path(group.board).stem)}, "
                         f"{group.link}, zone {html.escape(group.zone)}) — {gen} reports generated, "
                         f"{stored} stored</small></h2>")
            parts.append(board_svg(stim, faults, released, t0, t1))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def _logs_html(result: ScenarioResult) -> str:
    """The log files (links), with their tails (the gateway's open) when the run did not pass."""
    if not result.logs:
        return ""
    items = []
    for key, path in result.logs.items():
        link = f'<a href="{html.escape(path.resolve().as_uri())}"><code>{html.escape(str(path))}</code></a>'
        if result.passed:
            items.append(f"<li>{html.escape(_log_name(key))}: {link}</li>")
            continue
        opened = " open" if key == "gateway" else ""
        items.append(f"<li><details{opened}><summary>{html.escape(_log_name(key))}: {link} (last "
                     f"{LOG_TAIL_LINES} lines)</summary><pre>{html.escape(log_tail(path))}</pre></details></li>")
    return f"<h2>Logs</h2><ul>{''.join(items)}</ul>"


def write_html(result: ScenarioResult, path: Path) -> Path:
    """Write the HTML report to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path

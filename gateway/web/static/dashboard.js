// civicedge dashboard: vanilla JS, self-drawn SVG; everything from this gateway (no CDN, no tiles).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
// Grey #6e7781: 4.5:1 on the map's #fbfcfd (graphics need 3:1) and 4.6:1 under the revoked marker's white "×".
const GREY = "#6e7781";
const STATUS_COLOR = { ok: "#1a7f37", alarm: "#cf222e", stale: "#bc4c00", never: GREY, revoked: GREY, retired: GREY };
// Not by colour alone: a mark inside the marker (the legend names them); "never" is drawn hollow.
const STATUS_MARK = { alarm: "!", stale: "?", revoked: "×", retired: "–" };
// Problem devices first: an operator looks for these among hundreds of "ok" rows.
const STATUS_ORDER = { alarm: 0, stale: 1, never: 2, revoked: 3, retired: 4, ok: 5 };
const MAP_LABELS_MAX = 30;  // more names than this overlap into an unreadable blot: the fleet table lists them
const PLAN_REFRESH_MS = 5 * 60 * 1000;
const REFRESH_MS = 30 * 1000;
// A gateway that takes the connection but never answers must still end in the "old data" banner.
const DASHBOARD_TIMEOUT_MS = 20 * 1000;
// A plan may take the planner's time limit (up to 300 s) plus its queue: the panel waits longer.
const PLAN_TIMEOUT_MS = 6 * 60 * 1000;
// A refused plan (429/503) is asked again after its Retry-After, kept within these bounds.
const RETRY_MIN_MS = 5 * 1000, RETRY_MAX_MS = 10 * 60 * 1000, RETRY_DEFAULT_MS = 60 * 1000;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

let project = null;   // (lat, lon) -> [x, y] of the current map, set by renderMap
let lastPlan = null;  // the collection plan, drawn over the map
let lastDevices = null;
let lastGenerated = null;  // the gateway's time of the last /api/dashboard answer (ISO, UTC)
let lastData = null;       // the last /api/dashboard answer (kept on screen, marked stale, when a refresh fails)
let planRound = null;      // {roundStart, madeAt} of the plan on screen: a new round re-plans at once
// Routes differ by dash pattern as well as colour (not by colour alone), and use none of the status colours
// (green, red, orange, grey). Six patterns over five colours: 30 vehicles before a pair repeats.
const ROUTE_COLORS = ["#0969da", "#8250df", "#bf3989", "#1b1f24", "#0a3069"];
const ROUTE_DASHES = ["8 4", "2 3", "12 3 2 3", "4 4", "14 4 2 4 2 4", "1 6"];
const routeStyle = (i) => ({ stroke: ROUTE_COLORS[i % ROUTE_COLORS.length], "stroke-dasharray": ROUTE_DASHES[i % ROUTE_DASHES.length] });

function drawPlanOnMap() {
  const svg = document.getElementById("map");
  for (const old of svg.querySelectorAll(".plan-path, .plan-depot")) old.remove();
  const legend = document.getElementById("plan-legend");
  const key = document.getElementById("route-key");
  const drawn = project && lastPlan && lastPlan.depot && Array.isArray(lastPlan.routes)
    && lastPlan.routes.some((r) => Array.isArray(r.stops) && r.stops.length > 0);
  if (legend) legend.hidden = !drawn;
  clear(key);
  key.hidden = !drawn;
  // A depot with no route to draw says nothing: it is drawn only with its routes (and then in the legend).
  if (!drawn) return;
  const depot = project(lastPlan.depot.lat, lastPlan.depot.lon);
  lastPlan.routes.forEach((route, i) => {
    const stops = Array.isArray(route.stops) ? route.stops : [];
    if (stops.length === 0) return;
    const pts = [depot, ...stops.map((s) => project(s.lat, s.lon)), depot];
    const style = routeStyle(i);
    const line = svgEl("polyline", { points: pts.map((q) => q.join(",")).join(" "), fill: "none", ...style,
      "stroke-width": 2, class: "plan-path", "data-vehicle": route.vehicle });
    line.appendChild(svgEl("title", {}, `vehicle ${route.vehicle}: ${stops.map((s) => s.bin_id).join(" → ")}`));
    svg.insertBefore(line, svg.firstChild);
    // The key: a sample of the line next to the vehicle's name.
    const item = el("li", { "data-vehicle": String(route.vehicle) });
    const sample = svgEl("svg", { viewBox: "0 0 40 10", "aria-hidden": "true", focusable: "false" });
    sample.appendChild(svgEl("line", { x1: 0, y1: 5, x2: 40, y2: 5, ...style, "stroke-width": 2 }));
    item.appendChild(sample);
    item.appendChild(document.createTextNode(`vehicle ${route.vehicle} (${plural(stops.length, "stop")})`));
    key.appendChild(item);
  });
  const d = svgEl("rect", { x: depot[0] - 5, y: depot[1] - 5, width: 10, height: 10, fill: "none",
    stroke: "#1b1f24", "stroke-width": 2, class: "plan-depot" });
  d.appendChild(svgEl("title", {}, "depot"));
  svg.appendChild(d);
}

function isoShort(iso) { return iso ? iso.replace("T", " ").replace("Z", "") : "never"; }

// An age in words, relative to the gateway's clock (not the browser's, which may be off or in another zone).
function ago(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

function renderSummary(data) {
  const box = document.getElementById("summary");
  const items = [["devices", data.devices.length]];
  for (const s of ["ok", "alarm", "stale", "never", "revoked", "retired"]) items.push([s, data.status_counts[s] || 0]);
  items.push(["open alarms", data.alarms.length]);
  // The same boxes every time, only their numbers change: a screen reader reading them keeps its place.
  if (box.children.length !== items.length) {
    clear(box);
    for (const [label] of items) {
      const div = el("div", { "data-summary": label });
      div.appendChild(el("span", { class: "count" }));
      div.appendChild(el("span", { class: "muted" }, label));
      box.appendChild(div);
    }
  }
  items.forEach(([, n], i) => setText(box.children[i].firstChild, String(n)));
}

function renderMap(devices) {
  lastDevices = devices;
  const svg = document.getElementById("map");
  clear(svg);
  const W = 600, H = 400, pad = 30;
  const placed = devices.filter((d) => Number.isFinite(d.lat) && Number.isFinite(d.lon) && !(d.lat === 0 && d.lon === 0));
  if (placed.length === 0) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6a737d" }, "no device positions"));
    svg.setAttribute("aria-label", "Map: no device positions");
    project = null;
    drawPlanOnMap();  // hides the plan legend: nothing is drawn
    return;
  }
  // The extent covers the devices and, once a plan is known, its depot.
  const pts = placed.map((d) => [d.lat, d.lon]);
  if (lastPlan && lastPlan.depot && Array.isArray(lastPlan.routes) && lastPlan.routes.length) pts.push([lastPlan.depot.lat, lastPlan.depot.lon]);
  let minLat = Math.min(...pts.map((p) => p[0])), maxLat = Math.max(...pts.map((p) => p[0]));
  let minLon = Math.min(...pts.map((p) => p[1])), maxLon = Math.max(...pts.map((p) => p[1]));
  const midLat = (minLat + maxLat) / 2;
  // Equirectangular projection with cos(latitude) scaling keeps streets' proportions.
  const kx = Math.cos((midLat * Math.PI) / 180);
  // At least ~100 m around the devices, so one device (or a row) sits in the middle.
  const minSpan = 0.001;
  if (maxLat - minLat < minSpan) { const c = (minLat + maxLat) / 2; minLat = c - minSpan / 2; maxLat = c + minSpan / 2; }
  if ((maxLon - minLon) * kx < minSpan) { const c = (minLon + maxLon) / 2; minLon = c - minSpan / 2 / kx; maxLon = c + minSpan / 2 / kx; }
  const spanX = (maxLon - minLon) * kx, spanY = maxLat - minLat;
  const scale = Math.min((W - 2 * pad) / spanX, (H - 2 * pad) / spanY);
  const offX = (W - spanX * scale) / 2, offY = (H - spanY * scale) / 2;
  project = (lat, lon) => [offX + (lon - minLon) * kx * scale, H - (offY + (lat - minLat) * scale)];
  for (let i = 0; i <= 4; i++) {
    const y = pad + ((H - 2 * pad) * i) / 4, x = pad + ((W - 2 * pad) * i) / 4;
    svg.appendChild(svgEl("line", { x1: pad, y1: y, x2: W - pad, y2: y, stroke: "#eef1f4" }));
    svg.appendChild(svgEl("line", { x1: x, y1: pad, x2: x, y2: H - pad, stroke: "#eef1f4" }));
  }
  const labels = placed.length <= MAP_LABELS_MAX;
  const counts = {};
  // Problem devices are drawn last, on top: an alarm is not hidden under its ok neighbours.
  const drawOrder = placed.slice().sort((a, b) => (STATUS_ORDER[b.status] ?? 9) - (STATUS_ORDER[a.status] ?? 9));
  for (const d of drawOrder) {
    counts[d.status] = (counts[d.status] || 0) + 1;
    const [x, y] = project(d.lat, d.lon);
    const color = STATUS_COLOR[d.status] || GREY;
    const g = svgEl("g", { class: "device-marker", "data-device": d.id, "data-status": d.status });
    const title = svgEl("title", {}, `${d.id} (${d.kind}, ${d.zone}): ${d.status}`);
    g.appendChild(title);
    const hollow = d.status === "never";
    const shape = { fill: hollow ? "#ffffff" : color, stroke: color, "stroke-width": hollow ? 2 : 0 };
    if (d.kind === "bin") g.appendChild(svgEl("rect", { x: x - 6, y: y - 6, width: 12, height: 12, ...shape }));
    else g.appendChild(svgEl("circle", { cx: x, cy: y, r: 7, ...shape }));
    if (STATUS_MARK[d.status]) {
      g.appendChild(svgEl("text", { x, y: y + 4, "text-anchor": "middle", "font-size": 11, "font-weight": 700,
        fill: "#ffffff", class: "status-mark" }, STATUS_MARK[d.status]));
    }
    if (labels) {
      // Near the right edge the name goes on the marker's left, not past the frame.
      const left = x > W - 90;
      g.appendChild(svgEl("text", { x: left ? x - 9 : x + 9, y: y + 4, "text-anchor": left ? "end" : "start",
        class: "map-label", fill: "#1b1f24" }, d.id));
    }
    svg.appendChild(g);
  }
  const summary = Object.entries(counts).sort((a, b) => STATUS_ORDER[a[0]] - STATUS_ORDER[b[0]])
    .map(([s, n]) => `${n} ${s}`).join(", ");
  svg.setAttribute("aria-label", `Map of ${plural(placed.length, "device")}: ${summary}`);
  drawPlanOnMap();
}

function sortedDevices(devices, how) {
  const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const list = devices.slice();
  if (how === "id") return list.sort(byId);
  if (how === "seen") return list.sort((a, b) => ((a.last_seen ?? -1) - (b.last_seen ?? -1)) || byId(a, b));
  return list.sort((a, b) => ((STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9)) || byId(a, b));
}

function latestText(d, now) {
  const at = d.latest_at || {};
  return Object.entries(d.latest).map(([k, v]) => {
    const unit = units[`${d.kind}.${k}`];
    const age = Number.isFinite(at[k]) && now ? ` (${ago(now - at[k])})` : "";
    return `${k}=${v}${unit ? ` ${unit}` : ""}${age}`;
  }).join(", ");
}

function fleetRow(id) {
  const tr = el("tr", { "data-device": id });
  const idCell = el("td");
  idCell.appendChild(el("a", { href: `/api/devices/${encodeURIComponent(id)}` }, id));
  tr.appendChild(idCell);
  for (let i = 0; i < 6; i++) tr.appendChild(el("td"));
  return tr;
}

// Rows are updated in place: a device's row (and its link) stays the same element from refresh to
// refresh, only changed cell text is written, and rows move only when the order changes. A keyboard
// or screen-reader user's focus and reading position survive the 30-second refresh (WCAG 2.2.2).
function renderFleet(devices, now) {
  const body = document.querySelector("#fleet tbody");
  const active = document.activeElement;
  const focused = active && body.contains(active) ? active : null;
  const filter = document.getElementById("fleet-filter").value.trim().toLowerCase();
  const how = document.getElementById("fleet-sort").value;
  const shown = sortedDevices(devices, how).filter((d) => !filter
    || [d.id, d.kind, d.zone, d.status].some((t) => String(t).toLowerCase().includes(filter)));
  const old = new Map([...body.querySelectorAll("tr[data-device]")].map((tr) => [tr.dataset.device, tr]));
  const rows = [];
  for (const d of shown) {
    const tr = old.get(d.id) || fleetRow(d.id);
    old.delete(d.id);
    const cells = tr.children;
    const seen = d.last_seen_iso && now ? `${isoShort(d.last_seen_iso)} (${ago(now - d.last_seen)})` : isoShort(d.last_seen_iso);
    const texts = [d.kind, d.zone, d.status, seen, d.link || "—", latestText(d, now) || "—"];
    texts.forEach((t, i) => setText(cells[i + 1], String(t)));
    const cls = `status status-${d.status}`;
    if (cells[3].className !== cls) cells[3].className = cls;
    rows.push(tr);
  }
  for (const tr of old.values()) tr.remove();
  // Put in order moving as few rows as possible: a row already next in place stays; one out of place is
  // moved in front of it. The focused row is never moved (a moved element loses focus, and focusing
  // it again makes a screen reader say it again): the rows in front of it that belong after it are
  // moved to the end instead, and put in place from there.
  const focusedRow = focused ? focused.closest("tr") : null;
  let next = body.firstElementChild;
  for (const tr of rows) {
    if (tr === focusedRow) {
      while (next && next !== tr) { const later = next; next = next.nextElementSibling; body.appendChild(later); }
    }
    if (tr === next) next = next.nextElementSibling;
    else body.insertBefore(tr, next);
  }
  setText(document.getElementById("fleet-count"),
    shown.length === devices.length ? plural(devices.length, "device") : `${shown.length} of ${devices.length} devices`);
}

let knownAlarms = null;  // keys of the alarms shown by the last answer (null before the first)
const alarmKey = (a) => `${a.device}\u0000${a.code}\u0000${a.at_iso}`;

function renderAlarms(alarms) {
  const list = document.getElementById("alarms");
  // Unchanged alarms keep their list items (a screen reader's place in the list is kept).
  const old = new Map([...list.querySelectorAll("li[data-alarm]")].map((li) => [li.dataset.key, li]));
  const items = alarms.map((a) => {
    const key = `${alarmKey(a)}\u0000${a.zone}`;
    const li = old.get(key);
    if (li) { old.delete(key); return li; }
    const item = el("li", { "data-alarm": a.code, "data-device": a.device, "data-key": key });
    item.appendChild(el("span", { class: "alarm-code" }, a.code));
    item.appendChild(document.createTextNode(` ${a.device} (${a.zone}) since ${isoShort(a.at_iso)}`));
    return item;
  });
  if (items.length === 0) {
    const none = list.querySelector("li:not([data-alarm])");
    list.replaceChildren(none || el("li", { class: "muted" }, "No open alarms"));
  } else if (items.length !== list.children.length || items.some((li, i) => list.children[i] !== li)) {
    list.replaceChildren(...items);
  }
  announceNewAlarms(alarms);
}

// An alarm that opens while the page is open is said once by a polite live region ("New alarm: bin-02
// fire"); the alarms already open at the first load are not (the page lists them). The region is
// emptied at the next refresh, so the next new alarm is said even if its words are the same.
function announceNewAlarms(alarms) {
  const news = document.getElementById("alarm-news");
  const fresh = knownAlarms === null ? [] : alarms.filter((a) => !knownAlarms.has(alarmKey(a)));
  knownAlarms = new Set(alarms.map(alarmKey));
  const words = fresh.map((a) => `${a.device} ${a.code}`).join(", ");
  setText(news, fresh.length === 0 ? "" : `New alarm${fresh.length === 1 ? "" : "s"}: ${words}`);
}

function axes(svg, W, H, pad, maxV) {
  svg.appendChild(svgEl("line", { x1: pad, y1: H - pad, x2: W - 5, y2: H - pad, stroke: GREY, class: "axis" }));
  svg.appendChild(svgEl("line", { x1: pad, y1: 5, x2: pad, y2: H - pad, stroke: GREY, class: "axis" }));
  svg.appendChild(svgEl("text", { x: pad - 4, y: 14, "font-size": 10, "text-anchor": "end" }, String(maxV)));
  svg.appendChild(svgEl("text", { x: pad - 4, y: H - pad, "font-size": 10, "text-anchor": "end" }, "0"));
}

// Release period (seconds) of each charted field, "kind.field" -> period_s, from /transparency.json
// (generated from the policy): a 6-hour count is one point per 6 hours, not an hourly value.
let periods = {};
let units = {};  // "kind.field" -> unit, from the same document

function periodName(s) {
  for (const [unit, name] of [[86400, "day"], [3600, "hour"], [60, "minute"]]) {
    if (s % unit === 0) return s === unit ? name : `${s / unit} ${name}s`;
  }
  return `${s} seconds`;
}

// The JSON of `url`, or null (an error status); throws when the gateway does not answer within `ms`.
async function timedJson(url, ms) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    const res = await fetch(url, { signal: ctl.signal });
    return res.ok ? await res.json() : null;
  } finally {
    clearTimeout(timer);
  }
}

async function loadPeriods() {
  try {
    // Timed: a gateway that never answers must not hold back the first refresh.
    const doc = await timedJson("/transparency.json", DASHBOARD_TIMEOUT_MS);
    if (!doc) return;
    for (const k of doc.kinds) {
      for (const f of k.fields) {
        periods[`${k.kind}.${f.field}`] = f.period_s;
        if (f.unit) units[`${k.kind}.${f.field}`] = f.unit;
      }
    }
  } catch (e) {
    return;  // the captions keep their text without a period, the points their start time
  }
  for (const cap of document.querySelectorAll("figcaption[data-field]")) {
    const p = periods[`${cap.dataset.kind}.${cap.dataset.field}`];
    if (p) cap.textContent = cap.dataset.text.replace("{period}", periodName(p));
  }
}

function hhmm(t) { return new Date(t * 1000).toISOString().slice(11, 16); }

function chartLabel(svg, text) {
  svg.setAttribute("role", "img");
  const cap = svg.parentNode.querySelector("figcaption");
  svg.setAttribute("aria-label", `${cap ? cap.textContent : "chart"}: ${text}`);
}

function lineChart(id, points, color, periodS) {
  const svg = document.getElementById(id);
  clear(svg);
  const W = 400, H = 200, pad = 34;
  if (!points || points.length === 0) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6a737d" }, "no data yet"));
    chartLabel(svg, "no data yet");
    return;
  }
  const maxV = Math.max(1, ...points.map((p) => p.value));
  // A point spans its field's release period, at least its hour: the series are hourly, so a field
  // released every 15-minute window is plotted as the hour's sum (06:00–07:00, not 06:00–06:15).
  const spanS = periodS ? Math.max(periodS, 3600) : 0;
  // The axis ends where the last point's period ends (a 6-hour count started at 12:00 runs to 18:00).
  const t0 = points[0].hour, t1 = Math.max(points[points.length - 1].hour + spanS, t0 + 3600);
  axes(svg, W, H, pad, maxV);
  const xy = points.map((p) => [pad + ((p.hour - t0) / (t1 - t0)) * (W - pad - 10), H - pad - (p.value / maxV) * (H - pad - 10)]);
  svg.appendChild(svgEl("polyline", { points: xy.map((q) => q.join(",")).join(" "), fill: "none", stroke: color, "stroke-width": 2, class: "series" }));
  xy.forEach(([x, y], i) => {
    const c = svgEl("circle", { cx: x, cy: y, r: 3, fill: color, class: "point" });
    const h = points[i].hour;
    const when = spanS ? `${hhmm(h)}–${hhmm(h + spanS)}` : hhmm(h);
    c.appendChild(svgEl("title", {}, `${when} UTC: ${points[i].value}`));
    svg.appendChild(c);
  });
  // The values are in the label too: the points' tooltips are not reachable by keyboard or screen reader.
  const vals = points.map((p) => `${hhmm(p.hour)} ${p.value}`);
  chartLabel(svg, `${plural(points.length, "point")}, ${hhmm(points[0].hour)} to ${hhmm(t1)} UTC, highest ${maxV}`
    + (points.length <= 48 ? `; ${vals.join(", ")}` : ""));
  svg.appendChild(svgEl("text", { x: pad, y: H - 8, "font-size": 10 }, new Date(t0 * 1000).toISOString().slice(11, 16)));
  svg.appendChild(svgEl("text", { x: W - 10, y: H - 8, "font-size": 10, "text-anchor": "end" }, new Date(t1 * 1000).toISOString().slice(11, 16) + " UTC"));
}

function fillChart(devices, since) {
  const svg = document.getElementById("chart-fill");
  clear(svg);
  const W = 400, H = 200, pad = 34;
  const all = devices.filter((d) => d.kind === "bin" && d.latest.fill !== undefined);
  // Only values of the charts' window: a 38-hour-old fill is not "the last 24 hours" (the fleet table
  // still shows it, with its age).
  const at = (d) => (d.latest_at || {}).fill;
  const bins = all.filter((d) => !Number.isFinite(since) || !Number.isFinite(at(d)) || at(d) > since);
  const older = all.length - bins.length;
  document.getElementById("fill-note").textContent =
    older ? `; ${plural(older, "bin")} with an older value not shown (see the fleet table)` : "";
  if (bins.length === 0) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6a737d" }, "no data yet"));
    chartLabel(svg, "no data yet");
    return;
  }
  axes(svg, W, H, pad, 100);
  const bw = Math.min(40, (W - pad - 10) / bins.length - 4);
  bins.forEach((d, i) => {
    const v = Math.max(0, Math.min(100, d.latest.fill));
    const h = (v / 100) * (H - pad - 10);
    const x = pad + 4 + i * (bw + 4);
    const color = v >= 80 ? "#cf222e" : v >= 50 ? "#bc4c00" : "#1a7f37";
    const r = svgEl("rect", { x, y: H - pad - h, width: bw, height: h, fill: color, class: "bar", "data-device": d.id });
    r.appendChild(svgEl("title", {}, `${d.id}: ${v} %`));
    svg.appendChild(r);
    if (bins.length <= 12) {
      svg.appendChild(svgEl("text", { x: x + bw / 2, y: H - pad + 12, "font-size": 9, "text-anchor": "middle" }, d.id));
    }
  });
  const fills = bins.map((d) => Math.max(0, Math.min(100, d.latest.fill)));
  const full = fills.filter((v) => v >= 80).length, half = fills.filter((v) => v >= 50 && v < 80).length;
  chartLabel(svg, `${plural(bins.length, "bin")}: ${full} at 80 % or more, ${half} at 50–79 %, `
    + `${bins.length - full - half} below 50 %`
    + (bins.length <= 48 ? `; ${bins.map((d, i) => `${d.id} ${fills[i]} %`).join(", ")}` : ""));
}

// When to ask again after a refusal that says "later" (429, or 503 with Retry-After: seconds or a date).
function retryAfterMs(res) {
  const h = (res.headers.get("Retry-After") || "").trim();
  let ms = RETRY_DEFAULT_MS;
  if (/^\d+$/.test(h)) ms = Number(h) * 1000;
  else if (h && Number.isFinite(Date.parse(h))) ms = Date.parse(h) - Date.now();
  return Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, ms));
}

// One answer of /api/routes/plan: {plan} (2xx), {missing} (404: no planning on this gateway),
// {error: {code, message, ...}, status, retryMs} (a planning error: never shown as "nothing to collect";
// retryMs is set for a temporary refusal, 429 or 503, from its Retry-After).
async function fetchPlan(date, ctl) {
  let res;
  const timeout = () => ({ error: { code: "timeout",
    message: `the gateway did not answer within ${PLAN_TIMEOUT_MS / 60000} minutes` }, status: 0 });
  try {
    // No date: the gateway plans for its own "today" (its clock and time zone).
    res = await fetch(date ? `/api/routes/plan?date=${date}` : "/api/routes/plan", { cache: "no-store", signal: ctl.signal });
  } catch (e) {
    if (ctl.timedOut) return timeout();
    return { error: { code: "unreachable", message: `could not reach the gateway (${e.message})` }, status: 0 };
  }
  if (res.ok) {
    try { return { plan: await res.json() }; } catch (e) {
      if (ctl.timedOut) return timeout();
      return { error: { code: "bad_answer", message: "the plan is not JSON" }, status: res.status };
    }
  }
  if (res.status === 404) return { missing: true };
  let error = null;
  try { const body = await res.json(); error = body && body.error; } catch (e) { error = null; }
  if (!error || typeof error !== "object") error = { code: `http_${res.status}`, message: `HTTP ${res.status}` };
  const retryMs = res.status === 429 || res.status === 503 ? retryAfterMs(res) : null;
  return { error, status: res.status, retryMs };
}

function inWords(ms) {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}

const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

function planErrorText(answer) {
  const e = answer.error;
  const code = e.code ? `${e.code}${answer.status ? `, HTTP ${answer.status}` : ""}` : `HTTP ${answer.status}`;
  const retry = answer.retryMs ? ` Retrying in ${inWords(answer.retryMs)}.` : "";
  return `Route planning failed: ${e.message || "no message"} (${code}).${retry}`;
}

function renderPlanWarnings(box, plan) {
  const warnings = Array.isArray(plan.warnings) ? plan.warnings : [];
  if (warnings.length === 0) return;
  const ul = el("ul", { id: "plan-warnings" });
  for (const w of warnings) ul.appendChild(el("li", { class: "plan-warning status-alarm" }, `Warning: ${w}`));
  box.appendChild(ul);
}

// A table's head row (th scope=col in a thead); returns its tbody, for the rows.
function tableHead(table, names) {
  const head = el("tr");
  for (const h of names) head.appendChild(el("th", { scope: "col" }, h));
  table.appendChild(el("thead")).appendChild(head);
  return table.appendChild(el("tbody"));
}

function renderUnserved(box, plan) {
  const unserved = Array.isArray(plan.unserved) ? plan.unserved : [];
  if (unserved.length === 0) return;
  box.appendChild(el("h3", { id: "plan-unserved-title", class: "status-alarm" },
    `${plural(unserved.length, "due bin")} not served: plan ${unserved.length === 1 ? "it" : "them"} on another vehicle or round`));
  const table = el("table", { id: "plan-unserved", "aria-labelledby": "plan-unserved-title" });
  const tbody = tableHead(table, ["bin", "zone", "reason", "expected fill", "load"]);
  for (const c of unserved) {
    const tr = el("tr", { "data-bin": c.bin_id });
    tr.appendChild(el("td", {}, c.bin_id));
    tr.appendChild(el("td", {}, c.zone));
    tr.appendChild(el("td", {}, Array.isArray(c.reasons) ? c.reasons.join("+") : c.reason));
    tr.appendChild(el("td", {}, `${Math.round(c.expected_fill * 100)} %${c.load_assumed ? " (assumed, no reading)" : ""}`));
    tr.appendChild(el("td", {}, `${Math.round(c.load_l)} L`));
    tbody.appendChild(tr);
  }
  box.appendChild(table);
}

let planShown = false;  // a plan (not an error) is on screen: a temporary refusal keeps it there

// The plan is drawn off-screen and swapped in: a periodic re-plan does not blank the panel meanwhile.
// A temporary refusal (429/503) keeps the plan on screen with a note. Returns when to plan again (ms).
async function renderPlan() {
  const box = el("div");
  const ctl = new AbortController();
  const timer = setTimeout(() => { ctl.timedOut = true; ctl.abort(); }, PLAN_TIMEOUT_MS);
  let result = { delay: PLAN_REFRESH_MS };
  try {
    result = await buildPlan(box, ctl);
  } catch (e) {
    planShown = false;
    box.appendChild(el("p", { id: "plan-error", class: "status-alarm", "data-code": "bad_answer" },
      `Route planning failed: the page could not show the plan (${e.message}).`));
  } finally {
    clearTimeout(timer);
  }
  // The error, the warnings and the "not re-planned" note go in #plan-live, a polite status region
  // that stays in the page (text added to a region already there is spoken; a region inserted with its
  // text often is not). Each is said when it appears or changes, not again at every re-plan.
  const live = document.getElementById("plan-live");
  if (result.note) {
    let note = document.getElementById("plan-note");
    if (!note) { note = el("p", { id: "plan-note", class: "muted" }); live.prepend(note); }
    setText(note, result.note);
  } else {
    const note = document.getElementById("plan-note");
    if (note) note.remove();
    const said = [...box.querySelectorAll("#plan-error, #plan-warnings")];
    const text = (nodes) => nodes.map((n) => `${n.id}:${n.textContent}`).join("\n");
    if (text(said) !== text([...live.children])) live.replaceChildren(...said);
    else said.forEach((n) => n.remove());
    document.getElementById("plan-body").replaceChildren(...box.childNodes);
  }
  return result.delay;
}

const roundStartOf = (answer) => (answer.plan ? answer.plan.round_start : answer.error ? answer.error.round_start : null) || null;

async function buildPlan(box, ctl) {
  let answer = await fetchPlan(null, ctl);
  // A plan uses the readings up to its round start: once today's round has started (the gateway's
  // time, as /api/dashboard gives it), the plan still to come is the next round's. A failed plan
  // names its round start too, so the switch happens whether today's plan worked or not.
  const todayStart = roundStartOf(answer);
  let next = false;
  if (todayStart && lastGenerated && Date.parse(todayStart) <= Date.parse(lastGenerated)) {
    const tomorrow = await fetchPlan("tomorrow", ctl);
    if (!tomorrow.missing) { answer = tomorrow; next = true; }
  }
  if (answer.retryMs && planShown) {
    // "Later" (too many plans, planner busy or restarting): the last plan stays, marked as not re-planned.
    const e = answer.error;
    return { delay: answer.retryMs, note: `Not re-planned just now: ${e.message || "no message"} `
      + `(${e.code || "error"}, HTTP ${answer.status}). The plan below is kept; retrying in ${inWords(answer.retryMs)}.` };
  }
  const delay = answer.retryMs || PLAN_REFRESH_MS;
  const nextDate = answer.plan ? answer.plan.date : answer.error && answer.error.date ? answer.error.date : "";
  // A failed request without a date (network error, a 503 from the middleware) names no day.
  document.querySelector("#plan-section h2").textContent =
    next ? `Next round's collection plan${nextDate ? ` (${nextDate})` : ""}` : "Today's collection plan";
  const plan = answer.plan || null;
  lastPlan = plan;
  planShown = Boolean(plan);
  // The round of what is shown: once it starts (by the gateway's clock), the plan is made again.
  planRound = { roundStart: roundStartOf(answer), madeAt: lastGenerated };
  if (lastDevices) renderMap(lastDevices);
  if (answer.error) {
    box.appendChild(el("p", { id: "plan-error", class: "status-alarm", "data-code": String(answer.error.code || "") },
      planErrorText(answer)));
    return { delay };
  }
  if (answer.missing) {
    box.appendChild(el("p", { class: "muted", id: "no-plan" }, "Route planning is not available on this gateway."));
    return { delay };
  }
  const routes = Array.isArray(plan.routes) ? plan.routes : [];
  renderPlanWarnings(box, plan);
  if (routes.length === 0) {
    const why = plan.notice ? plan.notice : "no bins due";
    const what = next ? `No plan for the next round, ${plan.date}` : "No plan for today";
    box.appendChild(el("p", { class: "muted", id: "no-plan" }, `${what} (${why}).`));
    renderUnserved(box, plan);
    return { delay };
  }
  const km = (m) => (m / 1000).toFixed(1);
  box.appendChild(el("p", { id: "plan-summary" },
    `${plan.date}: ${plural(plan.stops, "stop")}, ${km(plan.total_distance_m)} km, rounds start ${plan.round_start}`));
  routes.forEach((route, i) => {
    const stops = Array.isArray(route.stops) ? route.stops : [];
    if (stops.length === 0) return;
    const id = `plan-vehicle-${i}`;
    box.appendChild(el("h3", { id }, `Vehicle ${route.vehicle}: ${plural(stops.length, "stop")}, ${km(route.distance_m)} km`));
    const table = el("table", { class: "plan-route", "data-vehicle": String(route.vehicle), "aria-labelledby": id });
    const tbody = tableHead(table, ["#", "bin", "zone", "reason", "expected fill"]);
    for (const s of stops) {
      const tr = el("tr", { "data-bin": s.bin_id });
      tr.appendChild(el("td", {}, String(s.seq)));
      tr.appendChild(el("td", {}, s.bin_id));
      tr.appendChild(el("td", {}, s.zone));
      tr.appendChild(el("td", {}, s.reason));
      tr.appendChild(el("td", {}, `${Math.round(s.expected_fill * 100)} %${s.load_assumed ? " (assumed, no reading)" : ""}`));
      tbody.appendChild(tr);
    }
    box.appendChild(table);
  });
  renderUnserved(box, plan);
  return { delay };
}

// Why a refresh failed, in words: unreachable (no answer), the store damaged or busy (503 with the
// gateway's own reason, e.g. "gateway backend unavailable (corrupt)"), or another HTTP error.
async function failureText(res, err) {
  if (!res) return `gateway unreachable: ${err && err.message ? err.message : "no answer"}`;
  let message = "", code = "";
  try {
    const body = await res.json();
    if (body && body.error) { message = String(body.error.message || ""); code = String(body.error.code || ""); }
  } catch (e) { message = ""; }
  const what = code === "backend_unavailable" ? "store damaged or unavailable" : `gateway error (HTTP ${res.status})`;
  return `${what}: ${message || `HTTP ${res.status}`}${code ? ` [${code}]` : ""}`;
}

function setText(node, text) {
  // Unchanged text is not written again: a screen reader would announce a role=alert every 30 s.
  if (node.textContent !== text) node.textContent = text;
}

// What is on screen is kept but marked as old: a banner with its time and the reason, greyed rows.
function showStale(reason) {
  const banner = document.getElementById("banner");
  const iso = lastData && typeof lastData.generated_at_iso === "string" ? lastData.generated_at_iso : "";
  const asOf = iso.length >= 16 ? `Data as of ${iso.slice(11, 16)} UTC (${iso.slice(0, 10)})` : "No data loaded";
  lastFailure = reason;
  const retry = paused ? "Live updates are paused." : `Retrying every ${REFRESH_MS / 1000} s.`;
  setText(banner, `${asOf} — ${reason}. ${retry}`);
  document.body.classList.add("data-stale");
  setText(document.getElementById("updated"), `could not load data: ${reason}${paused ? " — live updates paused" : ""}`);
  setText(document.getElementById("live-status"), "");
}

let lastFailure = "";  // why the last refresh failed ("" once one worked): the banner is redrawn on pause/resume

function clearStale() {
  lastFailure = "";
  const banner = document.getElementById("banner");
  if (banner.textContent) document.getElementById("live-status").textContent = "The gateway answers again: data is current.";
  // Emptied, not hidden: the alert stays in the page for the next failure's text to be spoken.
  banner.textContent = "";
  document.body.classList.remove("data-stale");
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// What is wrong with an /api/dashboard answer ("" when it can be shown): a proxy's or a broken
// gateway's 200 is not drawn half-way.
function dashboardProblem(d) {
  if (!isObject(d)) return "not a JSON object";
  if (!Number.isFinite(d.generated_at) || typeof d.generated_at_iso !== "string") return "no generated_at";
  if (!Array.isArray(d.devices) || !d.devices.every((x) => isObject(x) && isObject(x.latest))) return "no device list";
  if (!Array.isArray(d.alarms) || !d.alarms.every(isObject)) return "no alarm list";
  if (!isObject(d.status_counts)) return "no status_counts";
  if (!isObject(d.series) || !["mot", "wh"].every((k) => d.series[k] === undefined || Array.isArray(d.series[k]))) {
    return "no series";
  }
  return "";
}

function renderAll(data) {
  renderSummary(data);
  renderMap(data.devices);
  renderFleet(data.devices, data.generated_at);
  renderAlarms(data.alarms);
  document.getElementById("charts-title").textContent = `Last ${plural(data.hours || 24, "hour")}`;
  lineChart("chart-mot", data.series.mot, "#0969da", periods["streetlight.mot"]);
  lineChart("chart-wh", data.series.wh, "#8250df", periods["streetlight.wh"]);
  const now = data.generated_at, hours = data.hours || 24;
  fillChart(data.devices, now - (now % 3600) - (hours - 1) * 3600);
}

// A new round (the round of the plan on screen has started, by the gateway's clock) is re-planned at
// once. The round start is the plan answer's own (in the gateway's time zone), so a day change is one
// too; a plan made before the first /api/dashboard answer (madeAt null) is checked at that answer.
function planIsOld() {
  if (!planRound || !planRound.roundStart || !lastGenerated) return false;
  const start = Date.parse(planRound.roundStart);
  if (!(start <= Date.parse(lastGenerated))) return false;
  // Made after its round had started (no next round to show): not made again every 30 s.
  return !(planRound.madeAt && start <= Date.parse(planRound.madeAt));
}

let refreshSeq = 0;     // the newest /api/dashboard request: only its answer is shown
let refreshCtl = null;  // its AbortController while it is in flight

async function refresh() {
  const seq = ++refreshSeq;
  // One request in flight: a newer one cancels the older (whose late answer would be older data).
  if (refreshCtl) refreshCtl.abort();
  const ctl = new AbortController();
  refreshCtl = ctl;
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; ctl.abort(); }, DASHBOARD_TIMEOUT_MS);
  let res = null, data = null, failure = "";
  try {
    res = await fetch("/api/dashboard", { cache: "no-store", signal: ctl.signal });
    if (!res.ok) failure = await failureText(res);
    else data = await res.json();
  } catch (e) {
    if (timedOut) failure = `gateway did not answer within ${DASHBOARD_TIMEOUT_MS / 1000} s`;
    else failure = res ? `gateway answered with unreadable data (${e.message})` : await failureText(null, e);
  } finally {
    clearTimeout(timer);
    if (refreshCtl === ctl) refreshCtl = null;
  }
  if (seq !== refreshSeq) return;  // a newer request was made meanwhile: it decides what is shown
  if (!failure) {
    const problem = dashboardProblem(data);
    if (problem) failure = `gateway answered with unexpected data (${problem})`;
  }
  if (!failure) {
    try {
      renderAll(data);
    } catch (e) {
      failure = `the page could not show the gateway's answer (${e.message})`;
    }
  }
  if (failure) { showStale(failure); return; }
  lastData = data;
  lastGenerated = data.generated_at_iso;
  clearStale();
  showUpdated();
  if (!document.body.hasAttribute("data-ready")) document.getElementById("live-status").textContent = "Dashboard loaded.";
  document.body.setAttribute("data-ready", "1");
  if (planIsOld()) runPlan();
}

function showUpdated() {
  if (!lastData) return;
  const at = `updated ${isoShort(lastData.generated_at_iso)} UTC`;
  setText(document.getElementById("updated"), paused ? `${at} — live updates paused` : at);
}

let paused = false;     // "Pause live updates" pressed: no refresh and no periodic re-plan until resumed
let loopTimer = null;   // the next refresh of the loop
let planDue = false;    // a re-plan fell due while paused: made on resume

// Each refresh is scheduled when the one before has ended (no pile of requests behind a slow gateway).
async function refreshLoop() {
  clearTimeout(loopTimer);
  loopTimer = null;
  try { await refresh(); } finally { scheduleRefresh(); }
}

function scheduleRefresh() {
  clearTimeout(loopTimer);
  loopTimer = paused ? null : setTimeout(refreshLoop, REFRESH_MS);
}

// Pausing stops the loop and drops an answer still on its way (it would replace the rows being read);
// resuming refreshes at once and restarts the loop, and makes a re-plan that fell due meanwhile.
function setPaused(on) {
  paused = on;
  document.getElementById("pause").setAttribute("aria-pressed", on ? "true" : "false");
  if (on) {
    clearTimeout(loopTimer);
    loopTimer = null;
    refreshSeq++;
    if (refreshCtl) refreshCtl.abort();
  } else {
    refreshLoop();
    if (planDue) { planDue = false; runPlan(); }
  }
  // The banner's "Retrying every 30 s" or "Live updates are paused", and the paused mark next to the time.
  if (lastFailure) showStale(lastFailure);
  else showUpdated();
}

let planTimer = null;
let planBusy = null;     // the plan request in flight
let planAgain = false;   // a re-plan was asked for meanwhile (a new round)

// The plan changes with the readings and the round: re-planned every 5 minutes (planning costs more
// than a fleet refresh), when a new round begins (see planIsOld), and after a refusal's Retry-After.
// One plan request at a time.
async function runPlan() {
  if (planBusy) { planAgain = true; return planBusy; }
  if (paused) { planDue = true; return undefined; }
  clearTimeout(planTimer);
  let delay = PLAN_REFRESH_MS;
  planBusy = renderPlan().then((ms) => { delay = ms; }, () => {});
  await planBusy;
  planBusy = null;
  if (planAgain) { planAgain = false; return runPlan(); }
  planTimer = setTimeout(runPlan, delay);
}

document.addEventListener("DOMContentLoaded", () => {
  loadPeriods().then(refreshLoop).then(runPlan);
  const pause = document.getElementById("pause");
  pause.addEventListener("click", () => setPaused(pause.getAttribute("aria-pressed") !== "true"));
  const redraw = () => { if (lastData) renderFleet(lastData.devices, lastData.generated_at); };
  document.getElementById("fleet-filter").addEventListener("input", redraw);
  document.getElementById("fleet-sort").addEventListener("change", redraw);
});

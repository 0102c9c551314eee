// civicedge dashboard: vanilla JS, self-drawn SVG; everything from this gateway (no CDN, no tiles).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const STATUS_COLOR = { ok: "#1a7f37", alarm: "#cf222e", stale: "#bc4c00", never: "#8c959f", revoked: "#8c959f" };

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
const ROUTE_COLORS = ["#0969da", "#8250df", "#bf3989", "#1a7f37", "#bc4c00"];

function drawPlanOnMap() {
  const svg = document.getElementById("map");
  for (const old of svg.querySelectorAll(".plan-path, .plan-depot")) old.remove();
  if (!project || !lastPlan || !Array.isArray(lastPlan.routes) || !lastPlan.depot) return;
  const depot = project(lastPlan.depot.lat, lastPlan.depot.lon);
  lastPlan.routes.forEach((route, i) => {
    const stops = Array.isArray(route.stops) ? route.stops : [];
    if (stops.length === 0) return;
    const pts = [depot, ...stops.map((s) => project(s.lat, s.lon)), depot];
    const line = svgEl("polyline", { points: pts.map((q) => q.join(",")).join(" "), fill: "none",
      stroke: ROUTE_COLORS[i % ROUTE_COLORS.length], "stroke-width": 2, "stroke-dasharray": "6 4",
      class: "plan-path", "data-vehicle": route.vehicle });
    line.appendChild(svgEl("title", {}, `vehicle ${route.vehicle}: ${stops.map((s) => s.bin_id).join(" → ")}`));
    svg.insertBefore(line, svg.firstChild);
  });
  const d = svgEl("rect", { x: depot[0] - 5, y: depot[1] - 5, width: 10, height: 10, fill: "none",
    stroke: "#1b1f24", "stroke-width": 2, class: "plan-depot" });
  d.appendChild(svgEl("title", {}, "depot"));
  svg.appendChild(d);
}

function isoShort(iso) { return iso ? iso.replace("T", " ").replace("Z", "") : "never"; }

function renderSummary(data) {
  const box = document.getElementById("summary");
  clear(box);
  const items = [["devices", data.devices.length]];
  for (const s of ["ok", "alarm", "stale", "never", "revoked"]) items.push([s, data.status_counts[s] || 0]);
  items.push(["open alarms", data.alarms.length]);
  for (const [label, n] of items) {
    const div = el("div", { "data-summary": label });
    div.appendChild(el("span", { class: "count" }, String(n)));
    div.appendChild(el("span", { class: "muted" }, label));
    box.appendChild(div);
  }
}

function renderMap(devices) {
  lastDevices = devices;
  const svg = document.getElementById("map");
  clear(svg);
  const W = 600, H = 400, pad = 30;
  const placed = devices.filter((d) => Number.isFinite(d.lat) && Number.isFinite(d.lon) && !(d.lat === 0 && d.lon === 0));
  if (placed.length === 0) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6a737d" }, "no device positions"));
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
  for (const d of placed) {
    const [x, y] = project(d.lat, d.lon);
    const color = STATUS_COLOR[d.status] || "#8c959f";
    const g = svgEl("g", { class: "device-marker", "data-device": d.id, "data-status": d.status });
    const title = svgEl("title", {}, `${d.id} (${d.kind}, ${d.zone}): ${d.status}`);
    g.appendChild(title);
    if (d.kind === "bin") g.appendChild(svgEl("rect", { x: x - 6, y: y - 6, width: 12, height: 12, fill: color }));
    else g.appendChild(svgEl("circle", { cx: x, cy: y, r: 7, fill: color }));
    g.appendChild(svgEl("text", { x: x + 9, y: y + 4, "font-size": 11, fill: "#1b1f24" }, d.id));
    svg.appendChild(g);
  }
  drawPlanOnMap();
}

function renderFleet(devices) {
  const body = document.querySelector("#fleet tbody");
  clear(body);
  for (const d of devices) {
    const tr = el("tr", { "data-device": d.id });
    const idCell = el("td");
    idCell.appendChild(el("a", { href: `/api/devices/${encodeURIComponent(d.id)}` }, d.id));
    tr.appendChild(idCell);
    tr.appendChild(el("td", {}, d.kind));
    tr.appendChild(el("td", {}, d.zone));
    tr.appendChild(el("td", { class: `status status-${d.status}` }, d.status));
    tr.appendChild(el("td", {}, isoShort(d.last_seen_iso)));
    tr.appendChild(el("td", {}, d.link || "—"));
    const vals = Object.entries(d.latest).map(([k, v]) => `${k}=${v}`).join(" ");
    tr.appendChild(el("td", {}, vals || "—"));
    body.appendChild(tr);
  }
}

function renderAlarms(alarms) {
  const list = document.getElementById("alarms");
  clear(list);
  if (alarms.length === 0) {
    list.appendChild(el("li", { class: "muted" }, "No open alarms"));
    return;
  }
  for (const a of alarms) {
    const li = el("li", { "data-alarm": a.code, "data-device": a.device });
    li.appendChild(el("span", { class: "alarm-code" }, a.code));
    li.appendChild(document.createTextNode(` ${a.device} (${a.zone}) since ${isoShort(a.at_iso)}`));
    list.appendChild(li);
  }
}

function axes(svg, W, H, pad, maxV) {
  svg.appendChild(svgEl("line", { x1: pad, y1: H - pad, x2: W - 5, y2: H - pad, stroke: "#8c959f" }));
  svg.appendChild(svgEl("line", { x1: pad, y1: 5, x2: pad, y2: H - pad, stroke: "#8c959f" }));
  svg.appendChild(svgEl("text", { x: pad - 4, y: 14, "font-size": 10, "text-anchor": "end" }, String(maxV)));
  svg.appendChild(svgEl("text", { x: pad - 4, y: H - pad, "font-size": 10, "text-anchor": "end" }, "0"));
}

// Release period (seconds) of each charted field, "kind.field" -> period_s, from /transparency.json
// (generated from the policy): a 6-hour count is one point per 6 hours, not an hourly value.
let periods = {};

function periodName(s) {
  for (const [unit, name] of [[86400, "day"], [3600, "hour"], [60, "minute"]]) {
    if (s % unit === 0) return s === unit ? name : `${s / unit} ${name}s`;
  }
  return `${s} seconds`;
}

async function loadPeriods() {
  try {
    const res = await fetch("/transparency.json");
    if (!res.ok) return;
    const doc = await res.json();
    for (const k of doc.kinds) for (const f of k.fields) periods[`${k.kind}.${f.field}`] = f.period_s;
  } catch (e) {
    return;  // the captions keep their text without a period, the points their start time
  }
  for (const cap of document.querySelectorAll("figcaption[data-field]")) {
    const p = periods[`${cap.dataset.kind}.${cap.dataset.field}`];
    if (p) cap.textContent = cap.dataset.text.replace("{period}", periodName(p));
  }
}

function hhmm(t) { return new Date(t * 1000).toISOString().slice(11, 16); }

function lineChart(id, points, color, periodS) {
  const svg = document.getElementById(id);
  clear(svg);
  const W = 400, H = 200, pad = 34;
  if (!points || points.length === 0) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6a737d" }, "no data yet"));
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
  svg.appendChild(svgEl("text", { x: pad, y: H - 8, "font-size": 10 }, new Date(t0 * 1000).toISOString().slice(11, 16)));
  svg.appendChild(svgEl("text", { x: W - 10, y: H - 8, "font-size": 10, "text-anchor": "end" }, new Date(t1 * 1000).toISOString().slice(11, 16) + " UTC"));
}

function fillChart(devices) {
  const svg = document.getElementById("chart-fill");
  clear(svg);
  const W = 400, H = 200, pad = 34;
  const bins = devices.filter((d) => d.kind === "bin" && d.latest.fill !== undefined);
  if (bins.length === 0) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6a737d" }, "no data yet"));
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
    svg.appendChild(svgEl("text", { x: x + bw / 2, y: H - pad + 12, "font-size": 9, "text-anchor": "middle" }, d.id));
  });
}

// One answer of /api/routes/plan: {plan} (2xx), {missing} (404: no planning on this gateway),
// {error: {code, message, ...}, status} (a planning error: never shown as "nothing to collect").
async function fetchPlan(date) {
  let res;
  try {
    // No date: the gateway plans for its own "today" (its clock and time zone).
    res = await fetch(date ? `/api/routes/plan?date=${date}` : "/api/routes/plan");
  } catch (e) {
    return { error: { code: "unreachable", message: `could not reach the gateway (${e.message})` }, status: 0 };
  }
  if (res.ok) {
    try { return { plan: await res.json() }; } catch (e) {
      return { error: { code: "bad_answer", message: "the plan is not JSON" }, status: res.status };
    }
  }
  if (res.status === 404) return { missing: true };
  let error = null;
  try { const body = await res.json(); error = body && body.error; } catch (e) { error = null; }
  if (!error || typeof error !== "object") error = { code: `http_${res.status}`, message: `HTTP ${res.status}` };
  return { error, status: res.status };
}

const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

function planErrorText(answer) {
  const e = answer.error;
  const code = e.code ? `${e.code}${answer.status ? `, HTTP ${answer.status}` : ""}` : `HTTP ${answer.status}`;
  return `Route planning failed: ${e.message || "no message"} (${code}).`;
}

function renderPlanWarnings(box, plan) {
  const warnings = Array.isArray(plan.warnings) ? plan.warnings : [];
  if (warnings.length === 0) return;
  const ul = el("ul", { id: "plan-warnings" });
  for (const w of warnings) ul.appendChild(el("li", { class: "plan-warning status-alarm" }, `Warning: ${w}`));
  box.appendChild(ul);
}

function renderUnserved(box, plan) {
  const unserved = Array.isArray(plan.unserved) ? plan.unserved : [];
  if (unserved.length === 0) return;
  box.appendChild(el("h3", { id: "plan-unserved-title", class: "status-alarm" },
    `${plural(unserved.length, "due bin")} not served: plan ${unserved.length === 1 ? "it" : "them"} on another vehicle or round`));
  const table = el("table", { id: "plan-unserved" });
  const head = el("tr");
  for (const h of ["bin", "zone", "reason", "expected fill", "load"]) head.appendChild(el("th", {}, h));
  table.appendChild(head);
  for (const c of unserved) {
    const tr = el("tr", { "data-bin": c.bin_id });
    tr.appendChild(el("td", {}, c.bin_id));
    tr.appendChild(el("td", {}, c.zone));
    tr.appendChild(el("td", {}, Array.isArray(c.reasons) ? c.reasons.join("+") : c.reason));
    tr.appendChild(el("td", {}, `${Math.round(c.expected_fill * 100)} %${c.load_assumed ? " (assumed, no reading)" : ""}`));
    tr.appendChild(el("td", {}, `${Math.round(c.load_l)} L`));
    table.appendChild(tr);
  }
  box.appendChild(table);
}

async function renderPlan() {
  const box = document.getElementById("plan");
  clear(box);
  let answer = await fetchPlan(null);
  // A plan uses the readings up to its round start: once today's round has started (the gateway's
  // time, as /api/dashboard gives it), the plan still to come is the next round's. A failed plan
  // names its round start too, so the switch happens whether today's plan worked or not.
  const todayStart = answer.plan ? answer.plan.round_start : answer.error ? answer.error.round_start : null;
  let next = false;
  if (todayStart && lastGenerated && Date.parse(todayStart) <= Date.parse(lastGenerated)) {
    const tomorrow = await fetchPlan("tomorrow");
    if (!tomorrow.missing) { answer = tomorrow; next = true; }
  }
  const nextDate = answer.plan ? answer.plan.date : answer.error && answer.error.date ? answer.error.date : "";
  // A failed request without a date (network error, a 503 from the middleware) names no day.
  document.querySelector("#plan-section h2").textContent =
    next ? `Next round's collection plan${nextDate ? ` (${nextDate})` : ""}` : "Today's collection plan";
  const plan = answer.plan || null;
  lastPlan = plan;
  if (lastDevices) renderMap(lastDevices);
  if (answer.error) {
    box.appendChild(el("p", { id: "plan-error", class: "status-alarm", "data-code": String(answer.error.code || "") },
      planErrorText(answer)));
    return;
  }
  if (answer.missing) {
    box.appendChild(el("p", { class: "muted", id: "no-plan" }, "Route planning is not available on this gateway."));
    return;
  }
  const routes = Array.isArray(plan.routes) ? plan.routes : [];
  renderPlanWarnings(box, plan);
  if (routes.length === 0) {
    const why = plan.notice ? plan.notice : "no bins due";
    const what = next ? `No plan for the next round, ${plan.date}` : "No plan for today";
    box.appendChild(el("p", { class: "muted", id: "no-plan" }, `${what} (${why}).`));
    renderUnserved(box, plan);
    return;
  }
  const km = (m) => (m / 1000).toFixed(1);
  box.appendChild(el("p", { id: "plan-summary" },
    `${plan.date}: ${plural(plan.stops, "stop")}, ${km(plan.total_distance_m)} km, rounds start ${plan.round_start}`));
  for (const route of routes) {
    const stops = Array.isArray(route.stops) ? route.stops : [];
    if (stops.length === 0) continue;
    box.appendChild(el("h3", {}, `Vehicle ${route.vehicle}: ${plural(stops.length, "stop")}, ${km(route.distance_m)} km`));
    const table = el("table", { class: "plan-route", "data-vehicle": String(route.vehicle) });
    const head = el("tr");
    for (const h of ["#", "bin", "zone", "reason", "expected fill"]) head.appendChild(el("th", {}, h));
    table.appendChild(head);
    for (const s of stops) {
      const tr = el("tr", { "data-bin": s.bin_id });
      tr.appendChild(el("td", {}, String(s.seq)));
      tr.appendChild(el("td", {}, s.bin_id));
      tr.appendChild(el("td", {}, s.zone));
      tr.appendChild(el("td", {}, s.reason));
      tr.appendChild(el("td", {}, `${Math.round(s.expected_fill * 100)} %${s.load_assumed ? " (assumed, no reading)" : ""}`));
      table.appendChild(tr);
    }
    box.appendChild(table);
  }
  renderUnserved(box, plan);
}

async function refresh() {
  try {
    const res = await fetch("/api/dashboard");
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const data = await res.json();
    lastGenerated = data.generated_at_iso;
    renderSummary(data);
    renderMap(data.devices);
    renderFleet(data.devices);
    renderAlarms(data.alarms);
    lineChart("chart-mot", data.series.mot, "#0969da", periods["streetlight.mot"]);
    lineChart("chart-wh", data.series.wh, "#8250df", periods["streetlight.wh"]);
    fillChart(data.devices);
    document.getElementById("updated").textContent = `updated ${isoShort(data.generated_at_iso)} UTC`;
    document.body.setAttribute("data-ready", "1");
  } catch (e) {
    document.getElementById("updated").textContent = `could not load data: ${e.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadPeriods().then(refresh).then(renderPlan);
  setInterval(refresh, 30000);
});

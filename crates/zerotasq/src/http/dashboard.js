// The dashboard: reads /api/status every second and redraws the cards, the throughput
// chart (from the broker's outcome counts, sampled every second over ten minutes) and the
// worker and client tables. Plain DOM and SVG; nothing loaded from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 760, HEIGHT = 220, LEFT = 48, BOTTOM = 22, TOP = 10, RIGHT = 10;
// The chart spans the history kept (ten minutes at most), one minute at least.
const MIN_WINDOW_SECS = 60, MAX_WINDOW_SECS = 600;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function duration(secs) {
  const s = Math.floor(secs);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
}

function fill(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const cols = document.querySelectorAll("#" + tableId + " th").length;
    const td = el("td", "none", "empty");
    td.colSpan = cols;
    body.append(el("tr")); body.lastChild.append(td);
    return;
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const cell of cells) {
      tr.append(typeof cell === "object" && cell !== null ? cell : el("td", String(cell)));
    }
    body.append(tr);
  }
}

// Outcomes per second between consecutive samples: [[t, completed/s, failed/s], ...].
function rates(history) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const [t0, c0, f0] = history[i - 1], [t1, c1, f1] = history[i];
    const dt = Math.max(t1 - t0, 1e-3);
    out.push([t1, (c1 - c0) / dt, (f1 - f0) / dt]);
  }
  return out;
}

function drawChart(history) {
  const chart = document.getElementById("chart");
  chart.replaceChildren();
  const points = rates(history);
  const now = history.length ? history[history.length - 1][0] : 0;
  const span = Math.min(MAX_WINDOW_SECS, Math.max(MIN_WINDOW_SECS, now - (history.length ? history[0][0] : 0)));
  const start = now - span;
  const peak = Math.max(1, ...points.map(p => p[1] + p[2]));
  const top = niceCeil(peak);
  const x = t => LEFT + (t - start) / span * (WIDTH - LEFT - RIGHT);
  const y = v => HEIGHT - BOTTOM - v / top * (HEIGHT - BOTTOM - TOP);
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4;
    chart.append(svg("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: LEFT - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = v >= 1000 ? (v / 1000).toFixed(1) + "k" : String(+v.toFixed(1));
    chart.append(label);
  }
  for (let i = 0; i <= 5; i++) {
    const ago = span * i / 5;
    const label = svg("text", { x: x(now - ago), y: HEIGHT - 6, "text-anchor": "middle" });
    label.textContent = i === 0 ? "now" : "-" + duration(ago);
    chart.append(label);
  }
  for (const [index, cls] of [[1, "done"], [2, "failed"]]) {
    const shown = points.filter(p => p[0] >= start);
    if (shown.length === 0) continue;
    const d = shown.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[index]).toFixed(1)).join(" ");
    chart.append(svg("path", { d, class: cls }));
  }
}

function niceCeil(v) {
  const power = Math.pow(10, Math.floor(Math.log10(v)));
  for (const step of [1, 2, 2.5, 5, 10]) if (v <= step * power) return step * power;
  return 10 * power;
}

function render(data) {
  const s = data.status, t = s.totals;
  document.getElementById("summary").textContent =
    "up " + duration(s.uptime_secs) + " · " + s.rate.toFixed(1) + " tasks/s over the last seconds";
  const cards = document.getElementById("cards");
  cards.replaceChildren();
  for (const [label, value] of [
    ["workers", t.workers_alive], ["queued", t.queued], ["in flight", t.in_flight],
    ["submitted", t.submitted], ["completed", t.completed], ["failed", t.failed],
    ["requeued", t.requeued], ["timed out", t.timed_out], ["recycled", t.recycled],
  ]) {
    const card = el("div", undefined, "card");
    card.append(el("b", String(value)), el("span", label));
    cards.append(card);
  }
  drawChart(data.history);
  fill("workers", s.workers.map(w => [
    w.host || w.id, w.pid || "", w.slot ?? "", el("td", w.state, "state-" + w.state),
    w.in_flight, w.completed, w.failed, w.restarts ?? "", w.mean_batch.toFixed(1),
  ]));
  fill("clients", s.clients.map(c => [
    c.id, c.queued, c.in_flight, c.rate.toFixed(1), c.completed, c.failed, c.submitted,
  ]));
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (!response.ok) throw new Error(await response.text());
    render(await response.json());
    error.textContent = "";
  } catch (e) {
    error.textContent = "cannot read the broker's status: " + e.message;
  }
}

refresh();
setInterval(refresh, 1000);

// The live dashboard: server-sent events from /events, no page reloads, no libraries.
"use strict";

const COLORS = ["#4c7bd9", "#d9534c", "#2e9e5b", "#b07b12", "#8a4cd9", "#1aa3a3", "#c94c9e", "#666"];
const MAX_SIGNALS = 300;
let signals = [];

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "";
  return typeof v === "number" ? v.toFixed(digits === undefined ? 2 : digits) : String(v);
}

function renderMembers(members) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  for (const m of members) {
    const tr = el("tr", { "data-node": m.node, class: "status-" + m.status });
    tr.append(el("td", { class: "node" }, m.node), el("td", {}, m.kind),
      el("td", { class: "status" }, m.status), el("td", {}, fmt(m.phi)),
      el("td", {}, fmt(m.cpu)), el("td", {}, fmt(m.memory)),
      el("td", {}, fmt(m.vm_memory_mb, 0)), el("td", {}, m.drained ? "yes" : ""));
    body.append(tr);
  }
}

function renderPlacements(snap) {
  const box = document.getElementById("placements");
  box.replaceChildren();
  const entries = Object.entries(snap.placements);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const table = el("table");
  for (const [node, n] of entries) {
    const bar = el("span", { class: "bar", style: "width:" + Math.round(160 * n / max) + "px" });
    const tr = el("tr");
    const cell = el("td");
    cell.append(bar, " " + n);
    tr.append(el("td", {}, node), cell);
    table.append(tr);
  }
  box.append(entries.length ? table : el("div", { class: "sub" }, "no placements yet"));
  const d = snap.decision_ms;
  const a = snap.advisor || {};
  document.getElementById("decision").textContent =
    `decision latency p50 ${fmt(d.p50, 3)} ms · p99 ${fmt(d.p99, 3)} ms over ${d.count} decisions` +
    ` · BEAM front: advised ${a.advised ?? 0}, no advice ${a.no_advice ?? 0}, timeouts ${a.timeouts ?? 0}`;
}

function renderState(state) {
  const box = document.getElementById("state");
  if (!state) return;
  box.replaceChildren();
  const table = el("table");
  for (const [k, v] of Object.entries(state)) {
    const tr = el("tr");
    tr.append(el("td", {}, k), el("td", {}, typeof v === "object" ? JSON.stringify(v) : v));
    table.append(tr);
  }
  box.append(table);
}

// A small line plot of several series [[t, v], ...] on a fixed 0..1 scale.
function plot(id, series) {
  const svg = document.getElementById(id);
  const legend = document.getElementById(id + "-legend");
  svg.replaceChildren();
  legend.replaceChildren();
  const names = Object.keys(series).sort();
  let t0 = Infinity, t1 = -Infinity;
  for (const n of names) for (const [t] of series[n]) { t0 = Math.min(t0, t); t1 = Math.max(t1, t); }
  if (!(t1 > t0)) { t0 = t1 - 1; }
  const ns = "http://www.w3.org/2000/svg";
  for (const y of [0, 0.5, 1]) {
    const line = document.createElementNS(ns, "line");
    const py = 155 - y * 150;
    for (const [k, v] of Object.entries({ x1: 0, x2: 400, y1: py, y2: py, stroke: "#e2e5ea" })) line.setAttribute(k, v);
    svg.append(line);
  }
  names.forEach((n, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = series[n].map(([t, v]) => `${(400 * (t - t0) / (t1 - t0)).toFixed(1)},${(155 - Math.min(1, Math.max(0, v)) * 150).toFixed(1)}`);
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", pts.join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", color);
    path.setAttribute("stroke-width", "1.5");
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(path);
    const last = series[n].length ? series[n][series[n].length - 1][1] : null;
    const item = el("span", { style: "color:" + color }, `■ ${n} ${fmt(last, 3)}`);
    legend.append(item);
  });
}

// Variables: the table is rebuilt only when a value or version changed, so typing survives.
let variablesShown = "";
function renderVariables(vars) {
  const key = JSON.stringify(vars || []);
  if (key === variablesShown) return;
  variablesShown = key;
  const body = document.querySelector("#variables tbody");
  body.replaceChildren();
  for (const v of vars || []) {
    const tr = el("tr", { "data-variable": v.name });
    const input = el("input", { class: "new-value", value: JSON.stringify(v.value) });
    const button = el("button", { class: "set" }, "set");
    button.addEventListener("click", () => setVariable(v.name, input.value));
    const edit = el("td");
    edit.append(input, " ", button);
    tr.append(el("td", {}, v.name), el("td", {}, v.type), el("td", { class: "value" }, JSON.stringify(v.value)),
      el("td", { class: "version" }, v.version), el("td", {}, v.node), edit);
    body.append(tr);
  }
}

async function setVariable(name, text) {
  const out = document.getElementById("variable-result");
  let value;
  try { value = JSON.parse(text); } catch (e) { out.textContent = `${name}: not JSON: ${e.message}`; return; }
  const r = await fetch("/api/variables", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name, value }) });
  const answer = await r.json();
  out.textContent = answer.ok ? `${name}: version ${answer.version}` : `${name}: refused: ${answer.error}`;
  out.dataset.ok = String(answer.ok);
}

function renderSnapshot(snap) {
  document.getElementById("source").textContent = snap.source || "no BEAM node answering";
  document.getElementById("updated").textContent = "updated " + new Date(snap.time * 1000).toLocaleTimeString();
  renderMembers(snap.members);
  renderPlacements(snap);
  renderState(snap.state);
  renderVariables(snap.variables);
  plot("anomaly", snap.anomaly);
  plot("failure", snap.failure);
}

// The SignalBus rule: "*" one segment, "**" zero or more.
function matches(pattern, type) {
  const p = pattern.split("."), t = type.split(".");
  function go(i, j) {
    if (i === p.length) return j === t.length;
    if (p[i] === "**") { for (let k = j; k <= t.length; k++) if (go(i + 1, k)) return true; return false; }
    if (j === t.length) return false;
    return (p[i] === "*" || p[i] === t[j]) && go(i + 1, j + 1);
  }
  return go(0, 0);
}

function renderSignals() {
  const pattern = document.getElementById("filter").value.trim() || "**";
  const box = document.getElementById("signals");
  const shown = signals.filter((s) => matches(pattern, s.type));
  box.replaceChildren(...shown.slice(-150).reverse().map((s) =>
    el("div", { "data-type": s.type }, `${(s.time || "").slice(11, 23)} ${s.type} ${s.subject || ""} ${s.data}`)));
  document.getElementById("signal-count").textContent = `${shown.length} of ${signals.length} kept signals match`;
}

function addSignal(s) {
  signals.push(s);
  if (signals.length > MAX_SIGNALS) signals = signals.slice(-MAX_SIGNALS);
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/events");
  source.addEventListener("open", () => live.classList.add("on"));
  source.addEventListener("error", () => live.classList.remove("on"));  // EventSource retries
  source.addEventListener("snapshot", (e) => renderSnapshot(JSON.parse(e.data)));
  let pending = false;
  source.addEventListener("signal", (e) => {
    addSignal(JSON.parse(e.data));
    if (!pending) { pending = true; setTimeout(() => { pending = false; renderSignals(); }, 200); }
  });
}

document.getElementById("filter").addEventListener("input", renderSignals);
renderSnapshot(JSON.parse(document.getElementById("initial").textContent));
connect();

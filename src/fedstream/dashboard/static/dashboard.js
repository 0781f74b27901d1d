// fedstream dashboard: polls the run store's JSON every POLL_MS and redraws.
// Every text from the store (run ids, failure causes sent by clients) goes in as text
// nodes, never as HTML.
"use strict";
const POLL_MS = 1500;
const API = "/dashboard/api";
const state = { selected: null, compared: new Set(), drawn: {} };

// Redraw a part only when its data changed, so a click is never lost to a redraw.
function changed(part, data) {
  const text = JSON.stringify(data);
  if (state.drawn[part] === text) return false;
  state.drawn[part] = text;
  return true;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }
const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v ?? ""));
const when = (seconds) => new Date(seconds * 1000).toLocaleString();

async function getJSON(path) {
  const response = await fetch(API + path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function headline(metrics) {
  if ("central_accuracy" in metrics) return ["central_accuracy", "accuracy"];
  if ("fed_accuracy" in metrics) return ["fed_accuracy", "accuracy"];
  return ["central_loss", "loss"];
}

function series(rounds, key) {
  const points = rounds.filter((r) => key in r.metrics);
  return { x: points.map((r) => r.round), y: points.map((r) => r.metrics[key]), name: key,
           mode: "lines+markers", type: "scatter" };
}

function draw(id, title, traces, yTitle) {
  const node = document.getElementById(id);
  const shown = traces.filter((t) => t.x.length > 0);
  node.hidden = shown.length === 0;
  if (node.hidden) return;
  Plotly.react(node, shown, {
    title: { text: title, font: { size: 14 } }, margin: { l: 50, r: 10, t: 36, b: 60 },
    xaxis: { title: { text: "round" }, dtick: shown[0].x.length < 12 ? 1 : undefined },
    yaxis: { title: { text: yTitle } }, legend: { orientation: "h", y: -0.3 },
  }, { displayModeBar: false, responsive: true });
}

function renderRuns(runs) {
  const rows = runs.map((run) => el("tr", {
      class: "run" + (run.id === state.selected ? " selected" : ""), "data-run": run.id,
      onclick: (event) => { if (event.target.type !== "checkbox") select(run.id); },
    },
    el("td", {}, el("input", Object.assign({ type: "checkbox", class: "compare",
      onchange: (event) => { event.target.checked ? state.compared.add(run.id) : state.compared.delete(run.id); state.drawn = {}; refresh(); } },
      state.compared.has(run.id) ? { checked: "" } : {}))),
    el("td", {}, run.id),
    el("td", { class: "status-" + run.status }, run.status),
    el("td", {}, `${run.rounds_done} of ${run.rounds}`),
    el("td", {}, run.label),
    el("td", {}, run.data),
    el("td", { class: "headline" }, run.headline),
    el("td", {}, when(run.started))));
  fill(document.querySelector("#runs tbody"), rows);
}

function renderRun(run) {
  document.getElementById("detail").hidden = false;
  document.getElementById("run-title").textContent = run.id;
  const status = document.getElementById("run-status");
  status.textContent = `${run.status}, ${run.rounds_done} of ${run.rounds_planned} rounds`;
  status.className = "status-" + run.status;
  document.getElementById("run-label").textContent = run.label + (run.error ? ` — ${run.error}` : "");
  const rounds = run.rounds;
  draw("chart-quality", "accuracy", ["central_accuracy", "fed_accuracy", "fed_personal_accuracy"].map((k) => series(rounds, k)), "accuracy");
  draw("chart-loss", "loss", ["central_loss", "fed_loss", "train_loss"].map((k) => series(rounds, k)), "loss");
  draw("chart-privacy", "privacy spent", [series(rounds, "dp_epsilon")], "ε");
  const bytes = (key, name) => ({ x: rounds.map((r) => r.round), y: rounds.map((r) => r[key] / 1e6), name, type: "bar" });
  draw("chart-traffic", "traffic per round", [bytes("bytes_up", "up (MB)"), bytes("bytes_down", "down (MB)")], "MB");
  draw("chart-time", "round time", [{ x: rounds.map((r) => r.round), y: rounds.map((r) => r.seconds), name: "seconds", mode: "lines+markers", type: "scatter" }], "s");

  document.getElementById("outcomes-section").hidden = false;
  fill(document.querySelector("#outcomes tbody"), rounds.slice().reverse().map((r) => el("tr", { "data-round": r.round },
    el("td", {}, r.round), el("td", {}, r.sampled), el("td", {}, r.completed), el("td", {}, r.failures.length),
    el("td", {}, ...r.failures.map((f) => el("div", { class: "cause" }, `${f.client_id} (${f.stage}): ${f.cause}`))))));

  const clients = Object.entries(run.clients);
  document.getElementById("clients-section").hidden = clients.length === 0;
  const keys = [...new Set(clients.flatMap(([, m]) => Object.keys(m)))].filter((k) => k !== "round").sort();
  document.querySelector("#clients thead").replaceChildren(el("tr", {}, el("th", {}, "client"), el("th", {}, "round"), ...keys.map((k) => el("th", {}, k))));
  fill(document.querySelector("#clients tbody"), clients.map(([client, m]) => el("tr", {},
    el("td", {}, client), el("td", {}, m.round), ...keys.map((k) => el("td", {}, fmt(m[k]))))));

  document.getElementById("models-section").hidden = run.models.length === 0;
  fill(document.querySelector("#models tbody"), run.models.slice().reverse().slice(0, 20).map((m) => {
    const [key] = headline(m.metrics);
    return el("tr", {}, el("td", {}, m.version), el("td", {}, when(m.created)), el("td", {}, key in m.metrics ? `${key} ${fmt(m.metrics[key])}` : ""));
  }));
  document.getElementById("settings-section").hidden = run.settings.length === 0;
  fill(document.querySelector("#settings tbody"), run.settings.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, JSON.stringify(v)))));
}

async function renderCompare() {
  const section = document.getElementById("compare-section");
  section.hidden = state.compared.size === 0;
  if (section.hidden) return;
  const runs = await Promise.all([...state.compared].map((id) => getJSON("/runs/" + encodeURIComponent(id))));
  if (!changed("compare", runs)) return;
  const traces = runs.map((run) => {
    const last = run.rounds.length ? run.rounds[run.rounds.length - 1].metrics : {};
    const [key] = headline(last);
    return Object.assign(series(run.rounds, key), { name: `${run.id} (${key})` });
  });
  draw("chart-compare", "compared runs", traces, "metric");
}

async function renderServing() {
  const serving = await getJSON("/serving");
  const section = document.getElementById("serving-section");
  section.hidden = Object.keys(serving).length === 0;
  fill(document.querySelector("#serving tbody"), Object.entries(serving).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmt(v)))));
}

function select(id) { state.selected = id; state.drawn = {}; refresh(); }

async function refresh() {
  try {
    const runs = await getJSON("/runs");
    if (state.selected === null && runs.length) state.selected = runs[0].id;
    if (changed("runs", [runs, state.selected, [...state.compared]])) renderRuns(runs);
    if (state.selected !== null) {
      const run = await getJSON("/runs/" + encodeURIComponent(state.selected));
      if (changed("run", run)) renderRun(run);
    }
    await renderCompare();
    await renderServing();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    document.getElementById("updated").textContent = "cannot reach the store: " + error.message;
  }
}

refresh();
setInterval(refresh, POLL_MS);

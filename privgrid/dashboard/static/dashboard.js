// privgrid dashboard: listens to the server-sent events of /events and draws what it gets.
// No framework: a few tables, an SVG of the grid and two uPlot charts. Text from the server
// always goes in through textContent (never as HTML).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = { r_P: "#1f5fbf", r_L: "#7a3fb5", r_d: "#2e7d32", r_C: "#e07000" };
const view = { state: null, trace: { epoch: -1, rows: [] }, network: null, charts: {} };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function num(x, digits = 3) {
  if (x === null || x === undefined) return "—";
  return Math.abs(x) >= 1000 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(2) : x.toFixed(digits);
}

function pct(x) { return x === null || x === undefined ? "—" : `${(100 * x).toFixed(0)} %`; }

// -- the event stream ---------------------------------------------------------------------
function connect() {
  const events = new EventSource("events");
  const link = $("link");
  events.onopen = () => { link.dataset.link = "live"; link.textContent = "live"; };
  events.onerror = () => {
    if (link.dataset.link !== "stopped") {
      link.dataset.link = "reconnecting"; link.textContent = "reconnecting to the dashboard…";
    }
  };
  events.addEventListener("state", (e) => { view.state = JSON.parse(e.data); render(); });
  events.addEventListener("trace", (e) => {
    const msg = JSON.parse(e.data);
    if (msg.reset || msg.epoch !== view.trace.epoch) view.trace = { epoch: msg.epoch, rows: [] };
    for (const row of msg.rows) view.trace.rows.push(row);
    drawResiduals();
  });
  events.addEventListener("network", (e) => { view.network = JSON.parse(e.data); drawNetwork(); render(); });
  events.addEventListener("bye", () => {
    events.close();
    link.dataset.link = "stopped";
    link.textContent = "the dashboard stopped with the run: this is its last state";
  });
}

// -- header -------------------------------------------------------------------------------
function phaseOf(s) {
  if (s.results && s.results.status) {
    const st = s.results.status;
    return [st, st === "converged" ? "converged" : `${st.replace("_", " ")}: ${s.results.error || s.results.reason || ""}`];
  }
  if (s.kind === "day") {
    const done = s.intervals.length, total = s.intervals_total;
    return total && done >= total ? ["converged", "day cleared"] : ["running", "clearing intervals"];
  }
  if (s.phase === "waiting") return ["waiting", "waiting for participants"];
  if (s.phase === "running") return ["running", "negotiating"];
  if (s.phase === "stopping" || s.phase === "closed") {
    if (s.stop && !s.stop.converged) return ["stopped", `stopped: ${s.stop.reason}`];
    return ["running", s.phase === "closed" ? "closed: writing results" : "converged: finishing"];
  }
  return ["waiting", s.phase];
}

function renderHeader(s) {
  $("run").textContent = s.run;
  $("scenario").textContent = s.scenario ? `scenario ${s.scenario}` : "";
  $("mode").textContent = s.mode ? `· privacy ${s.mode}` : "";
  const [phase, text] = phaseOf(s);
  const badge = $("phase");
  badge.dataset.phase = phase; badge.textContent = text; badge.title = text;
  const round = $("round");
  round.textContent = s.round; round.dataset.round = s.round;
  const total = s.results && s.results.rounds ? s.results.rounds : s.estimated_rounds;
  $("estimate").textContent = s.results && s.results.rounds ? ` of ${s.results.rounds}`
    : total ? ` of ~${total} (estimated)` : s.max_rounds ? ` (limit ${s.max_rounds})` : "";
  let share = total ? Math.min(1, s.round / total) : 0;
  if (s.kind === "day" && s.intervals_total) share = s.intervals.length / s.intervals_total;
  $("progress-bar").style.width = `${(100 * share).toFixed(1)}%`;
  $("broker").textContent = s.broker;
  $("signatures").textContent = s.signatures;
}

// -- residuals ----------------------------------------------------------------------------
function positive(x) { return x !== null && x > 0 ? x : null; }

function residualData() {
  const rows = view.trace.rows, s = view.state || {};
  const x = rows.map((r) => r[0]);
  const cols = [x];
  for (let i = 1; i <= 4; i++) cols.push(rows.map((r) => positive(r[i])));
  cols.push(x.map(() => s.epsilon_p ?? null));
  cols.push(x.map(() => s.epsilon_lambda ?? null));
  return cols;
}

function chartWidth(id) { return Math.max(300, $(id).clientWidth || 600); }

function drawResiduals() {
  const data = residualData();
  if (!view.charts.residuals) {
    if (typeof uPlot === "undefined") return;
    const series = [{ label: "round" }];
    for (const name of ["r_P", "r_L", "r_d", "r_C"]) series.push({ label: name, stroke: COLORS[name], width: 1.5, spanGaps: false });
    series.push({ label: "ε_P", stroke: "#1f5fbf", dash: [6, 4], width: 1, points: { show: false } });
    series.push({ label: "ε_λ", stroke: "#2e7d32", dash: [6, 4], width: 1, points: { show: false } });
    view.charts.residuals = new uPlot({
      width: chartWidth("residuals"), height: 260,
      scales: { x: { time: false }, y: { distr: 3 } },
      series,
      axes: [{ label: "round" }, { label: "residual (log)", size: 70, space: 40, grid: { stroke: "#eceff3", width: 1 }, values: (u, v) => v.map((x) => (x === null ? "" : x.toExponential(0))) }],
      legend: { live: true },
    }, data, $("residuals"));
  } else {
    view.charts.residuals.setData(data);
  }
}

// -- the grid -----------------------------------------------------------------------------
function lineStyle(id, cleared) {
  const limits = (view.state && view.state.line_limits) || {};
  const ln = cleared.get(id);
  if (ln) {
    if (ln.limit === null) return { color: "var(--free)", width: 4, state: "free" };
    if (ln.congested) return { color: "var(--bad)", width: 10, state: "congested" };
    if (ln.loading !== null && ln.loading >= 0.7) return { color: "var(--mid)", width: 6, state: "loaded" };
    return { color: "var(--ok)", width: 5, state: "ok" };
  }
  if (id in limits) return { color: "var(--unknown)", width: 5, state: "unknown", dash: "14 8" };
  return { color: "var(--free)", width: 4, state: "free" };
}

function drawNetwork() {
  const net = view.network, box = $("network");
  if (!net) return;
  box.replaceChildren();
  $("grid-name").textContent = net.error ? `(cannot draw: ${net.error})`
    : `${net.name} · ${net.buses.length} buses · ${net.source === "coordinates" ? "feeder coordinates" : "layout"}`;
  const at = new Map(net.buses.map((b) => [b.id, [b.x * 1000, b.y * 1000]]));
  const cleared = new Map(((view.state && view.state.lines) || []).map((l) => [l.id, l]));
  const big = net.buses.length > 60;
  const lines = svg("g", {}), labels = svg("g", {});
  for (const line of net.lines) {
    const a = at.get(line.from), b = at.get(line.to);
    if (!a || !b) continue;
    const style = lineStyle(line.id, cleared);
    const node = svg("line", {
      x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "line", stroke: style.color,
      "stroke-width": big ? style.width / 2 : style.width, "data-line": line.id,
      "data-state": style.state, "data-congested": String(style.state === "congested"),
    });
    if (style.dash) node.setAttribute("stroke-dasharray", style.dash);
    const ln = cleared.get(line.id);
    const title = svg("title", {});
    title.textContent = ln ? `line ${line.id}: flow ${num(ln.flow)} kW, limit ${num(ln.limit)} kW, price ${num(ln.price)}`
      : `line ${line.id}` + (style.state === "unknown" ? ": limited; flow and price sealed until cleared" : "");
    node.append(title);
    lines.append(node);
    if (ln && ln.congested) {
      const t = svg("text", { x: (a[0] + b[0]) / 2 + 8, y: (a[1] + b[1]) / 2 - 8, class: "price-label" });
      t.textContent = `${line.id}: ${num(ln.price, 2)}`;
      labels.append(t);
    }
  }
  box.append(lines);
  const buses = svg("g", {});
  for (const bus of net.buses) {
    const [x, y] = at.get(bus.id);
    const c = svg("circle", { cx: x, cy: y, r: big ? 6 : 14, class: bus.slack ? "bus slack" : "bus", "data-bus": bus.id });
    const title = svg("title", {}); title.textContent = `bus ${bus.id}${bus.slack ? " (slack)" : ""}`;
    c.append(title);
    buses.append(c);
    if (!big) {
      const t = svg("text", { x: x + 16, y: y + 30, class: "bus-label" }); t.textContent = bus.id; buses.append(t);
    }
  }
  box.append(buses);
  const states = new Map(((view.state && view.state.participants) || []).map((p) => [p.id, p.state]));
  const byBus = new Map();
  for (const agent of net.agents || []) {
    if (!at.has(agent.bus)) continue;
    if (!byBus.has(agent.bus)) byBus.set(agent.bus, []);
    byBus.get(agent.bus).push(agent.id);
  }
  for (const [bus, ids] of byBus) {
    const [x, y] = at.get(bus);
    ids.forEach((id, i) => {
      const t = svg("text", { x: x + 16, y: y - 16 - 32 * i, class: "agent-label" + (states.get(id) === "missing" ? " missing" : ""), "data-agent": id });
      t.textContent = id;
      labels.append(t);
    });
  }
  box.append(labels);
}

// -- tables -------------------------------------------------------------------------------
const STATE_WORDS = { waiting: "not yet connected", connected: "connected", missing: "missing", finished: "finished", unknown: "unknown (no broker)" };

function renderParticipants(s) {
  const body = $("participants").tBodies[0];
  body.replaceChildren(...s.participants.map((p) => {
    const state = STATE_WORDS[p.state] || p.state;
    const shown = p.state === "missing" && p.gone_round !== null ? `${state} (left in round ${p.gone_round})` : state;
    const lagging = s.phase === "running" && p.role === "agent" && p.last_round !== null && p.last_round < s.round - 1;
    return el("tr", { "data-participant": p.id, "data-state": p.state },
      el("td", {}, el("b", {}, p.id)), el("td", {}, p.role), el("td", { class: "num" }, p.bus ?? "—"),
      el("td", {}, el("span", { class: "state", "data-state": p.state }, shown)),
      el("td", { class: "num" + (lagging ? " bad" : "") }, p.last_round ?? "—"),
      el("td", { class: "num" + (p.incarnation ? " bad" : "") }, p.incarnation),
      el("td", { class: "num" + (p.violations_reported || p.accused ? " bad" : "") },
        `${p.violations_reported}` + (p.accused ? ` (accused ${p.accused}×)` : "") + (p.rejected ? ` · ${p.rejected} rejected` : "")),
      el("td", { class: "num" + (p.errors ? " bad" : "") }, `${p.warnings} / ${p.errors}`),
      el("td", { class: "wrap" }, p.last_problem || ""));
  }));
}

function renderLines(s) {
  const cleared = new Map(s.lines.map((l) => [l.id, l]));
  const ids = new Set([...Object.keys(s.line_limits || {}), ...s.lines.filter((l) => l.limit !== null).map((l) => l.id)]);
  const body = $("lines").tBodies[0];
  body.replaceChildren(...[...ids].map((id) => {
    const ln = cleared.get(id);
    const limit = ln ? ln.limit : s.line_limits[id];
    const state = !ln ? "sealed until cleared" : ln.congested ? "congested" : "free";
    return el("tr", { "data-line": id, "data-congested": String(Boolean(ln && ln.congested)) },
      el("td", {}, el("b", {}, id)), el("td", { class: "num" }, num(limit)),
      el("td", { class: "num" }, ln ? num(ln.flow) : "—"), el("td", { class: "num" }, ln ? pct(ln.loading) : "—"),
      el("td", { class: "num" }, ln ? num(ln.price) : "—"), el("td", { class: ln && ln.congested ? "bad" : "" }, state));
  }));
}

function renderTrades(s) {
  $("trades-note").textContent = s.trades.length ? "Cleared trades, from results.json."
    : s.pairs.length ? `Negotiating pairs (${s.pairs.length}): ${s.pairs.map((p) => p.join("–")).join(", ")}. The amounts are sealed until cleared.`
    : "";
  $("trades").tBodies[0].replaceChildren(...s.trades.filter((t) => Math.abs(t.power) > 1e-6).map((t) =>
    el("tr", {}, el("td", {}, t.seller), el("td", {}, t.buyer), el("td", { class: "num" }, num(t.power)), el("td", { class: "num" }, num(t.price)))));
}

function renderEvents(s) {
  $("events").replaceChildren(...s.events.slice().reverse().map(([t, level, text]) =>
    el("li", { class: level }, el("time", {}, new Date(t * 1000).toLocaleTimeString()), text)));
}

// -- a day --------------------------------------------------------------------------------
function renderDay(s) {
  const panel = $("day-panel");
  if (s.kind !== "day") { panel.hidden = true; return; }
  panel.hidden = false;
  const done = s.intervals.length, total = s.intervals_total;
  const last = s.intervals[done - 1];
  $("day-progress").textContent = `${done} of ${total ?? "?"} intervals cleared` + (last && last.start ? ` (up to ${last.start})` : "");
  $("day-bar").style.width = total ? `${(100 * done / total).toFixed(1)}%` : "0";
  $("intervals").tBodies[0].replaceChildren(...s.intervals.slice().reverse().map((i) =>
    el("tr", { "data-interval": i.label, "data-congested": String(i.congested.length > 0) },
      el("td", {}, i.label), el("td", {}, i.start || "—"), el("td", { class: "num" }, i.rounds),
      el("td", { class: "num" }, num(i.price)), el("td", { class: "num" }, num(i.volume_kw)),
      el("td", { class: "num" }, i.max_loading_pct === null ? "—" : `${i.max_loading_pct.toFixed(0)} %`),
      el("td", { class: i.congested.length ? "bad" : "" }, i.congested.join(", ") || "none"),
      el("td", { class: i.converged ? "" : "bad" }, i.converged ? "yes" : "NO"))));
  if (typeof uPlot === "undefined") return;
  const x = s.intervals.map((i) => i.index);
  const priceVolume = [x, s.intervals.map((i) => i.price), s.intervals.map((i) => i.volume_kw)];
  const rounds = [x, s.intervals.map((i) => i.rounds)];
  if (!view.charts.day) {
    view.charts.day = new uPlot({
      width: chartWidth("day-chart"), height: 200, scales: { x: { time: false }, kw: {} },
      series: [{ label: "interval" }, { label: "price /kWh", stroke: "#1f5fbf", width: 2 },
        { label: "volume kW", stroke: "#e07000", width: 2, scale: "kw" }],
      axes: [{ label: "interval" }, { label: "price /kWh" }, { label: "volume kW", scale: "kw", side: 1, grid: { show: false } }],
    }, priceVolume, $("day-chart"));
    view.charts.rounds = new uPlot({
      width: chartWidth("day-rounds"), height: 140, scales: { x: { time: false } },
      series: [{ label: "interval" }, { label: "rounds", stroke: "#7a3fb5", fill: "rgba(122,63,181,0.25)", paths: uPlot.paths.bars({ size: [0.8, 40] }) }],
      axes: [{ label: "interval" }, { label: "rounds" }],
    }, rounds, $("day-rounds"));
  } else {
    view.charts.day.setData(priceVolume);
    view.charts.rounds.setData(rounds);
  }
}

// -- all of it ----------------------------------------------------------------------------
function render() {
  const s = view.state;
  if (!s) return;
  renderHeader(s);
  renderParticipants(s);
  renderLines(s);
  renderTrades(s);
  renderEvents(s);
  renderDay(s);
  drawNetwork();
  drawResiduals();
  document.body.dataset.version = s.version;
}

window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries({ residuals: view.charts.residuals, "day-chart": view.charts.day, "day-rounds": view.charts.rounds })) {
    if (chart) chart.setSize({ width: chartWidth(id), height: chart.height });
  }
});

connect();

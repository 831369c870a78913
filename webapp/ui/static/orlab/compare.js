/* Compare page: one chart per chosen metric key with every selected run overlaid.

   Data: GET /api/compare/series/?runs=..&keys=<one key>&max_points=N (one request per key, in
   parallel; the answer of /api/compare/, read faster; the server downsamples each series with M4,
   so spikes survive) plus with_wall=1 for the time axes.
   Everything else happens here, on the points as fetched:
   - smoothing: TensorBoard's debiased EMA (the raw curve stays faint behind the smoothed one);
   - x axis: step, wall time, time since the run's first point, or another logged key (a counter
     such as tokens seen), read at the same steps by linear interpolation;
   - grouping by a config field: each group's runs (smoothed) are interpolated onto a common x grid
     and drawn as the mean with a min-max or +-std band;
   - CSV export of exactly what the charts draw, PNG per chart, the whole state in the URL;
   - live: while a run is queued or running, every 2 s the new points of every chosen key
     (since_step), the statuses and collapse flags (GET /api/runs/table/?ids=), and now and then
     the evaluations. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("compare-data").textContent);
  const chartsEl = document.getElementById("charts");
  if (!chartsEl || !data.runs.length) return;

  const POLL_MS = 2000;
  const EVAL_EVERY = 5; // polls
  const MAX_POINTS = data.max_points || 1500;
  const GRID_POINTS = 1000;
  const PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1",
  ];
  const runs = data.runs.map((r, i) => ({ ...r, index: i, color: PALETTE[i % PALETTE.length] }));
  const byId = new Map(runs.map((r) => [r.id, r]));
  const state = { ...data.state, hide: new Set(data.state.hide || []) };
  const store = new Map(); // key -> Map(run id -> {steps, values, walls})
  let withWall = needsWall();
  let generation = 0;
  let polls = 0;

  const $ = (id) => document.getElementById(id);
  const keySelect = $("key-select");
  const keyFilter = $("key-filter");
  const smooth = $("smooth");
  const smoothValue = $("smooth-value");
  const xMode = $("x-mode");
  const logToggle = $("log-toggle");
  const logxToggle = $("logx-toggle");
  const groupBy = $("group-by");
  const band = $("band");
  const legendMode = $("legend-mode");
  const configAll = $("config-all");
  const evalMetric = $("eval-metric");
  const legendEl = $("legend");

  const isActive = (s) => o.ACTIVE.includes(s);
  const ids = (list) => list.map((r) => r.id).join(",");
  const apiUrl = (base, params) => `${base}?${new URLSearchParams(params).toString()}`;

  function needsWall() {
    return state.x === "wall" || state.x === "rel";
  }

  function fetchedKeys() {
    const keys = [...state.keys];
    if (state.x === "key" && state.xkey && !keys.includes(state.xkey)) keys.push(state.xkey);
    return keys;
  }

  // --- colours and labels ---
  function rgba(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
  }
  function runLabel(r) {
    return state.legend === "name" ? r.name : r.label;
  }
  for (const r of runs) {
    const sw = document.querySelector(`[data-swatch="${r.id}"]`);
    if (sw) sw.style.background = r.color;
  }

  // --- smoothing: TensorBoard's debiased exponential moving average ---
  function ema(values, weight) {
    if (!(weight > 0)) return values;
    const out = new Array(values.length);
    let last = 0;
    let n = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) {
        out[i] = v;
        continue;
      }
      last = last * weight + (1 - weight) * v;
      n++;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  // --- x values ---
  function interp(xs, ys, x) {
    // linear interpolation of ys(xs) at x (xs ascending); NaN outside [xs[0], xs[last]]
    const n = xs.length;
    if (!n || x < xs[0] || x > xs[n - 1]) return NaN;
    let lo = 0;
    let hi = n - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] <= x) lo = mid;
      else hi = mid;
    }
    if (xs[lo] === x) return ys[lo];
    if (xs[hi] === x) return ys[hi];
    const t = (x - xs[lo]) / (xs[hi] - xs[lo]);
    return ys[lo] + t * (ys[hi] - ys[lo]);
  }

  function firstWall(runId) {
    let first = Infinity;
    for (const perRun of store.values()) {
      const s = perRun.get(runId);
      if (s && s.walls && s.walls.length) first = Math.min(first, s.walls[0]);
    }
    return first;
  }

  function relUnit() {
    let span = 0;
    for (const perRun of store.values()) {
      for (const [runId, s] of perRun) {
        if (s.walls && s.walls.length) span = Math.max(span, s.walls[s.walls.length - 1] - firstWall(runId));
      }
    }
    if (span > 3 * 3600) return { div: 3600, name: "h" };
    if (span > 180) return { div: 60, name: "min" };
    return { div: 1, name: "s" };
  }

  function xTitle(unit) {
    if (state.x === "wall") return "wall time (UTC)";
    if (state.x === "rel") return `time since the run's first point (${unit.name})`;
    if (state.x === "key") return state.xkey;
    return "step";
  }

  /* The x of each point of series s of run r in the current mode (numbers; wall: ms since epoch). */
  function xsOf(r, s, unit) {
    if (state.x === "wall") return s.walls ? s.walls.map((w) => w * 1000) : null;
    if (state.x === "rel") {
      if (!s.walls) return null;
      const w0 = firstWall(r.id);
      return s.walls.map((w) => (w - w0) / unit.div);
    }
    if (state.x === "key") {
      const c = (store.get(state.xkey) || new Map()).get(r.id);
      if (!c) return null;
      return s.steps.map((step) => interp(c.steps, c.values, step));
    }
    return s.steps;
  }

  // --- grouping ---
  function groupOf(r) {
    const g = state.group;
    if (g === "@group") return { key: r.group || "", label: r.group || "(no group)" };
    if (g.startsWith("~")) {
      const skip = g.slice(1);
      const parts = data.differing.filter((p) => p !== skip).map((p) => `${shortName(p)}=${r.config[p]}`);
      return { key: JSON.stringify(parts), label: parts.join(", ") || "all runs" };
    }
    const v = r.config[g];
    return { key: String(v), label: `${shortName(g)}=${v}` };
  }
  function shortName(path) {
    const last = path.split(".").pop();
    const clash = data.differing.filter((p) => p.split(".").pop() === last).length > 1;
    return clash ? path : last;
  }
  function groups() {
    const out = new Map();
    for (const r of runs) {
      const g = groupOf(r);
      if (!out.has(g.key)) out.set(g.key, { key: g.key, label: g.label, runs: [], index: out.size });
      out.get(g.key).runs.push(r);
    }
    return [...out.values()];
  }

  /* Mean and band of the members' curves on a common x grid. */
  function aggregate(curves) {
    const same =
      curves.length > 0 &&
      curves.every((c) => c.x.length === curves[0].x.length && c.x.every((x, i) => x === curves[0].x[i]));
    let grid;
    if (same) {
      grid = curves[0].x.slice();
    } else {
      // interpolation needs ascending finite x (a counter read outside its range gives NaN)
      curves = curves.map((c) => {
        const keep = c.x.map((x, i) => Number.isFinite(x) && (i === 0 || !(x < c.x[i - 1])));
        return { x: c.x.filter((_, i) => keep[i]), y: c.y.filter((_, i) => keep[i]) };
      });
      const all = new Set();
      for (const c of curves) for (const x of c.x) if (Number.isFinite(x)) all.add(x);
      grid = [...all].sort((a, b) => a - b);
      if (grid.length > 2 * GRID_POINTS) {
        const lo = grid[0];
        const hi = grid[grid.length - 1];
        grid = Array.from({ length: GRID_POINTS }, (_, i) => lo + ((hi - lo) * i) / (GRID_POINTS - 1));
      }
    }
    const mean = [];
    const lower = [];
    const upper = [];
    const count = [];
    for (let i = 0; i < grid.length; i++) {
      const vals = [];
      for (const c of curves) {
        const v = same ? c.y[i] : interp(c.x, c.y, grid[i]);
        if (v !== null && Number.isFinite(v)) vals.push(v);
      }
      count.push(vals.length);
      if (!vals.length) {
        mean.push(null);
        lower.push(null);
        upper.push(null);
        continue;
      }
      const m = vals.reduce((a, b) => a + b, 0) / vals.length;
      mean.push(m);
      if (state.band === "std") {
        const sd =
          vals.length > 1 ? Math.sqrt(vals.reduce((a, b) => a + (b - m) * (b - m), 0) / (vals.length - 1)) : 0;
        lower.push(m - sd);
        upper.push(m + sd);
      } else {
        lower.push(Math.min(...vals));
        upper.push(Math.max(...vals));
      }
    }
    return { grid, mean, lower, upper, count };
  }

  // --- charts ---
  function chartCard(key) {
    let card = chartsEl.querySelector(`.chart-card[data-key="${CSS.escape(key)}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "chart-card";
      card.dataset.key = key;
      card.innerHTML =
        '<div class="chart-head"><span class="chart-title"></span><span class="chart-count muted small"></span>' +
        '<button type="button" class="small png-button" data-testid="png-button" title="download this chart as PNG">PNG</button></div>' +
        '<div class="chart" data-testid="compare-chart" data-points="0"></div>';
      card.querySelector(".chart-title").textContent = key;
      card.querySelector(".chart").dataset.key = key;
    }
    return card;
  }

  function layoutCards() {
    const placeholder = chartsEl.querySelector('[data-testid="no-keys"]');
    if (placeholder) placeholder.hidden = state.keys.length > 0;
    const keep = new Set(state.keys);
    for (const card of [...chartsEl.querySelectorAll(".chart-card")]) {
      if (!keep.has(card.dataset.key)) {
        const plot = card.querySelector(".chart");
        if (plot && plot.data) Plotly.purge(plot);
        card.remove();
      }
    }
    let prev = null;
    for (const key of state.keys) {
      const card = chartCard(key);
      const want = prev ? prev.nextElementSibling : chartsEl.firstElementChild;
      if (card !== want) chartsEl.insertBefore(card, want); // moves a chart only when the order changed
      prev = card;
    }
  }

  function logY(key) {
    return state.log === true || (state.log === null && data.log_keys.includes(key));
  }

  function hoverX() {
    if (state.x === "wall") return "%{x|%Y-%m-%d %H:%M:%S}";
    return "%{x:.6~g}";
  }

  function drawChart(key) {
    const card = chartCard(key);
    const plot = card.querySelector(".chart");
    const perRun = store.get(key) || new Map();
    const unit = state.x === "rel" ? relUnit() : null;
    const traces = [];
    const shapes = [];
    let points = 0;
    let shown = 0;
    const curves = new Map(); // run id -> {x, y (smoothed or raw)}
    for (const r of runs) {
      const s = perRun.get(r.id);
      if (!s) continue;
      points += s.steps.length;
      const x = xsOf(r, s, unit);
      if (!x) continue;
      const y = s.values;
      const ys = ema(y, state.smooth);
      curves.set(r.id, { x, y: ys });
      if (state.group || state.hide.has(r.id)) continue;
      shown++;
      const label = o.plotText(runLabel(r));
      const hover = `${label}<br>${o.plotText(xTitle(unit || { name: "" }))} ${hoverX()}: %{y:.6g}<extra></extra>`;
      if (state.smooth > 0) {
        traces.push({
          x, y, type: "scatter", mode: "lines", name: `${label} (raw)`, showlegend: false, hoverinfo: "skip",
          line: { color: r.color, width: 1 }, opacity: 0.25, meta: { series: runLabel(r), runs: [r.id], kind: "raw" },
        }); // fmt: skip
      }
      traces.push({
        x, y: ys, type: "scatter", mode: "lines", name: label, connectgaps: false,
        line: { color: r.color, width: state.smooth > 0 ? 1.8 : 1.5 }, hovertemplate: hover,
        meta: { series: runLabel(r), runs: [r.id], kind: state.smooth > 0 ? "smoothed" : "raw" },
      }); // fmt: skip
      const c = r.collapse;
      if (c && c.key === key && state.x === "step" && c.step !== null) {
        shapes.push({
          type: "line", xref: "x", yref: "paper", x0: c.step, x1: c.step, y0: 0, y1: 1,
          line: { color: r.color, width: 1, dash: "dot" },
        }); // fmt: skip
      }
    }
    if (state.group) {
      for (const g of groups()) {
        const members = g.runs.filter((r) => curves.has(r.id));
        if (!members.length || state.hide.has(`g:${g.key}`)) continue;
        shown++;
        const color = PALETTE[g.index % PALETTE.length];
        const agg = aggregate(members.map((r) => curves.get(r.id)));
        const label = o.plotText(`${g.label} (${members.length} run${members.length > 1 ? "s" : ""})`);
        const runIds = members.map((r) => r.id);
        if (state.band !== "none") {
          const bandName = state.band === "std" ? "± std" : "min–max";
          traces.push({
            x: agg.grid, y: agg.lower, type: "scatter", mode: "lines", line: { width: 0, color },
            hoverinfo: "skip", showlegend: false, name: `${label} lower`,
            meta: { series: g.label, runs: runIds, kind: state.band === "std" ? "mean-std" : "min" },
          }); // fmt: skip
          traces.push({
            x: agg.grid, y: agg.upper, type: "scatter", mode: "lines", line: { width: 0, color },
            fill: "tonexty", fillcolor: rgba(color, 0.2), hoverinfo: "skip", showlegend: false,
            name: `${label} ${bandName}`,
            meta: { series: g.label, runs: runIds, kind: state.band === "std" ? "mean+std" : "max" },
          }); // fmt: skip
        }
        traces.push({
          x: agg.grid, y: agg.mean, type: "scatter", mode: "lines", name: label, line: { color, width: 2 },
          customdata: agg.count, connectgaps: false,
          hovertemplate: `${label}<br>${hoverX()}: %{y:.6g} (mean of %{customdata})<extra></extra>`,
          meta: { series: g.label, runs: runIds, kind: "mean" },
        }); // fmt: skip
      }
    }
    const layout = o.plotLayout({ log: logY(key), height: 320, legend: false });
    layout.hovermode = "closest";
    layout.margin = { l: 60, r: 12, t: 8, b: 44 };
    // Metric keys are user text: escaped, or Plotly renders markup in them (a key "<a href=...>" was a link).
    const rawXTitle = xTitle(unit || { name: "" });
    layout.meta = { xTitle: rawXTitle }; // the unescaped title, for the CSV export
    layout.xaxis.title = { text: o.plotText(rawXTitle), standoff: 4 };
    if (state.x === "wall") layout.xaxis.type = "date";
    else if (state.logx) layout.xaxis.type = "log";
    layout.yaxis.title = { text: o.plotText(key), standoff: 2 };
    layout.shapes = shapes;
    layout.uirevision = `${key}|${state.x}|${state.xkey}|${state.logx}|${logY(key)}`;
    Plotly.react(plot, traces, layout, o.plotConfig);
    plot.dataset.points = String(points);
    plot.dataset.traces = String(traces.length);
    const count = card.querySelector(".chart-count");
    count.textContent = perRun.size < runs.length ? `${perRun.size} of ${runs.length} runs logged it` : "";
    void shown;
  }

  function drawAll() {
    layoutCards();
    for (const key of state.keys) drawChart(key);
    drawLegend();
    drawEvaluations();
  }

  let pending = 0;
  function redraw() {
    if (pending) return;
    pending = requestAnimationFrame(() => {
      pending = 0;
      drawAll();
    });
  }

  // --- legend: one for every chart; click an entry to hide or show it everywhere ---
  function drawLegend() {
    const items = state.group
      ? groups().map((g) => ({
          id: `g:${g.key}`,
          color: PALETTE[g.index % PALETTE.length],
          text: `${g.label} (${g.runs.length})`,
          title: g.runs.map((r) => r.name).join(", "),
        }))
      : runs.map((r) => ({ id: r.id, color: r.color, text: runLabel(r), title: `${r.name} (#${r.id})`, run: r }));
    legendEl.replaceChildren(
      ...items.map((it) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = `legend-item${state.hide.has(it.id) ? " off" : ""}`;
        b.dataset.testid = "legend-item";
        b.title = `${it.title} — click to hide or show`;
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = it.color;
        b.append(sw, document.createTextNode(it.text));
        if (it.run && it.run.collapse) {
          const flag = document.createElement("span");
          flag.className = "flag-collapse";
          flag.textContent = "⚠";
          flag.title = it.run.collapse.message;
          b.append(flag);
        }
        b.addEventListener("click", () => {
          if (state.hide.has(it.id)) state.hide.delete(it.id);
          else state.hide.add(it.id);
          syncUrl();
          redraw();
        });
        return b;
      })
    );
  }

  // --- evaluations: accuracy against step per benchmark ---
  let evaluations = data.evaluations || [];
  function evalName(metric, k) {
    return metric.replace(/@k$/, `@${k}`);
  }
  function drawEvaluations() {
    const section = $("evaluations");
    const holder = $("eval-charts");
    if (!section || !holder) return;
    section.hidden = !evaluations.length;
    const byBench = new Map();
    for (const e of evaluations) {
      if (!byBench.has(e.benchmark_name)) byBench.set(e.benchmark_name, []);
      byBench.get(e.benchmark_name).push(e);
    }
    const wanted = new Set(byBench.keys());
    for (const card of [...holder.querySelectorAll(".chart-card")]) {
      if (!wanted.has(card.dataset.bench)) card.remove();
    }
    for (const [bench, rows] of byBench) {
      let card = [...holder.querySelectorAll(".chart-card")].find((c) => c.dataset.bench === bench);
      if (!card) {
        card = document.createElement("div");
        card.className = "chart-card";
        card.dataset.bench = bench;
        card.innerHTML =
          '<div class="chart-head"><span class="chart-title"></span><button type="button" class="small png-button" title="download this chart as PNG">PNG</button></div>' +
          '<div class="chart" data-testid="eval-chart"></div>';
        card.querySelector(".chart-title").textContent = bench;
        card.querySelector(".chart").dataset.key = bench;
        holder.appendChild(card);
      }
      // one curve per run and metric; grouped: the mean over the group's runs at each step
      const groupIndex = new Map();
      if (state.group) for (const g of groups()) for (const r of g.runs) groupIndex.set(r.id, g);
      const series = new Map(); // "<run or group>|metric" -> {label, color, runs, metric, pass, points}
      for (const e of rows) {
        const run = byId.get(e.run);
        if (!run || state.hide.has(run.id)) continue;
        const g = groupIndex.get(run.id);
        if (g && state.hide.has(`g:${g.key}`)) continue;
        for (const [m, v] of Object.entries(e.metrics)) {
          const isAvg = /^avg@/.test(m);
          const isPass = /^pass@/.test(m);
          if (!isAvg && !isPass) continue;
          if ((state.evals === "avg" && !isAvg) || (state.evals === "pass" && !isPass)) continue;
          const name = evalName(m, e.k);
          const id = `${g ? `g:${g.key}` : run.id}|${name}`;
          if (!series.has(id)) {
            series.set(id, {
              label: g ? g.label : runLabel(run),
              color: g ? PALETTE[g.index % PALETTE.length] : run.color,
              runs: new Set(),
              metric: name,
              pass: isPass,
              points: new Map(),
            });
          }
          const s = series.get(id);
          s.runs.add(run.id);
          if (!s.points.has(e.step)) s.points.set(e.step, []);
          s.points.get(e.step).push(v);
        }
      }
      const traces = [];
      for (const s of series.values()) {
        const steps = [...s.points.keys()].sort((a, b) => a - b);
        const ys = steps.map((step) => {
          const vals = s.points.get(step);
          return vals.reduce((a, b) => a + b, 0) / vals.length;
        });
        const label = o.plotText(s.label);
        const metric = o.plotText(s.metric);
        const what = state.group ? ` (mean of ${s.runs.size})` : "";
        traces.push({
          x: steps, y: ys, type: "scatter", mode: "lines+markers", name: `${label} ${metric}`,
          line: { color: s.color, width: 1.5, dash: !s.pass ? "solid" : s.metric === "pass@1" ? "dot" : "dash" },
          marker: { size: 5 },
          hovertemplate: `${label}<br>${metric}${what} at step %{x}: %{y:.4g}<extra></extra>`,
          meta: { series: s.label, runs: [...s.runs], kind: s.metric },
        }); // fmt: skip
      }
      const layout = o.plotLayout({ height: 300, legend: false });
      layout.hovermode = "closest";
      layout.yaxis.title = { text: "accuracy", standoff: 2 };
      Plotly.react(card.querySelector(".chart"), traces, layout, o.plotConfig);
    }
  }

  // --- loading ---
  function setSeries(key, runId, s) {
    if (!store.has(key)) store.set(key, new Map());
    store.get(key).set(runId, {
      steps: s.steps,
      values: s.values.map((v) => (v === null ? NaN : v)),
      walls: s.walls || s.wall_times || null,
    });
  }

  async function fetchKey(key, gen) {
    const params = { runs: ids(runs), keys: key, max_points: MAX_POINTS };
    if (withWall) params.with_wall = "1";
    const series = await o.getJSON(apiUrl(data.series_api, params));
    if (gen !== generation) return;
    if (store.has(key)) store.get(key).clear();
    for (const r of runs) {
      const s = (series[String(r.id)] || {})[key];
      if (s) setSeries(key, r.id, s);
    }
  }

  async function load(keys) {
    const gen = ++generation;
    await Promise.all((keys || fetchedKeys()).map((k) => fetchKey(k, gen)));
    if (gen !== generation) return;
    drawAll();
  }

  // --- live ---
  function lastStep(key, runId) {
    const s = (store.get(key) || new Map()).get(runId);
    return s && s.steps.length ? s.steps[s.steps.length - 1] : -1;
  }

  async function poll() {
    const active = runs.filter((r) => isActive(r.status));
    if (!active.length) return false;
    const gen = generation;
    polls++;
    const keys = fetchedKeys();
    const table = await o.getJSON(apiUrl(data.table_api, { ids: ids(active), page_size: 100 })).catch(() => null);
    if (keys.length) {
      // from the oldest last step among the series that have points (a run that has not logged a
      // key yet must not make every poll re-read whole histories)
      const lasts = keys.flatMap((k) => active.map((r) => lastStep(k, r.id))).filter((s) => s >= 0);
      const since = lasts.length ? Math.min(...lasts) : -1;
      const params = { runs: ids(active), keys: keys.join(","), since_step: since };
      if (withWall) params.with_wall = "1";
      const series = await o.getJSON(apiUrl(data.series_api, params));
      if (gen !== generation) return true;
      const reload = [];
      for (const key of keys) {
        for (const r of active) {
          const s = (series[String(r.id)] || {})[key];
          if (!s || !s.steps.length) continue;
          const last = lastStep(key, r.id);
          let i = 0;
          while (i < s.steps.length && s.steps[i] <= last) i++;
          if (i >= s.steps.length) continue;
          const cur = (store.get(key) || new Map()).get(r.id);
          const add = {
            steps: s.steps.slice(i),
            values: s.values.slice(i).map((v) => (v === null ? NaN : v)),
            walls: s.walls ? s.walls.slice(i) : null,
          };
          if (!cur) {
            setSeries(key, r.id, { steps: add.steps, values: add.values, walls: add.walls });
          } else {
            cur.steps = cur.steps.concat(add.steps);
            cur.values = cur.values.concat(add.values);
            if (cur.walls && add.walls) cur.walls = cur.walls.concat(add.walls);
            if (cur.steps.length > 4 * MAX_POINTS && !reload.includes(key)) reload.push(key);
          }
        }
      }
      if (reload.length) await Promise.all(reload.map((k) => fetchKey(k, gen)));
    }
    if (polls % EVAL_EVERY === 0) {
      const ev = await o.getJSON(apiUrl(data.evaluations_api, { runs: ids(runs) })).catch(() => null);
      if (ev) evaluations = ev.evaluations;
    }
    if (table) {
      for (const row of table.results) {
        const r = byId.get(row.id);
        if (!r) continue;
        r.status = row.status;
        o.setBadge(document.querySelector(`[data-run-status="${row.id}"]`), row.status);
        const c = row.collapse;
        r.collapse = c && c.flagged ? { ...c, message: collapseMessage(c) } : null;
      }
    }
    redraw();
    return true;
  }

  function collapseMessage(c) {
    const f = (v) => (v === null || v === undefined ? "?" : Number(v).toPrecision(3));
    return `entropy collapse: ${c.key} fell from ${f(c.initial)} to ${f(c.value)} (below ${f(c.threshold)}) by step ${c.step}`;
  }

  let timer = null;
  async function tick() {
    let again = true;
    try {
      again = await poll();
    } catch (err) {
      console.warn("orlab: poll failed", err);
    }
    $("live-note").hidden = !again;
    timer = again ? setTimeout(tick, POLL_MS) : null;
  }

  // --- URL state ---
  function syncUrl() {
    const q = new URLSearchParams();
    q.set("runs", ids(runs));
    for (const k of state.keys) q.append("key", k);
    if (state.smooth !== data.defaults.smooth) q.set("smooth", String(state.smooth));
    if (state.x !== "step") q.set("x", state.x);
    if (state.x === "key") q.set("xkey", state.xkey);
    if (state.log !== null) q.set("log", state.log ? "1" : "0");
    if (state.logx) q.set("logx", "1");
    if (state.group) q.set("group", state.group);
    if (state.band !== "minmax") q.set("band", state.band);
    if (state.legend !== "config") q.set("legend", state.legend);
    if (state.all) q.set("all", "1");
    if (state.evals !== "both") q.set("evals", state.evals);
    const hidden = [...state.hide].filter((h) => typeof h === "number");
    if (hidden.length) q.set("hide", hidden.join(","));
    history.replaceState(null, "", `?${q.toString().replace(/%2C/g, ",")}`);
  }

  // --- exports ---
  function csvCell(v) {
    if (v === null || v === undefined || (typeof v === "number" && !Number.isFinite(v))) return "";
    const s = String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }
  function exportCsv() {
    const rows = [["chart", "series", "runs", "kind", "x_axis", "x", "y"]];
    const plots = [
      ...chartsEl.querySelectorAll('[data-testid="compare-chart"]'),
      ...document.querySelectorAll('[data-testid="eval-chart"]'),
    ];
    for (const plot of plots) {
      if (!plot.data) continue;
      const isEval = plot.dataset.testid === "eval-chart";
      const title = plot.layout && plot.layout.xaxis && plot.layout.xaxis.title;
      const xAxis = (plot.layout && plot.layout.meta && plot.layout.meta.xTitle) || (title && title.text) || "step";
      for (const t of plot.data) {
        const m = t.meta || {};
        const x = t.x || [];
        const y = t.y || [];
        for (let i = 0; i < x.length; i++) {
          const xv = !isEval && state.x === "wall" && Number.isFinite(x[i]) ? new Date(x[i]).toISOString() : x[i];
          rows.push([plot.dataset.key, m.series || t.name, (m.runs || []).join(" "), m.kind || "", xAxis, xv, y[i]]);
        }
      }
    }
    const csv = rows.map((r) => r.map(csvCell).join(",")).join("\n") + "\n";
    const blob = new Blob([csv], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `orlab-compare-${ids(runs).slice(0, 60).replace(/,/g, "-")}.csv`;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest(".png-button");
    if (!button) return;
    const plot = button.closest(".chart-card").querySelector(".chart");
    const name = (plot.dataset.key || "chart").replace(/[^\w.-]+/g, "_");
    Plotly.downloadImage(plot, {
      format: "png",
      filename: `orlab-${name}`,
      width: plot.clientWidth || 800,
      height: plot.clientHeight || 320,
    });
  });
  $("export-csv").addEventListener("click", exportCsv);
  $("copy-link").addEventListener("click", async (event) => {
    syncUrl();
    try {
      await navigator.clipboard.writeText(window.location.href);
      event.target.textContent = "Link copied";
    } catch (err) {
      window.prompt("The link to this view:", window.location.href);
    }
    setTimeout(() => (event.target.textContent = "Copy link"), 2000);
  });

  // --- controls ---
  // A click toggles an option (no Ctrl needed); the charts follow the selection.
  keySelect.addEventListener("mousedown", (event) => {
    const opt = event.target.closest("option");
    if (!opt || !opt.value) return;
    event.preventDefault();
    opt.selected = !opt.selected;
    keySelect.focus();
    keySelect.dispatchEvent(new Event("change", { bubbles: true }));
  });
  keySelect.addEventListener("change", async () => {
    const selected = [...keySelect.selectedOptions].map((opt) => opt.value).filter(Boolean);
    const added = selected.filter((k) => !state.keys.includes(k));
    state.keys = state.keys.filter((k) => selected.includes(k)).concat(added);
    if (state.log === null && state.keys.length) logToggle.checked = data.log_keys.includes(state.keys[0]);
    syncUrl();
    layoutCards();
    const missing = added.filter((k) => !store.has(k));
    if (missing.length) {
      const gen = generation;
      await Promise.all(missing.map((k) => fetchKey(k, gen)));
    }
    drawAll();
  });
  keyFilter.addEventListener("input", () => {
    const q = keyFilter.value.trim().toLowerCase();
    for (const opt of keySelect.options) opt.hidden = q !== "" && !opt.value.toLowerCase().includes(q) && !opt.selected;
  });
  smooth.addEventListener("input", () => {
    state.smooth = Number(smooth.value);
    smoothValue.textContent = smooth.value;
    redraw();
  });
  smooth.addEventListener("change", syncUrl);
  xMode.addEventListener("change", async () => {
    const v = xMode.value;
    state.x = v.startsWith("key:") ? "key" : v;
    state.xkey = v.startsWith("key:") ? v.slice(4) : "";
    syncUrl();
    const wall = needsWall();
    if (wall && !withWall) {
      withWall = true;
      await load();
    } else if (state.x === "key" && !store.has(state.xkey)) {
      await fetchKey(state.xkey, generation);
      drawAll();
    } else {
      drawAll();
    }
  });
  logToggle.addEventListener("change", () => {
    state.log = logToggle.checked;
    syncUrl();
    drawAll();
  });
  logxToggle.addEventListener("change", () => {
    state.logx = logxToggle.checked;
    syncUrl();
    drawAll();
  });
  groupBy.addEventListener("change", () => {
    state.group = groupBy.value;
    state.hide = new Set([...state.hide].filter((h) => typeof h === "number"));
    syncUrl();
    drawAll();
  });
  band.addEventListener("change", () => {
    state.band = band.value;
    syncUrl();
    drawAll();
  });
  legendMode.addEventListener("change", () => {
    state.legend = legendMode.value;
    syncUrl();
    redraw();
  });
  configAll.addEventListener("change", () => {
    state.all = configAll.checked;
    $("config-diff").classList.toggle("show-all", state.all);
    syncUrl();
  });
  if (evalMetric) {
    evalMetric.addEventListener("change", () => {
      state.evals = evalMetric.value;
      syncUrl();
      drawEvaluations();
    });
  }

  // The initial checkbox: log when the first chart's key is charted on a log axis by default.
  if (state.log === null && state.keys.length) logToggle.checked = data.log_keys.includes(state.keys[0]);

  load()
    .catch((err) => console.warn("orlab: could not load", err))
    .then(() => {
      document.body.dataset.compareReady = "1";
      if (runs.some((r) => isActive(r.status))) {
        $("live-note").hidden = false;
        timer = setTimeout(tick, POLL_MS);
      }
    });
  void timer;
})();

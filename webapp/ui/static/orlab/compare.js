/* Compare page: one chart per chosen metric key with every selected run overlaid.

   Data: GET /api/compare/series/?runs=..&keys=<one key>&max_points=N (one request per key, in
   parallel; the server downsamples each series with M4, so spikes survive; fewer points per series
   when many runs share a chart) plus with_wall=1 for the time axes. Grouped by step, a chart fetches
   only its groups' mean and band, computed on the server: GET /api/compare/groups/?groups=1,2;3,4
   (O(groups x points) whatever the number of runs). This script runs before plotly.js loads, so the
   data is on its way while the browser fetches and parses plotly.
   Everything else happens here, on the points as fetched:
   - smoothing: TensorBoard's debiased EMA (the raw curve stays faint behind the smoothed one: the
     raw layer, off by default above MANY runs); grouped, the server's mean and band edges are
     smoothed (the mean of smoothed curves is the smoothed mean);
   - x axis: step, wall time, time since the run's first point, or another logged key (a counter
     such as tokens seen), read at the same steps by linear interpolation;
   - grouping by a config field: by step the server's mean and band; on another x axis each group's
     runs (smoothed) are interpolated here onto a common x grid and drawn as the mean with a min-max
     or +-std band;
   - colours: one hue per group (the chosen grouping, else the runs' own groups), shades per run;
   - drawing: plotly draws each chart's axes, grid, zoom and modebar for one invisible trace that
     spans the data; every line, band and mark is drawn on a canvas over the plot area
     (compare-canvas.js: 50 SVG traces cost plotly 100-150 ms a chart, the canvas a few ms), with
     its own hover (the nearest point of a visible line). A chart is drawn when it scrolls into view
     (IntersectionObserver), several per task up to a budget; a smoothing step or a legend click
     recomputes the lines' y or visibility and repaints only the canvases of the charts in view;
   - events (alert rules that fired, GET /api/compare/events/) as dashed marks at their step;
   - points per series matched to the chart's width (MAX_POINTS, fewer per run above 10 runs);
   - CSV export of exactly what the charts draw (with run names), PNG per chart (axes, lines, title
     and legend), the whole state in the URL;
   - live: while a run is queued or running, every 2 s the new points of every chosen key
     (since_step; grouped: the groups again), the statuses and collapse flags
     (GET /api/runs/table/?ids=), and now and then the evaluations. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("compare-data").textContent);
  const chartsEl = document.getElementById("charts");
  if (!chartsEl || !data.runs.length) return;

  const POLL_MS = 2000;
  const EVAL_EVERY = 5; // polls
  const MANY = 10; // above this many runs: raw layer off by default, grouping offered first
  // Points per series matched to a chart's width: M4 needs about 2 points per pixel column of one
  // curve (every bucket's min and max); with more than 10 runs overlaid the budget is shared
  // (10 / runs of it per run, at least 120 points): 50 runs on a 600 px plot get 240 points each
  // rather than 1,500: the JSON, the smoothing and the canvas's raster all grow with the points.
  const MAX_POINTS = pointsPerSeries(data.runs.length);
  function pointsPerSeries(n) {
    const cap = data.max_points || 1500;
    let width = 640;
    try {
      const cols = getComputedStyle(chartsEl).gridTemplateColumns.split(" ").filter(Boolean).length || 1;
      const w = chartsEl.clientWidth / cols - 72; // less the plot's margins
      if (w > 100) width = w;
    } catch (err) {
      // no layout (a hidden page): the default width
    }
    return Math.max(120, Math.min(cap, Math.round(2 * width * Math.min(1, 10 / Math.max(1, n)))));
  }
  const GROUP_POINTS = 400; // a group's mean and band (M4 on the mean)
  const GRID_POINTS = 1000;
  const PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf",
  ];
  const GROUP_HUES = [212, 28, 122, 356, 272, 182, 318, 48, 88, 240, 14, 160];
  const GROUPS_API = data.groups_api || data.series_api.replace(/series\/$/, "groups/");
  const runs = data.runs.map((r, i) => ({ ...r, index: i, color: PALETTE[i % PALETTE.length] }));
  const byId = new Map(runs.map((r) => [r.id, r]));
  const urlParams = new URLSearchParams(window.location.search);
  const state = {
    ...data.state,
    hide: new Set(data.state.hide || []),
    raw: urlParams.has("raw") ? urlParams.get("raw") === "1" : runs.length <= MANY,
  };
  const store = new Map(); // key -> Map(run id -> {steps, values, walls})
  const gstore = new Map(); // key -> {sig, groups: [{steps, mean, std, min, max, count} | null]}
  let storeStale = false; // per-run points not kept up to date (grouped on the server while live)
  let withWall = needsWall();
  let generation = 0;
  let polls = 0;
  let ready = false; // plotly loaded and the first data in
  let events = []; // alert events of these runs (GET /api/compare/events/), drawn as marks

  const plotlyReady = new Promise((resolve) => {
    if (window.Plotly) resolve();
    else if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", resolve, { once: true });
    else window.addEventListener("load", resolve, { once: true });
  });

  const $ = (id) => document.getElementById(id);
  const keySelect = $("key-select");
  const keyFilter = $("key-filter");
  const smooth = $("smooth");
  const smoothValue = $("smooth-value");
  const xMode = $("x-mode");
  const logToggle = $("log-toggle");
  const logxToggle = $("logx-toggle");
  const rawToggle = $("raw-toggle");
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

  /* Grouped by step: the mean and band come from the server. */
  function serverGroups() {
    return !!state.group && state.x === "step";
  }

  // --- colours and labels ---
  function hsl(h, s, l, a) {
    return a === undefined ? `hsl(${h}, ${s}%, ${l}%)` : `hsla(${h}, ${s}%, ${l}%, ${a})`;
  }
  function groupHue(index) {
    return index < GROUP_HUES.length ? GROUP_HUES[index] : Math.round((index * 137.508) % 360);
  }
  function rgba(color, alpha) {
    if (color.startsWith("hsl(")) return color.replace("hsl(", "hsla(").replace(")", `, ${alpha})`);
    const n = parseInt(color.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
  }
  function runLabel(r) {
    return state.legend === "name" ? r.name : r.label;
  }
  /* One hue per group (the chosen grouping, else the runs' own groups when they differ) with a
     shade per run; ungrouped, up to 10 runs the usual palette, more get hues spread by the golden
     angle at alternating lightness (no two runs share a colour). */
  function assignColours() {
    let colourGroups = state.group ? groups() : null;
    if (!colourGroups && new Set(runs.map((r) => r.group || "")).size > 1) {
      const out = new Map();
      for (const r of runs) {
        const key = r.group || "";
        if (!out.has(key)) out.set(key, { index: out.size, runs: [] });
        out.get(key).runs.push(r);
      }
      colourGroups = [...out.values()];
    }
    if (colourGroups) {
      for (const g of colourGroups) {
        const hue = groupHue(g.index);
        const n = g.runs.length;
        g.runs.forEach((r, j) => {
          r.color = hsl(hue, 70, n > 1 ? Math.round(26 + (44 * j) / (n - 1)) : 42);
        });
      }
    } else if (runs.length <= PALETTE.length) {
      for (const r of runs) r.color = PALETTE[r.index];
    } else {
      for (const r of runs) r.color = hsl(Math.round((r.index * 137.508) % 360), 68, [40, 55, 30][r.index % 3]);
    }
    for (const r of runs) {
      const sw = document.querySelector(`[data-swatch="${r.id}"]`);
      if (sw) sw.style.background = r.color;
    }
  }

  // --- smoothing: TensorBoard's debiased exponential moving average ---
  function ema(values, weight) {
    if (!(weight > 0)) return values;
    const out = new Array(values.length);
    let last = 0;
    let wn = 1; // weight ** (finite points so far)
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) {
        out[i] = v;
        continue;
      }
      last = last * weight + (1 - weight) * v;
      wn *= weight;
      out[i] = last / (1 - wn);
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
  let groupCache = null;
  function groups() {
    if (groupCache && groupCache.by === state.group) return groupCache.groups;
    const out = new Map();
    for (const r of runs) {
      const g = groupOf(r);
      if (!out.has(g.key)) {
        const index = out.size;
        out.set(g.key, { key: g.key, label: g.label, runs: [], index, color: hsl(groupHue(index), 70, 42) });
      }
      out.get(g.key).runs.push(r);
    }
    groupCache = { by: state.group, groups: [...out.values()] };
    return groupCache.groups;
  }
  /* The groups as the server reads them: run ids, groups separated by ";". */
  function groupSig() {
    return groups()
      .map((g) => ids(g.runs))
      .join(";");
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
  function plotOf(key) {
    const card = chartsEl.querySelector(`.chart-card[data-key="${CSS.escape(key)}"]`);
    return card ? card.querySelector(".chart") : null;
  }

  // Lazy drawing: a chart is drawn (or redrawn after a change) when it is within 200 px of the
  // viewport; one chart per task, those on screen first, so the page stays responsive while 10
  // charts draw. dirty: the chart needs a new plot; stale: only its smoothing or hidden series
  // changed (a restyle of those traces brings it up to date).
  const inView = new Set(); // within 200 px of the viewport
  const onScreen = new Set(); // in the viewport itself
  const dirty = new Set();
  const stale = new Set();
  const queue = new Set();
  const observed = new WeakSet();
  const observer = new IntersectionObserver(
    (entries) => {
      for (const e of entries) {
        const key = e.target.dataset.key;
        if (e.isIntersecting) {
          inView.add(key);
          if (dirty.has(key) || stale.has(key)) schedule(key);
        } else {
          inView.delete(key);
        }
      }
    },
    { rootMargin: "200px 0px" }
  );
  const screenObserver = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) onScreen.add(e.target.dataset.key);
      else onScreen.delete(e.target.dataset.key);
    }
  });
  let draining = false;
  function schedule(key) {
    queue.add(key);
    chartsEl.dataset.pending = String(queue.size); // charts waiting for their turn (tests, bench)
    if (!draining) {
      draining = true;
      setTimeout(drain, 0);
    }
  }
  // One task takes charts until it has run DRAIN_BUDGET_MS: a chart's draw (plotly's axes for one
  // trace plus a canvas paint) or a repaint after a smoothing step is a few ms to a few tens of ms,
  // so the charts in view share a task or two and one paint, and no task runs far past the budget.
  const DRAIN_BUDGET_MS = 40;
  function drain() {
    const t0 = performance.now();
    while (queue.size && performance.now() - t0 < DRAIN_BUDGET_MS) drainOne();
    chartsEl.dataset.pending = String(queue.size);
    if (queue.size) setTimeout(drain, 0);
    else draining = false;
  }
  /* The next chart's turn (on screen first); true when it was drawn anew. */
  function drainOne() {
    let key = [...queue].find((k) => onScreen.has(k));
    if (key === undefined) key = queue.values().next().value;
    if (key === undefined) return false;
    queue.delete(key);
    if (!ready || !inView.has(key) || !state.keys.includes(key)) return false;
    const draws = () => Number(plotOf(key) ? plotOf(key).dataset.draws || 0 : 0);
    const before = draws();
    if (dirty.has(key)) {
      if (hasData(key)) drawChart(key);
    } else if (stale.has(key)) {
      syncChart(key); // a restyle in place, or a new draw when the chart's structure changed
    }
    return draws() !== before;
  }
  /* Whether the data of a chart is in (a chart is drawn once, when its data has come). */
  function hasData(key) {
    if (serverGroups()) return gstore.has(key) && gstore.get(key).sig === groupSig();
    return store.has(key) && (state.x !== "key" || store.has(state.xkey));
  }
  /* Data came in: the charts waiting for it, if in view, take their turn. */
  function arrived() {
    if (!ready) return;
    for (const k of state.keys) if (dirty.has(k) && inView.has(k)) schedule(k);
  }

  /* Draw every chart that waits for its turn now, in view or not (exports need them all). */
  function flush() {
    if (!ready) return;
    for (const key of state.keys) {
      if (dirty.has(key)) drawChart(key);
      else if (stale.has(key)) syncChart(key);
    }
  }

  function layoutCards() {
    const placeholder = chartsEl.querySelector('[data-testid="no-keys"]');
    if (placeholder) placeholder.hidden = state.keys.length > 0;
    const keep = new Set(state.keys);
    for (const card of [...chartsEl.querySelectorAll(".chart-card")]) {
      if (!keep.has(card.dataset.key)) {
        const plot = card.querySelector(".chart");
        if (plot && plot.data) Plotly.purge(plot);
        observer.unobserve(card);
        screenObserver.unobserve(card);
        inView.delete(card.dataset.key);
        onScreen.delete(card.dataset.key);
        card.remove();
      }
    }
    let prev = null;
    for (const key of state.keys) {
      const card = chartCard(key);
      const want = prev ? prev.nextElementSibling : chartsEl.firstElementChild;
      if (card !== want) chartsEl.insertBefore(card, want); // moves a chart only when the order changed
      if (!observed.has(card)) {
        observed.add(card);
        observer.observe(card);
        screenObserver.observe(card);
      }
      prev = card;
    }
  }

  function logY(key) {
    return state.log === true || (state.log === null && data.log_keys.includes(key));
  }

  /* What decides a chart's traces and layout, but for the smoothing weight and the hidden series:
     while it stays the same those two are restyled in place. */
  function structure(key) {
    return [state.smooth > 0, state.raw, state.group, state.band, state.x, state.xkey, state.logx, logY(key),
      state.legend, withWall].join("|"); // fmt: skip
  }

  function bandOf(agg) {
    if (state.band === "std") {
      return {
        lower: agg.mean.map((m, i) => m - agg.std[i]),
        upper: agg.mean.map((m, i) => m + agg.std[i]),
      };
    }
    return { lower: agg.min, upper: agg.max };
  }

  function groupTraces(g, agg, runIds, traces, smoothSrc) {
    // agg: {x, mean, lower, upper, count}; smoothSrc set: y recomputed from these on a smoothing step
    const color = g.color;
    const hideId = `g:${g.key}`;
    const visible = !state.hide.has(hideId);
    const n = runIds.length;
    const label = `${g.label} (${n} run${n > 1 ? "s" : ""})`;
    const sm = (ys) => (smoothSrc ? ema(ys, state.smooth) : ys);
    const add = (trace, src) => {
      if (smoothSrc) smoothSrc.push({ i: traces.length, src });
      traces.push(trace);
    };
    if (state.band !== "none") {
      const bandName = state.band === "std" ? "± std" : "min–max";
      add({
        x: agg.x, y: sm(agg.lower), line: { width: 0, color }, visible, name: `${label} lower`,
        meta: { series: g.label, runs: runIds, kind: state.band === "std" ? "mean-std" : "min", hide: hideId },
      }, agg.lower); // fmt: skip
      add({
        x: agg.x, y: sm(agg.upper), line: { width: 0, color }, visible, fill: "tonexty",
        fillcolor: rgba(color, 0.2), name: `${label} ${bandName}`,
        meta: { series: g.label, runs: runIds, kind: state.band === "std" ? "mean+std" : "max", hide: hideId },
      }, agg.upper); // fmt: skip
    }
    const count = agg.count;
    add({
      x: agg.x, y: sm(agg.mean), name: label, line: { color, width: 2 }, visible, customdata: count,
      hover: { title: label, subtitle: g.runs.map((r) => r.name).slice(0, 8).join(", ") + (g.runs.length > 8 ? ", …" : ""),
        what: (k) => ` (mean of ${Array.isArray(count) ? count[k] : count})` },
      meta: { series: g.label, runs: runIds, kind: "mean", hide: hideId },
    }, agg.mean); // fmt: skip
  }

  /* A run's line: above MANY runs 1 px, which reads better when dozens overlap and is Skia's
     hairline (a canvas of 50 such lines rasterises ~40x faster than at 1.8 px, compare-canvas.js). */
  function lineWidth() {
    if (runs.length > MANY) return 1;
    return state.smooth > 0 ? 1.8 : 1.5;
  }

  /* Events (alert rules that fired, issue 15) as marks on the chart of their key (every chart when
     the event has no key), at their step, in their run's colour; x by step, else the run's x at
     that step (interpolated on its series). */
  function eventMarks(key, perRun, unit) {
    const out = [];
    for (const ev of events) {
      if (ev.key && ev.key !== key) continue; // no key ("" or null): on every chart
      const r = byId.get(ev.run_id);
      if (!r || ev.step === null || ev.step === undefined) continue;
      let x = ev.step;
      if (state.x !== "step") {
        const s = perRun && perRun.get(r.id);
        const xs = s && xsOf(r, s, unit);
        if (!xs) continue;
        x = interp(s.steps, xs, ev.step);
      }
      if (!Number.isFinite(x)) continue;
      const g = state.group ? groups().find((gr) => gr.runs.includes(r)) : null;
      const severity = ev.severity ? ` (${ev.severity})` : "";
      out.push({
        x, color: r.color, dash: "dash", event: ev.id, owner: r.id, group: g ? `g:${g.key}` : null,
        visible: !hiddenRun(r.id, g),
        hover: `${r.name} · ${ev.rule_name || "event"}${severity} at step ${ev.step}: ${ev.message || ""}${ev.acknowledged ? " (acknowledged)" : ""}`,
      }); // fmt: skip
    }
    return out;
  }
  function hiddenRun(runId, g) {
    return state.hide.has(runId) || (!!g && state.hide.has(`g:${g.key}`));
  }

  function xFormat() {
    if (state.x === "wall") return (v) => new Date(v).toISOString().replace("T", " ").slice(0, 19);
    return (v) => (Number.isInteger(v) ? String(v) : Number(v).toPrecision(6).replace(/\.?0+$/, ""));
  }

  /* A chart: plotly draws the axes for one invisible trace spanning the data (compare-canvas.js),
     the canvas layer draws every line, band and mark. */
  function drawChart(key) {
    dirty.delete(key);
    stale.delete(key);
    const card = chartCard(key);
    const plot = card.querySelector(".chart");
    const unit = state.x === "rel" ? relUnit() : null;
    const traces = [];
    const marks = [];
    let smoothSrc = []; // [{i: line index, src: unsmoothed y}], null: a smoothing step redraws
    let points = 0;
    let logged = "";
    const rawXTitle = xTitle(unit || { name: "" });
    let perRun = null;
    if (serverGroups()) {
      const entry = gstore.get(key);
      const found = entry && entry.sig === groupSig() ? entry.groups : [];
      groups().forEach((g, gi) => {
        const agg = found[gi];
        if (!agg || !agg.steps.length) return;
        points += agg.steps.length;
        const b = bandOf(agg);
        const runIds = g.runs.map((r) => r.id);
        groupTraces(g, { x: agg.steps, mean: agg.mean, lower: b.lower, upper: b.upper, count: agg.count },
          runIds, traces, smoothSrc); // fmt: skip
      });
    } else {
      perRun = store.get(key) || new Map();
      const rawLayer = state.raw && state.smooth > 0;
      const raws = [];
      const mains = [];
      const curves = new Map(); // run id -> {x, y (smoothed or raw)}
      for (const r of runs) {
        const s = perRun.get(r.id);
        if (!s) continue;
        points += s.steps.length;
        const x = xsOf(r, s, unit);
        if (!x) continue;
        const ys = ema(s.values, state.smooth);
        curves.set(r.id, { x, y: ys });
        if (state.group) continue;
        const visible = !state.hide.has(r.id);
        const label = runLabel(r);
        if (rawLayer) {
          raws.push({
            x, y: s.values, name: `${label} (raw)`, line: { color: r.color, width: 1 }, opacity: 0.25, visible,
            meta: { series: label, runs: [r.id], kind: "raw", hide: r.id },
          }); // fmt: skip
        }
        mains.push({
          trace: {
            x, y: ys, name: label, visible, line: { color: r.color, width: lineWidth() },
            hover: { title: r.name, subtitle: label !== r.name ? label : "" },
            meta: { series: label, runs: [r.id], kind: state.smooth > 0 ? "smoothed" : "raw", hide: r.id },
          },
          src: s.values,
        }); // fmt: skip
        const c = r.collapse;
        if (c && c.key === key && state.x === "step" && c.step !== null) {
          marks.push({ x: c.step, color: r.color, dash: "dot", visible, owner: r.id,
            hover: `${r.name}: ${c.message || "entropy collapse"}` }); // fmt: skip
        }
      }
      // every raw layer under every smoothed line
      traces.push(...raws);
      for (const m of mains) {
        smoothSrc.push({ i: traces.length, src: m.src });
        traces.push(m.trace);
      }
      if (state.group) {
        smoothSrc = null; // the band of smoothed curves: recomputed on a smoothing step
        for (const g of groups()) {
          const members = g.runs.filter((r) => curves.has(r.id));
          if (!members.length) continue;
          const agg = aggregate(members.map((r) => curves.get(r.id)));
          groupTraces(g, { x: agg.grid, mean: agg.mean, lower: agg.lower, upper: agg.upper, count: agg.count },
            members.map((r) => r.id), traces, null); // fmt: skip
        }
      }
      if (perRun.size < runs.length) logged = `${perRun.size} of ${runs.length} runs logged it`;
    }
    marks.push(...eventMarks(key, perRun, unit));
    const layout = o.plotLayout({ log: logY(key), height: 320, legend: false });
    layout.hovermode = false; // the canvas layer's own hover (compare-canvas.js)
    layout.margin = { l: 60, r: 12, t: 8, b: 44 };
    // Metric keys are user text: escaped, or Plotly renders markup in them (a key "<a href=...>" was a link).
    layout.meta = { xTitle: rawXTitle }; // the unescaped title, for the CSV export
    layout.xaxis.title = { text: o.plotText(rawXTitle), standoff: 4 };
    if (state.x === "wall") layout.xaxis.type = "date";
    else if (state.logx) layout.xaxis.type = "log";
    layout.yaxis.title = { text: o.plotText(key), standoff: 2 };
    layout.uirevision = `${key}|${state.x}|${state.xkey}|${state.logx}|${logY(key)}`;
    const layer = o.lineLayer;
    layer.set(plot, traces, marks, { xLabel: rawXTitle, xFormat: xFormat() });
    const range = layer.rangeTrace(traces, layout.xaxis.type === "log", logY(key));
    Plotly.react(plot, [range], layout, o.plotConfig);
    layer.paint(plot); // plotly drew synchronously; its afterplot paints again when it draws later
    plot._orlab = { structure: structure(key), smooth: smoothSrc, smoothed: state.smooth };
    plot.dataset.smooth = String(state.smooth);
    plot.dataset.points = String(points);
    plot.dataset.traces = String(traces.length);
    plot.dataset.draws = String(Number(plot.dataset.draws || 0) + 1);
    card.querySelector(".chart-count").textContent = logged;
  }

  /* Every chart is redrawn: now where it is in view, else when it scrolls into view. */
  function drawAll() {
    layoutCards();
    for (const key of state.keys) dirty.add(key);
    drawLegend();
    if (!ready) return;
    for (const key of state.keys) if (inView.has(key)) schedule(key);
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

  /* Bring a drawn chart to the current smoothing and hidden series: the lines' y (smoothed again
     from their unsmoothed source) and visibility change in place and the canvas is painted again;
     plotly does nothing (the axes keep their ranges until the chart is next drawn anew, as plotly's
     own restyle-free path did). A chart whose structure changed is drawn anew. */
  function syncChart(key) {
    stale.delete(key);
    const plot = plotOf(key);
    const meta = plot && plot._orlab;
    const resmooth = meta && meta.smoothed !== state.smooth;
    if (!meta || !plot.orlabLines || meta.structure !== structure(key) || (resmooth && !meta.smooth)) {
      dirty.add(key);
      if (hasData(key)) drawChart(key);
      return;
    }
    const lines = plot.orlabLines;
    if (resmooth) for (const e of meta.smooth) lines[e.i].y = ema(e.src, state.smooth);
    meta.smoothed = state.smooth;
    plot.dataset.smooth = String(state.smooth);
    for (const t of lines) if (t.meta && t.meta.hide !== undefined) t.visible = !state.hide.has(t.meta.hide);
    for (const m of plot.orlabMarks || []) {
      if (m.owner !== undefined) m.visible = !hiddenRun(m.owner, m.group ? { key: m.group.slice(2) } : null);
    }
    o.lineLayer.paint(plot);
    plot.dataset.fastRestyles = String(Number(plot.dataset.fastRestyles || 0) + 1);
  }

  /* A smoothing step or a legend click: every drawn chart goes stale; those in view are brought up
     to date (several per task, on screen first); the others when scrolled to. */
  function restyleAll() {
    for (const key of state.keys) {
      if (dirty.has(key)) continue;
      stale.add(key);
      if (inView.has(key)) schedule(key);
    }
  }

  // --- legend: one for every chart; click an entry to hide or show it everywhere ---
  function drawLegend() {
    const items = state.group
      ? groups().map((g) => ({
          id: `g:${g.key}`,
          color: g.color,
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
          b.classList.toggle("off", state.hide.has(it.id));
          syncUrl();
          restyleAll();
          if (ready) drawEvaluations();
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
          if (typeof v !== "number") continue; // "<metric>_ci" intervals ride with their metric
          const isAvg = /^avg@/.test(m);
          const isPass = /^pass@/.test(m);
          if ((state.evals === "avg" && !isAvg) || (state.evals === "pass" && !isPass)) continue;
          const name = evalName(m, e.k);
          // evaluations under different protocols never share a line (webapp.runs.eval_protocol)
          const key = e.protocol_key || "";
          const id = `${g ? `g:${g.key}` : run.id}|${name}|${key}`;
          if (!series.has(id)) {
            series.set(id, {
              label: g ? g.label : runLabel(run),
              color: g ? g.color : run.color,
              runs: new Set(),
              metric: name,
              pass: isPass,
              other: !isAvg && !isPass,
              key,
              points: new Map(),
              ci: new Map(),
            });
          }
          const s = series.get(id);
          s.runs.add(run.id);
          if (!s.points.has(e.step)) s.points.set(e.step, []);
          s.points.get(e.step).push(v);
          const ci = e.metrics[`${m}_ci`];
          if (Array.isArray(ci) && ci.length === 2) s.ci.set(e.step, ci);
        }
      }
      const traces = [];
      const keys = new Set([...series.values()].map((s) => s.key));
      for (const s of series.values()) {
        const steps = [...s.points.keys()].sort((a, b) => a - b);
        const ys = steps.map((step) => {
          const vals = s.points.get(step);
          return vals.reduce((a, b) => a + b, 0) / vals.length;
        });
        const label = o.plotText(s.label);
        const metric = o.plotText(s.metric) + (keys.size > 1 ? ` · protocol ${o.plotText(s.key || "—")}` : "");
        const what = state.group ? ` (mean of ${s.runs.size})` : "";
        // a run's own intervals as a band (a group's mean has none: the mean of intervals is not one)
        const single = steps.every((step) => s.points.get(step).length === 1);
        if (!state.group && single && steps.some((step) => s.ci.has(step))) {
          const band = { x: steps, type: "scatter", mode: "lines", line: { width: 0, color: s.color },
            hoverinfo: "skip", showlegend: false };
          const ends = (i) => steps.map((step) => (s.ci.has(step) ? s.ci.get(step)[i] : null));
          traces.push({ ...band, y: ends(0), meta: { band: "lo", series: s.label, kind: s.metric, protocol: s.key } });
          traces.push({ ...band, y: ends(1), fill: "tonexty", fillcolor: rgba(s.color, 0.15),
            meta: { band: "hi", series: s.label, kind: s.metric, protocol: s.key } });
        } // fmt: skip
        traces.push({
          x: steps, y: ys, type: "scatter", mode: "lines+markers", name: `${label} ${metric}`,
          line: { color: s.color, width: 1.5, dash: s.other ? "dashdot" : !s.pass ? "solid" : s.metric === "pass@1" ? "dot" : "dash" },
          marker: { size: 5 },
          hovertemplate: `${label}<br>${metric}${what} at step %{x}: %{y:.4g}<extra></extra>`,
          meta: { series: s.label, runs: [...s.runs], kind: s.metric, protocol: s.key },
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
    else store.set(key, new Map());
    for (const r of runs) {
      const s = (series[String(r.id)] || {})[key];
      if (s) setSeries(key, r.id, s);
    }
    arrived();
  }

  const nanify = (a) => (a || []).map((v) => (v === null ? NaN : v));
  async function fetchGroupKey(key, sig, gen) {
    const body = await o.getJSON(apiUrl(GROUPS_API, { groups: sig, keys: key, max_points: GROUP_POINTS }));
    if (gen !== generation) return;
    gstore.set(key, {
      sig,
      groups: body.groups.map((g) => {
        const s = g.series[key];
        if (!s) return null;
        return { steps: s.steps, mean: nanify(s.mean), std: nanify(s.std), min: nanify(s.min), max: nanify(s.max), count: s.count }; // fmt: skip
      }),
    });
    arrived();
  }

  /* Fetch what the current view needs and does not hold yet: the groups' aggregates (grouped by
     step) or the runs' series. */
  async function ensureData(gen) {
    if (serverGroups()) {
      const sig = groupSig();
      const missing = state.keys.filter((k) => !(gstore.has(k) && gstore.get(k).sig === sig));
      await Promise.all(missing.map((k) => fetchGroupKey(k, sig, gen)));
    } else {
      if (storeStale) {
        storeStale = false;
        store.clear();
      }
      await Promise.all(fetchedKeys().filter((k) => !store.has(k)).map((k) => fetchKey(k, gen)));
    }
  }

  /* The runs' alert events (issue 15), when the events API exists (data.events_api: the page names
     it only when its route is there); any failure leaves the charts without marks. */
  async function fetchEvents() {
    if (!data.events_api) return false;
    try {
      const body = await o.getJSON(apiUrl(data.events_api, { runs: ids(runs) }));
      const got = Array.isArray(body.events) ? body.events : [];
      const changed = JSON.stringify(got) !== JSON.stringify(events);
      events = got;
      return changed;
    } catch (err) {
      return false;
    }
  }

  async function refresh() {
    await ensureData(generation);
    drawAll();
  }

  /* The first load: the requests go out before plotly.js has loaded; each chart is drawn as soon
     as plotly and its own data are in. */
  async function load() {
    const gen = ++generation;
    const fetching = ensureData(gen);
    fetchEvents().then((changed) => {
      if (changed && ready) drawAll();
    });
    await plotlyReady;
    if (gen === generation) {
      ready = true;
      drawAll();
    }
    await fetching;
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
    if (keys.length && serverGroups()) {
      // grouped on the server: the groups' aggregates again (the per-run points fall behind)
      storeStale = true;
      const sig = groupSig();
      await Promise.all(state.keys.map((k) => fetchGroupKey(k, sig, gen)));
      if (gen !== generation) return true;
    } else if (keys.length) {
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
      await fetchEvents();
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
    if (state.raw !== runs.length <= MANY) q.set("raw", state.raw ? "1" : "0");
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
    flush(); // the charts not scrolled into view yet
    const rows = [["chart", "series", "runs", "run_names", "kind", "x_axis", "x", "y"]];
    const plots = [
      ...chartsEl.querySelectorAll('[data-testid="compare-chart"]'),
      ...document.querySelectorAll('[data-testid="eval-chart"]'),
    ];
    for (const plot of plots) {
      const isEval = plot.dataset.testid === "eval-chart";
      const lines = isEval ? plot.data : plot.orlabLines; // the compare charts' lines are the canvas layer's
      if (!lines) continue;
      const title = plot.layout && plot.layout.xaxis && plot.layout.xaxis.title;
      const xAxis = (plot.layout && plot.layout.meta && plot.layout.meta.xTitle) || (title && title.text) || "step";
      for (const t of lines) {
        if (t.visible === false) continue; // hidden from the legend
        const m = t.meta || {};
        const names = (m.runs || []).map((id) => (byId.get(id) || { name: "" }).name).join(" ");
        const x = t.x || [];
        const y = t.y || [];
        for (let i = 0; i < x.length; i++) {
          const xv = !isEval && state.x === "wall" && Number.isFinite(x[i]) ? new Date(x[i]).toISOString() : x[i];
          rows.push([plot.dataset.key, m.series || t.name, (m.runs || []).join(" "), names, m.kind || "", xAxis, xv, y[i]]);
        }
      }
    }
    const csv = rows.map((r) => r.map(csvCell).join(",")).join("\n") + "\n";
    const blob = new Blob([csv], { type: "text/csv" });
    o.downloadBlob(blob, `orlab-compare-${ids(runs).slice(0, 60).replace(/,/g, "-")}.csv`);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest(".png-button");
    if (!button) return;
    const plot = button.closest(".chart-card").querySelector(".chart");
    if (plot.dataset.testid === "compare-chart" && ready) {
      if (dirty.has(plot.dataset.key)) drawChart(plot.dataset.key);
      else if (stale.has(plot.dataset.key)) syncChart(plot.dataset.key);
    }
    const name = (plot.dataset.key || "chart").replace(/[^\w.-]+/g, "_");
    if (plot.dataset.testid === "compare-chart" && plot.orlabLines) {
      downloadPng(plot, name).catch((err) => console.warn("orlab: PNG failed", err));
      return;
    }
    Plotly.downloadImage(plot, {
      format: "png",
      filename: `orlab-${name}`,
      width: plot.clientWidth || 800,
      height: plot.clientHeight || 320,
    });
  });
  /* A compare chart's PNG: plotly's axes with the canvas's lines, the chart's key as title and a
     legend of the series shown (compare-canvas.js toPng). */
  async function downloadPng(plot, name) {
    const seen = new Set();
    const legend = [];
    for (const t of plot.orlabLines) {
      const m = t.meta || {};
      if (t.visible === false || m.kind === "raw" || !(t.line && t.line.width > 0) || seen.has(m.series)) continue;
      seen.add(m.series);
      legend.push({ color: t.line.color, text: m.series || t.name });
    }
    const url = await o.lineLayer.toPng(plot, plot.dataset.key, legend);
    const a = document.createElement("a");
    a.href = url;
    a.download = `orlab-${name}.png`;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => a.remove(), 1000);
  }
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
    await refresh();
  });
  keyFilter.addEventListener("input", () => {
    const q = keyFilter.value.trim().toLowerCase();
    for (const opt of keySelect.options) opt.hidden = q !== "" && !opt.value.toLowerCase().includes(q) && !opt.selected;
  });
  smooth.addEventListener("input", () => {
    state.smooth = Number(smooth.value);
    smoothValue.textContent = smooth.value;
    restyleAll();
  });
  smooth.addEventListener("change", syncUrl);
  xMode.addEventListener("change", async () => {
    const v = xMode.value;
    state.x = v.startsWith("key:") ? "key" : v;
    state.xkey = v.startsWith("key:") ? v.slice(4) : "";
    syncUrl();
    if (needsWall() && !withWall) {
      withWall = true;
      store.clear();
    }
    await refresh();
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
  rawToggle.addEventListener("change", () => {
    state.raw = rawToggle.checked;
    syncUrl();
    drawAll();
  });
  groupBy.addEventListener("change", async () => {
    state.group = groupBy.value;
    state.hide = new Set([...state.hide].filter((h) => typeof h === "number"));
    assignColours();
    syncUrl();
    drawLegend();
    await refresh();
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
      if (ready) drawEvaluations();
    });
  }

  // The initial checkbox: log when the first chart's key is charted on a log axis by default.
  if (state.log === null && state.keys.length) logToggle.checked = data.log_keys.includes(state.keys[0]);
  rawToggle.checked = state.raw;
  assignColours();

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

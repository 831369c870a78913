/* Run page: the Metrics card's charts, live.

   At 40+ metric keys (issue 16): charts sit in collapsible sections by key prefix (`actor/`, `critic/`,
   `eval/`, ...), a search box filters them by key substring, charts can be pinned to a section on top
   (pins and collapsed sections are the user's, per project, stored server side: /api/projects/<id>/
   chart-prefs/), a series of one point is shown as a value, calibration metrics (ECE, Brier, AUC) of
   a prefix share one chart of their own, and keys naming a learning rate start on a log axis. A chart
   is read and drawn only when it scrolls into view (IntersectionObserver): 40 charts of 2,000 points
   each would otherwise be fetched and drawn before the first one shows.

   Initial read of a chart: GET metrics?keys=<its keys>&max_points=2000 (downsampled). While the run is
   queued or running, every second: GET metrics?since_step=<last step seen> and append only the new
   points of the drawn charts with Plotly.extendTraces, and GET the run to update the status badge
   and buttons. Keys whose last step lags (logged less often) are polled in their own request with
   ?keys=, so a rarely-logged key never makes the others re-read their history. A key the page has
   not seen yet gets its chart (drawn when in view).

   Every chart marks where a resumed attempt began (the run's attempts) and the run's health-rule
   events (webapp.alerts.markers; re-read every 5 polls).

   The page's other panels (run-evaluations.js, run-samples.js, run-scoring.js) follow the run
   through the "orlab:run" event this script sends after each poll: detail {run, ticks, active}. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const chartsEl = document.getElementById("charts");
  const searchEl = document.getElementById("chart-search");
  const POLL_MS = 1000;
  const MAX_POINTS = 2000;
  const REDRAW_AT = 20000; // beyond this many points on one chart, reload it downsampled
  const PINNED = "(pinned)"; // section names as stored: a key prefix, these two, or "<prefix> calibration"
  const NO_PREFIX = "(no prefix)";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  const charts = new Map(); // chart id -> {id, keys, title, section, card, plot, log, drawn, loading, n, ...}
  const chartOfKey = new Map(); // metric key -> chart id
  const sections = new Map(); // section name -> {name, el, body, count}
  const pinned = new Set(data.chart_prefs.pinned);
  const collapsed = new Set(data.chart_prefs.collapsed);
  let status = data.status;
  let ticks = 0;
  let attempts = data.attempts || []; // attempt boundaries: [{attempt, first_step, duration_s, ...}]
  let events = data.events || []; // health-rule events: [{step, key|null, label, severity}]
  let attemptSeen = null; // the run's attempt when the charts were loaded
  let newestSeen = -1; // the newest step any poll has returned (drawn or not)

  /* --- what a key is --------------------------------------------------------------------------- */

  const prefixOf = (key) => (key.includes("/") ? key.slice(0, key.indexOf("/")) : "");
  // ECE, Brier score and AUC are in [0, 1] and read against each other, not against an accuracy
  const isCalibration = (key) => /(^|[/_])(ece|brier|auc)$/i.test(key);
  // a learning rate (5e-5) reads as 0 on a linear axis: `lr`/`learning_rate` as a segment or suffix
  const isLearningRate = (key) => /(^|[/_.])(lr|learning_rate)($|[/])/i.test(key);
  const chartIdOf = (key) => (isCalibration(key) ? `${prefixOf(key) || NO_PREFIX} calibration` : key);

  function rank(key) {
    const i = data.primary.indexOf(key);
    return i >= 0 ? String(i).padStart(4, "0") : `~${key}`;
  }
  const chartRank = (entry) => entry.keys.map(rank).sort()[0];

  /* --- markers: attempt boundaries and events -------------------------------------------------- */

  /* A resumed attempt redoes the steps after its checkpoint: a dotted line at its first step. An event
     of a health rule: a dashed line coloured by severity at its step, on its key's chart (or all). */
  function markers(entry) {
    const later = attempts.filter((a) => a.attempt > 1);
    const mine = events.filter((e) => e.key === null || e.key === undefined || entry.keys.includes(e.key));
    const color = (e) => ({ critical: "#dc2626", warning: "#d97706" })[e.severity] || "#6b7280"; // info: grey
    return {
      shapes: [
        ...later.map((a) => ({
          type: "line", xref: "x", yref: "paper", x0: a.first_step, x1: a.first_step, y0: 0, y1: 1,
          line: { color: "#9ca3af", width: 1, dash: "dot" },
        })),
        ...mine.map((e) => ({
          type: "line", xref: "x", yref: "paper", x0: e.step, x1: e.step, y0: 0, y1: 1,
          line: { color: color(e), width: 1, dash: "dash" },
        })),
      ],
      annotations: [
        ...later.map((a) => ({
          xref: "x", yref: "paper", x: a.first_step, y: 1, yanchor: "top", xanchor: "left",
          text: `attempt ${Number(a.attempt)}`, showarrow: false, font: { size: 10, color: "#6b7280" },
        })),
        ...mine.map((e) => ({
          xref: "x", yref: "paper", x: e.step, y: 0, yanchor: "bottom", xanchor: "left", showarrow: false,
          text: "⚑", hovertext: o.plotText(e.label), font: { size: 11, color: color(e) },
        })),
      ],
    };
  }

  function relayoutMarkers() {
    for (const entry of charts.values()) if (entry.drawn && !entry.single) Plotly.relayout(entry.plot, markers(entry));
  }

  const fingerprint = (list, fields) => JSON.stringify(list.map((x) => fields.map((f) => x[f])));

  function applyAttempts(run) {
    const next = run.attempts || [];
    const changed = fingerprint(next, ["attempt", "first_step"]) !== fingerprint(attempts, ["attempt", "first_step"]);
    attempts = next;
    if (changed) relayoutMarkers();
    // a new attempt replaces the redone steps' points: read the charts again instead of appending
    const reload = attemptSeen !== null && run.attempt !== attemptSeen;
    attemptSeen = run.attempt;
    return reload;
  }

  function applyEvents(next) {
    const changed = fingerprint(next, ["id", "step", "key"]) !== fingerprint(events, ["id", "step", "key"]);
    events = next;
    if (changed) relayoutMarkers();
  }

  /* The run's time over all its attempts (a resume restarts the run's own clock). */
  function durationOf(run) {
    const spans = (run.attempts || []).map((a) => a.duration_s).filter((s) => s !== null && s !== undefined);
    return spans.length ? spans.reduce((a, b) => a + b, 0) : run.duration_s;
  }

  /* --- preferences (server side, per user per project) ---------------------------------------- */

  async function savePrefs(change) {
    try {
      const response = await fetch(data.chart_prefs_api, {
        method: "PATCH",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": o.cookie("csrftoken") },
        body: JSON.stringify(change),
      });
      if (!response.ok) throw new Error(`PATCH ${data.chart_prefs_api}: ${response.status}`);
      chartsEl.dataset.prefsSaved = String(Number(chartsEl.dataset.prefsSaved || 0) + 1); // tests wait on it
    } catch (err) {
      console.warn("orlab: could not save the chart preferences", err);
    }
  }

  /* --- sections ------------------------------------------------------------------------------- */

  function sectionRank(name) {
    if (name === PINNED) return "";
    const ranks = [...charts.values()].filter((e) => e.section === name).map(chartRank).sort();
    return `${ranks[0] || "~~"}\u0000${name}`;
  }

  function section(name) {
    if (sections.has(name)) return sections.get(name);
    const el = document.createElement("section");
    el.className = "chart-section";
    el.dataset.section = name;
    el.dataset.testid = "chart-section";
    const head = document.createElement("button");
    head.type = "button";
    head.className = "chart-section-head";
    head.dataset.testid = "section-toggle";
    const title = document.createElement("span");
    title.className = "chart-section-title";
    title.textContent = name === PINNED ? "pinned" : name;
    const count = document.createElement("span");
    count.className = "muted small";
    head.append(title, count);
    const body = document.createElement("div");
    body.className = "charts chart-section-body";
    el.append(head, body);
    const s = { name, el, body, count };
    head.addEventListener("click", () => {
      const closing = !el.classList.contains("collapsed");
      el.classList.toggle("collapsed", closing);
      head.setAttribute("aria-expanded", String(!closing));
      if (closing) collapsed.add(name);
      else collapsed.delete(name);
      savePrefs(closing ? { collapse: [name] } : { expand: [name] });
    });
    el.classList.toggle("collapsed", collapsed.has(name));
    head.setAttribute("aria-expanded", String(!collapsed.has(name)));
    sections.set(name, s);
    return s;
  }

  /* Sections in order: pinned, then by their best-ranked chart (primary metrics first), then name. */
  function placeSections() {
    const order = [...sections.values()].sort((a, b) => (sectionRank(a.name) < sectionRank(b.name) ? -1 : 1));
    for (const s of order) {
      s.el.hidden = !s.body.children.length;
      chartsEl.append(s.el); // append moves: the final order is this one
    }
    filter();
  }

  function placeCard(entry) {
    const target = section(pinned.has(entry.id) ? PINNED : entry.section).body;
    const before = [...target.children].find((c) => c !== entry.card && c.dataset.rank > entry.card.dataset.rank);
    target.insertBefore(entry.card, before || null);
    if (entry.pinButton) {
      entry.pinButton.classList.toggle("active", pinned.has(entry.id));
      entry.pinButton.title = pinned.has(entry.id) ? "unpin (back to its section)" : "pin on top of this project's run pages";
    }
  }

  /* The search box: charts whose keys contain the text (any case); sections without one hide, and a
     collapsed section with a match opens while the search lasts (its stored state is kept). */
  function filter() {
    const q = (searchEl ? searchEl.value : "").trim().toLowerCase();
    chartsEl.classList.toggle("searching", q !== "");
    let shown = 0;
    for (const entry of charts.values()) {
      const match = !q || entry.keys.some((k) => k.toLowerCase().includes(q)) || entry.title.toLowerCase().includes(q);
      entry.card.hidden = !match;
      if (match) shown += 1;
    }
    for (const s of sections.values()) {
      const cards = [...s.body.children];
      const visible = cards.filter((c) => !c.hidden).length;
      s.el.hidden = visible === 0;
      s.count.textContent = q ? `${visible} of ${cards.length}` : `${cards.length}`;
    }
    const note = document.getElementById("chart-search-count");
    if (note) note.textContent = q ? `${shown} of ${charts.size} charts` : `${charts.size} charts`;
  }

  /* --- charts --------------------------------------------------------------------------------- */

  function button(text, testid, title) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "small chart-button";
    b.dataset.testid = testid;
    b.textContent = text;
    b.title = title;
    return b;
  }

  function card(key) {
    const id = chartIdOf(key);
    if (charts.has(id)) {
      const entry = charts.get(id);
      if (!entry.keys.includes(key)) {
        entry.keys.push(key);
        entry.keys.sort();
        entry.state[key] = { n: 0, last: -1 };
        entry.card.dataset.rank = chartRank(entry);
        chartOfKey.set(key, id);
        if (entry.drawn) {
          entry.drawn = false; // a new trace: read the chart again (when in view)
          want(entry);
        }
      }
      return entry;
    }
    const calibration = id !== key;
    const el = document.createElement("div");
    el.className = "chart-card";
    el.dataset.key = id;
    el.dataset.testid = "chart-card";
    const head = document.createElement("div");
    head.className = "chart-head";
    const title = document.createElement("span");
    title.className = "chart-title";
    title.textContent = calibration ? `${id} (ECE, Brier, AUC)` : key;
    const label = document.createElement("label");
    label.className = "check small";
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.dataset.testid = "log-toggle";
    toggle.checked = data.log_keys.includes(key) || isLearningRate(key);
    label.append(toggle, " log");
    label.title = "linear or log y axis";
    const count = document.createElement("span");
    count.className = "muted small chart-count";
    const pin = button("pin", "pin-button", "");
    const png = button("PNG", "png-button", "download this chart as PNG (title, axes, legend)");
    head.append(title, count, label, pin, png);
    const plot = document.createElement("div");
    plot.className = "chart";
    plot.dataset.testid = "chart";
    plot.dataset.key = id;
    plot.dataset.points = "0";
    const value = document.createElement("div");
    value.className = "chart-value";
    value.dataset.testid = "value-card";
    value.hidden = true;
    el.append(head, plot, value);
    const entry = {
      id, keys: [key], title: title.textContent, calibration, section: calibration ? id : prefixOf(key) || NO_PREFIX,
      card: el, plot, value, count, pinButton: pin, pngButton: png, log: toggle.checked, drawn: false, loading: false,
      visible: false, single: false, n: 0, lines: false, state: { [key]: { n: 0, last: -1 } },
    };
    el.dataset.rank = chartRank(entry);
    toggle.addEventListener("change", () => {
      entry.log = toggle.checked;
      if (entry.drawn && !entry.single) Plotly.relayout(plot, o.yScaleUpdate(entry.log));
    });
    pin.addEventListener("click", () => {
      const on = !pinned.has(id);
      if (on) pinned.add(id);
      else pinned.delete(id);
      placeCard(entry);
      placeSections();
      savePrefs(on ? { pin: [id] } : { unpin: [id] });
    });
    png.addEventListener("click", () => exportPng(entry));
    charts.set(id, entry);
    chartOfKey.set(key, id);
    placeCard(entry);
    observer.observe(el);
    document.getElementById("no-metrics").hidden = true;
    return entry;
  }

  function setPoints(entry) {
    entry.n = entry.keys.reduce((sum, k) => sum + entry.state[k].n, 0);
    const last = Math.max(...entry.keys.map((k) => entry.state[k].last));
    entry.plot.dataset.points = String(entry.n);
    entry.count.textContent = entry.n ? `${entry.n.toLocaleString()} pts · step ${last}` : "";
  }

  function trace(entry, key, steps, values, i) {
    return {
      x: steps,
      y: values,
      type: "scatter",
      mode: steps.length > 200 ? "lines" : "lines+markers",
      marker: { size: 3 },
      line: { width: 1.5, color: COLORS[i % COLORS.length] },
      connectgaps: false,
      name: o.plotText(key), // a metric key is user text: no Plotly markup
      hovertemplate: `${entry.keys.length > 1 ? o.plotText(key) + " " : ""}step %{x}<br>%{y:.6g}<extra></extra>`,
    };
  }

  /* A series of one point has no line to draw (plotly would show an empty -1..1 axis): its value. */
  function showValue(entry, step, value) {
    entry.single = true;
    entry.pngButton.disabled = true; // a number, no chart to export (the CSV has it)
    entry.plot.hidden = true;
    entry.value.hidden = false;
    const number = document.createElement("div");
    number.className = "chart-value-number";
    number.dataset.testid = "value-number";
    number.textContent = Number.isFinite(value) ? Number(value.toPrecision(6)).toString() : String(value);
    const where = document.createElement("div");
    where.className = "muted small";
    where.textContent = `at step ${step} (one point)`;
    entry.value.replaceChildren(number, where);
  }

  /* series: {key: {steps, values}} for the chart's keys. */
  function draw(entry, series) {
    const keys = entry.keys.filter((k) => series[k]);
    for (const k of entry.keys) {
      const s = series[k];
      entry.state[k] = { n: s ? s.steps.length : 0, last: s && s.steps.length ? s.steps[s.steps.length - 1] : -1 };
      if (s && s.steps.length) newestSeen = Math.max(newestSeen, entry.state[k].last);
    }
    entry.drawn = true;
    entry.series = series; // what the PNG export's legend names
    if (entry.keys.length === 1 && keys.length === 1 && series[keys[0]].steps.length === 1) {
      showValue(entry, series[keys[0]].steps[0], series[keys[0]].values[0]);
      setPoints(entry);
      return;
    }
    entry.single = false;
    entry.pngButton.disabled = false;
    entry.value.hidden = true;
    entry.plot.hidden = false;
    const traces = entry.keys.map((k, i) => trace(entry, k, series[k] ? series[k].steps : [], series[k] ? series[k].values : [], i));
    entry.lines = traces.every((t) => t.mode === "lines");
    const layout = { ...o.plotLayout({ log: entry.log, legend: entry.keys.length > 1 }), ...markers(entry) };
    if (entry.calibration) layout.yaxis.title = { text: "ECE · Brier · AUC", standoff: 4 };
    Plotly.react(entry.plot, traces, layout, o.plotConfig);
    setPoints(entry);
  }

  function append(entry, key, steps, values) {
    const st = entry.state[key];
    let i = 0;
    while (i < steps.length && steps[i] <= st.last) i++; // never draw a step twice
    if (i >= steps.length) return;
    const xs = steps.slice(i);
    const ys = values.slice(i);
    if (entry.single) {
      load([entry]); // a value card with a second point becomes a chart: read it in full
      return;
    }
    Plotly.extendTraces(entry.plot, { x: [xs], y: [ys] }, [entry.keys.indexOf(key)]);
    st.n += xs.length;
    st.last = xs[xs.length - 1];
    newestSeen = Math.max(newestSeen, st.last);
    if (!entry.lines && st.n > 200) {
      entry.lines = true;
      Plotly.restyle(entry.plot, { mode: "lines" });
    }
    setPoints(entry);
    if (st.n > REDRAW_AT) load([entry]);
  }

  function metricsUrl(params) {
    const q = new URLSearchParams(params);
    return `${data.metrics_api}?${q.toString()}`;
  }

  /* Full (downsampled) read of some charts, in one request. */
  async function load(entries) {
    entries = entries.filter((e) => !e.loading);
    if (!entries.length) return;
    for (const e of entries) e.loading = true;
    try {
      const keys = entries.flatMap((e) => e.keys);
      const series = await o.getJSON(metricsUrl({ max_points: MAX_POINTS, keys: keys.join(",") }));
      for (const e of entries) draw(e, series);
    } finally {
      for (const e of entries) e.loading = false;
      chartsEl.dataset.drawn = String([...charts.values()].filter((e) => e.drawn).length);
    }
  }

  /* Lazy drawing: a chart is read when it comes within 300 px of the viewport. The charts entering
     together are read in one request (the next frame). */
  const wanted = new Set();
  let flushing = null;
  function want(entry) {
    if (!entry.visible || entry.drawn) return;
    wanted.add(entry);
    if (flushing) return;
    flushing = requestAnimationFrame(() => {
      flushing = null;
      const batch = [...wanted];
      wanted.clear();
      load(batch).catch((err) => console.warn("orlab: could not load the metrics", err));
    });
  }

  const observer = new IntersectionObserver(
    (items) => {
      for (const item of items) {
        const entry = charts.get(item.target.dataset.key);
        if (!entry) continue;
        entry.visible = item.isIntersecting;
        if (entry.visible) want(entry);
      }
    },
    { rootMargin: "300px 0px" }
  );

  /* Every chart is read again (a resumed attempt replaced points): the visible ones now, the others
     when they come into view. */
  function reloadAll() {
    newestSeen = -1;
    const visible = [];
    for (const e of charts.values()) {
      e.drawn = false;
      if (e.visible) visible.push(e);
    }
    return load(visible);
  }

  /* The newest step the run has stored (the run API's last values): the first poll starts there
     even when no chart is drawn yet, instead of reading every series from step 0. */
  function seenFrom(run) {
    for (const v of Object.values(run.last || {})) if (v && v.step !== null) newestSeen = Math.max(newestSeen, v.step);
  }

  async function pollMetrics() {
    const buckets = new Map(); // last step -> keys of drawn charts
    for (const e of charts.values()) {
      if (!e.drawn) continue;
      for (const k of e.keys) {
        const last = e.state[k].last;
        if (!buckets.has(last)) buckets.set(last, []);
        buckets.get(last).push(k);
      }
    }
    // the request without a key filter starts at the newest step seen, drawn or not: charts not in
    // view are not re-read each second
    const since = Math.max(newestSeen, ...buckets.keys());
    const requests = [];
    requests.push(
      o.getJSON(metricsUrl({ since_step: since })).then((series) => {
        const wantedKeys = buckets.get(since) || [];
        for (const [key, s] of Object.entries(series)) {
          if (s.steps.length) newestSeen = Math.max(newestSeen, s.steps[s.steps.length - 1]);
          if (!chartOfKey.has(key)) {
            card(key); // a key that has just appeared: its chart, drawn when in view
            placeSections();
            continue;
          }
          const e = charts.get(chartOfKey.get(key));
          if (e.drawn && wantedKeys.includes(key)) append(e, key, s.steps, s.values);
        }
      })
    );
    for (const [last, keys] of buckets) {
      if (last === since) continue;
      requests.push(
        o.getJSON(metricsUrl({ since_step: last, keys: keys.join(",") })).then((series) => {
          for (const key of keys) {
            const e = charts.get(chartOfKey.get(key));
            if (series[key] && e.drawn) append(e, key, series[key].steps, series[key].values);
          }
        })
      );
    }
    await Promise.all(requests);
  }

  /* --- exports -------------------------------------------------------------------------------- */

  function exportPng(entry) {
    if (entry.single || !entry.drawn) return;
    const legend = entry.keys.map((k, i) => ({ name: `${data.run_name} · ${k}`, color: COLORS[i % COLORS.length] }));
    return window.orlabChartExport.png(entry.plot, {
      title: `${data.run_name} — ${entry.title}`,
      legend,
      yLabel: entry.calibration ? "ECE · Brier · AUC" : entry.keys[0],
      filename: `orlab-run-${data.id}-${entry.id.replace(/[^\w.-]+/g, "_")}`,
    });
  }

  const isActive = (s) => o.ACTIVE.includes(s);

  function show(id, visible) {
    const el = document.getElementById(id);
    if (el) el.hidden = !visible;
  }

  /* "waiting for run #N (status)": the run a waiting run starts from; hidden once it moves on. */
  function showWaiting(parent) {
    const note = document.getElementById("waiting-note");
    if (!note) return;
    note.hidden = !parent;
    if (!parent) return;
    document.getElementById("waiting-link").href = note.dataset.runUrl.replace(/\/0\/$/, `/${Number(parent.id)}/`);
    document.getElementById("waiting-id").textContent = parent.id;
    document.getElementById("waiting-status").textContent = parent.status;
  }

  function applyRun(run) {
    status = run.status;
    o.setBadge(document.getElementById("status-badge"), run.status);
    show("cancel-form", isActive(run.status));
    show("resume-form", o.RESUMABLE.includes(run.status));
    show("cancel-note", run.cancel_requested && isActive(run.status));
    show("live-note", isActive(run.status) && run.status !== "waiting");
    showWaiting(run.waiting_for);
    document.getElementById("fact-attempt").textContent = run.attempt;
    document.getElementById("fact-worker").textContent = run.worker_host || "—";
    document.getElementById("fact-started").textContent = o.fmtTime(run.started_at);
    document.getElementById("fact-finished").textContent = o.fmtTime(run.finished_at);
    document.getElementById("fact-duration").textContent = o.fmtDuration(durationOf(run));
    if (run.error) {
      document.getElementById("run-error").textContent = run.error;
      document.getElementById("run-traceback").textContent = run.traceback || "";
      show("traceback-box", !!run.traceback);
      show("error-section", true);
    }
  }

  /* A reward run's checkpoints carry a "Score a dataset" form: cloned from the page's template. */
  function scoreCell(checkpoint) {
    const template = document.getElementById("score-form-template");
    if (!template) return null;
    const td = document.createElement("td");
    td.append(template.content.cloneNode(true));
    td.querySelector("form").action = data.score_url.replace(/\/0\/score\/$/, `/${checkpoint.id}/score/`);
    return td;
  }

  /* Bytes as Django's filesizeformat writes them (the server-rendered rows use it). */
  function fmtSize(bytes) {
    if (bytes === null || bytes === undefined) return "—";
    const units = ["bytes", "KB", "MB", "GB", "TB", "PB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value}\u00a0bytes` : `${value.toFixed(1)}\u00a0${units[unit]}`;
  }

  async function refreshCheckpoints() {
    const page = await o.getJSON(`${data.checkpoints_api}?page_size=1000`);
    const rows = page.results || page;
    const body = document.getElementById("checkpoints-body");
    // unchanged steps (and retention deletions): keep the rows (and whatever is open in a score form)
    const shown = [...body.querySelectorAll("tr[data-step]")].map((tr) => tr.dataset.step + (tr.dataset.deleted || "")).join();
    if (!rows.length || shown === rows.map((c) => c.step + (c.deleted_at ? "1" : "")).join()) return;
    body.replaceChildren(
      ...rows.map((c) => {
        const tr = document.createElement("tr");
        tr.dataset.testid = "checkpoint-row";
        tr.dataset.step = c.step;
        tr.dataset.deleted = c.deleted_at ? "1" : "";
        const metrics = Object.entries(c.metrics || {})
          .map(([k, v]) => `${k}=${typeof v === "number" ? Number(v.toPrecision(4)) : v}`)
          .join(" ");
        const cells = [
          [c.step, "num"],
          [c.attempt, "num"],
          [metrics, "mono small"],
          [c.path, "mono small path"],
          [fmtSize(c.size_bytes), "nowrap size"],
          [o.fmtTime(c.created_at), "nowrap"],
        ];
        for (const [text, cls] of cells) {
          const td = document.createElement("td");
          td.className = cls;
          td.textContent = text;
          if (cls.includes("path")) td.title = text;
          if (cls.includes("size")) {
            td.dataset.testid = "checkpoint-size";
            if (c.deleted_at) {
              const badge = document.createElement("span");
              badge.className = "badge status-cancelled";
              badge.dataset.testid = "checkpoint-deleted";
              badge.title = c.deleted_at;
              badge.textContent = "deleted by retention";
              td.append(" ", badge);
            }
          }
          tr.append(td);
        }
        const score = scoreCell(c);
        if (score) tr.append(score);
        return tr;
      })
    );
  }

  function announce(run) {
    document.dispatchEvent(new CustomEvent("orlab:run", { detail: { run, ticks, active: isActive(run.status) } }));
  }

  async function refreshMarkers() {
    const m = await o.getJSON(data.markers_api);
    applyEvents(m.events || []);
  }

  async function tick() {
    ticks += 1;
    try {
      const [, run] = await Promise.all([pollMetrics(), o.getJSON(data.run_api)]);
      applyRun(run);
      // A resumed attempt's first write removes the older attempt's points after its checkpoint: a
      // series whose last step went back is read again (its redone steps are drawn anew).
      const truncated = Object.entries(run.last || {}).some(([key, v]) => {
        const entry = charts.get(chartOfKey.get(key));
        return entry && entry.drawn && v && v.step !== null && v.step < entry.state[key].last;
      });
      if (applyAttempts(run) || truncated) {
        await reloadAll();
        seenFrom(run);
      }
      announce(run);
      // A key whose first points are older than what the charts have seen: its chart (read in view).
      const unseen = (run.keys || []).filter((k) => !chartOfKey.has(k));
      for (const k of unseen) card(k);
      if (unseen.length) placeSections();
      if (!isActive(run.status)) {
        // Finished: the worker flushed everything before it said so; one last read, then stop.
        await pollMetrics();
        await refreshCheckpoints();
        await refreshMarkers();
        return;
      }
      if (ticks % 5 === 0) await Promise.all([refreshCheckpoints(), refreshMarkers()]);
    } catch (err) {
      console.warn("orlab: poll failed", err);
    }
    setTimeout(tick, POLL_MS);
  }

  function start() {
    for (const key of data.keys) card(key);
    placeSections();
    if (searchEl) searchEl.addEventListener("input", filter);
    attemptSeen = null;
    // the run's attempt as the page was rendered: a later one means the charts must be read again
    o.getJSON(data.run_api)
      .then((run) => {
        attemptSeen = run.attempt;
        seenFrom(run);
        if (isActive(status)) setTimeout(tick, POLL_MS);
      })
      .catch((err) => {
        console.warn("orlab: could not read the run", err);
        if (isActive(status)) setTimeout(tick, POLL_MS);
      });
  }

  start();
})();

/* Run page: one chart per metric key, live.

   Initial load: GET metrics?max_points=2000 (downsampled). While the run is queued or running, every
   second: GET metrics?since_step=<last step seen> and append only the new points with
   Plotly.extendTraces, and GET the run to update the status badge and buttons. Keys whose last step
   lags (logged less often) are polled in their own request with ?keys=, so a rarely-logged key
   never makes the others re-read their history. A key the page has not seen yet is loaded in full
   when it shows up.

   The page's other panels (run-evaluations.js, run-samples.js, run-scoring.js) follow the run
   through the "orlab:run" event this script sends after each poll: detail {run, ticks, active}. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const chartsEl = document.getElementById("charts");
  const POLL_MS = 1000;
  const MAX_POINTS = 2000;
  const REDRAW_AT = 20000; // beyond this many points on one chart, reload it downsampled
  const charts = new Map(); // key -> {key, card, plot, log, drawn, n, last}
  let status = data.status;
  let ticks = 0;
  let attempts = []; // the run API's attempt boundaries: [{attempt, first_step, ...}]
  let attemptSeen = null; // the run's attempt when the charts were loaded

  /* A resumed attempt redoes the steps after its checkpoint: a dotted line at its first step. */
  function boundaries() {
    const later = attempts.filter((a) => a.attempt > 1);
    return {
      shapes: later.map((a) => ({
        type: "line", xref: "x", yref: "paper", x0: a.first_step, x1: a.first_step, y0: 0, y1: 1,
        line: { color: "#9ca3af", width: 1, dash: "dot" },
      })),
      annotations: later.map((a) => ({
        xref: "x", yref: "paper", x: a.first_step, y: 1, yanchor: "top", xanchor: "left",
        text: `attempt ${Number(a.attempt)}`, showarrow: false, font: { size: 10, color: "#6b7280" },
      })),
    };
  }

  function applyAttempts(run) {
    const next = run.attempts || [];
    const changed = JSON.stringify(next.map((a) => [a.attempt, a.first_step])) !==
      JSON.stringify(attempts.map((a) => [a.attempt, a.first_step]));
    attempts = next;
    if (changed) for (const entry of charts.values()) if (entry.drawn) Plotly.relayout(entry.plot, boundaries());
    // a new attempt replaces the redone steps' points: read the charts again instead of appending
    const reload = attemptSeen !== null && run.attempt !== attemptSeen;
    attemptSeen = run.attempt;
    return reload;
  }

  const isActive = (s) => o.ACTIVE.includes(s);

  function rank(key) {
    const i = data.primary.indexOf(key);
    return i >= 0 ? String(i).padStart(4, "0") : `~${key}`;
  }

  function card(key) {
    if (charts.has(key)) return charts.get(key);
    const el = document.createElement("div");
    el.className = "chart-card";
    el.dataset.key = key;
    el.dataset.testid = "chart-card";
    const head = document.createElement("div");
    head.className = "chart-head";
    const title = document.createElement("span");
    title.className = "chart-title";
    title.textContent = key;
    const label = document.createElement("label");
    label.className = "check small";
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.dataset.testid = "log-toggle";
    toggle.checked = data.log_keys.includes(key);
    label.append(toggle, " log");
    const count = document.createElement("span");
    count.className = "muted small chart-count";
    head.append(title, count, label);
    const plot = document.createElement("div");
    plot.className = "chart";
    plot.dataset.testid = "chart";
    plot.dataset.key = key;
    plot.dataset.points = "0";
    el.append(head, plot);
    const entry = { key, card: el, plot, count, log: toggle.checked, drawn: false, n: 0, last: -1, lines: false };
    toggle.addEventListener("change", () => {
      entry.log = toggle.checked;
      if (entry.drawn) Plotly.relayout(plot, o.yScaleUpdate(entry.log));
    });
    // keep primary metrics first, then alphabetical
    const before = [...chartsEl.children].find((c) => rank(c.dataset.key) > rank(key));
    chartsEl.insertBefore(el, before || null);
    charts.set(key, entry);
    document.getElementById("no-metrics").hidden = true;
    return entry;
  }

  function setPoints(entry) {
    entry.plot.dataset.points = String(entry.n);
    entry.count.textContent = entry.n ? `${entry.n.toLocaleString()} pts · step ${entry.last}` : "";
  }

  function draw(entry, steps, values) {
    const trace = {
      x: steps,
      y: values,
      type: "scatter",
      mode: steps.length > 200 ? "lines" : "lines+markers",
      marker: { size: 3 },
      line: { width: 1.5, color: "#2563eb" },
      connectgaps: false,
      name: o.plotText(entry.key), // a metric key is user text: no Plotly markup
      hovertemplate: "step %{x}<br>%{y:.6g}<extra></extra>",
    };
    entry.lines = trace.mode === "lines";
    Plotly.react(entry.plot, [trace], { ...o.plotLayout({ log: entry.log }), ...boundaries() }, o.plotConfig);
    entry.drawn = true;
    entry.n = steps.length;
    entry.last = steps.length ? steps[steps.length - 1] : -1;
    setPoints(entry);
  }

  function append(entry, steps, values) {
    let i = 0;
    while (i < steps.length && steps[i] <= entry.last) i++; // never draw a step twice
    if (i >= steps.length) return;
    const xs = steps.slice(i);
    const ys = values.slice(i);
    Plotly.extendTraces(entry.plot, { x: [xs], y: [ys] }, [0]);
    entry.n += xs.length;
    entry.last = xs[xs.length - 1];
    if (!entry.lines && entry.n > 200) {
      entry.lines = true;
      Plotly.restyle(entry.plot, { mode: "lines" }, [0]);
    }
    setPoints(entry);
    if (entry.n > REDRAW_AT) load([entry.key]);
  }

  function metricsUrl(params) {
    const q = new URLSearchParams(params);
    return `${data.metrics_api}?${q.toString()}`;
  }

  /* Full (downsampled) load of some keys, or of all of them. */
  async function load(keys) {
    const params = { max_points: MAX_POINTS };
    if (keys) params.keys = keys.join(",");
    const series = await o.getJSON(metricsUrl(params));
    for (const [key, s] of Object.entries(series)) draw(card(key), s.steps, s.values);
  }

  async function pollMetrics() {
    const buckets = new Map(); // last step -> keys
    for (const e of charts.values()) {
      if (!e.drawn) continue;
      if (!buckets.has(e.last)) buckets.set(e.last, []);
      buckets.get(e.last).push(e.key);
    }
    const newest = buckets.size ? Math.max(...buckets.keys()) : -1;
    const fresh = [];
    const requests = [];
    // The newest keys, without a key filter: keys that have just appeared come with them.
    requests.push(
      o.getJSON(metricsUrl({ since_step: newest })).then((series) => {
        const wanted = buckets.get(newest) || [];
        for (const [key, s] of Object.entries(series)) {
          const e = charts.get(key);
          if (!e || !e.drawn) fresh.push(key);
          else if (wanted.includes(key)) append(e, s.steps, s.values);
        }
      })
    );
    for (const [last, keys] of buckets) {
      if (last === newest) continue;
      requests.push(
        o.getJSON(metricsUrl({ since_step: last, keys: keys.join(",") })).then((series) => {
          for (const key of keys) if (series[key]) append(charts.get(key), series[key].steps, series[key].values);
        })
      );
    }
    await Promise.all(requests);
    if (fresh.length) await load(fresh);
  }

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
    document.getElementById("fact-duration").textContent = o.fmtDuration(run.duration_s);
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

  async function tick() {
    ticks += 1;
    try {
      const [, run] = await Promise.all([pollMetrics(), o.getJSON(data.run_api)]);
      applyRun(run);
      // A resumed attempt's first write removes the older attempt's points after its checkpoint: a
      // series whose last step went back is read again (its redone steps are drawn anew).
      const truncated = Object.entries(run.last || {}).some(([key, v]) => {
        const entry = charts.get(key);
        return entry && entry.drawn && v && v.step !== null && v.step < entry.last;
      });
      if (applyAttempts(run) || truncated) await load(null);
      announce(run);
      // A key whose first points are older than what the charts have seen: load it in full.
      const unseen = (run.keys || []).filter((k) => !charts.has(k));
      if (unseen.length) await load(unseen);
      if (!isActive(run.status)) {
        // Finished: the worker flushed everything before it said so; one last read, then stop.
        await pollMetrics();
        await refreshCheckpoints();
        return;
      }
      if (ticks % 5 === 0) await refreshCheckpoints();
    } catch (err) {
      console.warn("orlab: poll failed", err);
    }
    setTimeout(tick, POLL_MS);
  }

  async function start() {
    for (const key of data.keys) card(key);
    try {
      await load(null);
    } catch (err) {
      console.warn("orlab: could not load the metrics", err);
    }
    try {
      applyAttempts(await o.getJSON(data.run_api)); // boundaries of a finished run too
    } catch (err) {
      console.warn("orlab: could not load the run's attempts", err);
    }
    if (isActive(status)) setTimeout(tick, POLL_MS);
  }

  start();
})();

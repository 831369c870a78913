/* Run page: benchmark evaluations. One chart, accuracy against step, with a line per benchmark x
   metric (avg@k, pass@k, a reward model's pairwise accuracy ...; diagnostics such as no_answer_rate
   or margin_mean start hidden in the legend); hovering a point shows the protocol that produced it
   (k, temperature, top_p, max length, verifier, then any other field). Below it,
   every evaluation with its protocol and, for a failed one, its error.

   Reloaded (GET /api/runs/{id}/evaluations/) every few polls of run.js while the run is live, once
   when it ends, and every few seconds while an on-demand evaluation is queued or running. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const section = document.getElementById("evaluations");
  const chart = document.getElementById("eval-chart");
  const body = document.getElementById("evaluations-body");
  const RELOAD_EVERY_TICKS = 3;
  const PENDING_POLL_MS = 3000;
  const PENDING = ["queued", "running"];
  // protocol fields in the order people read them, with their short labels
  const PROTOCOL_LABELS = [
    ["k", "k"],
    ["temperature", "T"],
    ["top_p", "top_p"],
    ["max_new_tokens", "max length"],
    ["max_length", "max length"],
    ["verifier", "verifier"],
  ];
  let seen = ""; // what the page last drew: redraw only on a change
  let pendingTimer = null;

  const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
  // not accuracies: other scales, so off the chart until asked for
  const isDiagnostic = (metric) => /(_rate$|margin|loss)/.test(metric);
  // reliability-diagram bins (a critic's calibration): drawn by run-calibration.js, not as lines here
  const isBin = (metric) => /^bin_\d+_(pred|true|count)$/.test(metric);

  function fmt(v) {
    return isNumber(v) ? String(Number(v.toPrecision(4))) : v === null || v === undefined ? "—" : String(v);
  }

  function protocolParts(protocol) {
    const p = protocol || {};
    const known = PROTOCOL_LABELS.filter(([key]) => key in p).map(([key, label]) => `${label}=${fmt(p[key])}`);
    const rest = Object.keys(p)
      .filter((key) => !PROTOCOL_LABELS.some(([k]) => k === key))
      .sort()
      .map((key) => `${key}=${typeof p[key] === "object" ? JSON.stringify(p[key]) : fmt(p[key])}`);
    return { known, rest };
  }

  /* The hover text: the protocol, one field a line (escaped), the usual fields first. */
  function protocolHover(protocol) {
    const { known, rest } = protocolParts(protocol);
    const lines = [...known, ...rest];
    return lines.length ? lines.map(o.plotText).join("<br>") : "no protocol recorded";
  }

  /* One trace per (benchmark, metric), points in step order. */
  function traces(rows) {
    const lines = new Map();
    for (const e of rows) {
      if (e.status !== "succeeded") continue;
      for (const [metric, value] of Object.entries(e.metrics || {})) {
        if (!isNumber(value) || isBin(metric)) continue;
        const name = `${e.benchmark_name} · ${metric}`;
        if (!lines.has(name)) lines.set(name, { name, metric, x: [], y: [], customdata: [] });
        const line = lines.get(name);
        line.x.push(e.step);
        line.y.push(value);
        line.customdata.push(protocolHover(e.protocol));
      }
    }
    return [...lines.values()]
      .sort((a, b) => Number(isDiagnostic(a.metric)) - Number(isDiagnostic(b.metric)) || a.name.localeCompare(b.name))
      .map((line) => ({
        type: "scatter",
        mode: "lines+markers",
        name: o.plotText(line.name),
        x: line.x,
        y: line.y,
        customdata: line.customdata,
        meta: { metric: line.metric },
        visible: isDiagnostic(line.metric) ? "legendonly" : true,
        marker: { size: 6 },
        hovertemplate: `<b>${o.plotText(line.name)}</b><br>step %{x}: %{y:.4g}<br>%{customdata}<extra></extra>`,
      }));
  }

  function drawChart(rows) {
    const lines = traces(rows);
    chart.hidden = !lines.length;
    if (!lines.length) return;
    const layout = o.plotLayout({ legend: true, height: 360 });
    layout.hovermode = "closest"; // one point's protocol at a time
    layout.yaxis.title = { text: "accuracy", standoff: 4 };
    layout.legend = { orientation: "h", y: -0.2 };
    Plotly.react(chart, lines, layout, o.plotConfig);
    chart.dataset.points = String(lines.reduce((n, t) => n + t.x.length, 0));
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function row(e) {
    const tr = document.createElement("tr");
    tr.dataset.testid = "eval-row";
    tr.dataset.status = e.status;
    const status = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge";
    o.setBadge(badge, e.status);
    status.append(badge);
    const metrics = Object.entries(e.metrics || {})
      .filter(([k]) => !isBin(k))
      .map(([k, v]) => `${k}=${fmt(v)}`)
      .join("  ");
    const { known, rest } = protocolParts(e.protocol);
    tr.append(
      cell(e.step, "num"),
      cell(e.benchmark_name),
      status,
      cell(metrics, "mono small"),
      cell([...known, ...rest].join("  "), "mono small params"),
      cell(e.error || "", e.error ? "negative small pre-wrap" : "")
    );
    return tr;
  }

  function render(rows) {
    section.hidden = !rows.length;
    if (!rows.length) return;
    body.replaceChildren(...rows.map(row));
    drawChart(rows);
    document.dispatchEvent(new CustomEvent("orlab:evaluations", { detail: { rows } }));
  }

  /* Every evaluation of the run (pages of 1000, followed to the end). */
  async function fetchAll() {
    const rows = [];
    let url = `${data.evaluations_api}?page_size=1000`;
    while (url) {
      const page = await o.getJSON(url);
      rows.push(...page.results);
      url = page.next;
    }
    return rows;
  }

  async function load() {
    let rows;
    try {
      rows = await fetchAll();
    } catch (err) {
      console.warn("orlab: could not load the evaluations", err);
      return;
    }
    const fingerprint = JSON.stringify(rows.map((e) => [e.id, e.status, e.metrics, e.error]));
    if (fingerprint !== seen) {
      seen = fingerprint;
      render(rows);
    }
    watchPending(rows);
  }

  /* On-demand evaluations of a finished run have no run poll to ride on: poll them while pending. */
  function watchPending(rows) {
    clearTimeout(pendingTimer);
    if (rows.some((e) => PENDING.includes(e.status))) pendingTimer = setTimeout(load, PENDING_POLL_MS);
  }

  document.addEventListener("orlab:run", (event) => {
    const { ticks, active } = event.detail;
    if (!active || ticks % RELOAD_EVERY_TICKS === 0) load();
  });

  load();
})();

/* Run page: benchmark evaluations. One chart, accuracy against step, with a line per benchmark x
   metric x protocol (avg@k, pass@k, pass^k, maj@k, a reward model's pairwise accuracy ...; diagnostics
   such as no_answer_rate or margin_mean start hidden in the legend). A metric with an interval
   (metrics["<name>_ci"] = [lo, hi], the bootstrap 95 % over problems) is drawn with its band (a fill
   between lo and hi, toggled with its line). Evaluations with different protocols (the API's
   protocol_key: a hash of the fields that change what is measured) never share a line: when a
   benchmark has several, the legend names each line's key. Hovering a point shows its interval, the
   protocol key and the protocol (k, temperature, top_p, max length, verifier, then any other field).
   Below it, every evaluation with its protocol and, for a failed one, its error.

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
  // a critic's calibration (ECE, Brier, AUC and its value/label means): not accuracies, so not on
  // this chart's axis; the Metrics card charts them together (run.js) and the table lists them
  const isCalibration = (metric) => /^(ece|brier|auc|value_mean|label_mean)$/.test(metric);
  // an interval: [lo, hi] under "<metric>_ci"
  const isInterval = (v) => Array.isArray(v) && v.length === 2 && v.every(isNumber);
  // Plotly's default colours, so a band can take its line's colour
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  function rgba(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
  }

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

  /* One line per (benchmark, metric, protocol key), points in step order, each with the band of its
     intervals (two traces before it: lo, then hi filled to lo) when it has any. */
  function traces(rows) {
    const lines = new Map();
    const keysOf = new Map(); // benchmark -> its protocol keys
    for (const e of rows) {
      if (e.status !== "succeeded") continue;
      const key = e.protocol_key || "";
      if (!keysOf.has(e.benchmark_name)) keysOf.set(e.benchmark_name, new Set());
      keysOf.get(e.benchmark_name).add(key);
      const metrics = e.metrics || {};
      for (const [metric, value] of Object.entries(metrics)) {
        if (!isNumber(value) || isBin(metric) || isCalibration(metric)) continue;
        const id = JSON.stringify([e.benchmark_name, metric, key]);
        if (!lines.has(id)) {
          lines.set(id, { bench: e.benchmark_name, metric, key, x: [], y: [], lo: [], hi: [], customdata: [] });
        }
        const line = lines.get(id);
        const ci = isInterval(metrics[`${metric}_ci`]) ? metrics[`${metric}_ci`] : null;
        line.x.push(e.step);
        line.y.push(value);
        line.lo.push(ci ? ci[0] : null);
        line.hi.push(ci ? ci[1] : null);
        const interval = ci ? `95% interval [${fmt(ci[0])}, ${fmt(ci[1])}]<br>` : "";
        line.customdata.push(`${interval}protocol ${o.plotText(key || "—")}<br>${protocolHover(e.protocol)}`);
      }
    }
    const sorted = [...lines.values()].sort(
      (a, b) =>
        Number(isDiagnostic(a.metric)) - Number(isDiagnostic(b.metric)) ||
        a.bench.localeCompare(b.bench) ||
        a.metric.localeCompare(b.metric) ||
        a.key.localeCompare(b.key)
    );
    const out = [];
    sorted.forEach((line, i) => {
      const several = keysOf.get(line.bench).size > 1;
      const name = o.plotText(`${line.bench} · ${line.metric}${several ? ` · protocol ${line.key}` : ""}`);
      const color = COLORS[i % COLORS.length];
      const visible = isDiagnostic(line.metric) ? "legendonly" : true;
      const group = `line-${i}`;
      if (line.lo.some(isNumber)) {
        const band = { type: "scatter", mode: "lines", x: line.x, line: { width: 0, color }, legendgroup: group,
          showlegend: false, hoverinfo: "skip", visible, connectgaps: false };
        out.push({ ...band, name: `${name} (95% low)`, y: line.lo, meta: { band: "lo", metric: line.metric, protocol: line.key } });
        out.push({ ...band, name: `${name} (95% high)`, y: line.hi, fill: "tonexty", fillcolor: rgba(color, 0.18),
          meta: { band: "hi", metric: line.metric, protocol: line.key } });
      }
      out.push({
        type: "scatter",
        mode: "lines+markers",
        name,
        x: line.x,
        y: line.y,
        customdata: line.customdata,
        meta: { metric: line.metric, protocol: line.key },
        legendgroup: group,
        visible,
        line: { color },
        marker: { size: 6, color },
        hovertemplate: `<b>${name}</b><br>step %{x}: %{y:.4g}<br>%{customdata}<extra></extra>`,
      });
    });
    return out;
  }

  function drawChart(rows) {
    const all = traces(rows);
    const lines = all.filter((t) => !t.meta.band);
    chart.hidden = !lines.length;
    if (!lines.length) return;
    const layout = o.plotLayout({ legend: true, height: 360 });
    layout.hovermode = "closest"; // one point's protocol at a time
    layout.yaxis.title = { text: "accuracy", standoff: 4 };
    layout.legend = { orientation: "h", y: -0.2 };
    Plotly.react(chart, all, layout, o.plotConfig);
    chart.dataset.points = String(lines.reduce((n, t) => n + t.x.length, 0));
    chart.dataset.lines = String(lines.length);
    chart.dataset.bands = String(all.filter((t) => t.meta.band === "hi").length);
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
    const all = e.metrics || {};
    const metrics = Object.entries(all)
      .filter(([k, v]) => !isBin(k) && !(k.endsWith("_ci") && isInterval(v) && `${k.slice(0, -3)}` in all))
      .map(([k, v]) => {
        const ci = all[`${k}_ci`];
        return `${k}=${fmt(v)}${isInterval(ci) ? ` [${fmt(ci[0])}, ${fmt(ci[1])}]` : ""}`;
      })
      .join("  ");
    const { known, rest } = protocolParts(e.protocol);
    tr.append(
      cell(e.step, "num"),
      cell(e.benchmark_name),
      status,
      cell(metrics, "mono small"),
      cell([...(e.protocol_key ? [`key=${e.protocol_key}`] : []), ...known, ...rest].join("  "), "mono small params"),
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
    const fingerprint = JSON.stringify(rows.map((e) => [e.id, e.status, e.metrics, e.protocol_key, e.error]));
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

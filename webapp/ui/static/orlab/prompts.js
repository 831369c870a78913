/* Issue 14's pages over training: the prompt x step solve matrix (heatmap, counts over time,
   zero-variance share), one prompt's solve rate (training and evaluation apart), and the per-step
   length / reward histograms and truncation rate. The data is embedded by the page (json_script),
   read by webapp.selectors.prompts exactly as the API serves it. */
(function () {
  "use strict";
  const o = window.orlab;

  function data(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  /* whole steps on a numeric step axis: a tick every 1, 2 or 5 x 10^k steps, never at 0.5 */
  function stepAxis(steps) {
    const span = steps.length ? steps[steps.length - 1] - steps[0] : 0;
    const raw = Math.max(1, span / 8);
    const pow = 10 ** Math.floor(Math.log10(raw));
    const dtick = [1, 2, 5, 10].map((m) => m * pow).find((t) => t >= raw);
    return { tickmode: "linear", tick0: steps.length ? steps[0] : 0, dtick, tickformat: "d" };
  }

  function mark(el, key, value) {
    el.dataset[key] = String(value);
  }

  // white (0) -> green (1): a solve rate
  const RATE_SCALE = [
    [0, "#fef2f2"],
    [0.001, "#fee2e2"],
    [0.5, "#fde68a"],
    [1, "#15803d"],
  ];
  const SHARE_SCALE = [
    [0, "#ffffff"],
    [0.001, "#e0f2fe"],
    [1, "#1e3a8a"],
  ];

  function matrixPage(d) {
    const chart = document.getElementById("matrix-chart");
    if (!chart || !d.rows.length) return;
    const x = d.columns.map((c) => (c.first === c.last ? String(c.first) : `${c.first}–${c.last}`));
    const y = d.rows.map((r) => (r.count === 1 ? `#${r.rank + 1}` : `#${r.rank + 1}–${r.rank + r.count}`));
    const hover = d.rows.map((r) =>
      d.columns.map(() =>
        r.count === 1
          ? `prompt ${r.prompt}: ${o.plotText((r.preview || "").slice(0, 60))}`
          : `${r.count} prompts`,
      ),
    );
    const height = Math.min(900, Math.max(260, 14 * d.rows.length + 80));
    const layout = o.plotLayout({ height });
    layout.hovermode = "closest";
    layout.xaxis = { ...layout.xaxis, type: "category", title: { text: "step", standoff: 4 }, nticks: 20, showgrid: false };
    layout.yaxis = {
      ...layout.yaxis,
      type: "category",
      autorange: "reversed",
      showgrid: false,
      title: { text: "prompt (by first solved step)", standoff: 4 },
      showticklabels: d.rows.length <= 60,
    };
    layout.margin = { ...layout.margin, l: 70 };
    const trace = {
      type: "heatmap",
      x,
      y,
      z: d.z,
      customdata: d.n,
      text: hover,
      zmin: 0,
      zmax: 1,
      colorscale: RATE_SCALE,
      hoverongaps: true, // a click on a cell the prompt was not sampled at still opens the prompt
      colorbar: { title: { text: "solve rate" }, thickness: 12 },
      hovertemplate: "%{text}<br>step %{x}<br>solve rate %{z:.2f} (%{customdata} rollouts)<extra>%{y}</extra>",
    };
    Plotly.newPlot(chart, [trace], layout, o.plotConfig).then(() => mark(chart, "rendered", d.rows.length));
    chart.on("plotly_click", (ev) => {
      const point = ev.points && ev.points[0];
      if (!point) return;
      const row = d.rows[point.pointIndex[0]];
      const col = d.columns[point.pointIndex[1]];
      if (!row) return;
      if (row.count === 1) {
        const url = d.prompt_url.replace(/\/0\/$/, `/${row.prompt}/`);
        window.location.href = `${url}?a=${d.phase}:${col.first}`;
      } else {
        const params = new URLSearchParams({ phase: d.phase, offset: row.rank, limit: row.count });
        window.location.href = `${d.matrix_url}?${params}`;
      }
    });

    const counts = document.getElementById("counts-chart");
    if (counts) {
      const series = [
        ["unsolved", "#dc2626"],
        ["learning", "#f59e0b"],
        ["saturated", "#16a34a"],
      ];
      const traces = series.map(([name, colour]) => ({
        type: "scatter",
        mode: "lines",
        stackgroup: "prompts",
        name,
        x: d.steps,
        y: d.counts[name],
        line: { color: colour, width: 1 },
        hovertemplate: `${name}: %{y}<extra></extra>`,
      }));
      const l = o.plotLayout({ legend: true, height: 280 });
      l.xaxis = { ...l.xaxis, ...stepAxis(d.steps) };
      l.yaxis.title = { text: "prompts", standoff: 4 };
      Plotly.newPlot(counts, traces, l, o.plotConfig).then(() => mark(counts, "rendered", d.steps.length));
    }
    const zv = document.getElementById("zero-variance-chart");
    if (zv) {
      const l = o.plotLayout({ height: 280 });
      l.xaxis = { ...l.xaxis, ...stepAxis(d.steps) };
      l.yaxis = { ...l.yaxis, range: [0, 1.02], tickformat: ".0%", title: { text: "share of rollouts", standoff: 4 } };
      const trace = {
        type: "scatter",
        mode: "lines+markers",
        x: d.steps,
        y: d.zero_variance_share,
        customdata: d.rollouts,
        marker: { size: 4 },
        line: { color: "#6366f1" },
        hovertemplate: "%{y:.1%} of %{customdata} rollouts<extra></extra>",
      };
      Plotly.newPlot(zv, [trace], l, o.plotConfig).then(() => mark(zv, "rendered", d.steps.length));
    }
  }

  function historyPage(d) {
    const chart = document.getElementById("history-chart");
    if (!chart) return;
    const trace = (s, name, mode, marker, colour) => ({
      type: "scatter",
      mode,
      name,
      x: s.steps,
      y: s.rate,
      customdata: s.steps.map((_, i) => `${s.correct[i]}/${s.n[i]}`),
      marker: { size: 8, symbol: marker, color: colour },
      line: { color: colour, width: 1.5 },
      hovertemplate: `${name} step %{x}: %{y:.2f} (%{customdata})<extra></extra>`,
    });
    const traces = [];
    if (d.train.steps.length) traces.push(trace(d.train, "training rollouts", "lines+markers", "circle", "#2563eb"));
    if (d.eval.steps.length) traces.push(trace(d.eval, "evaluation rollouts", "markers", "diamond", "#db2777"));
    const l = o.plotLayout({ legend: true, height: 300 });
    l.hovermode = "closest";
    l.xaxis = { ...l.xaxis, ...stepAxis([...d.train.steps, ...d.eval.steps].sort((a, b) => a - b)) };
    l.yaxis = { ...l.yaxis, range: [-0.03, 1.03], title: { text: "solve rate", standoff: 4 } };
    Plotly.newPlot(chart, traces, l, o.plotConfig).then(() => {
      mark(chart, "rendered", traces.length);
      mark(chart, "traces", traces.map((t) => t.name).join(","));
    });
  }

  function histogram(el, h, steps, samples, unit) {
    if (!el || !h.edges.length || !steps.length) return;
    const nb = h.edges.length - 1;
    const labels = [];
    for (let i = 0; i < nb; i++) {
      const a = h.edges[i];
      const b = h.edges[i + 1];
      const num = (v) => String(Number(Number(v).toPrecision(3)));
      labels.push(unit === "tokens" ? (b - a === 1 ? `${a}` : `${a}–${b - 1}`) : `${num(a)}–${num(b)}`);
    }
    // z[bin][step] = share of the step's counted samples; customdata: the counts
    const z = [];
    const counts = [];
    for (let b = 0; b < nb; b++) {
      z.push([]);
      counts.push([]);
    }
    steps.forEach((_, s) => {
      const row = h.counts[s] || [];
      const total = row.reduce((a, c) => a + c, 0);
      for (let b = 0; b < nb; b++) {
        const c = row[b] || 0;
        z[b].push(total ? c / total : null);
        counts[b].push(c);
      }
    });
    const l = o.plotLayout({ height: 340 });
    l.hovermode = "closest";
    l.margin = { ...l.margin, l: 100 };
    l.xaxis = { ...l.xaxis, ...stepAxis(steps), showgrid: false };
    l.yaxis = { ...l.yaxis, type: "category", showgrid: false, title: { text: unit === "tokens" ? "tokens" : "reward", standoff: 4 } };
    const trace = {
      type: "heatmap",
      x: steps,
      y: labels,
      z,
      customdata: counts,
      colorscale: SHARE_SCALE,
      zmin: 0,
      hoverongaps: false,
      colorbar: { title: { text: "share" }, thickness: 12 },
      hovertemplate: "step %{x}<br>%{y}: %{customdata} samples (%{z:.1%})<extra></extra>",
    };
    Plotly.newPlot(el, [trace], l, o.plotConfig).then(() => mark(el, "rendered", steps.length));
  }

  function distributionsPage(d) {
    histogram(document.getElementById("length-chart"), d.length, d.steps, d.samples, "tokens");
    histogram(document.getElementById("reward-chart"), d.reward, d.steps, d.samples, "reward");
    const el = document.getElementById("truncation-chart");
    if (el && d.truncation.steps.length) {
      const t = d.truncation;
      const l = o.plotLayout({ height: 260 });
      l.xaxis = { ...l.xaxis, ...stepAxis(t.steps) };
      l.yaxis = { ...l.yaxis, range: [0, 1.02], tickformat: ".0%", title: { text: "truncated", standoff: 4 } };
      const trace = {
        type: "scatter",
        mode: "lines+markers",
        x: t.steps,
        y: t.rate,
        customdata: t.steps.map((_, i) => `${t.truncated[i]}/${t.n[i]}`),
        marker: { size: 4 },
        line: { color: "#b45309" },
        hovertemplate: "step %{x}: %{y:.1%} (%{customdata})<extra></extra>",
      };
      Plotly.newPlot(el, [trace], l, o.plotConfig).then(() => mark(el, "rendered", t.steps.length));
    }
  }

  const matrix = data("matrix-data");
  if (matrix) matrixPage(matrix);
  const history = data("history-data");
  if (history) historyPage(history);
  const dist = data("dist-data");
  if (dist) distributionsPage(dist);
})();

/* Run page: reliability diagrams. An evaluation whose metrics hold bins (bin_00_pred, bin_00_true,
   bin_00_count, ...) is a calibration check, e.g. DAPO's critic on held-out Monte-Carlo step values:
   mean predicted value against mean observed value per bin, the diagonal being perfect calibration,
   marker area by the bin's count, ECE in the title. Drawn from the rows run-evaluations.js loaded. */
(function () {
  "use strict";
  const o = window.orlab;
  const section = document.getElementById("calibration");
  const chart = document.getElementById("calibration-chart");
  if (!section || !chart) return;
  const BIN = /^bin_(\d+)_(pred|true|count)$/;

  function bins(metrics) {
    const out = new Map();
    for (const [key, value] of Object.entries(metrics || {})) {
      const m = BIN.exec(key);
      if (!m || typeof value !== "number" || !Number.isFinite(value)) continue;
      if (!out.has(m[1])) out.set(m[1], {});
      out.get(m[1])[m[2]] = value;
    }
    return [...out.entries()]
      .sort((a, b) => Number(a[0]) - Number(b[0]))
      .map(([, b]) => b)
      .filter((b) => b.count > 0 && "pred" in b && "true" in b);
  }

  function draw(rows) {
    const checks = rows.filter((e) => e.status === "succeeded" && bins(e.metrics).length);
    section.hidden = !checks.length;
    if (!checks.length) return;
    // the newest check of each benchmark (a DAPO run has one per iteration)
    const newest = new Map();
    for (const e of checks) {
      const seen = newest.get(e.benchmark_name);
      if (!seen || e.step >= seen.step) newest.set(e.benchmark_name, e);
    }
    const traces = [
      { x: [0, 1], y: [0, 1], mode: "lines", name: "perfect", line: { dash: "dot", color: "#9ca3af" }, hoverinfo: "skip" },
    ];
    const titles = [];
    for (const e of newest.values()) {
      const b = bins(e.metrics);
      const total = b.reduce((s, x) => s + x.count, 0);
      traces.push({
        type: "scatter",
        mode: "lines+markers",
        name: o.plotText(`${e.benchmark_name} @ step ${e.step}`),
        x: b.map((x) => x.pred),
        y: b.map((x) => x.true),
        customdata: b.map((x) => x.count),
        marker: { size: b.map((x) => 6 + 18 * Math.sqrt(x.count / total)) },
        hovertemplate: "predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata} prefixes<extra></extra>",
      });
      if (typeof e.metrics.ece === "number") titles.push(`ECE ${e.metrics.ece.toFixed(3)}`);
    }
    const layout = o.plotLayout({ height: 320, legend: true });
    layout.hovermode = "closest";
    layout.xaxis = { ...layout.xaxis, title: { text: "predicted value" }, range: [0, 1] };
    layout.yaxis = { ...layout.yaxis, title: { text: "observed (MC) value" }, range: [0, 1] };
    layout.legend = { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" };
    Plotly.react(chart, traces, layout, o.plotConfig);
    chart.dataset.bins = String(traces.slice(1).reduce((s, t) => s + t.x.length, 0));
    document.getElementById("calibration-ece").textContent = titles.join(" · ");
  }

  document.addEventListener("orlab:evaluations", (event) => draw(event.detail.rows));
})();

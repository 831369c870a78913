/* One dataset version: a live progress bar while it imports (or is curated), polling
   GET /api/datasets/{id}/ every second, then a reload to show the result; and the curation chart
   (pairs dropped per step, stacked by source). */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("dataset-data").textContent);

  function showProgress(d) {
    const pct = Math.max(0, Math.min(100, 100 * (d.progress || 0)));
    const bar = document.getElementById("progress-bar");
    if (bar) bar.style.width = `${pct.toFixed(1)}%`;
    const box = bar && bar.parentElement;
    if (box) box.setAttribute("aria-valuenow", pct.toFixed(1));
    const text = document.getElementById("progress-text");
    if (text) text.textContent = `${pct.toFixed(1)}% · ${d.row_count} rows so far`;
    const rows = document.getElementById("fact-rows");
    if (rows) rows.textContent = d.row_count;
  }

  async function poll() {
    let d;
    try {
      d = await orlab.getJSON(data.dataset_api);
    } catch (err) {
      setTimeout(poll, 2000);
      return;
    }
    showProgress(d);
    if (d.status === "importing") {
      setTimeout(poll, 1000);
      return;
    }
    orlab.setBadge(document.getElementById("status-badge"), d.status);
    window.location.reload(); // the server renders the finished page (errors, summary, chart)
  }
  if (data.status === "importing") setTimeout(poll, 1000);

  const chart = data.chart;
  const el = document.getElementById("curation-chart");
  if (chart && el && window.Plotly) {
    const x = chart.steps.map(orlab.plotText);
    let traces = chart.sources.map((src) => ({
      type: "bar",
      name: orlab.plotText(src.name),
      x,
      y: src.dropped,
      customdata: src.in,
      hovertemplate: "%{y} of %{customdata} dropped<extra>%{fullData.name}</extra>",
    }));
    if (!traces.length) {
      traces = [{ type: "bar", name: "dropped", x, y: chart.totals, hovertemplate: "%{y} dropped<extra></extra>" }];
    }
    const layout = orlab.plotLayout({ height: 300, legend: traces.length > 1 });
    layout.barmode = "stack";
    layout.hovermode = "closest";
    layout.xaxis = { ...layout.xaxis, title: { text: "" }, type: "category" };
    layout.yaxis = { ...layout.yaxis, title: { text: "pairs dropped" }, rangemode: "tozero" };
    layout.legend = { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", traceorder: "normal" };
    layout.margin = { ...layout.margin, t: 28, b: 36 };
    Plotly.newPlot(el, traces, layout, orlab.plotConfig);
    el.dataset.steps = String(chart.steps.length);
  }
})();

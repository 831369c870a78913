/* Run page: per-step value curves. Samples that carry `values_mc` and `values_critic` (DAPO's critic on
   held-out solutions) are drawn as V(s_t) against step t: the Monte-Carlo estimate solid, the critic's
   prediction dashed, one colour per solution, its verdict in the legend. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const section = document.getElementById("value-curves");
  const chart = document.getElementById("value-curves-chart");
  if (!section || !chart || !data.samples_api) return;
  const COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563"];
  let drawn = 0;

  const isCurve = (s) =>
    s.extra && Array.isArray(s.extra.values_mc) && Array.isArray(s.extra.values_critic);

  function draw(curves) {
    section.hidden = !curves.length;
    if (!curves.length || curves.length === drawn) return;
    drawn = curves.length;
    const traces = [];
    curves.forEach((s, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const label = `#${i + 1} ${s.verdict || ""} (step ${s.step})`;
      const x = s.extra.values_mc.map((_, t) => t);
      traces.push({
        x, y: s.extra.values_mc, mode: "lines+markers", name: o.plotText(`${label} MC`), legendgroup: label,
        line: { color: colour }, hovertemplate: "t=%{x}: MC %{y:.2f}<extra></extra>",
      });
      traces.push({
        x: s.extra.values_critic.map((_, t) => t), y: s.extra.values_critic, mode: "lines",
        name: o.plotText(`${label} critic`), legendgroup: label, line: { color: colour, dash: "dash" },
        hovertemplate: "t=%{x}: critic %{y:.2f}<extra></extra>",
      });
    });
    const layout = o.plotLayout({ height: 300, legend: true });
    layout.hovermode = "closest";
    layout.xaxis = { ...layout.xaxis, title: { text: "step t (0 = prompt only)" }, dtick: 1 };
    layout.yaxis = { ...layout.yaxis, title: { text: "V(s_t)" }, range: [-0.02, 1.02] };
    layout.legend = { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" };
    Plotly.react(chart, traces, layout, o.plotConfig);
    chart.dataset.curves = String(curves.length);
  }

  async function load() {
    try {
      const page = await o.getJSON(`${data.samples_api}?page_size=500`);
      draw(page.results.filter(isCurve));
    } catch (err) {
      console.warn("orlab: could not load the value curves", err);
    }
  }

  document.addEventListener("orlab:run", (event) => {
    const { ticks, active } = event.detail;
    if (!active || ticks % 5 === 0) load();
  });
  load();
})();

/* The step-value browser: the mean-value-after-step-t chart (correct vs wrong solutions) and rows
   that expand (click or Enter) into the solution's steps with their values. */
(function () {
  "use strict";
  const summary = JSON.parse(document.getElementById("value-summary").textContent);
  const el = document.getElementById("value-chart");
  if (el && window.Plotly) {
    const trace = (rows, name, color) => ({
      x: rows.map((r) => r[0]),
      y: rows.map((r) => r[1]),
      customdata: rows.map((r) => r[2]),
      hovertemplate: `${name}: V(s_%{x}) = %{y:.3f} over %{customdata} solutions<extra></extra>`,
      name: `${name} solutions`,
      mode: "lines+markers",
      line: { color },
    });
    const layout = orlab.plotLayout({ height: 260, legend: true });
    layout.xaxis = { ...layout.xaxis, title: { text: "step t (0 = prompt only)" }, dtick: 1 };
    layout.yaxis = { ...layout.yaxis, title: { text: "mean MC value" }, range: [0, 1.02] };
    layout.legend = { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" };
    const traces = [trace(summary.correct, "correct", "#2a7"), trace(summary.wrong, "wrong", "#c33")];
    Plotly.newPlot(el, traces, layout, orlab.plotConfig);
    el.dataset.traces = String(traces.filter((t) => t.x.length).length);
  }
  for (const row of document.querySelectorAll("[data-testid=solution-row]")) {
    const toggle = () => {
      const detail = row.nextElementSibling;
      detail.hidden = !detail.hidden;
      row.setAttribute("aria-expanded", String(!detail.hidden));
    };
    row.addEventListener("click", toggle);
    row.addEventListener("keydown", (e) => {
      if (e.key === "Enter") toggle();
    });
  }
})();

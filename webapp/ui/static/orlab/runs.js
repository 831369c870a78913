/* Runs table: select runs and compare them (?runs=1,2,3); more config-filter rows; suggestions of
   config fields and metric keys (GET /api/runs/fields/?project=); the column builder's inputs; sort
   links on the default metric columns; the column chooser's reordering (?show= in the order of the
   list); the sweep view (plotly parcoords of the runs in view, from GET /api/runs/table/). Filters,
   columns, show/hide and best-per-group work without JS too (plain GET forms). */
(function () {
  "use strict";
  const o = window.orlab;
  const dataEl = document.getElementById("table-data");
  const data = dataEl ? JSON.parse(dataEl.textContent) : { columns: [] };

  // --- compare selection ---
  const form = document.getElementById("compare-form");
  if (form) {
    const boxes = () => [...form.querySelectorAll("input.run-select")];
    const button = document.getElementById("compare-button");
    const counter = document.getElementById("selected-count");
    const all = document.getElementById("select-all");
    const update = () => {
      const n = boxes().filter((b) => b.checked).length;
      button.disabled = n === 0;
      counter.textContent = n ? `${n} selected` : "";
      if (all) all.checked = n > 0 && n === boxes().length;
    };
    form.addEventListener("change", (event) => {
      if (event.target === all) for (const box of boxes()) box.checked = all.checked;
      update();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const ids = boxes().filter((b) => b.checked).map((b) => b.value);
      if (!ids.length) return;
      window.location.href = `${form.action}?runs=${ids.join(",")}`;
    });
    update();
  }

  // --- more config filter rows ---
  const addRow = document.getElementById("cf-add");
  const rows = document.getElementById("cf-rows");
  if (addRow && rows) {
    addRow.hidden = false;
    addRow.addEventListener("click", () => {
      const row = rows.querySelector(".cf-row").cloneNode(true);
      for (const input of row.querySelectorAll("input")) input.value = "";
      rows.appendChild(row);
      row.querySelector("input").focus();
    });
  }

  // --- suggestions ---
  let fields = null;
  async function suggest() {
    if (fields || !data.fields_api) return;
    fields = { config: [], metrics: [] };
    try {
      fields = await o.getJSON(data.fields_api);
    } catch (err) {
      console.warn("orlab: no field suggestions", err);
      return;
    }
    const fill = (id, values) => {
      const list = document.getElementById(id);
      if (!list) return;
      list.replaceChildren(
        ...values.map((v) => {
          const opt = document.createElement("option");
          opt.value = v;
          return opt;
        })
      );
    };
    fill("config-paths", fields.config);
    fill("metric-keys", fields.metrics);
  }
  for (const el of document.querySelectorAll('[name="cf_path"], [name="add_col_key"]')) {
    el.addEventListener("focus", suggest, { once: true });
  }
  document.getElementById("cf-rows")?.addEventListener("focusin", suggest);

  // --- the column builder: metric (key, aggregate, N) or config field ---
  const kind = document.getElementById("add-col-kind");
  const key = document.getElementById("add-col-key");
  const agg = document.getElementById("add-col-agg");
  const nLabel = document.getElementById("add-col-n-label");
  function builder() {
    if (!kind) return;
    const metric = kind.value === "metric";
    key.setAttribute("list", metric ? "metric-keys" : "config-paths");
    agg.hidden = !metric;
    nLabel.hidden = !metric || agg.value !== "mean_last";
  }
  kind?.addEventListener("change", builder);
  agg?.addEventListener("change", builder);
  builder();

  // --- the default metric columns sort too (their headers stay plain text without JS) ---
  const heads = [...document.querySelectorAll("table.runs thead th.metric-col")];
  heads.forEach((th, i) => {
    const col = data.columns[i];
    if (!col || th.querySelector("a")) return;
    const a = document.createElement("a");
    a.href = col.url;
    a.className = `sort${col.arrow ? " active" : ""}`;
    a.dataset.testid = "sort-col";
    a.textContent = th.textContent + (col.arrow ? ` ${col.arrow}` : "");
    th.replaceChildren(a);
  });

  // --- the column chooser: ↑ ↓ move an item; the form submits ?show= in the list's order ---
  const chooser = document.getElementById("chooser-list");
  chooser?.addEventListener("click", (event) => {
    const button = event.target.closest("button.move");
    if (!button) return;
    const item = button.closest("li");
    if (button.dataset.move === "-1" && item.previousElementSibling) {
      chooser.insertBefore(item, item.previousElementSibling);
    } else if (button.dataset.move === "1" && item.nextElementSibling) {
      chooser.insertBefore(item.nextElementSibling, item);
    }
    button.focus();
  });

  // --- the sweep view: config fields that differ between the runs in view, against a metric ---
  const pcDraw = document.getElementById("pc-draw");
  const pcPlot = document.getElementById("pc-plot");
  const pcStatus = document.getElementById("pc-status");
  const MAX_AXES = 12; // besides the metric: more axes than this are unreadable at page width

  function loadPlotly() {
    if (window.Plotly) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = data.plotly_js;
      script.onload = resolve;
      script.onerror = () => reject(new Error("plotly.js did not load"));
      document.head.appendChild(script);
    });
  }

  function flatten(value, prefix, out) {
    if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
      for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
    } else if (prefix) out[prefix] = value;
    return out;
  }

  /* One parcoords dimension per config path whose value differs between the runs: numbers on a
     numeric axis, anything else as categories (ticks at 0..n-1, labelled with the values). */
  function configDimensions(runs) {
    const flats = runs.map((r) => flatten(r.config || {}, "", {}));
    const paths = [...new Set(flats.flatMap((f) => Object.keys(f)))].sort();
    const dims = [];
    for (const path of paths) {
      const raw = flats.map((f) => (path in f ? f[path] : null));
      const distinct = new Set(raw.map((v) => JSON.stringify(v)));
      if (distinct.size < 2) continue;
      const numeric = raw.every((v) => typeof v === "number");
      const positive = numeric && raw.every((v) => v > 0);
      if (positive && Math.max(...raw) / Math.min(...raw) >= 10) {
        // a learning rate's 1e-6..1e-5 sweep: a log axis, ticked at the values the sweep used
        const ticks = [...new Set(raw)].sort((a, b) => a - b).slice(0, 10);
        dims.push({
          label: `${path} (log)`,
          values: raw.map(Math.log10),
          tickvals: ticks.map(Math.log10),
          ticktext: ticks.map((v) =>
            v < 1e-3 || v >= 1e4 ? v.toExponential(2).replace(/\.?0+e/, "e") : String(Number(v.toPrecision(3)))
          ),
        });
      } else if (numeric) {
        dims.push({ label: path, values: raw });
      } else {
        const texts = [...distinct].sort();
        dims.push({
          label: path,
          values: raw.map((v) => texts.indexOf(JSON.stringify(v))),
          tickvals: texts.map((_, i) => i),
          ticktext: texts.map((t) => (t.length > 18 ? `${t.slice(0, 17)}…` : t)),
        });
      }
    }
    return dims;
  }

  async function drawParcoords() {
    const key = document.getElementById("pc-metric").value.trim();
    const agg = document.getElementById("pc-agg").value;
    if (!key) {
      pcStatus.textContent = "Choose a metric.";
      return;
    }
    const spec = `metric:${key}:${agg}`;
    pcStatus.textContent = "Loading…";
    const url = new URL(data.table_api, window.location.href);
    url.searchParams.set("fields", "config");
    url.searchParams.set("page_size", "1000");
    url.searchParams.append("col", spec);
    let runs;
    try {
      const [answer] = await Promise.all([o.getJSON(url.toString()), loadPlotly()]);
      runs = answer.results;
    } catch (err) {
      pcStatus.textContent = `Could not load the runs: ${err.message}`;
      return;
    }
    const withValue = runs.filter((r) => typeof (r.columns[spec] || {}).value === "number");
    const dims = configDimensions(runs);
    if (!runs.length || !dims.length) {
      pcStatus.textContent = runs.length
        ? "These runs share every config value: nothing to compare (filter by a sweep's group)."
        : "No runs in view.";
      Plotly.purge(pcPlot);
      pcPlot.classList.remove("drawn");
      pcPlot.dataset.axes = "";
      return;
    }
    const shown = dims.slice(0, MAX_AXES);
    const metric = runs.map((r) => {
      const v = (r.columns[spec] || {}).value;
      return typeof v === "number" ? v : NaN;
    });
    const finite = metric.filter(Number.isFinite);
    const metricDim = { label: `${key} · ${agg.replace("best_", "")}`, values: metric };
    pcPlot.classList.add("drawn");
    Plotly.react(
      pcPlot,
      [
        {
          type: "parcoords",
          line: finite.length
            ? { color: metric.map((v) => (Number.isFinite(v) ? v : Math.min(...finite))), colorscale: "Viridis", showscale: true }
            : { color: "#2563eb" },
          dimensions: [...shown, metricDim],
        },
      ],
      { margin: { l: 60, r: 60, t: 60, b: 30 }, height: 420 },
      { displaylogo: false, responsive: true }
    );
    pcPlot.dataset.axes = [...shown.map((d) => d.label), metricDim.label].join("\n");
    pcStatus.textContent =
      `${runs.length} run${runs.length === 1 ? "" : "s"}, ${withValue.length} with ${key}` +
      (dims.length > shown.length ? `; first ${MAX_AXES} of ${dims.length} differing fields` : "");
  }

  pcDraw?.addEventListener("click", drawParcoords);
  document.getElementById("pc-metric")?.addEventListener("focus", suggest, { once: true });
})();

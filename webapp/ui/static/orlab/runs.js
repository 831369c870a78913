/* Runs table: select runs and compare them (?runs=1,2,3); more config-filter rows; suggestions of
   config fields and metric keys (GET /api/runs/fields/?project=); the column builder's inputs; sort
   links on the default metric columns. Everything works without JS too (plain GET forms). */
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
})();

/* Datasets list: the upload form names the dataset after its file, and rows still importing
   follow their progress (GET /api/datasets/{id}/ every second) until ready or failed. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("datasets-data").textContent);

  const file = document.getElementById("id_file");
  const name = document.getElementById("id_name");
  if (file && name) {
    file.addEventListener("change", () => {
      const f = file.files && file.files[0];
      if (f && !name.value.trim()) name.value = f.name.replace(/\.(jsonl|ndjson|json|csv|parquet|pq)$/i, "");
    });
  }
  const form = document.getElementById("upload-form");
  if (form) {
    form.addEventListener("submit", () => {
      const button = form.querySelector('button[type="submit"]');
      if (button) {
        button.disabled = true;
        button.textContent = "Uploading…";
      }
    });
  }

  window.addEventListener("pageshow", () => {
    const button = form && form.querySelector('button[type="submit"]');
    if (button) {
      button.disabled = false;
      button.textContent = "Upload";
    }
  });

  const apiUrl = (id) => data.dataset_api.replace(/\/0\/$/, `/${id}/`);
  let pending = [...data.importing];

  async function poll() {
    const still = [];
    for (const id of pending) {
      try {
        const d = await orlab.getJSON(apiUrl(id));
        const row = document.querySelector(`[data-testid="dataset-row"][data-dataset-id="${id}"]`);
        if (!row) continue;
        orlab.setBadge(row.querySelector(".badge"), d.status);
        const rows = row.querySelector(`[data-rows-for="${id}"]`);
        if (rows) rows.textContent = d.row_count;
        const progress = row.querySelector(`[data-progress-for="${id}"]`);
        if (progress) {
          progress.textContent = `${Math.round(100 * (d.progress || 0))}%`;
          progress.hidden = d.status !== "importing";
        }
        if (d.status === "importing") still.push(id);
      } catch (err) {
        still.push(id);
      }
    }
    pending = still;
    if (pending.length) setTimeout(poll, 1000);
  }
  if (pending.length) setTimeout(poll, 1000);
})();

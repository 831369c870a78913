/* The checkpoints table's download cells (issue 16 point 8). run.js redraws the table's rows when a
   checkpoint appears or is deleted, without this column; this adds the download cell (after the size
   cell) to each row that lacks one, from GET /api/runs/{id}/checkpoint-downloads/ (sizes, links), matched by step. */
(function () {
  "use strict";
  const section = document.getElementById("checkpoints-section");
  const body = document.getElementById("checkpoints-body");
  if (!section || !body) return;
  let pending = false;
  let again = false; // rows redrawn while a read was under way: read once more after it

  function sizeText(bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB", "PB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value}\u00a0bytes` : `${value.toFixed(1)}\u00a0${units[unit]}`;
  }

  function cell(choices) {
    const td = document.createElement("td");
    td.className = "nowrap u3-downloads";
    td.dataset.testid = "checkpoint-download";
    if (!choices || !choices.length) {
      const none = document.createElement("span");
      none.className = "muted";
      none.textContent = "—";
      td.append(none);
      return td;
    }
    for (const choice of choices) {
      const wrap = document.createElement("span");
      wrap.className = "u3-download";
      const link = document.createElement("a");
      link.href = choice.url;
      link.download = "";
      link.dataset.testid = `download-${choice.include}`;
      link.title = `${choice.files} files as a tar archive`;
      link.textContent = choice.label;
      const size = document.createElement("span");
      size.className = "muted small";
      size.dataset.testid = `download-${choice.include}-size`;
      size.textContent = sizeText(choice.bytes);
      const gz = document.createElement("a");
      gz.className = "small";
      gz.href = choice.url_gz;
      gz.download = "";
      gz.title = "the same, gzip-compressed";
      gz.textContent = ".gz";
      wrap.append(link, " ", size, " ", gz);
      td.append(wrap);
    }
    return td;
  }

  async function fill() {
    const missing = [...body.querySelectorAll("tr[data-step]")].filter(
      (tr) => !tr.querySelector('[data-testid="checkpoint-download"]')
    );
    if (!missing.length) return;
    if (pending) {
      again = true;
      return;
    }
    pending = true;
    try {
      const response = await fetch(section.dataset.downloadsApi, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const byStep = new Map((await response.json()).map((row) => [String(row.step), row.choices]));
      for (const tr of missing) {
        if (tr.querySelector('[data-testid="checkpoint-download"]')) continue;
        // beside the size, as the server draws it (run.js's rows: step, attempt, metrics, path, size, ...)
        const size = tr.querySelector('[data-testid="checkpoint-size"]');
        const td = cell(byStep.get(tr.dataset.step));
        if (size) size.after(td);
        else tr.append(td);
      }
    } catch (err) {
      console.warn("orlab: could not read the checkpoint downloads", err);
    } finally {
      pending = false;
      if (again) {
        again = false;
        fill();
      }
    }
  }

  new MutationObserver(() => fill()).observe(body, { childList: true });
})();

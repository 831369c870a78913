// The run page's checkpoint x benchmark table (templates/ui/_run_checkpoint_evals.html): while an
// evaluation in it is queued or running (data-active), the table is fetched again every few seconds
// from the server (the same template), so finished cells fill in without reloading the page.
(function () {
  "use strict";
  const section = document.getElementById("checkpoint-evals");
  if (!section) return;
  const url = section.dataset.tableUrl;
  const every = 4000;

  function current() {
    return section.querySelector("#checkpoint-evals-table");
  }

  async function refresh() {
    const table = current();
    if (!table || !table.dataset.active || document.hidden) {
      if (table && table.dataset.active) setTimeout(refresh, every);
      return;
    }
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (resp.ok) {
        const holder = document.createElement("div");
        holder.innerHTML = await resp.text();
        const fresh = holder.querySelector("#checkpoint-evals-table");
        // a form the user is filling in (a benchmark picked) is not replaced under them
        if (fresh && !table.contains(document.activeElement)) table.replaceWith(fresh);
      }
    } catch (err) {
      // the server is away for a moment: try again at the next tick
    }
    if (current() && current().dataset.active) setTimeout(refresh, every);
  }

  setTimeout(refresh, every);
})();

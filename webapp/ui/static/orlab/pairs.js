/* Pair browser: keyboard navigation (j/k select, Enter open, n/p page, / search) and filters that
   apply as soon as a select changes. All state lives in the URL, so every view can be shared. */
(function () {
  "use strict";
  const rows = [...document.querySelectorAll('[data-testid="pair-row"]')];
  let selected = -1;

  function select(i, scroll) {
    if (!rows.length) return;
    i = Math.max(0, Math.min(rows.length - 1, i));
    if (selected >= 0 && rows[selected]) rows[selected].classList.remove("selected");
    selected = i;
    const row = rows[i];
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    if (scroll) row.scrollIntoView({ block: "nearest" });
    document.body.dataset.selectedRow = row.dataset.row;
  }

  // Back from a pair (#row-N): select that row; otherwise the first.
  const fromHash = window.location.hash.match(/^#row-(\d+)$/);
  const start = fromHash ? rows.findIndex((r) => r.dataset.row === fromHash[1]) : -1;
  select(start >= 0 ? start : 0, start >= 0);

  for (const [i, row] of rows.entries()) {
    row.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      select(i, false);
    });
    row.addEventListener("dblclick", () => (window.location.href = row.dataset.href));
  }

  const typing = (el) => el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    const go = (id) => {
      const link = document.getElementById(id);
      if (link) window.location.href = link.href;
    };
    switch (event.key) {
      case "j":
        select(selected + 1, true);
        break;
      case "k":
        select(selected - 1, true);
        break;
      case "Enter":
        if (rows[selected]) window.location.href = rows[selected].dataset.href;
        break;
      case "n":
        go("next-page");
        break;
      case "p":
        go("prev-page");
        break;
      case "/":
        document.getElementById("pair-search").focus();
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  // Selects filter at once; the page number resets with any new filter.
  const form = document.getElementById("pair-filters");
  for (const el of form.querySelectorAll("select.autosubmit")) {
    el.addEventListener("change", () => form.requestSubmit());
  }
  form.addEventListener("submit", () => {
    // drop empty fields from the URL so shared links stay short
    for (const el of form.querySelectorAll("input, select")) {
      if (el.name && (el.value === "" || el.value === el.dataset.default)) el.disabled = true;
    }
  });
  window.addEventListener("pageshow", () => {
    for (const el of form.querySelectorAll("input, select")) el.disabled = false;
  });
})();

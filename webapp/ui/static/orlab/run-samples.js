/* Run page: the rollout samples browser. A page of samples (GET /api/runs/{id}/samples/) filtered by
   verdict, truncation and step range; a click or Enter on a row opens its full prompt and completion.

   The filter state lives in the page URL (?verdict= &truncated= &step_min= &step_max= &sample_page=),
   so a view of the samples is a link to share; the filter form is a plain GET form that this script
   answers without reloading the page (back and forward move through earlier filters). */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const section = document.getElementById("samples");
  const form = document.getElementById("samples-filter");
  const body = document.getElementById("samples-body");
  const errorEl = document.getElementById("samples-error");
  const FILTERS = ["verdict", "truncated", "step_min", "step_max"];
  const PAGE_PARAM = "sample_page";
  const WATCH_EVERY_TICKS = 5;
  let state = fromUrl();
  let total = 0;
  let capped = false; // the count stopped at a cap (the API's count_capped): "2,000+"
  let request = 0; // answers to older requests are dropped

  function fromUrl() {
    const q = new URLSearchParams(window.location.search);
    const s = { page: Math.max(1, parseInt(q.get(PAGE_PARAM), 10) || 1) };
    for (const name of FILTERS) s[name] = q.get(name) || "";
    return s;
  }

  function fromForm() {
    const s = { page: 1 };
    for (const name of FILTERS) s[name] = (form.elements[name].value || "").trim();
    return s;
  }

  function toForm(s) {
    for (const name of FILTERS) form.elements[name].value = s[name];
  }

  /* The page URL for a state: other parameters of the page are kept. */
  function pageUrl(s) {
    const q = new URLSearchParams(window.location.search);
    for (const name of FILTERS) {
      if (s[name]) q.set(name, s[name]);
      else q.delete(name);
    }
    if (s.page > 1) q.set(PAGE_PARAM, String(s.page));
    else q.delete(PAGE_PARAM);
    const query = q.toString();
    return `${window.location.pathname}${query ? `?${query}` : ""}${window.location.hash}`;
  }

  function apiUrl(s) {
    const q = new URLSearchParams({ page: String(s.page), page_size: String(data.sample_page_size) });
    for (const name of FILTERS) if (s[name]) q.set(name, s[name]);
    return `${data.samples_api}?${q.toString()}`;
  }

  function fmt(v) {
    return typeof v === "number" && Number.isFinite(v) ? String(Number(v.toPrecision(4))) : "—";
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function verdictCell(verdict) {
    const td = document.createElement("td");
    const span = document.createElement("span");
    span.className = `verdict verdict-${verdict || "none"}`;
    span.textContent = verdict || "—";
    td.append(span);
    return td;
  }

  /* Links to the group view (the n completions of this prompt at this step) and the token view. */
  function sampleLinks(sample) {
    const p = document.createElement("p");
    p.className = "small";
    if (sample.group_index !== null && sample.group_index !== undefined) {
      const a = document.createElement("a");
      a.href = data.sample_group_url.replace(/\/0\/0\/$/, `/${sample.step}/${sample.group_index}/`) + (sample.phase === "eval" ? "?phase=eval" : "");
      a.dataset.testid = "sample-group-link";
      a.textContent = `group ${sample.group_index} of step ${sample.step}, side by side`;
      p.append(a);
    }
    if (sample.has_tokens) {
      const a = document.createElement("a");
      a.href = data.sample_tokens_url.replace(/\/0\/tokens\/$/, `/${sample.id}/tokens/`);
      a.dataset.testid = "sample-tokens-link";
      a.textContent = "tokens (entropy, log-prob)";
      if (p.childNodes.length) p.append(" · ");
      p.append(a);
    }
    return p;
  }

  /* The full texts, pre-wrapped; textContent keeps any markup in them as text. */
  function detailRow(sample) {
    const tr = document.createElement("tr");
    tr.className = "sample-detail";
    tr.dataset.testid = "sample-detail";
    const td = document.createElement("td");
    td.colSpan = 7;
    td.append(sampleLinks(sample));
    const parts = [
      ["prompt", sample.prompt],
      ["completion", sample.completion],
    ];
    const extra = Object.entries(sample.extra || {});
    if (extra.length) parts.push(["extra", extra.map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("\n")]);
    for (const [label, text] of parts) {
      const h = document.createElement("h3");
      h.textContent = label;
      const pre = document.createElement("pre");
      pre.className = "sample-text";
      pre.dataset.testid = `sample-${label}`;
      pre.textContent = text;
      td.append(h, pre);
    }
    tr.append(td);
    return tr;
  }

  function toggle(tr, sample) {
    const open = tr.getAttribute("aria-expanded") === "true";
    if (open) tr.nextElementSibling.remove();
    else tr.after(detailRow(sample));
    tr.setAttribute("aria-expanded", String(!open));
  }

  function sampleRow(sample) {
    const tr = document.createElement("tr");
    tr.dataset.testid = "sample-row";
    tr.dataset.id = sample.id;
    tr.tabIndex = 0;
    tr.setAttribute("role", "button");
    tr.setAttribute("aria-expanded", "false");
    tr.title = "show the full prompt and completion";
    tr.append(
      cell(sample.step, "num"),
      verdictCell(sample.verdict),
      cell(fmt(sample.reward), "num mono"),
      cell(fmt(sample.advantage), "num mono"),
      cell(sample.length, "num"),
      cell(sample.truncated ? "yes" : "no", sample.truncated ? "truncated" : "muted"),
      cell(sample.prompt.slice(0, 200), "excerpt")
    );
    tr.addEventListener("click", () => toggle(tr, sample));
    tr.addEventListener("keydown", (event) => {
      if (event.target !== tr || (event.key !== "Enter" && event.key !== " ")) return;
      event.preventDefault();
      toggle(tr, sample);
    });
    return tr;
  }

  function renderPager() {
    const pages = Math.max(1, Math.ceil(total / data.sample_page_size));
    document.getElementById("samples-page").textContent = `page ${state.page} of ${pages}`;
    document.getElementById("samples-prev").disabled = state.page <= 1;
    document.getElementById("samples-next").disabled = state.page >= pages;
    const filtered = FILTERS.some((name) => state[name]);
    document.getElementById("samples-count").textContent =
      `${total.toLocaleString()}${capped ? "+" : ""} sample${total === 1 ? "" : "s"}${filtered ? (total === 1 ? " matches" : " match") : ""}`;
    // the samples browser opens with the same filters (its parameters are these)
    const browser = document.querySelector('[data-testid="samples-browser-link"]');
    if (browser) {
      const q = new URLSearchParams();
      for (const name of FILTERS) if (state[name]) q.set(name, state[name]);
      browser.href = `${data.samples_page}${q.toString() ? `?${q.toString()}` : ""}`;
    }
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  /* A refused filter (400) names its field: show "field: message". */
  async function errorText(response) {
    try {
      const answer = await response.json();
      const fields = Object.entries(answer.errors || {}).map(([k, v]) => `${k}: ${[].concat(v).join(", ")}`);
      return fields.length ? fields.join("; ") : answer.detail || `error ${response.status}`;
    } catch (err) {
      return `error ${response.status}`;
    }
  }

  async function load() {
    const mine = ++request;
    const response = await fetch(apiUrl(state), { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (mine !== request) return;
    if (response.status === 404 && state.page > 1) {
      // past the last page (fewer samples match now): the first page instead
      state.page = 1;
      history.replaceState(null, "", pageUrl(state));
      return load();
    }
    if (!response.ok) {
      showError(await errorText(response));
      body.replaceChildren();
      total = 0;
      capped = false;
      renderPager();
      return;
    }
    const page = await response.json();
    if (mine !== request) return;
    showError("");
    total = page.count;
    capped = Boolean(page.count_capped);
    if (total) section.hidden = false;
    body.replaceChildren(...page.results.map(sampleRow));
    if (!page.results.length) {
      const tr = document.createElement("tr");
      tr.className = "empty-row";
      tr.append(cell("No sample matches these filters.", "muted"));
      tr.firstChild.colSpan = 7;
      body.append(tr);
    }
    body.dataset.loaded = String(mine);
    renderPager();
  }

  function go(next, push) {
    state = next;
    if (push) history.pushState(null, "", pageUrl(state));
    load().catch((err) => console.warn("orlab: could not load the samples", err));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(fromForm(), true);
  });
  document.getElementById("samples-clear").addEventListener("click", (event) => {
    event.preventDefault();
    toForm({ verdict: "", truncated: "", step_min: "", step_max: "" });
    go(fromForm(), true);
  });
  document.getElementById("samples-prev").addEventListener("click", () => go({ ...state, page: state.page - 1 }, true));
  document.getElementById("samples-next").addEventListener("click", () => go({ ...state, page: state.page + 1 }, true));
  window.addEventListener("popstate", () => {
    toForm(fromUrl());
    go(fromUrl(), false);
  });

  // A live run that has logged no sample yet: look again now and then; the section shows up with them.
  document.addEventListener("orlab:run", (event) => {
    const { ticks, active } = event.detail;
    if (section.hidden && (!active || ticks % WATCH_EVERY_TICKS === 0)) go(state, false);
  });

  if (!section.hidden) go(state, false);
})();

/* Compare page: one metric key overlaid across runs, legend by run name. Initial load:
   GET /api/compare/?runs=..&keys=<key>&max_points=2000; while some runs are queued or running, every
   2 s: GET /api/compare/?runs=<active>&keys=<key>&since_step=<oldest last step among them>, and
   append to each run's trace only its points after its own last step. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("compare-data").textContent);
  const plot = document.getElementById("compare-chart");
  if (!plot || !data.runs.length) return;
  const keySelect = document.getElementById("key-select");
  const logToggle = document.getElementById("log-toggle");
  const POLL_MS = 2000;
  const MAX_POINTS = 2000;
  const runs = data.runs.map((r, i) => ({ ...r, index: i, last: -1, n: 0 }));
  let key = data.key;
  let generation = 0; // bumps when the key changes, so stale responses are dropped
  let timer = null;

  logToggle.checked = data.log_keys.includes(key);

  const isActive = (s) => o.ACTIVE.includes(s);
  const ids = (list) => list.map((r) => r.id).join(",");
  const url = (params) => `${data.compare_api}?${new URLSearchParams(params).toString()}`;

  function setPoints() {
    plot.dataset.points = String(runs.reduce((n, r) => n + r.n, 0));
  }

  async function load() {
    const gen = ++generation;
    if (!key) {
      Plotly.react(plot, [], o.plotLayout({ log: logToggle.checked, height: 460, legend: true }), o.plotConfig);
      return;
    }
    const series = await o.getJSON(url({ runs: ids(runs), keys: key, max_points: MAX_POINTS }));
    if (gen !== generation) return;
    const traces = runs.map((r) => {
      const s = (series[String(r.id)] || {})[key] || { steps: [], values: [] };
      r.n = s.steps.length;
      r.last = r.n ? s.steps[r.n - 1] : -1;
      return {
        x: s.steps,
        y: s.values,
        type: "scatter",
        mode: "lines",
        line: { width: 1.5 },
        name: o.plotText(r.name),
        connectgaps: false,
        hovertemplate: "%{fullData.name}<br>step %{x}: %{y:.6g}<extra></extra>",
      };
    });
    const layout = o.plotLayout({ log: logToggle.checked, height: 460, legend: true });
    layout.yaxis.title = { text: key };
    layout.hovermode = "closest";
    Plotly.react(plot, traces, layout, o.plotConfig);
    setPoints();
  }

  async function poll() {
    const gen = generation;
    const active = runs.filter((r) => isActive(r.status));
    if (!active.length) return false;
    const statuses = await Promise.all(
      active.map((r) => o.getJSON(data.run_api.replace(/\/0\/$/, `/${r.id}/`)).catch(() => null))
    );
    if (key) {
      const since = Math.min(...active.map((r) => r.last));
      const series = await o.getJSON(url({ runs: ids(active), keys: key, since_step: since }));
      if (gen !== generation) return true;
      const xs = [];
      const ys = [];
      const indices = [];
      for (const r of active) {
        const s = (series[String(r.id)] || {})[key];
        if (!s) continue;
        let i = 0;
        while (i < s.steps.length && s.steps[i] <= r.last) i++;
        if (i >= s.steps.length) continue;
        xs.push(s.steps.slice(i));
        ys.push(s.values.slice(i));
        indices.push(r.index);
        r.n += s.steps.length - i;
        r.last = s.steps[s.steps.length - 1];
      }
      if (indices.length) Plotly.extendTraces(plot, { x: xs, y: ys }, indices);
      setPoints();
    }
    statuses.forEach((run, i) => {
      if (!run) return;
      active[i].status = run.status;
      o.setBadge(document.querySelector(`[data-run-status="${run.id}"]`), run.status);
    });
    return true;
  }

  async function tick() {
    let again = true;
    try {
      again = await poll();
    } catch (err) {
      console.warn("orlab: poll failed", err);
    }
    document.getElementById("live-note").hidden = !again;
    if (again) timer = setTimeout(tick, POLL_MS);
  }

  keySelect.addEventListener("change", async () => {
    key = keySelect.value;
    logToggle.checked = data.log_keys.includes(key);
    const q = new URLSearchParams(window.location.search);
    q.set("key", key);
    history.replaceState(null, "", `?${q.toString()}`);
    await load();
  });
  logToggle.addEventListener("change", () => {
    Plotly.relayout(plot, o.yScaleUpdate(logToggle.checked));
  });

  load()
    .catch((err) => console.warn("orlab: could not load", err))
    .then(() => {
      if (runs.some((r) => isActive(r.status))) {
        document.getElementById("live-note").hidden = false;
        timer = setTimeout(tick, POLL_MS);
      }
    });
  void timer;
})();

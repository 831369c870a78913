/* The run page's queue note, live (issue 16 point 5): "queued: position 3 of 5 on cpu". run.js polls
   the run and announces each poll ("orlab:run"); while the run is queued this reads its position from
   GET /api/runs/{id}/queue-position/ (at most every 2 s) and hides the note once it is not. */
(function () {
  "use strict";
  const note = document.getElementById("queue-note");
  if (!note) return;
  const MIN_MS = 2000;
  let last = 0;
  let busy = false;

  const part = (id) => note.querySelector(`[data-testid="${id}"]`);

  function apply(state) {
    const q = state.queued;
    note.hidden = !q;
    if (!q) return;
    part("queue-position").textContent = q.position;
    part("queue-total").textContent = q.total;
    part("queue-name").textContent = q.queue;
    part("queue-others-count").textContent = q.ahead_other_projects;
    part("queue-others").hidden = !q.ahead_other_projects;
    part("queue-no-workers").hidden = q.workers > 0;
  }

  async function read() {
    if (busy || Date.now() - last < MIN_MS) return;
    busy = true;
    last = Date.now();
    try {
      const response = await fetch(note.dataset.api, { headers: { Accept: "application/json" } });
      if (response.ok) apply(await response.json());
    } catch (err) {
      console.warn("orlab: could not read the queue position", err);
    } finally {
      busy = false;
    }
  }

  document.addEventListener("orlab:run", (event) => {
    const run = event.detail && event.detail.run;
    if (!run) return;
    if (run.status === "queued") read();
    else note.hidden = true;
  });
})();

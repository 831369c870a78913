/* Run page of a reward-model run: the scoring jobs of its checkpoints. A job is started by the
   "Score a dataset" form of a checkpoint row (a plain POST; the page comes back with the new job);
   while any job is queued or running, this script polls GET /api/runs/{id}/scoring/ and redraws the
   table: status, progress, pairs scored, and for a finished job the pair browser sorted by this
   checkpoint's margin. */
(function () {
  "use strict";
  const o = window.orlab;
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const body = document.getElementById("scoring-body");
  const POLL_MS = 1000;
  const PENDING = ["queued", "running"];

  const pending = (statuses) => statuses.some((s) => PENDING.includes(s));

  function pairsUrl(job) {
    return `${data.pairs_url.replace("/0/", `/${job.dataset}/`)}?rm=${job.checkpoint}&ordering=margin`;
  }

  function cell(content, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    return td;
  }

  function progressBar(progress) {
    const outer = document.createElement("div");
    outer.className = "progress small-progress";
    outer.title = `${Math.round(progress * 100)}%`;
    const bar = document.createElement("div");
    bar.className = "progress-bar";
    bar.style.width = `${Math.round(progress * 100)}%`;
    outer.append(bar);
    return outer;
  }

  /* The pair-browser link of a finished job, or a failed job's error. */
  function outcome(job) {
    if (job.status === "succeeded") {
      const a = document.createElement("a");
      a.href = pairsUrl(job);
      a.dataset.testid = "scores-link";
      a.textContent = "pairs by margin";
      return a;
    }
    const span = document.createElement("span");
    if (job.error) {
      span.className = "negative small";
      span.dataset.testid = "scoring-error";
      span.textContent = job.error;
    }
    return span;
  }

  function jobRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.testid = "scoring-row";
    tr.dataset.job = job.id;
    tr.dataset.status = job.status;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.testid = "scoring-status";
    o.setBadge(badge, job.status);
    tr.append(
      cell(job.id, "num"),
      cell(`step ${job.checkpoint_step}`, "num"),
      cell(`${job.dataset_name} v${job.dataset_version}`),
      cell(badge),
      cell(progressBar(job.progress)),
      cell(job.scored, "num"),
      cell(o.fmtTime(job.created_at), "nowrap"),
      cell(outcome(job))
    );
    return tr;
  }

  async function poll() {
    let jobs;
    try {
      jobs = (await o.getJSON(`${data.scoring_api}?page_size=100`)).results;
    } catch (err) {
      console.warn("orlab: could not load the scoring jobs", err);
      setTimeout(poll, POLL_MS * 5);
      return;
    }
    if (jobs.length) body.replaceChildren(...jobs.map(jobRow));
    if (pending(jobs.map((j) => j.status))) setTimeout(poll, POLL_MS);
  }

  const shown = [...body.querySelectorAll("tr[data-status]")].map((tr) => tr.dataset.status);
  if (pending(shown)) setTimeout(poll, POLL_MS);
})();

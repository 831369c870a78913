/* Helpers shared by every page: CSRF-aware fetch, formatting, status badges. */
(function () {
  "use strict";
  const orlab = (window.orlab = window.orlab || {});

  // statuses that still change (pages poll them); waiting: for its init_from_run parent
  orlab.ACTIVE = ["waiting", "queued", "running"];
  orlab.RESUMABLE = ["failed", "cancelled", "lost", "interrupted"];

  orlab.cookie = function (name) {
    for (const part of document.cookie ? document.cookie.split(";") : []) {
      const [k, ...rest] = part.trim().split("=");
      if (k === name) return decodeURIComponent(rest.join("="));
    }
    return "";
  };

  orlab.getJSON = async function (url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
    return response.json();
  };

  orlab.postJSON = async function (url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": orlab.cookie("csrftoken"),
      },
      body: JSON.stringify(body || {}),
    });
    if (!response.ok) throw new Error(`POST ${url}: ${response.status}`);
    return response.json();
  };

  orlab.fmtDuration = function (seconds) {
    if (seconds === null || seconds === undefined) return "—";
    seconds = Math.max(0, seconds);
    if (seconds < 60) return `${seconds.toFixed(1)}s`;
    let m = Math.floor(seconds / 60);
    const s = Math.floor(seconds % 60);
    if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
    let h = Math.floor(m / 60);
    m %= 60;
    if (h < 48) return `${h}h ${String(m).padStart(2, "0")}m`;
    const d = Math.floor(h / 24);
    h %= 24;
    return `${d}d ${String(h).padStart(2, "0")}h`;
  };

  /* The server renders times in UTC as "Y-m-d H:i:s"; so do we. */
  orlab.fmtTime = function (iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toISOString().replace("T", " ").slice(0, 19);
  };

  orlab.setBadge = function (el, status) {
    if (!el) return;
    for (const cls of [...el.classList]) if (cls.startsWith("status-")) el.classList.remove(cls);
    el.classList.add(`status-${status}`);
    el.textContent = status;
  };

  /* Plotly renders a little HTML (<a href>, <b>, <br>...) in trace names, titles and axis labels:
     every user-given string (metric keys, run names, benchmark names) goes through this first. */
  orlab.plotText = function (text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  };

  /* Save a Blob as a file (a PNG or CSV export): a temporary link, clicked, then released. */
  orlab.downloadBlob = function (blob, filename) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
  };

  /* Plotly defaults shared by the run and compare charts. */
  orlab.plotConfig = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"],
  };
  /* Log axes label every tick in full (0.05, 0.1, 0.2) rather than plotly's bare digits (5, 2). */
  orlab.yScale = function (log) {
    return { type: log ? "log" : "linear", tickformat: log ? "~g" : "" };
  };
  orlab.yScaleUpdate = function (log) {
    const s = orlab.yScale(log);
    return { "yaxis.type": s.type, "yaxis.tickformat": s.tickformat };
  };
  orlab.plotLayout = function (opts) {
    return {
      height: opts.height || 260,
      margin: { l: 60, r: 16, t: 8, b: 40 },
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 11, color: "#374151" },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#ffffff",
      xaxis: { title: { text: "step", standoff: 4 }, gridcolor: "#eef0f3", zeroline: false },
      yaxis: { ...orlab.yScale(opts.log), gridcolor: "#eef0f3", zeroline: false, exponentformat: "e" },
      showlegend: !!opts.legend,
      legend: { orientation: "h", y: -0.22 },
      hovermode: "x unified",
      uirevision: "keep",
    };
  };
})();

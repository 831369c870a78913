/* The queue page, live (issue 16 point 5): re-reads the page's body (the same template the first view
   was drawn with) every 3 s while the tab is visible. */
(function () {
  "use strict";
  const box = document.getElementById("u3-queues");
  if (!box) return;
  const POLL_MS = 3000;

  async function refresh() {
    if (!document.hidden) {
      try {
        const response = await fetch(box.dataset.refreshUrl, { headers: { Accept: "text/html" } });
        if (response.ok) box.innerHTML = await response.text();
      } catch (err) {
        console.warn("orlab: could not refresh the queues", err);
      }
    }
    setTimeout(refresh, POLL_MS);
  }
  setTimeout(refresh, POLL_MS);
})();

/* One pair: j or → next pair, k or ← previous (within the list's filters and ordering), Esc back to
   the list; the diff highlighting can be switched off to read the responses plainly. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("pair-data").textContent);

  const toggle = document.getElementById("diff-toggle");
  const responses = document.getElementById("responses");
  if (toggle && responses) {
    const apply = () => responses.classList.toggle("no-diff", !toggle.checked);
    toggle.addEventListener("change", () => {
      apply();
      try {
        localStorage.setItem("orlab.pairDiff", toggle.checked ? "1" : "0");
      } catch (err) {
        /* private mode */
      }
    });
    try {
      if (localStorage.getItem("orlab.pairDiff") === "0") toggle.checked = false;
    } catch (err) {
      /* private mode */
    }
    apply();
  }

  const typing = (el) =>
    el &&
    (el.isContentEditable ||
      /^(TEXTAREA|SELECT)$/.test(el.tagName) ||
      (el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit"].includes(el.type)));
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    let url = "";
    switch (event.key) {
      case "j":
      case "ArrowRight":
        url = data.next_url;
        break;
      case "k":
      case "ArrowLeft":
        url = data.prev_url;
        break;
      case "Escape":
        url = data.list_url;
        break;
      default:
        return;
    }
    event.preventDefault();
    if (url) window.location.href = url;
  });
})();

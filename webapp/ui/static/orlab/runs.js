/* Runs list: select runs with the checkboxes and compare them (?runs=1,2,3). */
(function () {
  "use strict";
  const form = document.getElementById("compare-form");
  if (!form) return;
  const boxes = () => [...form.querySelectorAll("input.run-select")];
  const button = document.getElementById("compare-button");
  const counter = document.getElementById("selected-count");
  const all = document.getElementById("select-all");

  function update() {
    const n = boxes().filter((b) => b.checked).length;
    button.disabled = n === 0;
    counter.textContent = n ? `${n} selected` : "";
    if (all) all.checked = n > 0 && n === boxes().length;
  }
  form.addEventListener("change", (event) => {
    if (event.target === all) for (const box of boxes()) box.checked = all.checked;
    update();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = boxes().filter((b) => b.checked).map((b) => b.value);
    if (!ids.length) return;
    window.location.href = `${form.action}?runs=${ids.join(",")}`;
  });
  update();
})();

/* Curation form: pick an example recipe (from the page, or GET /api/curation/steps/ when the page
   has none), edit it as JSON, and check the JSON parses before it is posted. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("curate-data").textContent);
  const select = document.getElementById("example-select");
  const textarea = document.getElementById("recipe");
  const description = document.getElementById("example-description");
  const jsonError = document.getElementById("json-error");
  const form = document.getElementById("curate-form");
  let examples = data.examples || [];

  function describe(name) {
    const ex = examples.find((e) => e.name === name);
    description.textContent = ex ? ex.description || "" : "";
    return ex;
  }

  function fillSelect() {
    const current = new Set([...select.options].map((o) => o.value));
    for (const ex of examples) {
      if (current.has(ex.name)) continue;
      const opt = document.createElement("option");
      opt.value = ex.name;
      opt.textContent = ex.name;
      select.appendChild(opt);
    }
  }

  async function loadExamples() {
    if (examples.length) return;
    try {
      const body = await orlab.getJSON(data.steps_api);
      examples = body.examples || body.example_recipes || [];
      fillSelect();
      if (!textarea.value.trim() && examples.length) {
        select.value = examples[0].name;
        textarea.value = JSON.stringify(examples[0].recipe, null, 2);
        describe(examples[0].name);
      }
    } catch (err) {
      description.textContent = "Example recipes are not available.";
    }
  }

  // Which example the textarea holds, if any (so the select shows it after a reload).
  function matchExample() {
    let parsed;
    try {
      parsed = JSON.stringify(JSON.parse(textarea.value));
    } catch (err) {
      return "";
    }
    const ex = examples.find((e) => JSON.stringify(e.recipe) === parsed);
    return ex ? ex.name : "";
  }

  select.addEventListener("change", () => {
    const ex = describe(select.value);
    if (ex) {
      textarea.value = JSON.stringify(ex.recipe, null, 2);
      check();
    }
  });

  function check() {
    try {
      JSON.parse(textarea.value);
      jsonError.hidden = true;
      textarea.classList.remove("invalid");
      return true;
    } catch (err) {
      jsonError.textContent = `Not valid JSON: ${err.message}`;
      jsonError.hidden = false;
      textarea.classList.add("invalid");
      return false;
    }
  }
  textarea.addEventListener("input", () => {
    if (!jsonError.hidden) check();
    if (select.value && matchExample() !== select.value) select.value = "";
  });
  form.addEventListener("submit", (event) => {
    if (!check()) {
      event.preventDefault();
      textarea.focus();
      return;
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    button.textContent = "Starting…";
  });

  // "Add to recipe": append a step with its defaults (null where a value must be given).
  for (const button of document.querySelectorAll("button.add-step")) {
    button.addEventListener("click", () => {
      const template = (data.templates || {})[button.dataset.step];
      if (!template || (textarea.value.trim() && !check())) return;
      let recipe = textarea.value.trim() ? JSON.parse(textarea.value) : {};
      if (!recipe || typeof recipe !== "object" || Array.isArray(recipe)) recipe = {};
      if (!recipe.name) recipe.name = "my-recipe";
      if (!Array.isArray(recipe.steps)) recipe.steps = [];
      recipe.steps.push(JSON.parse(JSON.stringify(template)));
      textarea.value = JSON.stringify(recipe, null, 2);
      select.value = "";
      describe("");
      textarea.scrollTop = textarea.scrollHeight;
    });
  }

  window.addEventListener("pageshow", () => {
    const button = form.querySelector('button[type="submit"]');
    button.disabled = false;
    button.textContent = "Run recipe";
  });

  select.value = matchExample();
  describe(select.value);
  loadExamples();
})();

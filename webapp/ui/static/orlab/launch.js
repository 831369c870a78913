/* Launch form: switch trainer kind, fill the fields from a preset, show the selected variant of a
   union (e.g. mdp: explicit | garnet | named), and copy the fields into the JSON box. */
(function () {
  "use strict";
  const form = document.getElementById("launch-form");
  if (!form) return;
  const kindSelect = document.getElementById("kind-select");
  const presetSelect = document.getElementById("preset-select");
  const presetInput = document.getElementById("preset-input");
  const loadButton = document.getElementById("kind-load");
  const presets = JSON.parse(document.getElementById("presets-data").textContent);
  const esc = (s) => (window.CSS && CSS.escape ? CSS.escape(s) : s.replace(/["\\]/g, "\\$&"));

  if (loadButton) loadButton.hidden = true; // with JS, choosing is enough

  function showVariant(union, key) {
    for (const fs of form.querySelectorAll(`fieldset.variant[data-union="${esc(union)}"]`)) {
      const on = fs.dataset.variant === key;
      fs.disabled = !on; // a disabled fieldset's inputs are not submitted
      fs.hidden = !on;
    }
  }

  form.addEventListener("change", (event) => {
    const el = event.target;
    if (el.classList.contains("variant-select")) showVariant(el.dataset.union, el.value);
    const field = el.closest(".field.has-error");
    if (field) field.classList.remove("has-error");
  });

  function applyPreset(name) {
    const preset = presets[name];
    if (!preset) return;
    document.getElementById("preset-hardware-text").textContent = preset.hardware || "";
    document.getElementById("preset-hardware").hidden = !preset.hardware;
    for (const [selectName, key] of Object.entries(preset.variants)) {
      const select = form.querySelector(`select[name="${esc(selectName)}"]`);
      if (!select) continue;
      select.value = key;
      showVariant(select.dataset.union, key);
    }
    for (const [name, value] of Object.entries(preset.values)) {
      for (const el of form.querySelectorAll(`[name="${esc(name)}"]`)) {
        if (el.matches(":disabled") || el.type === "hidden") continue;
        if (el.type === "checkbox") el.checked = !!value;
        else el.value = value;
      }
    }
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) q.set(k, v);
    return `?${q.toString()}`;
  }

  kindSelect.addEventListener("change", () => {
    window.location.href = query({ kind: kindSelect.value });
  });

  presetSelect.addEventListener("change", () => {
    const name = presetSelect.value;
    if (!name) {
      window.location.href = query({ kind: kindSelect.value, preset: "" });
      return;
    }
    applyPreset(name);
    presetInput.value = name;
    history.replaceState(null, "", query({ kind: kindSelect.value, preset: name }));
  });

  /* The config the fields describe, as the server would build it (for the JSON box). */
  function collect() {
    const config = {};
    for (const el of document.querySelectorAll("#config-fields [name^='config.']")) {
      if (el.matches(":disabled") || el.name.endsWith(":variant")) continue;
      let value;
      if (el.type === "checkbox") value = el.checked;
      else {
        const raw = el.value.trim();
        if (raw === "") continue;
        if (el.type === "number") value = Number(raw);
        else if (el.dataset.scalar && raw !== "" && !isNaN(Number(raw))) value = Number(raw);
        else if (el.tagName === "TEXTAREA") {
          try {
            value = JSON.parse(raw);
          } catch (e) {
            value = raw;
          }
        } else value = raw;
      }
      const path = el.name.slice("config.".length).split(".");
      let node = config;
      for (const part of path.slice(0, -1)) node = node[part] = node[part] || {};
      node[path[path.length - 1]] = value;
    }
    return config;
  }

  const jsonBox = document.getElementById("f-config-json");
  document.getElementById("copy-to-json").addEventListener("click", () => {
    jsonBox.value = JSON.stringify(collect(), null, 2);
  });
  document.getElementById("clear-json").addEventListener("click", () => {
    jsonBox.value = "";
  });
})();

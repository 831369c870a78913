/* Launch form: switch trainer kind, fill the fields from a preset, show the selected variant of a
   union (e.g. mdp: explicit | garnet | named), keep the JSON box (pre-filled with the effective
   config) following the fields until the user edits it, and show what changed from the preset
   (#launch-configs: the presets' effective configs and the pickers' label -> value maps). */
(function () {
  "use strict";
  const form = document.getElementById("launch-form");
  if (!form) return;
  const kindSelect = document.getElementById("kind-select");
  const presetSelect = document.getElementById("preset-select");
  const presetInput = document.getElementById("preset-input");
  const loadButton = document.getElementById("kind-load");
  const presets = JSON.parse(document.getElementById("presets-data").textContent);
  const launchEl = document.getElementById("launch-configs");
  const launchData = launchEl ? JSON.parse(launchEl.textContent) : { base: "", configs: {}, pickers: {} };
  const pickers = launchData.pickers || {};
  let baseName = launchData.base;
  const baseConfig = () => launchData.configs[baseName] || {};
  function valueAt(config, path) {
    let node = config;
    for (const part of path) {
      if (!node || typeof node !== "object" || !(part in node)) return undefined;
      node = node[part];
    }
    return node;
  }
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
    // launch-models.js sets the model picker in its own listener: sync once every listener ran
    setTimeout(() => presetChanged(name), 0);
  });

  /* The config the fields describe, as the server would build it (for the JSON box). */
  function collect() {
    const config = {};
    for (const el of document.querySelectorAll("#config-fields [name^='config.']")) {
      if (el.matches(":disabled") || el.name.endsWith(":variant")) continue;
      let value;
      const path = el.name.slice("config.".length).split(".");
      if (el.type === "checkbox") value = el.checked;
      else if (pickers[el.name]) {
        const choice = pickers[el.name].find(([label]) => label === el.value);
        value = choice ? choice[1] : el.value; // a label the server does not know: it says so
      } else {
        const raw = el.value.trim();
        if (raw === "") {
          // an empty input is the default: null where the base config has null, else left out
          if (valueAt(baseConfig(), path) === null) value = null;
          else continue;
        } else if (el.type === "number") value = Number(raw);
        else if (el.dataset.scalar && raw !== "" && !isNaN(Number(raw))) value = Number(raw);
        else if (el.tagName === "TEXTAREA") {
          try {
            value = JSON.parse(raw);
          } catch (e) {
            value = raw;
          }
        } else value = raw;
      }
      let node = config;
      for (const part of path.slice(0, -1)) node = node[part] = node[part] || {};
      node[path[path.length - 1]] = value;
    }
    return config;
  }

  const jsonBox = document.getElementById("f-config-json");
  const jsonBase = document.getElementById("f-config-json-base");
  const edited = () => jsonBox.value.trim() !== "" && jsonBox.value.trim() !== (jsonBase ? jsonBase.value.trim() : "");

  /* The box follows the fields while it holds what was pre-filled (or last synced). */
  function syncBox() {
    if (!jsonBase || edited() || jsonBox.value.trim() === "") return;
    const text = JSON.stringify(collect(), null, 2);
    jsonBox.value = text;
    jsonBase.value = text;
  }

  function presetChanged(name) {
    if (jsonBase && !edited() && jsonBox.value.trim() !== "") {
      const text = JSON.stringify(launchData.configs[name] || collect(), null, 2);
      jsonBox.value = text;
      jsonBase.value = text;
    }
    baseName = name;
    const title = document.querySelector("#config-diff h2");
    if (title && baseName !== "clone") title.textContent = `Changed from the preset ${name}`;
    showDiff();
  }

  // --- "changed from the preset": the edited config (box, or fields) against the base config ---
  function flat(value, prefix, out) {
    if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
      for (const [k, v] of Object.entries(value)) flat(v, prefix ? `${prefix}.${k}` : k, out);
    } else if (prefix) out[prefix] = value;
    return out;
  }
  const show = (v) => (v === undefined ? "—" : JSON.stringify(v));
  function same(a, b) {
    if (a === undefined) a = null; // a missing key and null both mean "the default"
    if (b === undefined) b = null;
    if (a === null || b === null) return a === b;
    if (typeof a !== "object" && typeof b !== "object") return String(a) === String(b); // 1 vs "1" from a select
    return JSON.stringify(a) === JSON.stringify(b);
  }
  function current() {
    const text = jsonBox.value.trim();
    if (text) {
      try {
        const parsed = JSON.parse(text);
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) return parsed;
      } catch (e) {
        return null;
      }
    }
    return collect();
  }
  function showDiff() {
    const rowsEl = document.getElementById("config-diff-rows");
    const tableEl = document.getElementById("config-diff-table");
    const emptyEl = document.getElementById("config-diff-empty");
    if (!rowsEl) return;
    const now = current();
    if (now === null) {
      emptyEl.hidden = false;
      emptyEl.textContent = "The JSON box does not parse: fix it to see the changes.";
      tableEl.hidden = true;
      return;
    }
    const a = flat(baseConfig(), "", {});
    const b = flat(now, "", {});
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    const changed = keys.filter((k) => !same(a[k], b[k]));
    rowsEl.replaceChildren(
      ...changed.map((k) => {
        const tr = document.createElement("tr");
        tr.dataset.testid = "config-diff-row";
        tr.dataset.key = k;
        for (const [text, cls] of [[k, "key"], [show(a[k]), "was"], [show(b[k]), "now"]]) {
          const td = document.createElement("td");
          td.textContent = text;
          td.className = cls;
          tr.appendChild(td);
        }
        return tr;
      })
    );
    tableEl.hidden = changed.length === 0;
    emptyEl.hidden = changed.length > 0;
    emptyEl.textContent = "Nothing changed.";
  }

  const fieldsBox = document.getElementById("config-fields");
  for (const type of ["input", "change"]) {
    fieldsBox.addEventListener(type, () => {
      syncBox();
      showDiff();
    });
  }
  jsonBox.addEventListener("input", showDiff);
  showDiff();
  document.getElementById("copy-to-json").addEventListener("click", () => {
    jsonBox.value = JSON.stringify(collect(), null, 2);
    showDiff();
  });
  document.getElementById("clear-json").addEventListener("click", () => {
    jsonBox.value = "";
    showDiff();
  });
})();

/* Launch form: the worker fleet follows the queue select. The panel marks the run's queue, and
   config.model_path is a picker of "tiny" plus that queue's reported models, or a text input when no
   worker of the queue has reported (a name is then accepted unchecked). Data: #fleet-data, built by
   webapp/ui/fleet_panel.py. */
(function () {
  "use strict";
  const dataEl = document.getElementById("fleet-data");
  const form = document.getElementById("launch-form");
  const queueSelect = document.getElementById("f-queue");
  if (!dataEl || !form || !queueSelect) return;
  const data = JSON.parse(dataEl.textContent);
  const esc = (s) => (window.CSS && CSS.escape ? CSS.escape(s) : s.replace(/["\\]/g, "\\$&"));
  const picker = data.field ? form.querySelector(`select[name="${esc(data.field)}"]`) : null;
  const text = data.field ? form.querySelector(`input[type="text"][name="${esc(data.field)}"]`) : null;

  function use(el, on) {
    el.disabled = !on; // a disabled control is not submitted: only one of the two carries the value
    el.hidden = !on;
  }

  function showModels(queueName, value) {
    if (!picker || !text) return;
    const current = value !== undefined ? value : picker.disabled ? text.value.trim() : picker.value;
    const options = (data.options || {})[queueName] || [];
    if (!options.length) {
      text.value = current;
      use(picker, false);
      use(text, true);
      return;
    }
    const entries = options.slice();
    if (current && !entries.some(([v]) => v === current)) {
      entries.push([current, `${current} (not reported by the workers of queue ${queueName})`]);
    }
    picker.replaceChildren(
      ...entries.map(([v, label]) => {
        const option = document.createElement("option");
        option.value = v;
        option.textContent = label;
        return option;
      }),
    );
    picker.value = current || entries[0][0];
    use(text, false);
    use(picker, true);
  }

  const queue = () => queueSelect.value || data.default_queue;

  function update() {
    for (const block of document.querySelectorAll("#fleet-panel .fleet-queue")) {
      block.classList.toggle("target", block.dataset.queue === queue());
    }
    showModels(queue());
  }

  queueSelect.addEventListener("change", update);

  /* launch.js fills the fields from a preset first; a preset's model the picker does not list yet
     would leave it blank (and the run on the default model), so it is added here. */
  const presetSelect = document.getElementById("preset-select");
  const presetsEl = document.getElementById("presets-data");
  if (presetSelect && presetsEl && data.field) {
    const presets = JSON.parse(presetsEl.textContent);
    presetSelect.addEventListener("change", () => {
      const preset = presets[presetSelect.value];
      const value = preset && preset.values[data.field];
      if (value !== undefined) showModels(queue(), value);
    });
  }
})();

/* The notifications page: channels and deliveries, read and written through the API
   (/api/projects/<id>/channels/, /api/channels/<id>/, /api/channels/<id>/test/,
   /api/projects/<id>/deliveries/). Every user-given text is set as textContent. */
(function () {
  "use strict";
  const orlab = window.orlab;
  const data = JSON.parse(document.getElementById("notify-data").textContent);
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;

  function csrf() {
    const input = document.querySelector("[name=csrfmiddlewaretoken]");
    return orlab.cookie("csrftoken") || (input ? input.value : "");
  }

  /* {ok, status, body}: the API's error body ({detail, errors}) is what the page shows. */
  async function call(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrf();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method, credentials: "same-origin", headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    let parsed = null;
    if (response.status !== 204) {
      try { parsed = await response.json(); } catch (e) { parsed = null; }
    }
    return { ok: response.ok, status: response.status, body: parsed };
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function say(text) { $("notify-message").textContent = text || ""; }

  function errorText(result) {
    const body = result.body || {};
    const fields = Object.entries(body.errors || {}).map(([k, v]) => `${k}: ${v.join(", ")}`);
    return [body.detail || `HTTP ${result.status}`, ...fields].join("; ");
  }

  // --- channels ---------------------------------------------------------------------------

  function rulesText(channel) {
    if (channel.rules === "all") return "all rules";
    if (channel.rules === "none") return "none";
    const names = new Map(data.rules.map((r) => [r.id, r.name]));
    return channel.rule_ids.map((id) => names.get(id) || `rule ${id}`).join(", ");
  }

  function actionButton(label, testid, onClick) {
    const b = el("button", label);
    b.type = "button";
    b.className = "small";
    b.dataset.testid = testid;
    b.addEventListener("click", onClick);
    return b;
  }

  function channelRow(channel) {
    const tr = el("tr");
    tr.dataset.testid = "notify-channel";
    tr.dataset.channelId = channel.id;
    if (!channel.enabled) tr.classList.add("disabled");
    tr.append(
      el("td", channel.name, "name"),
      el("td", channel.kind),
      el("td", channel.kind === "webhook" ? channel.url : channel.emails.join(", "), "target mono small"),
      el("td", channel.run_statuses.join(", ") || "none", "small"),
      el("td", rulesText(channel), "small"),
      el("td", channel.secret_hint || "—", "mono small"),
      el("td", channel.enabled ? "enabled" : "disabled", "small"),
    );
    const actions = el("td", null, "actions");
    if (data.owner) {
      actions.append(
        actionButton("Send test", "notify-test", async () => {
          const r = await call("POST", `/api/channels/${channel.id}/test/`);
          say(r.ok ? `test delivery #${r.body.id} queued to ${channel.name}` : errorText(r));
          loadDeliveries();
        }),
        " ",
        actionButton(channel.enabled ? "Disable" : "Enable", "notify-toggle", async () => {
          const r = await call("PATCH", `/api/channels/${channel.id}/`, { enabled: !channel.enabled });
          if (!r.ok) say(errorText(r));
          loadChannels();
        }),
        " ",
        actionButton("Delete", "notify-delete", async () => {
          if (!window.confirm(`Delete the channel ${channel.name} and its deliveries?`)) return;
          const r = await call("DELETE", `/api/channels/${channel.id}/`);
          if (!r.ok) say(errorText(r));
          loadChannels();
          loadDeliveries();
        }),
      );
    }
    tr.append(actions);
    return tr;
  }

  async function loadChannels() {
    const r = await call("GET", `/api/projects/${data.project}/channels/`);
    if (!r.ok) { say(errorText(r)); return; }
    $("notify-channel-rows").replaceChildren(...r.body.map(channelRow));
    $("notify-no-channels").hidden = r.body.length > 0;
  }

  // --- deliveries -------------------------------------------------------------------------

  function aboutCell(d) {
    const td = el("td", null, "small");
    if (d.run) {
      const a = el("a", `run #${d.run}`);
      a.href = `/runs/${d.run}/`;
      td.append(a, ` ${d.subject === "event" ? "rule event" : (d.payload.run || {}).status || ""}`);
    } else {
      td.textContent = d.subject === "test" ? "test" : d.subject;
    }
    return td;
  }

  function deliveryRow(d) {
    const tr = el("tr");
    tr.dataset.testid = "notify-delivery";
    tr.dataset.deliveryId = d.id;
    tr.dataset.status = d.status;
    const status = el("td");
    status.append(el("span", d.status, `dstatus ${d.status}`));
    tr.append(
      el("td", d.id, "num"),
      el("td", orlab.fmtTime(d.created_at), "small"),
      el("td", d.channel_name),
      aboutCell(d),
      status,
      el("td", d.attempts, "num"),
      el("td", d.status === "pending" && d.next_attempt_at ? orlab.fmtTime(d.next_attempt_at) : "—", "small"),
      el("td", d.last_error || "", "error"),
    );
    return tr;
  }

  let pollTimer = null;

  async function loadDeliveries() {
    clearTimeout(pollTimer);
    const r = await call("GET", `/api/projects/${data.project}/deliveries/?page_size=50`);
    if (r.ok) {
      $("notify-delivery-rows").replaceChildren(...r.body.results.map(deliveryRow));
      $("notify-no-deliveries").hidden = r.body.results.length > 0;
      // poll while something is on its way (pending or sending); a finished list stays still
      if (r.body.results.some((d) => d.status === "pending" || d.status === "sending")) {
        pollTimer = setTimeout(loadDeliveries, POLL_MS);
      }
    }
  }

  // --- the form ---------------------------------------------------------------------------

  function checkbox(name, value, label, checked) {
    const wrap = el("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = name;
    box.value = value;
    box.checked = checked;
    wrap.append(box, label);
    return wrap;
  }

  function setUpForm() {
    const form = $("notify-form");
    if (!form) return;
    $("notify-statuses").replaceChildren(
      ...data.run_statuses.map((s) => checkbox("run_statuses", s, s, data.default_run_statuses.includes(s))),
    );
    $("notify-rule-list").replaceChildren(
      ...(data.rules.length
        ? data.rules.map((r) => checkbox("rule_ids", r.id, r.name, false))
        : [el("span", "this project has no rules yet (see its alerts page)", "muted")]),
    );
    const kind = $("notify-kind");
    const showKind = () => {
      form.querySelectorAll(".for-webhook").forEach((n) => { n.hidden = kind.value !== "webhook"; });
      form.querySelectorAll(".for-email").forEach((n) => { n.hidden = kind.value !== "email"; });
    };
    kind.addEventListener("change", showKind);
    showKind();
    const rules = $("notify-rules");
    rules.addEventListener("change", () => { $("notify-rule-choice").hidden = rules.value !== "chosen"; });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const checked = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((b) => b.value);
      const body = {
        name: $("notify-name").value,
        kind: kind.value,
        run_statuses: checked("run_statuses"),
        rules: rules.value,
        rule_ids: rules.value === "chosen" ? checked("rule_ids").map(Number) : [],
      };
      if (kind.value === "webhook") {
        body.url = $("notify-url").value.trim();
        if ($("notify-secret-input").value) body.secret = $("notify-secret-input").value;
      } else {
        body.emails = $("notify-emails").value.split(/[\s,;]+/).filter(Boolean);
      }
      const r = await call("POST", `/api/projects/${data.project}/channels/`, body);
      const errors = $("notify-errors");
      errors.replaceChildren();
      if (!r.ok) {
        const fields = Object.entries((r.body || {}).errors || {});
        if (!fields.length) errors.append(el("li", errorText(r)));
        for (const [field, messages] of fields) {
          const li = el("li", `${field}: ${messages.join(", ")}`);
          li.dataset.field = field;
          errors.append(li);
        }
        return;
      }
      $("notify-secret").hidden = !r.body.secret;
      $("notify-secret-value").textContent = r.body.secret || "";
      say(`channel ${r.body.name} created`);
      form.reset();
      setUpForm.reset();
      loadChannels();
    });
    setUpForm.reset = () => {
      showKind();
      $("notify-rule-choice").hidden = true;
      form.querySelectorAll("input[name=run_statuses]").forEach((b) => {
        b.checked = data.default_run_statuses.includes(b.value);
      });
    };
  }

  setUpForm();
  loadChannels();
  loadDeliveries();
})();

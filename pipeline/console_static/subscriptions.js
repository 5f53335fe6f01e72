import { api, el, formValues, showError, time } from "./common.js";

const form = document.getElementById("subscription-form");

async function act(work, notice = "") {
  try {
    await work();
    showError("error", null);
    document.getElementById("notice").textContent = notice;
  } catch (error) {
    showError("error", error);
  }
  await refresh();
}

function edit(subscription) {
  document.getElementById("form-title").textContent = `Edit ${subscription.name}`;
  const { selector, delivery } = subscription;
  const values = {
    id: subscription.id, name: subscription.name, stream: selector.stream, modality: selector.modality ?? "",
    min_severity: selector.min_severity, webhook_url: delivery.webhook_url ?? "", webhook_format: delivery.webhook_format ?? "diffsentry",
  };
  for (const [name, value] of Object.entries(values)) form.elements[name].value = value;
  form.elements.sse.checked = delivery.sse;
  form.elements.enabled.checked = subscription.enabled;
  form.elements.name.focus();
}

async function showLog(subscription) {
  document.getElementById("log-section").hidden = false;
  document.getElementById("log-name").textContent = subscription.name;
  try {
    const { deliveries } = await api(`/v1/deliveries?subscription=${subscription.id}&limit=50`);
    document.querySelector("#log tbody").replaceChildren(...deliveries.map((d) => el("tr", {},
      el("td", {}, el("code", {}, d.notification_id)), el("td", {}, d.channel ?? ""), el("td", {}, d.outcome),
      el("td", {}, String(d.attempts)), el("td", {}, d.error ?? ""), el("td", {}, time(d.updated_at)))));
    showError("log-error", null);
  } catch (error) {
    document.querySelector("#log tbody").replaceChildren();
    showError("log-error", error);
  }
}

function row(s) {
  const channels = [s.delivery.webhook_url ? `webhook ${s.delivery.webhook_url}` : null, s.delivery.sse ? "SSE" : null];
  return el("tr", { "data-subscription": s.id },
    el("td", {}, s.name),
    el("td", {}, `${s.selector.stream} · ${s.selector.modality ?? "any modality"} · ≥ ${s.selector.min_severity}`),
    el("td", {}, channels.filter(Boolean).join(", ")),
    el("td", {}, s.enabled ? "yes" : "no"),
    el("td", {},
      el("button", { type: "button", onclick: () => edit(s) }, "Edit"), " ",
      el("button", { type: "button", onclick: () => act(() => api(`/v1/subscriptions/${s.id}/test`, { method: "POST" }), `test notification sent to ${s.name}`) }, "Send test"), " ",
      el("button", { type: "button", onclick: () => showLog(s) }, "Delivery log"), " ",
      el("button", { type: "button", onclick: () => confirm(`Delete ${s.name}?`) && act(() => api(`/v1/subscriptions/${s.id}`, { method: "DELETE" }), `${s.name} deleted`) }, "Delete")),
  );
}

async function refresh() {
  try {
    const { subscriptions } = await api("/v1/subscriptions");
    document.querySelector("#subscriptions tbody").replaceChildren(...subscriptions.map(row));
  } catch (error) {
    showError("error", error);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const v = formValues(form);
  const delivery = { webhook_url: v.webhook_url || null, sse: form.elements.sse.checked };
  if (v.webhook_format !== "diffsentry") delivery.webhook_format = v.webhook_format;  // known once channels land
  const body = {
    name: v.name, enabled: form.elements.enabled.checked, delivery,
    selector: { stream: v.stream, modality: v.modality || null, min_severity: v.min_severity },
  };
  const saving = v.id ? api(`/v1/subscriptions/${v.id}`, { method: "PATCH", body }) : api("/v1/subscriptions", { method: "POST", body });
  act(async () => {
    await saving;
    form.reset();
    form.elements.id.value = "";
    document.getElementById("form-title").textContent = "New subscription";
  }, `${v.name} saved`);
});
form.addEventListener("reset", () => {
  form.elements.id.value = "";
  document.getElementById("form-title").textContent = "New subscription";
});
refresh();

import { api, badge, el, formValues, live, number, showError, throttled, time } from "./common.js";

const ackForm = document.getElementById("ack-form");
const silenceForm = document.getElementById("silence-form");
const matchersText = (m) => Object.entries(m ?? {}).filter(([, v]) => v !== null && v !== "*").map(([k, v]) => `${k}=${v}`).join(", ") || "everything";
let ackTarget = null;

async function act(work) {
  try {
    await work();
    showError("error", null);
  } catch (error) {
    showError("error", error);
  }
  await refresh();
}

function openAck(alert) {
  ackTarget = alert.alert_id;
  document.getElementById("ack-target").textContent = `${alert.stream} (${alert.alert_id})`;
  ackForm.hidden = false;
  document.getElementById("ack-by").focus();
}

// A silence from an alert starts with that alert's stream, modality, severity and model.
function openSilence(alert) {
  const values = alert ? { stream: alert.stream, modality: alert.modality, severity: alert.severity, model: alert.model }
    : { stream: "*", modality: "", severity: "", model: "*" };
  for (const [name, value] of Object.entries(values)) silenceForm.elements[name].value = value;
  silenceForm.hidden = false;
  document.getElementById("silence-by").focus();
}

function alertRow(alert) {
  const acknowledged = alert.acknowledgement !== null && alert.acknowledgement !== undefined;
  return el("tr", { "data-alert": alert.alert_id },
    el("td", {}, el("a", { href: `/console/stream?modality=${alert.modality}&stream=${encodeURIComponent(alert.stream)}` }, alert.stream)),
    el("td", {}, alert.severity),
    el("td", {}, badge(alert.status), acknowledged ? el("span", { class: "muted" }, ` by ${alert.acknowledgement.by}`) : null),
    el("td", {}, time(alert.started_at)),
    el("td", {}, `${number(alert.score)} / ${number(alert.threshold)}`),
    el("td", {},
      acknowledged
        ? el("button", { type: "button", onclick: () => act(() => api(`/v1/alerts/${alert.alert_id}/ack`, { method: "DELETE" })) }, "Unacknowledge")
        : el("button", { type: "button", onclick: () => openAck(alert) }, "Acknowledge"),
      " ", el("button", { type: "button", onclick: () => openSilence(alert) }, "Silence…")),
  );
}

async function fill(id, path, key, row) {
  try {
    const items = (await api(path))[key];
    document.querySelector(`#${id} tbody`).replaceChildren(...items.map(row));
  } catch (error) {
    document.querySelector(`#${id} tbody`).replaceChildren(
      el("tr", {}, el("td", { colspan: 6, class: "error", role: "alert" }, String(error.message))));
  }
}

async function refresh() {
  await Promise.all([
    fill("active", "/v1/alerts?status=active", "alerts", alertRow),
    fill("silences", "/v1/silences?state=all", "silences", (s) => el("tr", { "data-silence": s.id },
      el("td", {}, matchersText(s.matchers)), el("td", {}, badge(s.state)), el("td", {}, time(s.ends_at)),
      el("td", {}, `${s.created_by}: ${s.comment}`),
      el("td", {}, s.state === "expired" ? "" : el("button", { type: "button", onclick: () => act(() => api(`/v1/silences/${s.id}`, { method: "DELETE" })) }, "Expire now")))),
    fill("windows", "/v1/maintenance-windows", "maintenance_windows", (w) => el("tr", {},
      el("td", {}, w.name), el("td", {}, matchersText(w.matchers)),
      el("td", {}, `days ${w.weekdays.join(",")} ${w.start}–${w.end} ${w.timezone}`), el("td", {}, w.created_by),
      el("td", {}, el("button", { type: "button", onclick: () => act(() => api(`/v1/maintenance-windows/${w.id}`, { method: "DELETE" })) }, "Delete")))),
    fill("history", "/v1/alerts?status=all&limit=100", "alerts", (a) => el("tr", {},
      el("td", {}, a.stream), el("td", {}, a.severity), el("td", {}, badge(a.status)),
      el("td", {}, time(a.started_at)), el("td", {}, time(a.event_time)))),
  ]);
}

ackForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const { by, comment, expires } = formValues(ackForm);
  const body = { by, comment, expires_in_s: expires ? Number(expires) * 60 : null };
  ackForm.hidden = true;
  act(() => api(`/v1/alerts/${ackTarget}/ack`, { method: "POST", body }));
});

silenceForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const v = formValues(silenceForm);
  const now = Date.now() / 1000;
  const body = {
    matchers: { stream: v.stream, modality: v.modality || null, severity: v.severity || null, model: v.model },
    starts_at: now, ends_at: now + Number(v.hours) * 3600, created_by: v.created_by, comment: v.comment,
  };
  silenceForm.hidden = true;
  act(() => api("/v1/silences", { method: "POST", body }));
});

const windowForm = document.getElementById("window-form");
windowForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const v = formValues(windowForm);
  const body = {
    name: v.name, matchers: { stream: v.stream, modality: null, severity: null, model: "*" },
    weekdays: v.weekdays.split(",").map(Number), start: v.start, end: v.end, timezone: v.timezone,
    created_by: v.created_by, comment: "",
  };
  act(() => api("/v1/maintenance-windows", { method: "POST", body }));
});

for (const form of [ackForm, silenceForm]) {
  form.querySelector("[data-cancel]").addEventListener("click", () => (form.hidden = true));
}
document.getElementById("new-silence").addEventListener("click", () => openSilence(null));
live("events", throttled(refresh, 1000));
refresh();

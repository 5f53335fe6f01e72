import { api, badge, el, formValues, live, number, showError, throttled, time } from "./common.js";

const ackForm = document.getElementById("ack-form");
const silenceForm = document.getElementById("silence-form");
const matchersText = (m) => Object.entries(m ?? {}).filter(([, v]) => v !== null && v !== "*").map(([k, v]) => `${k}=${v}`).join(", ") || "everything";
const streamLink = (alert) => el("a", { href: `/console/stream?modality=${alert.modality}&stream=${encodeURIComponent(alert.stream)}` }, alert.stream);
// The session names no person: what the console ends or withdraws is recorded as done by "console".
const byConsole = "by=console";
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

// A silence from an alert matches its stream and modality; its severity and model narrow it only if chosen.
function openSilence(alert) {
  const values = alert ? { stream: alert.stream, modality: alert.modality } : { stream: "*", modality: "" };
  for (const [name, value] of Object.entries({ severity: "", model: "*", ...values })) silenceForm.elements[name].value = value;
  document.getElementById("silence-source").textContent = alert
    ? `from ${alert.alert_id} (${alert.severity}, model ${alert.model}: narrow by severity or model below if wanted)` : "";
  silenceForm.hidden = false;
  document.getElementById("silence-by").focus();
}

const silenceButton = (alert) => el("button", { type: "button", onclick: () => openSilence(alert) }, "Silence…");

function activeRow(alert) {
  const acknowledged = alert.acknowledgement !== null;
  const ack = alert.acknowledgement;
  return el("tr", { "data-alert": alert.alert_id, "data-status": alert.status, "data-stream": alert.stream },
    el("td", {}, streamLink(alert)),
    el("td", {}, alert.severity),
    el("td", {}, badge(alert.status), acknowledged
      ? el("span", { class: "muted" }, ` by ${ack.by}${ack.comment ? `: ${ack.comment}` : ""}${ack.expires_at ? `, until ${time(ack.expires_at)}` : ""}`)
      : null),
    el("td", {}, time(alert.started_at)),
    el("td", {}, `${number(alert.score)} / ${number(alert.threshold)}`),
    el("td", {},
      acknowledged
        ? el("button", { type: "button", onclick: () => act(() => api(`/v1/alerts/${alert.alert_id}/ack?${byConsole}`, { method: "DELETE" })) }, "Unacknowledge")
        : el("button", { type: "button", onclick: () => openAck(alert) }, "Acknowledge"),
      " ", silenceButton(alert)),
  );
}

const historyRow = (alert) => el("tr", { "data-alert": alert.alert_id, "data-status": alert.status, "data-stream": alert.stream },
  el("td", {}, streamLink(alert)), el("td", {}, alert.severity), el("td", {}, badge(alert.status)),
  el("td", {}, time(alert.started_at)), el("td", {}, time(alert.event_time)), el("td", {}, silenceButton(alert)));

const silenceRow = (s) => el("tr", { "data-silence": s.id, "data-state": s.state },
  el("td", {}, matchersText(s.matchers)), el("td", {}, badge(s.state)), el("td", {}, time(s.ends_at)),
  el("td", {}, `${s.created_by}: ${s.comment}`),
  el("td", {}, s.state === "expired" ? "" : el("button", { type: "button", onclick: () => act(() => api(`/v1/silences/${s.id}?${byConsole}`, { method: "DELETE" })) }, "End now")));

const windowRow = (w) => el("tr", { "data-window": w.id },
  el("td", {}, w.name), el("td", {}, matchersText(w.matchers)),
  el("td", {}, `days ${w.weekdays.join(",")} ${w.start}–${w.end} ${w.timezone}`), el("td", {}, w.created_by),
  el("td", {}, el("button", { type: "button", onclick: () => act(() => api(`/v1/maintenance-windows/${w.id}?${byConsole}`, { method: "DELETE" })) }, "Delete")));

function eventRow(event) {
  const details = [event.comment, event.until ? `until ${time(event.until)}` : "", event.ref ?? ""].filter(Boolean).join(" · ");
  return el("tr", { "data-kind": event.kind, "data-alert": event.alert_id },
    el("td", {}, time(event.at)), el("td", {}, badge(event.kind)), el("td", {}, event.stream ?? ""),
    el("td", {}, event.actor), el("td", { class: "muted" }, details));
}

async function fill(id, path, key, row, order = (items) => items) {
  const body = document.querySelector(`#${id} tbody`);
  try {
    const items = order((await api(path))[key]);
    body.replaceChildren(...items.map(row));
    return items;
  } catch (error) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "error", role: "alert" }, String(error.message))));
    return null;
  }
}

async function refresh() {
  const [active] = await Promise.all([
    fill("active", "/v1/alerts?status=active", "alerts", activeRow),
    fill("silences", "/v1/silences?state=all", "silences", silenceRow),
    fill("windows", "/v1/maintenance-windows", "maintenance_windows", windowRow),
    fill("history", "/v1/alerts?status=all&limit=100", "alerts", historyRow),
    fill("events", "/v1/events?limit=100", "events", eventRow, (events) => events.reverse()),  // newest first
  ]);
  document.getElementById("no-active").hidden = active === null || active.length > 0;
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
  const body = {
    matchers: { stream: v.stream, modality: v.modality || null, severity: v.severity || null, model: v.model },
    starts_at: null, ends_at: Date.now() / 1000 + Number(v.hours) * 3600, created_by: v.created_by, comment: v.comment,
  };
  silenceForm.hidden = true;
  act(() => api("/v1/silences", { method: "POST", body }));
});

const windowForm = document.getElementById("window-form");
windowForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const v = formValues(windowForm);
  const body = {
    name: v.name, matchers: { stream: v.stream, modality: v.modality || null, severity: null, model: "*" },
    weekdays: v.weekdays.split(",").map(Number), start: v.start, end: v.end, timezone: v.timezone,
    created_by: v.created_by, comment: v.comment,
  };
  act(() => api("/v1/maintenance-windows", { method: "POST", body }));
});

for (const form of [ackForm, silenceForm]) {
  form.querySelector("[data-cancel]").addEventListener("click", () => (form.hidden = true));
}
document.getElementById("new-silence").addEventListener("click", () => openSilence(null));
// Alerts and every lifecycle event (acknowledged, suppressed, silence_expired, ...) re-read the page.
live("events", throttled(refresh, 1000));
refresh();

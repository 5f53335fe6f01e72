import { api, el, number, showError, time } from "./common.js";

const grid = document.getElementById("cameras");

async function refresh() {
  try {
    const { cameras } = await api("/v1/cameras");
    document.getElementById("empty").hidden = cameras.length > 0;
    grid.replaceChildren(...cameras.map((camera) => el("figure", { "data-camera": camera.camera },
      el("img", {
        src: `/v1/cameras/${encodeURIComponent(camera.camera)}/latest.png?t=${camera.event_time}`,
        alt: `latest frame of ${camera.camera} with its anomaly map`,
      }),
      el("figcaption", {},
        el("strong", {}, camera.camera), ` score ${number(camera.score)} / threshold ${number(camera.threshold)}`,
        camera.is_anomaly ? el("span", { class: "over" }, " anomalous") : null, el("br"),
        el("span", { class: "muted" }, time(camera.event_time)),
        camera.alert_id ? el("span", {}, " · firing ", el("code", {}, camera.alert_id)) : null),
    )));
    showError("error", null);
  } catch (error) {
    showError("error", error);
  }
}

function snapshot(alert) {
  return el("figure", { "data-alert": alert.alert_id },
    el("img", { src: `/v1/alerts/${alert.alert_id}/snapshot.png`, alt: `worst frame of alert ${alert.alert_id} on ${alert.stream}` }),
    el("figcaption", {}, el("strong", {}, alert.stream), ` ${alert.severity} ${alert.status ?? alert.state}`, el("br"),
      el("span", { class: "muted" }, `started ${time(alert.started_at)}`)));
}

async function refreshSnapshots() {
  try {
    const { alerts } = await api("/v1/alerts?status=all&limit=50");
    document.getElementById("snapshots").replaceChildren(...alerts.filter((a) => a.modality === "video").map(snapshot));
    showError("snapshots-error", null);
  } catch (error) {
    showError("snapshots-error", error);
  }
}

refresh();
refreshSnapshots();
setInterval(refresh, 2000);
setInterval(refreshSnapshots, 10000);

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
    document.getElementById("snapshots").replaceChildren(...cameras.flatMap((camera) => camera.snapshots.map(snapshot)));
    showError("error", null);
  } catch (error) {
    showError("error", error);
  }
}

function snapshot(info) {
  return el("figure", { "data-alert": info.alert_id },
    el("img", { src: `/v1/alerts/${info.alert_id}/snapshot.png?t=${info.event_time}`, alt: `worst frame of alert ${info.alert_id} on ${info.camera}` }),
    el("figcaption", {}, el("strong", {}, info.camera), ` ${info.severity}, worst score ${number(info.score)}`, el("br"),
      el("span", { class: "muted" }, `started ${time(info.started_at)}, worst frame ${time(info.event_time)}`)));
}

refresh();
setInterval(refresh, 2000);

import { api, badge, el, live, number, showError, sparkline, throttled, time } from "./common.js";

const body = document.querySelector("#streams tbody");

function row(stream) {
  const href = `/console/stream?modality=${stream.modality}&stream=${encodeURIComponent(stream.stream)}`;
  const last = stream.last;
  return el("tr", { "data-stream": stream.stream, "data-status": stream.status },
    el("td", {}, el("a", { href }, stream.stream)),
    el("td", {}, stream.modality),
    el("td", {}, badge(stream.status)),
    el("td", { class: last.score > last.threshold ? "over" : null }, `${number(last.score)} / ${number(last.threshold)}`),
    el("td", {}, sparkline(stream.recent)),
    el("td", {}, time(last.event_time)),
  );
}

async function refresh() {
  try {
    const { streams } = await api("/v1/streams");
    body.replaceChildren(...streams.map(row));
    document.getElementById("empty").hidden = streams.length > 0;
    showError("error", null);
  } catch (error) {
    showError("error", error);
  }
}

// Scores arrive many per second: the table is re-read from the server at most twice a second.
const soon = throttled(refresh, 500);
live("scores,events", soon, (state) => (document.getElementById("live").textContent = state));
refresh();

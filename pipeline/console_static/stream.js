/* global uPlot */
import { api, showError, time } from "./common.js";

const query = new URLSearchParams(location.search);
const modality = query.get("modality") ?? "sensor";
const stream = query.get("stream") ?? "";
document.getElementById("title").textContent = `${stream} (${modality})`;
document.title = `DiffSentry: ${stream}`;
const charts = [];

// Alert episodes as shaded bands behind the series.
function episodesPlugin(episodes, end) {
  return {
    hooks: {
      drawClear: (u) => {
        const { ctx } = u;
        ctx.save();
        ctx.fillStyle = "rgba(207, 34, 46, 0.15)";
        for (const [start, stop] of episodes) {
          const left = u.valToPos(start, "x", true), right = u.valToPos(stop ?? end, "x", true);
          ctx.fillRect(left, u.bbox.top, Math.max(1, right - left), u.bbox.height);
        }
        ctx.restore();
      },
    },
  };
}

function chart(target, title, labels, columns, plugins = []) {
  const width = Math.min(1150, document.querySelector("main").clientWidth - 20);
  const series = [{}, ...labels.map((label, i) => ({
    label, stroke: ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#57606a"][i % 6],
    dash: label === "threshold" ? [6, 4] : undefined, width: 1.5, points: { show: false },
  }))];
  const plot = new uPlot({ title, width, height: 280, series, plugins, scales: { x: { time: true } } }, columns, target);
  charts.push(plot);
  return plot;
}

async function show(span) {
  for (const plot of charts.splice(0)) plot.destroy();
  const summary = document.getElementById("summary");
  try {
    const range = new URLSearchParams();
    const streams = (await api("/v1/streams")).streams;
    const known = streams.find((s) => s.modality === modality && s.stream === stream);
    if (known) {
      range.set("end", known.last.event_time);
      range.set("start", known.last.event_time - span);
    }
    const path = `/v1/streams/${modality}/${encodeURIComponent(stream)}/scores?${range}`;
    const { points, contributions, episodes, start, end } = await api(path);
    const target = document.getElementById("scores");
    target.dataset.points = points.length;
    target.dataset.episodes = episodes.length;
    summary.textContent = `${points.length} stored scores from ${time(start)} to ${time(end)}, ${episodes.length} alert episode(s)`;
    chart(target, "score vs threshold", ["score", "threshold"],
      [points.map((p) => p[0]), points.map((p) => p[1]), points.map((p) => p[2])], [episodesPlugin(episodes, end)]);
    const channels = Object.keys(contributions);
    document.getElementById("contributions-section").hidden = channels.length === 0;
    if (channels.length) {
      // One x axis for every channel: a channel is missing (null) where it was not among a window's top ones.
      const times = [...new Set(channels.flatMap((c) => contributions[c].map(([t]) => t)))].sort((a, b) => a - b);
      const columns = [times, ...channels.map((c) => {
        const values = new Map(contributions[c]);
        return times.map((t) => values.get(t) ?? null);
      })];
      chart(document.getElementById("contributions"), "contribution per channel", channels, columns);
    }
    showError("error", null);
  } catch (error) {
    summary.textContent = "";
    showError("error", error);
  }
}

const span = document.getElementById("span");
document.getElementById("range").addEventListener("submit", (event) => {
  event.preventDefault();
  show(Number(span.value));
});
show(Number(span.value));

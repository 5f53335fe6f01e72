// Shared by every console page: the API client (session cookie + the console header the server's CSRF guard
// asks for), small DOM helpers, time formatting, sparklines and the live event stream.

export async function api(path, { method = "GET", body } = {}) {
  const headers = { "X-DiffSentry-Console": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    location.assign("/console/login");
    throw new Error("signed out");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };  // an answer that is not JSON (e.g. aiohttp's "404: Not Found")
  }
  if (!response.ok) throw new Error(`${method} ${path}: ${data?.error ?? response.status + " " + response.statusText}`);
  return data;
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function showError(target, error) {
  document.getElementById(target).textContent = error ? String(error.message ?? error) : "";
}

export const time = (t) => (t === null || t === undefined ? "" : new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z");
export const number = (x) => (x === null || x === undefined ? "–" : Number(x).toPrecision(4));
export const badge = (status) => el("span", { class: `badge ${status}` }, status);

// An inline SVG polyline of the scores with the threshold as a dashed line.
export function sparkline(recent, width = 160, height = 32) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `last ${recent.length} scores`);
  if (recent.length < 2) return svg;
  const values = recent.flatMap(([, score, threshold]) => [score, threshold]);
  const low = Math.min(...values), high = Math.max(...values) || 1;
  const x = (i) => ((i / (recent.length - 1)) * (width - 2) + 1).toFixed(1);
  const y = (v) => (height - 2 - ((v - low) / (high - low || 1)) * (height - 4)).toFixed(1);
  const line = (index, attrs) => {
    const path = document.createElementNS(svg.namespaceURI, "polyline");
    path.setAttribute("points", recent.map((point, i) => `${x(i)},${y(point[index])}`).join(" "));
    for (const [k, v] of Object.entries(attrs)) path.setAttribute(k, v);
    svg.append(path);
  };
  line(2, { fill: "none", stroke: "#cf222e", "stroke-dasharray": "3 2", "stroke-width": 1 });
  line(1, { fill: "none", stroke: "#0969da", "stroke-width": 1.5 });
  return svg;
}

// The alert stream as server-sent events (the session cookie authenticates EventSource); onEvent(kind, data).
export function live(include, onEvent, status) {
  const source = new EventSource(`/v1/alerts/stream?include=${include}`);
  source.onopen = () => status?.("live");
  source.onerror = () => status?.("reconnecting…");
  for (const kind of ["alert", "alert_event", "score"]) {
    source.addEventListener(kind, (event) => onEvent(kind, JSON.parse(event.data)));
  }
  return source;
}

// Calls fn at most once per interval, however often it is asked to.
export function throttled(fn, interval_ms) {
  let timer = null;
  return () => {
    if (timer === null) timer = setTimeout(() => { timer = null; fn(); }, interval_ms);
  };
}

export function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

for (const link of document.querySelectorAll("header nav a")) {
  if (link.pathname === location.pathname) link.setAttribute("aria-current", "page");
}

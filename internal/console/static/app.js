// EdgeLLM console: chat, swarm and live figures over this node's own API.
// Every text that comes from outside (prompts, answers, peer labels, error
// messages) is set with textContent, never parsed as HTML.

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const KEY = "edgellm-api-key";
const POLL_MS = 2000;

// el makes an element with attributes and (text) content.
function el(tag, attrs = {}, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

// --- API access, with the key asked for once on a 401 -------------------

let keyWaiters = [];

function askKey(message) {
  $("keyform").hidden = false;
  $("keyerr").textContent = message || "";
  $("key").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

$("keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  $("key").value = "";
  $("keyform").hidden = true;
  const waiters = keyWaiters;
  keyWaiters = [];
  waiters.forEach((w) => w());
});

async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers.set("Authorization", "Bearer " + key);
    const resp = await fetch(path, { ...init, headers });
    if (resp.status !== 401) return resp;
    const msg = await errorMessage(resp);
    await askKey(key ? msg : "");
  }
}

// errorMessage is the message of an OpenAI-style error body, else the status.
async function errorMessage(resp) {
  const text = await resp.text().catch(() => "");
  try {
    const msg = JSON.parse(text)?.error?.message;
    if (msg) return msg;
  } catch (_) { /* not JSON */ }
  return `HTTP ${resp.status}${text ? ": " + text.slice(0, 300) : ""}`;
}

// --- readiness -----------------------------------------------------------

let wasReady = null;

async function pollReady() {
  let ok = false;
  let why = "";
  try {
    const resp = await fetch("/ready", { cache: "no-store" });
    const body = await resp.json().catch(() => ({}));
    ok = resp.ok;
    why = body.reason || body.status || `HTTP ${resp.status}`;
  } catch (e) {
    why = "the node does not answer (" + e.message + ")";
  }
  $("ready").textContent = ok ? "ready" : "not ready";
  $("ready").className = "pill " + (ok ? "ok" : "bad");
  $("banner").hidden = ok;
  $("banner").textContent = ok ? "" : "Node not ready: " + why + " — waiting for it to come back…";
  if (ok && wasReady === false) loadModels();
  wasReady = ok;
}

// --- chat ----------------------------------------------------------------

const history = []; // the conversation sent with every request
let running = null; // the AbortController of the generation in flight

async function loadModels() {
  try {
    const resp = await api("/v1/models");
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const { data } = await resp.json();
    const sel = $("model");
    const keep = sel.value;
    sel.replaceChildren(...data.map((m) => el("option", { value: m.id }, m.id)));
    if (data.some((m) => m.id === keep)) sel.value = keep;
  } catch (e) {
    $("banner").hidden = false;
    $("banner").textContent = "Could not list models: " + e.message;
  }
}

function addMessage(role, text) {
  const box = el("div", { class: "msg " + role });
  box.append(el("span", { class: "who" }, role === "user" ? "you" : $("model").value));
  const body = el("span", { class: "text" }, text);
  box.append(body);
  $("messages").append(box);
  box.scrollIntoView({ block: "end" });
  return { box, body };
}

// sseEvents yields the JSON payloads of a server-sent event stream.
async function* sseEvents(body) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function send(prompt) {
  history.push({ role: "user", content: prompt });
  addMessage("user", prompt);
  const { box, body } = addMessage("assistant", "");
  box.dataset.state = "streaming";
  const meta = el("div", { class: "meta" });
  box.append(meta);
  const ctrl = new AbortController();
  running = ctrl;
  $("stop").disabled = false;
  $("go").disabled = true;
  const t0 = performance.now();
  let tFirst = 0;
  let usage = null;
  let text = "";
  try {
    const resp = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: $("model").value, messages: history, stream: true, temperature: 0,
        max_tokens: Number($("maxtokens").value) || undefined, stream_options: { include_usage: true },
      }),
      signal: ctrl.signal,
    });
    box.dataset.requestId = resp.headers.get("X-Request-Id") || "";
    if (!resp.ok) throw new Error(await errorMessage(resp));
    for await (const chunk of sseEvents(resp.body)) {
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) {
        if (!tFirst) tFirst = performance.now();
        text += delta;
        body.textContent = text;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    box.dataset.state = "done";
    history.push({ role: "assistant", content: text });
  } catch (e) {
    if (e.name === "AbortError") {
      box.dataset.state = "stopped";
      box.append(el("span", { class: "muted" }, " [stopped]"));
      history.push({ role: "assistant", content: text });
    } else {
      box.dataset.state = "error";
      box.append(el("span", { class: "error" }, e.message));
      history.pop(); // the failed prompt is not part of the conversation
    }
  } finally {
    running = null;
    $("stop").disabled = true;
    $("go").disabled = false;
  }
  const tEnd = performance.now();
  const parts = [];
  if (tFirst) parts.push(`TTFT ${Math.round(tFirst - t0)} ms`);
  if (usage && tFirst && tEnd > tFirst && usage.completion_tokens > 1) {
    parts.push(`${((usage.completion_tokens - 1) / ((tEnd - tFirst) / 1000)).toFixed(1)} tokens/s`);
  }
  if (usage) {
    parts.push(`${usage.completion_tokens} tokens`);
    parts.push(`${usage.prompt_tokens_details?.cached_tokens ?? 0} cached prompt tokens`);
  }
  meta.textContent = parts.join(" · ");
  if (box.dataset.requestId) showRoute(box, box.dataset.requestId);
}

// showRoute names, under a reply, the peers that ran it.
async function showRoute(box, requestId) {
  const st = await fetchStatus();
  const last = st?.last;
  if (!last || last.request_id !== requestId) return;
  const route = el("div", { class: "meta route" });
  route.textContent = "ran on: " + routeText(last);
  box.append(route);
}

function routeText(last) {
  if (!last.stages?.length) return last.route === "local" ? "local (this node)" : last.route;
  return last.stages.map((s) => `${shortId(s.peer_id)} [${s.layer_start}–${s.layer_end})` + (s.rtt_ms != null ? ` ${s.rtt_ms.toFixed(1)} ms` : "")).join(" → ");
}

$("send").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const prompt = $("prompt").value;
  if (!prompt.trim() || running) return;
  $("prompt").value = "";
  send(prompt);
});
$("prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("send").requestSubmit(); }
});
$("stop").addEventListener("click", () => running?.abort());
$("clear").addEventListener("click", () => {
  running?.abort();
  history.length = 0;
  $("messages").replaceChildren();
});

// --- status: swarm and figures -------------------------------------------

let lastStatus = null;

async function fetchStatus() {
  try {
    const resp = await api("/status", { cache: "no-store" });
    if (!resp.ok) return null;
    lastStatus = await resp.json();
    return lastStatus;
  } catch (_) {
    return null;
  }
}

const shortId = (id) => (id && id.length > 14 ? id.slice(0, 6) + "…" + id.slice(-6) : id || "?");
const fmtBytes = (b) => (b ? (b / 2 ** 30).toFixed(1) + " GiB" : "–");

function renderChain(st) {
  const svg = $("chain");
  const nodes = [{ name: "this node", sub: shortId(st.self) || "requester" }];
  const last = st.last;
  if (last && last.stages?.length) {
    for (const s of last.stages) nodes.push({ name: shortId(s.peer_id), sub: `layers ${s.layer_start}–${s.layer_end}`, rtt: s.rtt_ms });
  } else if (last) {
    nodes[0].sub = `ran locally (${last.model || ""})`;
  }
  const w = 150, gap = 70;
  svg.setAttribute("viewBox", `0 0 ${nodes.length * (w + gap)} 90`);
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "6", markerHeight: "6", orient: "auto" });
  marker.append(el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#6b7480" }));
  defs.append(marker);
  const parts = [defs];
  nodes.forEach((n, i) => {
    const x = i * (w + gap) + 5;
    parts.push(el("svg:rect", { class: "box", x, y: 20, width: w, height: 50, rx: 6 }));
    parts.push(el("svg:text", { x: x + 8, y: 40, class: "stage-name" }, n.name));
    parts.push(el("svg:text", { x: x + 8, y: 58 }, n.sub));
    if (i > 0) {
      const x0 = x - gap;
      parts.push(el("svg:line", { class: "edge", x1: x0, y1: 45, x2: x - 2, y2: 45 }));
      parts.push(el("svg:text", { x: x0 + 4, y: 38 }, n.rtt != null ? `${n.rtt.toFixed(1)} ms` : "–"));
    }
  });
  if (!last) parts.push(el("svg:text", { x: w + 40, y: 50 }, "no request yet"));
  svg.replaceChildren(...parts);
}

function renderPeers(st) {
  const peers = st.peers || [];
  $("peercount").textContent = st.swarm ? `(${peers.length})` : "";
  $("swarmnote").textContent = st.swarm
    ? `looked up ${st.peers_seen ? new Date(st.peers_seen).toLocaleTimeString() : "not yet"}`
    : "This node is not in a swarm: every model runs here.";
  const rows = peers.map((p) => {
    const tr = el("tr", { "data-peer": p.peer_id });
    const models = (p.models || []).map((m) => `${m.id} (${(m.layer_ranges || []).map((r) => `${r[0]}–${r[1]}`).join(", ") || "all"})`).join("; ");
    for (const v of [shortId(p.peer_id), p.region || "–", p.device, fmtBytes(p.memory_free_bytes) + " / " + fmtBytes(p.memory_total_bytes),
      models, p.rtt_ms != null ? p.rtt_ms.toFixed(1) + " ms" : "–", p.price_per_1k_tokens, `${p.active_sessions}/${p.max_sessions}`]) {
      tr.append(el("td", {}, v ?? ""));
    }
    tr.children[1].className = "label";
    return tr;
  });
  $("peers").tBodies[0].replaceChildren(...rows);

  // The picture: one row per peer, its layer ranges over the model's layers.
  const svg = $("layers");
  const rowH = 24, left = 230, width = 600;
  svg.setAttribute("viewBox", `0 0 ${left + width + 10} ${Math.max(1, peers.length) * rowH + 6}`);
  svg.setAttribute("height", Math.max(1, peers.length) * rowH + 6);
  const parts = [];
  peers.forEach((p, i) => {
    const y = i * rowH + 4;
    const name = `${shortId(p.peer_id)}${p.region ? " · " + p.region : ""}`;
    parts.push(el("svg:text", { x: 4, y: y + 14, class: "peer-name" }, name));
    parts.push(el("svg:rect", { class: "track", x: left, y, width, height: rowH - 8 }));
    for (const m of p.models || []) {
      const n = m.num_layers || 1;
      const ranges = m.layer_ranges?.length ? m.layer_ranges : [[0, n]];
      for (const [a, b] of ranges) {
        parts.push(el("svg:rect", { class: "bar", x: left + (a / n) * width, y, width: ((b - a) / n) * width, height: rowH - 8 }));
      }
      parts.push(el("svg:text", { x: left + width - 140, y: y + 12 }, `${m.id} ${ranges.map((r) => r.join("–")).join(",")}`));
    }
  });
  if (!peers.length) parts.push(el("svg:text", { x: 4, y: 16 }, st.swarm ? "no peers seen" : "no swarm"));
  svg.replaceChildren(...parts);
}

function sparkline(svg, lines) {
  const W = 300, H = 70;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const all = lines.flatMap((l) => l.values.filter((v) => v != null));
  const max = Math.max(1e-9, ...all);
  const parts = [];
  for (const l of lines) {
    const n = l.values.length;
    const pts = l.values.map((v, i) => (v == null ? null : `${(i / Math.max(1, n - 1)) * W},${H - 4 - (v / max) * (H - 16)}`)).filter(Boolean);
    if (pts.length) parts.push(el("svg:polyline", { points: pts.join(" "), stroke: l.color }));
  }
  parts.push(el("svg:text", { x: 3, y: 10 }, `max ${max < 10 ? max.toFixed(2) : Math.round(max)}`));
  svg.replaceChildren(...parts);
}

function renderFigures(st) {
  const t = st.totals;
  const hitRate = t.requests ? Math.round((100 * t.prefix_cache_hits) / t.requests) + "%" : "–";
  const items = [["requests", t.requests], ["completion tokens", t.completion_tokens], ["prefix cache hits", t.prefix_cache_hits],
    ["prefix hit rate", hitRate], ["KV blocks held", st.kv ? st.kv.blocks_held : "–"],
    ["cached prompt tokens", t.cached_prompt_tokens], ["open clusters", t.open_clusters], ["peers connected", t.peers_seen],
    ["running", t.running], ["queued", t.queue_depth], ["backend restarts", t.backend_restarts]];
  $("totals").replaceChildren(...items.map(([k, v]) => {
    const d = el("div", { "data-figure": k });
    d.append(el("b", {}, v), el("span", { class: "muted" }, k));
    return d;
  }));
  const s = st.series || [];
  sparkline($("ch-req"), [{ values: s.map((p) => p.requests_per_s), color: "#2f6fdb" }]);
  sparkline($("ch-tok"), [{ values: s.map((p) => p.tokens_per_s), color: "#1b7f3b" }]);
  sparkline($("ch-ttft"), [
    { values: s.map((p) => p.ttft_p50_s), color: "#2f6fdb" },
    { values: s.map((p) => p.ttft_p95_s), color: "#d08a00" },
    { values: s.map((p) => p.ttft_p99_s), color: "#b3261e" },
  ]);
  sparkline($("ch-queue"), [{ values: s.map((p) => p.queue_depth), color: "#6b3fb0" }]);
}

// A backend restart can be over before the next /ready poll (a backend serves within
// a couple of seconds): the node's restart count says it happened all the same.
let restartsSeen = null;

function noteRestarts(n) {
  if (restartsSeen !== null && n > restartsSeen) {
    $("banner").hidden = false;
    $("banner").textContent = `The node's backend restarted (${n} since the node started): ` +
      "requests in flight were lost, and the next one to the swarm forms a new cluster.";
  }
  restartsSeen = n;
}

async function pollStatus() {
  const st = await fetchStatus();
  if (!st) return;
  noteRestarts(st.totals.backend_restarts);
  $("self").textContent = st.self ? "node " + shortId(st.self) : "";
  renderChain(st);
  renderPeers(st);
  renderFigures(st);
}

async function tick() {
  // Readiness first: a restart noticed by pollStatus stays on the banner until the next
  // tick's readiness, not only until this one's answer.
  await pollReady();
  await pollStatus();
  setTimeout(tick, POLL_MS);
}

loadModels();
tick();

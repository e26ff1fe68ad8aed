// mqttd dashboard: pages drawn from the management API (/api/v1), no framework.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel) => document.querySelector(sel);

// api calls the management API; it throws with the API's message on failure and
// sends the login page back when the session ended.
async function api(method, path, body) {
  const opts = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    location.href = "/login";
    throw new Error("logged out");
  }
  if (resp.status === 204) return null;
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.message || resp.statusText);
  return data;
}

function showError(err) {
  const e = $("#error");
  e.textContent = err ? String(err.message || err) : "";
  e.hidden = !err;
}

// el builds an element with text and attributes; children may be strings or nodes.
function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return n;
}

function fillRows(table, rows) {
  const tb = $(table + " tbody");
  tb.replaceChildren(...rows);
  if (rows.length === 0) tb.append(el("tr", {}, el("td", { colspan: 20, class: "empty" }, "Nothing to show.")));
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function pager(id, meta, go) {
  const pages = Math.max(1, Math.ceil(meta.count / meta.limit));
  const p = $(id);
  p.replaceChildren(
    el("button", { type: "button", onclick: () => go(meta.page - 1), ...(meta.page <= 1 ? { disabled: "" } : {}) }, "‹"),
    el("span", {}, ` page ${meta.page} of ${pages} · ${meta.count} in all `),
    el("button", { type: "button", onclick: () => go(meta.page + 1), ...(meta.page >= pages ? { disabled: "" } : {}) }, "›"),
  );
  if (meta.unreachable && meta.unreachable.length) p.append(el("span", { class: "warn" }, ` (not asked: ${meta.unreachable.join(", ")})`));
}

function query(form, page) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v !== "") q.set(k, v);
  q.set("page", page || 1);
  q.set("limit", 50);
  return q.toString();
}

// Overview: nodes, totals and the message-rate chart (rates from counter deltas).
const samples = []; // {t, in, out}
const maxSamples = 60;

async function overview() {
  const [nodes, stats] = await Promise.all([api("GET", "/api/v1/nodes"), api("GET", "/api/v1/stats")]);
  $("#cluster-id").textContent = nodes.clusterID || "(no cluster)";
  $("#cluster-leader").textContent = nodes.leader ? "leader " + nodes.leader : "";
  $("#node-count").textContent = nodes.data.length;
  $("#total-connections").textContent = stats.total.connections;
  $("#total-subscriptions").textContent = stats.total.subscriptions;
  $("#total-retained").textContent = stats.total.retained;
  fillRows("#nodes", nodes.data.map((n) => el("tr", { "data-node": n.name },
    el("td", {}, n.name),
    el("td", {}, el("span", { class: n.ready ? "ok" : "bad" }, n.ready ? "ready" : "not ready"), n.notReadyReason ? " – " + n.notReadyReason : ""),
    el("td", {}, n.raftState || "–"),
    el("td", {}, n.version),
    el("td", {}, duration(n.uptimeSeconds)),
    el("td", {}, n.connections),
    el("td", {}, n.sessions))));
  const un = $("#nodes-unreachable");
  un.hidden = !nodes.unreachable;
  un.textContent = nodes.unreachable ? "Not answering: " + nodes.unreachable.join(", ") : "";
  samples.push({ t: Date.now() / 1000, in: stats.total.messagesReceived, out: stats.total.messagesSent });
  if (samples.length > maxSamples + 1) samples.shift();
  drawRates();
}

function drawRates() {
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i].t - samples[i - 1].t || 1;
    rates.push({ in: Math.max(0, (samples[i].in - samples[i - 1].in) / dt), out: Math.max(0, (samples[i].out - samples[i - 1].out) / dt) });
  }
  const last = rates[rates.length - 1] || { in: 0, out: 0 };
  $("#rate-in").textContent = last.in.toFixed(1);
  $("#rate-out").textContent = last.out.toFixed(1);
  const top = Math.max(1, ...rates.map((r) => Math.max(r.in, r.out)));
  const pts = (key) => rates.map((r, i) => `${(i * 600) / (maxSamples - 1)},${(150 - (r[key] / top) * 140).toFixed(1)}`).join(" ");
  $("#line-in").setAttribute("points", pts("in"));
  $("#line-out").setAttribute("points", pts("out"));
  $("#rate-chart").dataset.samples = rates.length;
  $("#rate-chart").dataset.lastIn = last.in.toFixed(1);
}

async function clients(page) {
  const list = await api("GET", "/api/v1/clients?" + query($("#clients-filter"), page));
  fillRows("#clients", list.data.map((c) => el("tr", { "data-client": c.clientID },
    el("td", {}, el("a", { href: "#clients", onclick: () => clientDetail(c.clientID) }, c.clientID)),
    el("td", {}, c.node),
    el("td", {}, c.username || ""),
    el("td", {}, el("span", { class: c.connected ? "ok" : "muted" }, c.connected ? "connected" : "disconnected")),
    el("td", {}, c.remote || ""),
    el("td", {}, c.protocolVersion ? "v" + (c.protocolVersion === 5 ? "5" : c.protocolVersion === 4 ? "3.1.1" : "3.1") + (c.tlsVersion ? " TLS " + c.tlsVersion : "") : ""),
    el("td", {}, c.subscriptions),
    el("td", {}, c.queued),
    el("td", {}, c.inflight),
    el("td", {}, c.connected ? el("button", { type: "button", class: "danger kick", onclick: () => kick(c.clientID) }, "Kick") : ""))));
  pager("#clients-pager", list.meta, clients);
}

async function clientDetail(id) {
  const c = await api("GET", "/api/v1/clients/" + encodeURIComponent(id));
  const box = $("#client-detail");
  const rows = [["Node", c.node], ["User", c.username], ["Connected", c.connected ? "since " + c.connectedAt : "no (since " + c.disconnectedAt + ")"],
    ["Address", c.remote], ["Listener", c.listener], ["Session expiry", c.expiryInterval + " s"], ["Queued", c.queued], ["Inflight", c.inflight], ["Dropped", c.dropped]];
  box.replaceChildren(el("h2", {}, id), el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v == null ? "" : v)])),
    el("h3", {}, "Subscriptions"), el("ul", {}, ...c.subscriptionList.map((s) => el("li", {}, `${s.topic} (QoS ${s.qos})`))));
  box.hidden = false;
}

async function kick(id) {
  if (!confirm(`Disconnect ${id}?`)) return;
  const r = await api("DELETE", "/api/v1/clients/" + encodeURIComponent(id));
  showError(null);
  $("#client-detail").hidden = true;
  await clients();
  return r;
}

async function subscriptions(page) {
  const list = await api("GET", "/api/v1/subscriptions?" + query($("#subs-filter"), page));
  fillRows("#subscriptions", list.data.map((s) => el("tr", {},
    el("td", {}, s.clientID), el("td", {}, s.node), el("td", {}, s.topic), el("td", {}, s.qos),
    el("td", {}, [s.noLocal && "no local", s.retainAsPublished && "retain as published"].filter(Boolean).join(", ")))));
  pager("#subs-pager", list.meta, subscriptions);
}

async function retained(page) {
  const list = await api("GET", "/api/v1/retained?" + query($("#retained-filter"), page));
  fillRows("#retained", list.data.map((m) => el("tr", { "data-topic": m.topic },
    el("td", {}, m.topic), el("td", {}, m.qos),
    el("td", { class: "payload" }, (m.payloadEncoding === "base64" ? "base64: " : "") + m.payload + (m.truncated ? "…" : "")),
    el("td", {}, m.payloadSize),
    el("td", {}, el("button", { type: "button", class: "danger delete", onclick: () => deleteRetained(m.topic) }, "Delete")))));
  pager("#retained-pager", list.meta, retained);
}

async function deleteRetained(topic) {
  if (!confirm(`Delete the retained message on ${topic}?`)) return;
  await api("DELETE", "/api/v1/retained/message?topic=" + encodeURIComponent(topic));
  await retained();
}

async function publish(ev) {
  ev.preventDefault();
  const f = ev.target;
  const r = await api("POST", "/api/v1/publish", {
    topic: f.topic.value, payload: f.payload.value, qos: Number(f.qos.value), retain: f.retain.checked,
  });
  $("#publish-result").textContent = `Published to ${r.topic}: ${r.sessions} subscriber(s) got it.` + (r.notRetained ? ` Not retained: ${r.notRetained}.` : "");
}

// The subscribe tool: the server's stream of matching messages (/watch, server-sent
// events), on while the page stays open.
let watching = null;
const maxWatched = 100;

function watch(ev) {
  ev.preventDefault();
  if (watching) {
    watching.close();
    watching = null;
    $("#watch-button").textContent = "Subscribe";
    $("#watch-state").textContent = "Stopped.";
    return;
  }
  const filter = $("#watch-topic").value;
  const es = new EventSource("/watch?topic=" + encodeURIComponent(filter));
  watching = es;
  $("#watch-button").textContent = "Stop";
  $("#watch-state").textContent = `Subscribed to ${filter}.`;
  es.onmessage = (e) => {
    const m = JSON.parse(e.data);
    const list = $("#watch-messages");
    list.prepend(el("li", { "data-topic": m.topic },
      el("b", {}, m.topic), ` (QoS ${m.qos}${m.retain ? ", retained" : ""}) `,
      el("code", {}, (m.payloadEncoding === "base64" ? "base64: " : "") + m.payload)));
    while (list.children.length > maxWatched) list.lastChild.remove();
  };
  es.addEventListener("end", (e) => {
    es.close();
    watching = null;
    $("#watch-button").textContent = "Subscribe";
    $("#watch-state").textContent = `Ended: ${e.data}.`;
  });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      watching = null;
      $("#watch-button").textContent = "Subscribe";
      $("#watch-state").textContent = "The subscription was refused or ended (an invalid filter, or too many watchers on this node).";
    }
  };
}

const pageLoaders = { overview, clients, subscriptions, retained, publish: async () => {} };
let timer = null;

async function show() {
  const page = (location.hash || "#overview").slice(1);
  const load = Object.hasOwn(pageLoaders, page) ? page : "overview";
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + load;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === load);
  clearInterval(timer);
  const run = () => pageLoaders[load]().then(() => showError(null), showError);
  await run();
  if (load === "overview") timer = setInterval(run, 2000);
}

for (const [form, load] of [["#clients-filter", clients], ["#subs-filter", subscriptions], ["#retained-filter", retained]]) {
  $(form).addEventListener("submit", (ev) => { ev.preventDefault(); load(1).then(() => showError(null), showError); });
}
$("#publish-form").addEventListener("submit", (ev) => publish(ev).then(() => showError(null), showError));
$("#watch-form").addEventListener("submit", watch);
window.addEventListener("hashchange", show);
show();

/**
 * `meshtls viz`'s page, served as three files (no build step): the HTML,
 * its stylesheet and its script; cytoscape comes from node_modules through
 * the same server. Nothing is fetched from elsewhere (the content security
 * policy allows this server only), and every value reaches the page as text
 * (textContent, cytoscape labels), never as HTML.
 */

export const VIZ_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshtls viz</title>
<link rel="icon" href="data:,">
<!-- The id is cytoscape's: with it present, cytoscape adds no inline style element of its own. -->
<link rel="stylesheet" id="__________cytoscape_stylesheet" href="/assets/viz.css">
</head>
<body>
<header>
  <h1>meshtls: who talks to whom</h1>
  <div id="status">connecting…</div>
  <ul id="legend">
    <li class="secured">mTLS (secured)</li>
    <li class="plaintext">plaintext</li>
    <li class="denied">denied by policy</li>
  </ul>
</header>
<main>
  <section id="graph-pane"><div id="graph" aria-label="the mesh as a graph"></div></section>
  <section id="tap-pane">
    <h2>live tap</h2>
    <ol id="tap"></ol>
  </section>
</main>
<table id="edges">
  <thead><tr><th>source</th><th>source identity</th><th>destination</th><th>destination identity</th><th>secured</th><th>connections</th><th>open</th><th>bytes</th><th>rps</th><th>success</th><th>p95</th></tr></thead>
  <tbody></tbody>
</table>
<ul id="proxies"></ul>
<script src="/assets/cytoscape.min.js"></script>
<script src="/assets/viz.js"></script>
</body>
</html>
`;

export const VIZ_STYLE = `.__________cytoscape_container { position: relative; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2433; background: #fafbfc; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
h2 { font-size: 1rem; margin: 0 0 .4rem; }
#status { color: #5b6475; margin-bottom: .5rem; }
#legend { list-style: none; display: flex; gap: 1.2rem; padding: 0; margin: 0 0 .8rem; }
#legend li::before { content: ""; display: inline-block; width: 1.6rem; height: 0; margin-right: .4rem; vertical-align: middle; border-top: 3px solid; }
#legend .secured::before { border-color: #13795b; }
#legend .plaintext::before { border-color: #d92d20; border-top-style: dashed; }
#legend .denied::before { border-color: #7a271a; border-top-style: dotted; }
main { display: flex; gap: 1rem; margin-bottom: 1rem; }
#graph-pane { flex: 3; background: #fff; border: 1px solid #e3e6eb; }
#graph { position: relative; width: 100%; height: 460px; }
#tap-pane { flex: 2; background: #fff; border: 1px solid #e3e6eb; padding: .6rem; max-height: 460px; overflow: auto; }
#tap { list-style: none; padding: 0; margin: 0; font-family: ui-monospace, monospace; font-size: 11.5px; }
#tap li { padding: .15rem 0; border-bottom: 1px solid #f0f2f5; white-space: nowrap; }
#tap li.deny { color: #b42318; font-weight: 600; }
#tap li.plain { color: #b54708; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6eb; white-space: nowrap; }
th { background: #eef1f5; font-weight: 600; }
td.id { font-family: ui-monospace, monospace; font-size: 12px; color: #4a5263; }
tr.secured td.state { color: #13795b; font-weight: 600; }
tr.plaintext { background: #fff1f0; }
tr.plaintext td.state { color: #b42318; font-weight: 700; }
tr.denied td.state { color: #7a271a; font-weight: 700; }
tr.inactive { opacity: .55; }
.proxy-error { color: #b42318; }
`;

export const VIZ_SCRIPT = `"use strict";
/* global cytoscape */
const tbody = document.querySelector("#edges tbody");
const status = document.getElementById("status");
const proxies = document.getElementById("proxies");
const tapList = document.getElementById("tap");
const MAX_TAP_LINES = 60;
const DENIED_FOR_MS = 30000;

const cy = cytoscape({
  container: document.getElementById("graph"),
  elements: [],
  minZoom: 0.3,
  maxZoom: 3,
  style: [
    { selector: "node", style: { "background-color": "#3b6fd6", label: "data(label)", "text-wrap": "wrap", "text-max-width": "220px", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4, color: "#1d2433", width: 34, height: 34 } },
    { selector: "node.unmeshed", style: { "background-color": "#9aa3b2", shape: "round-rectangle" } },
    { selector: "edge", style: { width: 3, "curve-style": "bezier", "target-arrow-shape": "triangle", label: "data(label)", "font-size": 10, "text-wrap": "wrap", "text-rotation": "autorotate", "text-margin-y": -14, "text-background-color": "#ffffff", "text-background-opacity": 0, color: "#1d2433", "arrow-scale": 1.3 } },
    { selector: "edge.secured", style: { "line-color": "#13795b", "target-arrow-color": "#13795b" } },
    { selector: "edge.plaintext", style: { "line-color": "#d92d20", "target-arrow-color": "#d92d20", "line-style": "dashed" } },
    { selector: "edge.other", style: { "line-color": "#b54708", "target-arrow-color": "#b54708" } },
    { selector: "edge.denied", style: { "line-color": "#7a271a", "target-arrow-color": "#7a271a", "line-style": "dotted", "target-arrow-shape": "tee" } },
    { selector: "edge.inactive", style: { opacity: 0.45 } },
  ],
});
// For people poking at the page from devtools, and for the browser test.
window.viz = { cy, updates: 0, tapEvents: 0 };

let latest;
// "src->dst" -> { at, reason }: denials seen on the tap stream.
const denied = new Map();

function name(end) {
  if (end.workload !== null) return end.workload;
  const what = end.meshed ? "(unknown)" : "(unmeshed)";
  return end.address === undefined ? what : what + " " + end.address;
}
function workloadOfIdentity(id) {
  const m = /^([^.]+)\\.([^.]+)\\.serviceaccount\\.identity\\./.exec(id || "");
  return m === null ? null : m[2] + "/" + m[1];
}
function reason(e) {
  if (e.secured) return "SECURED \\u2713";
  if (e.tls === "no_identity") return "plaintext: " + (e.noTlsReason || "no_identity");
  if (e.tls === "opaque") return "app TLS (opaque)";
  return e.tls;
}
function isPlain(e) { return e.tls === "no_identity" || e.tls === "disabled"; }
function shortId(id) { return id ? id.replace(/\\.serviceaccount\\.identity\\..*$/, "") : ""; }
function deniedOf(src, dst) {
  const d = denied.get(src + "->" + dst);
  return d !== undefined && Date.now() - d.at < DENIED_FOR_MS ? d : undefined;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function renderTable(report) {
  tbody.replaceChildren();
  for (const e of report.edges) {
    const tr = document.createElement("tr");
    const src = name(e.source);
    const dst = name(e.destination);
    const deny = deniedOf(src, dst);
    tr.className = (deny ? "denied" : e.secured ? "secured" : isPlain(e) ? "plaintext" : "other") + (e.active ? "" : " inactive");
    tr.dataset.source = src;
    tr.dataset.destination = dst;
    tr.dataset.secured = String(e.secured);
    cell(tr, src);
    cell(tr, e.source.identity || "-", "id");
    cell(tr, dst);
    cell(tr, e.destination.identity || "-", "id");
    cell(tr, deny ? "denied: " + deny.reason : reason(e), "state");
    cell(tr, String(e.connections.opened));
    cell(tr, String(e.connections.open));
    cell(tr, String(e.bytes.sent + e.bytes.received));
    cell(tr, e.http && e.http.requestsPerSecond !== undefined ? String(e.http.requestsPerSecond) : "-");
    cell(tr, e.http && e.http.successRate !== null ? (e.http.successRate * 100).toFixed(1) + "%" : "-");
    cell(tr, e.http && e.http.latencyMs.p95 !== null ? e.http.latencyMs.p95 + " ms" : "-");
    tbody.appendChild(tr);
  }
  proxies.replaceChildren();
  for (const p of report.proxies) {
    if (p.error === undefined) continue;
    const li = document.createElement("li");
    li.className = "proxy-error";
    li.textContent = "proxy " + p.admin + " not read: " + p.error;
    proxies.appendChild(li);
  }
}

/** The graph's wanted nodes and edges from the report and recent denials. */
function graphOf(report) {
  const nodes = new Map();
  const edges = new Map();
  const node = (id, identity, meshed) => {
    if (!nodes.has(id)) nodes.set(id, { id, label: identity ? id + "\\n" + shortId(identity) : id, identity: identity || null, meshed });
  };
  for (const p of report.proxies) if (p.error === undefined && p.workload) node(p.workload, p.identity, true);
  for (const e of report.edges) {
    const src = name(e.source);
    const dst = name(e.destination);
    node(src, e.source.identity, e.source.meshed);
    node(dst, e.destination.identity, e.destination.meshed);
    const deny = deniedOf(src, dst);
    const state = deny ? "denied" : e.secured ? "secured" : isPlain(e) ? "plaintext" : "other";
    const id = src + "->" + dst + " " + e.tls + " " + (e.noTlsReason || "");
    const rate = e.http && e.http.requestsPerSecond !== undefined ? e.http.requestsPerSecond + " rps" : e.connections.opened + " conns";
    const what = deny ? "denied: " + deny.reason : e.secured ? "mTLS " + shortId(e.source.identity) + " \\u2192 " + shortId(e.destination.identity) : reason(e);
    edges.set(id, { id, source: src, target: dst, state, secured: e.secured, active: e.active, label: what + "\\n" + rate });
  }
  // A denial with no counted edge yet (its connections were refused) still shows.
  for (const [key, d] of denied) {
    if (Date.now() - d.at >= DENIED_FOR_MS) continue;
    const [src, dst] = key.split("->");
    if ([...edges.values()].some((e) => e.source === src && e.target === dst)) continue;
    node(src, d.identity, d.identity !== null);
    node(dst, null, true);
    const id = key + " denied";
    edges.set(id, { id, source: src, target: dst, state: "denied", secured: false, active: true, label: "denied: " + d.reason });
  }
  return { nodes, edges };
}

function renderGraph(report) {
  const { nodes, edges } = graphOf(report);
  let added = false;
  cy.batch(() => {
    for (const el of cy.elements()) {
      const id = el.id();
      if (el.isNode() ? !nodes.has(id) : !edges.has(id)) el.remove();
    }
    for (const n of nodes.values()) {
      const el = cy.getElementById(n.id);
      if (el.empty()) {
        cy.add({ group: "nodes", data: n, classes: n.meshed ? "meshed" : "unmeshed" });
        added = true;
      } else {
        el.data(n);
      }
    }
    for (const e of edges.values()) {
      let el = cy.getElementById(e.id);
      if (el.empty()) {
        el = cy.add({ group: "edges", data: e });
        added = true;
      } else {
        el.data(e);
      }
      el.classes([e.state, e.active ? "active" : "inactive"]);
    }
  });
  if (added) {
    cy.layout({ name: "breadthfirst", directed: true, padding: 50, spacingFactor: 1.6, animate: false }).run();
    // A small mesh is not blown up to fill the pane.
    if (cy.zoom() > 1) {
      cy.zoom(1);
      cy.center();
    }
  }
}

function render(report) {
  latest = report;
  renderTable(report);
  renderGraph(report);
  const plain = report.edges.filter((e) => e.active && isPlain(e)).length;
  status.textContent = report.edges.length + " edges, " + plain + " active plaintext, from " + report.proxies.length + " proxies at " + new Date(report.collectedAt).toLocaleTimeString();
  window.viz.updates++;
  document.body.dataset.updated = report.collectedAt;
}

function tapText(t) {
  const who = t.proxy.workload || t.proxy.admin;
  const time = new Date(t.timeMs).toISOString().slice(11, 23);
  const tls = t.tls === undefined ? "" : " tls=" + (t.tls || "-") + (t.peerId ? " id=" + shortId(t.peerId) : "") + (t.noTlsReason ? " (" + t.noTlsReason + ")" : "");
  if (t.type === "connection") {
    const policy = t.policy ? " " + (t.policy.allow ? "allow" : "DENY") + ":" + t.policy.reason : "";
    return time + " " + who + " " + t.direction + " conn " + t.phase + " " + (t.peerAddr || "") + tls + policy;
  }
  if (t.type === "authz") return time + " " + who + " authz " + t.proto + " " + (t.allow ? "allow" : "DENY") + " " + t.reason + " server=" + t.server.kind + "/" + t.server.name + (t.peerId ? " id=" + shortId(t.peerId) : "");
  return time + " " + who + " " + t.direction + " " + (t.method || "") + " " + t.authority + (t.path || "") + tls + " " + (t.status === undefined ? "error=" + t.error : t.status) + " " + t.latencyMs + "ms";
}

function onTap(t) {
  window.viz.tapEvents++;
  const li = document.createElement("li");
  li.textContent = tapText(t);
  const decision = t.type === "authz" ? t : t.type === "connection" ? t.policy : undefined;
  if (decision && decision.allow === false) {
    li.className = "deny";
    const dst = t.proxy.workload;
    if (dst) {
      const src = workloadOfIdentity(t.peerId) || "(unmeshed)";
      const first = deniedOf(src, dst) === undefined;
      denied.set(src + "->" + dst, { at: Date.now(), reason: decision.reason, identity: t.peerId || null });
      if (first && latest !== undefined) render(latest);
    }
  } else if (t.tls === "no_identity" && t.noTlsReason !== "loopback") {
    li.className = "plain";
  }
  tapList.prepend(li);
  while (tapList.children.length > MAX_TAP_LINES) tapList.lastElementChild.remove();
}

const events = new EventSource("/api/events");
events.addEventListener("edges", (m) => render(JSON.parse(m.data)));
events.addEventListener("tap", (m) => { for (const t of JSON.parse(m.data)) onTap(t); });
events.onerror = () => { status.textContent = "disconnected; retrying…"; };
`;

/**
 * The dashboard's one page: a table of edges that redraws on each
 * `/api/events` message (Server-Sent Events). Inline script and style, no
 * external fetch; every value goes in through textContent, never as HTML.
 */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshtls: edges</title>
<link rel="icon" href="data:,">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2433; background: #fafbfc; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  #status { color: #5b6475; margin-bottom: 1rem; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6eb; white-space: nowrap; }
  th { background: #eef1f5; font-weight: 600; }
  td.id { font-family: ui-monospace, monospace; font-size: 12px; color: #4a5263; }
  tr.secured td.state { color: #13795b; font-weight: 600; }
  tr.plaintext { background: #fff1f0; }
  tr.plaintext td.state { color: #b42318; font-weight: 700; }
  tr.inactive { opacity: .55; }
  .proxy-error { color: #b42318; }
</style>
</head>
<body>
<h1>meshtls: who talks to whom</h1>
<div id="status">connecting…</div>
<table id="edges">
  <thead><tr><th>source</th><th>source identity</th><th>destination</th><th>destination identity</th><th>secured</th><th>connections</th><th>open</th><th>bytes</th><th>rps</th><th>success</th><th>p95</th></tr></thead>
  <tbody></tbody>
</table>
<ul id="proxies"></ul>
<script>
"use strict";
const tbody = document.querySelector("#edges tbody");
const status = document.getElementById("status");
const proxies = document.getElementById("proxies");
function name(end) {
  if (end.workload !== null) return end.workload;
  const what = end.meshed ? "(unknown)" : "(unmeshed)";
  return end.address === undefined ? what : what + " " + end.address;
}
function reason(e) {
  if (e.secured) return "SECURED \\u2713";
  if (e.tls === "no_identity") return "plaintext: " + (e.noTlsReason || "no_identity");
  if (e.tls === "opaque") return "app TLS (opaque)";
  return e.tls;
}
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}
function render(report) {
  tbody.replaceChildren();
  for (const e of report.edges) {
    const tr = document.createElement("tr");
    const plain = e.tls === "no_identity" || e.tls === "disabled";
    tr.className = (e.secured ? "secured" : plain ? "plaintext" : "other") + (e.active ? "" : " inactive");
    tr.dataset.source = name(e.source);
    tr.dataset.destination = name(e.destination);
    tr.dataset.secured = String(e.secured);
    cell(tr, name(e.source));
    cell(tr, e.source.identity || "-", "id");
    cell(tr, name(e.destination));
    cell(tr, e.destination.identity || "-", "id");
    cell(tr, reason(e), "state");
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
  const plain = report.edges.filter((e) => e.active && (e.tls === "no_identity" || e.tls === "disabled")).length;
  status.textContent = report.edges.length + " edges, " + plain + " active plaintext, from " + report.proxies.length + " proxies at " + new Date(report.collectedAt).toLocaleTimeString();
  document.body.dataset.updated = report.collectedAt;
}
const events = new EventSource("/api/events");
events.addEventListener("edges", (m) => render(JSON.parse(m.data)));
events.onerror = () => { status.textContent = "disconnected; retrying…"; };
</script>
</body>
</html>
`;

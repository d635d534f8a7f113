// The status page: reads the JSON endpoints and fills the page. No framework; text goes
// in through textContent only (never as HTML).
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function duration(secs) {
  if (secs === null || secs === undefined) return "permanent";
  secs = Math.round(secs);
  if (secs < 60) return secs + " s";
  if (secs < 3600) return Math.floor(secs / 60) + " min " + (secs % 60) + " s";
  return Math.floor(secs / 3600) + " h " + Math.floor((secs % 3600) / 60) + " min";
}

function bytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

function rows(table, list, cells, empty) {
  const body = document.querySelector("#" + table + " tbody");
  body.replaceChildren();
  if (list.length === 0) {
    const row = el("tr");
    const cell = el("td", empty, "muted");
    cell.colSpan = 8;
    row.appendChild(cell);
    body.appendChild(row);
    return;
  }
  for (const item of list) {
    const row = el("tr");
    for (const [text, cls] of cells(item)) row.appendChild(el("td", text, cls));
    body.appendChild(row);
  }
}

function bars(id, minutes, key) {
  const svg = document.getElementById(id);
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const width = svg.width.baseVal.value, height = svg.height.baseVal.value;
  const max = Math.max(1, ...minutes.map((m) => m[key]));
  const slot = width / 60;
  minutes.slice(-60).forEach((m, i) => {
    const h = Math.round((m[key] / max) * (height - 18));
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", (i * slot + 1).toFixed(1));
    rect.setAttribute("y", height - h);
    rect.setAttribute("width", Math.max(1, slot - 2).toFixed(1));
    rect.setAttribute("height", h);
    rect.setAttribute("fill", key === "dropped" ? "#b42318" : "#2563eb");
    rect.setAttribute("data-value", m[key]);
    const title = document.createElementNS(ns, "title");
    title.textContent = new Date(m.minute_unix * 1000).toLocaleTimeString() + ": " + m[key];
    rect.appendChild(title);
    svg.appendChild(rect);
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 12);
  label.setAttribute("font-size", 11);
  label.textContent = "max " + max + " / min";
  svg.appendChild(label);
}

async function get(path) {
  const answer = await fetch(path, { cache: "no-store" });
  if (!answer.ok) throw new Error(path + ": HTTP " + answer.status);
  return answer.json();
}

async function refresh() {
  try {
    const [status, blocks, decisions, series] = await Promise.all([get("/api/status"), get("/api/blocks"), get("/api/decisions"), get("/api/series")]);
    document.getElementById("node").textContent = status.node;
    const report = status.report;
    const summary = document.getElementById("summary");
    summary.replaceChildren();
    if (report) {
      summary.appendChild(el("span", report.ready ? "ready" : "not ready", report.ready ? "ok" : "bad"));
      summary.appendChild(el("span", " · up " + duration(report.uptime_secs) + " · supervisor pid " + report.supervisor_pid + " · " + new Date(status.generated_unix_ms).toLocaleString()));
    } else {
      summary.appendChild(el("span", "the supervisor has not published a report yet", "bad"));
    }
    const p = report ? report.pipeline : {};
    const xdp = status.xdp || { dropped_by_reason: {} };
    const cards = [
      ["XDP passed", xdp.passed], ["XDP dropped", xdp.dropped], ["malformed", xdp.malformed], ["spoofed", xdp.dropped_by_reason.spoofed],
      ["blocks in force", blocks.total], ["blocks decided", p.blocks], ["alerts", p.alerts], ["refused", p.refused],
      ["events logged", p.events_logged], ["verified", p.events_verified], ["quarantined", p.events_quarantined], ["log on disk", p.log_disk_bytes === undefined ? "-" : bytes(p.log_disk_bytes)],
    ];
    const box = document.getElementById("cards");
    box.replaceChildren();
    for (const [name, value] of cards) {
      const card = el("div", null, "card");
      card.appendChild(el("b", value === undefined || value === null ? "-" : value));
      card.appendChild(el("span", name, "muted"));
      box.appendChild(card);
    }
    rows("blocks", blocks.blocks, (b) => [[b.prefix, "block"], [b.reason], [duration(b.remaining_secs)]], blocks.error || "none");
    rows("tasks", report ? report.tasks : [], (t) => [
      [t.name], [t.state, t.state === "ready" ? "ok" : "bad"], [t.pid], [duration(t.uptime_secs)], [t.restarts, "num"], [bytes(t.memory_bytes), "num"], [bytes(t.memory_budget_bytes), "num"],
    ], "no tasks");
    // Records without a flow (a configuration, an image boot) carry the unspecified address.
    const address = (ip) => (ip === "0.0.0.0" || ip === "::" || ip === null ? "" : ip);
    rows("decisions", decisions, (d) => [
      [d.ts], [d.action, d.action === "block" ? "block" : ""], [d.category], [address(d.src_ip)], [address(d.dst_ip) ? d.dst_ip + (d.dst_port ? ":" + d.dst_port : "") : ""],
      [d.block_ttl_secs === null ? "" : duration(d.block_ttl_secs)], [d.provenance, "prov"],
    ], "none yet");
    bars("graph-dropped", series.minutes, "dropped");
    bars("graph-decisions", series.minutes, "decisions");
    document.body.setAttribute("data-loaded", "1");
  } catch (error) {
    document.getElementById("summary").textContent = "cannot read the appliance: " + error.message;
  }
}

refresh();
setInterval(refresh, 5000);

// LogStream dashboard: loads the snapshot (api/pipelines), then follows the event stream
// (api/events) from the snapshot's last event, reconnecting when it drops. No framework.
"use strict";
(() => {
  const MAX_STREAM_ITEMS = 120;
  const CHARTS = [
    { field: "ready", label: "Backlog" },
    { field: "oldest_age_s", label: "Oldest age" },
    { field: "processed", label: "Processed/s" },
    { field: "replicas", label: "Replicas" },
  ];
  const outputs = new Map(); // "pipeline\u0000output" -> { figures, history }
  let bucketMs = 5000;
  let windowMs = 15 * 60 * 1000;
  let source = null;
  let restartTimer = null;
  let backoffMs = 1000;

  const $ = (id) => document.getElementById(id);
  const key = (pipeline, output) => pipeline + "\u0000" + output;
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  };

  // ---- formatting ----
  const dash = "—";
  const fmtInt = (n) => (n == null ? dash : Number(n).toLocaleString("en-US"));
  const fmtRate = (r) => (r == null ? dash : r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US"));
  const fmtAge = (s) => {
    if (s == null) return dash;
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " m " + String(Math.floor(s % 60)).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " m";
  };
  const fmtTime = (ms) => new Date(ms).toLocaleTimeString("en-GB");

  // ---- history (same buckets as the server) ----
  function pointOf(tMs, f) {
    return {
      t_ms: tMs, ready: f.ready, unacked: f.unacked, oldest_age_s: f.oldest_age_s,
      dead_lettered: f.dead_lettered, replicas: f.replicas.desired,
      published: f.rates.published, processed: f.rates.processed,
      retried: f.rates.retried, dead_lettered_rate: f.rates.dead_lettered,
    };
  }
  function pushHistory(history, f) {
    const t = f.at_ms - (f.at_ms % bucketMs);
    const last = history[history.length - 1];
    if (last && last.t_ms >= t) {
      // Depths and age keep the bucket's highest (as the server does), the rest the latest.
      const merged = pointOf(last.t_ms, f);
      for (const k of ["ready", "unacked", "oldest_age_s", "dead_lettered"]) {
        if (last[k] != null && (merged[k] == null || last[k] > merged[k])) merged[k] = last[k];
      }
      history[history.length - 1] = merged;
    }
    else history.push(pointOf(t, f));
    while (history.length && history[0].t_ms < t - windowMs) history.shift();
  }

  // ---- charts ----
  function sparkline(history, field, label) {
    const W = 200, H = 36, now = Date.now();
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("data-chart", field);
    const pts = history.filter((p) => p[field] != null);
    const max = Math.max(1e-9, ...pts.map((p) => p[field]));
    const start = Math.min(now - windowMs, ...pts.map((p) => p.t_ms));
    const span = Math.max(1, now - start);
    const poly = document.createElementNS(svg.namespaceURI, "polyline");
    poly.setAttribute("points", pts.map((p) =>
      `${(((p.t_ms - start) / span) * W).toFixed(1)},${(H - 2 - (p[field] / max) * (H - 10)).toFixed(1)}`).join(" "));
    const text = document.createElementNS(svg.namespaceURI, "text");
    text.setAttribute("x", "1"); text.setAttribute("y", "7");
    text.textContent = pts.length ? `max ${field === "oldest_age_s" ? fmtAge(max) : fmtRate(max)}` : "no data yet";
    const title = document.createElementNS(svg.namespaceURI, "title");
    title.textContent = `${label}, last ${Math.round(windowMs / 60000)} minutes`;
    svg.append(title, poly, text);
    const last = pts[pts.length - 1];
    if (last) {
      const dot = document.createElementNS(svg.namespaceURI, "circle");
      const [x, y] = poly.getAttribute("points").split(" ").pop().split(",");
      dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", "2");
      svg.append(dot);
    }
    return svg;
  }

  // ---- tables ----
  function rowCells(f) {
    const r = f.replicas;
    const replicas = r.current === r.desired ? String(r.current) : `${r.current} → ${r.desired}`;
    return [
      ["ready", fmtInt(f.ready), ""],
      ["unacked", fmtInt(f.unacked), ""],
      ["oldest_age", (f.age_estimated && f.oldest_age_s != null ? "~" : "") + fmtAge(f.oldest_age_s), ""],
      ["dlq", fmtInt(f.dead_lettered), f.dead_lettered > 0 ? "warn" : ""],
      ["retrying", fmtInt(f.retrying), ""],
      ["replicas", replicas, r.current !== r.desired ? "changing" : ""],
      ["consumers", fmtInt(f.consumers), ""],
      ["sink", f.sink == null ? dash : f.sink, f.sink === "down" ? "bad" : ""],
      ["processed", fmtRate(f.rates.processed), ""],
      ["retried", fmtRate(f.rates.retried), f.rates.retried > 0 ? "warn" : ""],
      ["dead_lettered_rate", fmtRate(f.rates.dead_lettered), f.rates.dead_lettered > 0 ? "bad" : ""],
    ];
  }
  const HEADERS = ["Output", "Ready", "Unacked", "Oldest age", "DLQ", "Retrying", "Replicas",
    "Workers", "Sink", "Processed/s", "Retried/s", "Dead-lettered/s"];

  function fillRow(row, detailRow, o) {
    const f = o.figures;
    row.replaceChildren(el("td", { "data-field": "output" }, f.output));
    for (const [field, text, cls] of rowCells(f)) {
      row.append(el("td", { "data-field": field, class: cls }, text));
    }
    row.dataset.replicasCurrent = f.replicas.current;
    row.dataset.replicasDesired = f.replicas.desired;
    const charts = el("div", { class: "charts" });
    for (const c of CHARTS) {
      charts.append(el("figure", {}, el("figcaption", {}, c.label), sparkline(o.history, c.field, c.label)));
    }
    const reason = el("div", { class: "reason", "data-field": "reason" });
    reason.append(f.error ? el("span", { class: "bad" }, "error: " + f.error + " · ") : "", f.reason);
    detailRow.replaceChildren(el("td"), el("td", { colspan: String(HEADERS.length - 1) }, charts, reason));
  }

  function renderAll() {
    const byPipeline = new Map();
    for (const o of outputs.values()) {
      const p = o.figures.pipeline;
      if (!byPipeline.has(p)) byPipeline.set(p, []);
      byPipeline.get(p).push(o);
    }
    const root = $("pipelines");
    root.replaceChildren();
    if (byPipeline.size === 0) {
      root.append(el("p", { id: "empty" }, "No pipeline is being autoscaled yet."));
      return;
    }
    for (const name of [...byPipeline.keys()].sort()) {
      const head = el("tr");
      for (const h of HEADERS) head.append(el("th", {}, h));
      const body = el("tbody");
      for (const o of byPipeline.get(name).sort((a, b) => a.figures.output.localeCompare(b.figures.output))) {
        const row = el("tr", { class: "main-row", "data-pipeline": name, "data-output": o.figures.output });
        const reasonRow = el("tr", { class: "detail-row", "data-pipeline": name, "data-output": o.figures.output });
        fillRow(row, reasonRow, o);
        o.row = row; o.reasonRow = reasonRow;
        body.append(row, reasonRow);
      }
      root.append(el("section", { class: "pipeline", "data-pipeline": name },
        el("h2", { "data-field": "pipeline" }, name), el("table", {}, el("thead", {}, head), body)));
    }
  }

  // ---- live stream lists ----
  function prepend(listId, item) {
    const list = $(listId);
    list.prepend(item);
    while (list.children.length > MAX_STREAM_ITEMS) list.lastElementChild.remove();
  }
  function streamItem(kind, id, source, atMs, pipeline, output, ...rest) {
    return el("li", { "data-kind": kind, "data-event-id": id || "", "data-source": source,
      "data-pipeline": pipeline, "data-output": output || "" },
      el("time", {}, fmtTime(atMs)), el("span", { class: "where" }, output ? `${pipeline} › ${output}` : pipeline), ...rest);
  }
  function addDecision(d, source) {
    prepend("stream-decisions", streamItem("scale", d.id, source, d.at_ms, d.pipeline, d.output,
      el("span", { class: "change" }, `${d.from} → ${d.to}`), el("span", { class: "reason" }, d.reason)));
  }

  // ---- events ----
  function onSample(f, id) {
    const k = key(f.pipeline, f.output);
    let o = outputs.get(k);
    const isNew = !o;
    if (o && f.at_ms < o.figures.at_ms) return; // replayed after a snapshot reload
    if (!o) { o = { figures: f, history: [] }; outputs.set(k, o); }
    o.figures = f;
    pushHistory(o.history, f);
    if (isNew || !o.row || !o.row.isConnected) renderAll(); else fillRow(o.row, o.reasonRow, o);
    $("updated").textContent = "updated " + fmtTime(f.at_ms);
    prepend("stream-rates", streamItem("sample", id, "live", f.at_ms, f.pipeline, f.output,
      el("span", { "data-field": "processed" }, fmtRate(f.rates.processed)), " · ",
      el("span", { "data-field": "retried", class: f.rates.retried > 0 ? "warn" : "" }, fmtRate(f.rates.retried)), " · ",
      el("span", { "data-field": "dead_lettered", class: f.rates.dead_lettered > 0 ? "bad" : "" }, fmtRate(f.rates.dead_lettered))));
  }
  function onError(e, id) {
    prepend("stream-decisions", streamItem("error", id, "live", e.at_ms, e.pipeline, e.output,
      el("span", { class: "reason" }, e.message)));
  }
  function onRemoved(r) {
    for (const [k, o] of outputs) if (o.figures.pipeline === r.pipeline) outputs.delete(k);
    renderAll();
  }

  async function loadSnapshot() {
    const response = await fetch("api/pipelines", { cache: "no-store" });
    if (!response.ok) throw new Error("api/pipelines answered " + response.status);
    const snap = await response.json();
    bucketMs = snap.history_bucket_s * 1000;
    windowMs = snap.history_window_s * 1000;
    outputs.clear();
    for (const p of snap.pipelines) {
      for (const o of p.outputs) outputs.set(key(p.name, o.output), { figures: o, history: o.history });
    }
    renderAll();
    $("stream-decisions").replaceChildren();
    for (const d of snap.decisions) addDecision(d, "snapshot");
    $("updated").textContent = "updated " + fmtTime(snap.generated_at_ms);
    return snap.last_event_id;
  }

  function setConnection(state, text) {
    const c = $("connection");
    c.dataset.state = state;
    c.textContent = text || { open: "live", connecting: "connecting…", closed: "disconnected" }[state];
  }

  function follow(since) {
    source = new EventSource("api/events?since=" + encodeURIComponent(since));
    source.onopen = () => { backoffMs = 1000; setConnection("open"); };
    const parse = (e, handle) => { try { handle(JSON.parse(e.data), e.lastEventId); } catch (err) { console.error(err); } };
    source.addEventListener("sample", (e) => parse(e, onSample));
    source.addEventListener("scale", (e) => parse(e, (d, id) => addDecision({ ...d, id }, "live")));
    source.addEventListener("removed", (e) => parse(e, onRemoved));
    source.addEventListener("lagged", () => {
      prepend("stream-decisions", el("li", { "data-kind": "lagged" }, "missed some events; reloaded"));
      loadSnapshot().catch(() => {});
    });
    // "error" is both the server's event name and EventSource's connection error: only the
    // former carries data.
    source.addEventListener("error", (e) => {
      if (typeof e.data === "string") { parse(e, onError); return; }
      if (source.readyState === EventSource.CLOSED) { setConnection("closed"); restartLater(); }
      else setConnection("connecting"); // the browser reconnects with Last-Event-ID itself
    });
  }

  async function start() {
    if (source) { source.close(); source = null; }
    setConnection("connecting");
    try {
      follow(await loadSnapshot());
    } catch (err) {
      setConnection("closed", "unreachable, retrying");
      restartLater();
    }
  }
  function restartLater() {
    clearTimeout(restartTimer);
    restartTimer = setTimeout(start, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 30000);
  }

  start();
})();

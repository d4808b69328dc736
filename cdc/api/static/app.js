// The status page: polls /ui/data with the API token and draws every mirror.
// Plain DOM (textContent only: no text from the server is ever parsed as HTML), no libraries.
"use strict";

(() => {
  const KEY = "cdc-api-token";
  const POLL_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // -- the token: a #token=... fragment (never sent to the server), else the form ----------
  let waitingForToken = false;   // a fragment that could not be read: no polling until the form is sent

  // false when the fragment's token is not valid URL encoding (decodeURIComponent throws)
  function takeTokenFromFragment() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return true;
    history.replaceState(null, "", location.pathname + location.search);   // out of the address bar
    try {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      return true;
    } catch (err) {
      sessionStorage.removeItem(KEY);
      return false;
    }
  }

  function showLogin(message) {
    $("main").hidden = true;
    $("mirrors").tBodies[0].replaceChildren();
    $("events").tBodies[0].replaceChildren();
    $("login").hidden = false;
    $("login-message").textContent = message;
    setStatus("not signed in", true);
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    waitingForToken = false;
    poll();
  });

  // -- formatting ---------------------------------------------------------------------------
  const dash = "–";
  const seconds = (v) => (v == null ? dash : `${v.toFixed(2)} s`);
  const rate = (v) => (v == null ? dash : `${v.toFixed(1)}/s`);
  function bytes(n) {
    if (n == null) return dash;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }
  const clock = (t) => new Date(t * 1000).toLocaleTimeString();
  const span = (s) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) e.setAttribute(k, String(v));
    for (const c of children) if (c != null) e.append(c);
    return e;
  }
  const small = (text) => el("small", {}, text);

  function setStatus(text, bad) {
    $("status").textContent = text;
    $("status").className = bad ? "bad" : "";
  }

  // -- a sparkline: time on x from the first sample kept (at most the window ago) to now,
  //    0..max on y; gaps where a reading failed ----------------------------------------------
  function sparkline(ts, values, t0, t1, unit) {
    const W = 180, H = 36, PAD = 2;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "spark");
    const known = values.filter((v) => v != null);
    const max = Math.max(...known, 0);
    const title = document.createElementNS(SVG, "title");
    title.textContent = known.length ? `${known.length} samples, max ${unit(max)}` : "no samples yet";
    svg.append(title);
    const x = (t) => PAD + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * PAD);
    const y = (v) => H - PAD - (max > 0 ? (v / max) * (H - 2 * PAD - 10) : 0);
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        const line = document.createElementNS(SVG, "polyline");
        line.setAttribute("points", run.join(" "));
        svg.append(line);
      } else if (run.length === 1) {          // a lone point between gaps
        const [cx, cy] = run[0].split(",");
        const dot = document.createElementNS(SVG, "circle");
        for (const [k, v] of [["cx", cx], ["cy", cy], ["r", "1.5"]]) dot.setAttribute(k, v);
        svg.append(dot);
      }
      run = [];
    };
    ts.forEach((t, i) => (values[i] == null ? flush() : run.push(`${x(t).toFixed(1)},${y(values[i]).toFixed(1)}`)));
    flush();
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", String(PAD));
    label.setAttribute("y", "9");
    label.textContent = known.length ? `max ${unit(max)} · last ${span(t1 - t0)}` : "no samples yet";
    svg.append(label);
    return svg;
  }

  // -- one mirror -------------------------------------------------------------------------------
  function progressCell(m) {
    const td = el("td", { "data-field": "progress" });
    const s = m.snapshot;
    if (s) {
      td.setAttribute("data-snapshot-state", s.state);
      if (s.rows != null) td.setAttribute("data-snapshot-rows", s.rows);
      const rows = s.rows == null ? "" : s.estimate ? ` ${s.rows} / ~${s.estimate} rows` : ` ${s.rows} rows`;
      td.append(el("div", {}, `snapshot ${s.state}${rows}`));
      if (s.state !== "done" && s.rows != null && s.estimate) {
        td.append(el("progress", { max: s.estimate, value: Math.min(s.rows, s.estimate) }));
      }
      if (s.reason) td.append(small(s.reason));
    }
    const j = m.job;
    if (j) {
      // The job's committed offset moves at checkpoints: a rebuild (replay of the change
      // topic) shows here as a bar filling up; a running job stays within one checkpoint.
      if (j.lag != null) td.setAttribute("data-job-lag", j.lag);
      td.append(el("div", {}, j.offset == null ? "job: no checkpoint yet"
        : `job read ${j.offset} of ${j.end} changes`));
      if (j.lag) {
        td.append(el("progress", { max: j.end, value: j.offset }), small(`lag ${j.lag} at its last checkpoint`));
      }
    }
    if (!s && !j) td.append(dash);
    return td;
  }

  function mirrorRow(m, d) {
    const t1 = d.now, t0 = Math.max(d.now - (d.window_s || 3600), m.series.t.length ? m.series.t[0] : d.now - 60);
    const f = m.freshness, tp = m.throughput;
    const walWarn = m.wal_retained_bytes != null && m.wal_retained_bytes > d.wal_warn_bytes;
    return el("tr", { "data-mirror": m.name, "data-sampled-at": m.sampled_at },
      el("td", { "data-field": "name" }, el("strong", {}, m.name), el("br"), small(`${m.source} · ${m.table}`)),
      el("td", { "data-field": "state", "data-value": m.state },
        el("span", { class: `badge state-${m.state}` }, m.state)),
      el("td", { "data-field": "freshness", "data-p50": f.p50, "data-p99": f.p99 },
        `${seconds(f.p50)} / ${seconds(f.p99)}`, el("br"),
        small(f.samples ? `${f.samples} probes${f.via ? ", via " + f.via : ""}` : "no probe yet")),
      el("td", {}, sparkline(m.series.t, m.series.freshness_s, t0, t1, seconds)),
      el("td", { "data-field": "throughput", "data-last": tp.last, "data-avg": tp.avg, "data-records": tp.records },
        rate(tp.last), el("br"), small(tp.avg == null ? "" : `avg ${rate(tp.avg)}, ${tp.records} records`)),
      el("td", {}, sparkline(m.series.t, m.series.records_per_s, t0, t1, rate)),
      progressCell(m),
      el("td", { "data-field": "wal", "data-value": m.wal_retained_bytes, class: walWarn ? "bad" : null },
        bytes(m.wal_retained_bytes)));
  }

  function render(d) {
    $("login").hidden = true;
    $("main").hidden = false;
    $("mirrors").tBodies[0].replaceChildren(...d.mirrors.map((m) => mirrorRow(m, d)));
    $("no-mirrors").hidden = d.mirrors.length > 0;
    $("events").tBodies[0].replaceChildren(...d.events.map((e) =>
      el("tr", { "data-event": e.id }, el("td", {}, new Date(e.ts).toLocaleString()),
        el("td", {}, e.mirror || dash), el("td", {}, e.action), el("td", {}, e.reason || ""))));
    $("errors").replaceChildren(...Object.entries(d.errors).map(([what, why]) => el("li", {}, `${what}: ${why}`)));
    $("legend").textContent = d.sampling
      ? `Sampled every ${d.interval_s} s by cdc serve, kept for ${Math.round(d.window_s / 60)} min in memory. ` +
        "Freshness: the source's probe row, commit → visible. Throughput: records written to the mirror's flat topic."
      : "History sampling is off (cdc serve --sample-interval 0): only states and events are shown.";
    const sampled = d.sampled_at ? `, sampled ${clock(d.sampled_at)}` : "";
    const count = `${d.mirrors.length} mirror${d.mirrors.length === 1 ? "" : "s"}`;
    setStatus(`${count} · updated ${clock(d.now)}${sampled}`, false);
  }

  async function poll() {
    const token = sessionStorage.getItem(KEY);
    let resp;
    try {
      resp = await fetch("/ui/data", { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: "no-store" });
    } catch (err) {
      setStatus(`cannot reach cdc serve (${err.message}); retrying`, true);
      return;
    }
    if (resp.status === 401) {
      showLogin(token ? "The token was refused." : "This service needs its API token.");
      return;
    }
    if (!resp.ok) {
      setStatus(`/ui/data answered ${resp.status}; retrying`, true);
      return;
    }
    render(await resp.json());
  }

  if (takeTokenFromFragment()) {
    poll();
  } else {
    waitingForToken = true;
    showLogin("The token in the address (#token=…) is not valid URL encoding: enter it here.");
  }
  setInterval(() => { if (!waitingForToken) poll(); }, POLL_MS);
})();

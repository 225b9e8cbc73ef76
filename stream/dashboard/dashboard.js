/* The ocld dashboard: polls the daemon's /api/status (every second) and /api/series (every two
   seconds) and draws them with the vendored uPlot. It only sends GET requests and never writes.

   /api/status   {pipeline, now, status: <the Status model>, health: <the /healthz answer>}
   /api/series   {metrics: [metric points], drift: [drift events], cursor}: what the daemon wrote to
                 its Redis streams after `since` (the cursor of the previous answer). */
"use strict";
(function () {
  const STATUS_EVERY_MS = 1000;
  const SERIES_EVERY_MS = 2000;
  const MAX_POINTS = 20000;    // metric points kept in the page (the stream keeps redis.metrics_maxlen)
  const MAX_TIME_ROWS = 7200;  // throughput/lag rows kept (two hours of status polls)
  const COLORS = { accuracy: "#2563eb", total: "#94a3b8", throughput: "#0891b2", lag: "#ea580c",
                   forgetting: "#16a34a", error: "#dc2626", input: "#7c3aed" };
  const MEMBER_COLORS = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#ca8a04", "#db2777"];

  // Everything the page knows, on window for the browser test and for a curious operator's console.
  const state = {
    cursor: "", points: [], drift: [], timeRows: [], status: null, health: null, now: null,
    charts: { accuracy: null, rate: null, learner: null }, learnerShape: "", markersDrawn: 0,
    polls: { status: 0, series: 0 }, errors: { status: null, series: null },
  };
  window.ocld = state;

  const $ = (id) => document.getElementById(id);
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const fmtInt = (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : "–");
  const fmtNum = (v, digits) => (isNum(v) ? v.toFixed(digits) : "–");

  function ago(seconds) {
    if (!isNum(seconds)) return "–";
    const s = Math.max(0, seconds);
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function setText(id, text) { $(id).textContent = text; }

  function chartWidth(el) { return Math.max(320, el.clientWidth); }

  // -- charts ------------------------------------------------------------------------------------
  function maxDriftIndex() {
    let m = -Infinity;
    for (const e of state.drift) if (isNum(e.index)) m = Math.max(m, e.index);
    return m;
  }

  // Vertical lines at each drift event's labelled-sample index (dashed and thicker: the learner adapted).
  function drawDriftMarkers(u) {
    const ctx = u.ctx, box = u.bbox, px = uPlot.pxRatio;
    let drawn = 0;
    ctx.save();
    for (const e of state.drift) {
      if (!isNum(e.index)) continue;
      const x = Math.round(u.valToPos(e.index, "x", true));
      if (x < box.left - 1 || x > box.left + box.width + 1) continue;
      const adapted = e.action === "adapt";
      ctx.strokeStyle = COLORS[e.kind] || "#6b7385";
      ctx.lineWidth = (adapted ? 2 : 1) * px;
      ctx.setLineDash(adapted ? [6 * px, 4 * px] : [2 * px, 3 * px]);
      ctx.beginPath();
      ctx.moveTo(x, box.top);
      ctx.lineTo(x, box.top + box.height);
      ctx.stroke();
      drawn++;
    }
    ctx.restore();
    state.markersDrawn = drawn;
  }

  function accuracyChart() {
    const el = $("chart-accuracy");
    return new uPlot({
      width: chartWidth(el), height: 260, legend: { live: false },
      scales: {
        x: { time: false, range: (u, lo, hi) => {
          const top = Math.max(isNum(hi) ? hi : 0, maxDriftIndex());
          const bottom = isNum(lo) ? lo : 0;
          return bottom < top ? [bottom, top] : [0, Math.max(1, top)];
        } },
        y: { range: [0, 1] },
      },
      axes: [{ label: "labelled samples learned" }, { label: "accuracy" }],
      series: [
        { label: "samples" },
        { label: "accuracy (window)", stroke: COLORS.accuracy, width: 1.5, spanGaps: true },
        { label: "accuracy since start", stroke: COLORS.total, width: 1, spanGaps: true },
      ],
      hooks: { draw: [drawDriftMarkers] },
    }, [[], [], []], el);
  }

  function rateChart() {
    const el = $("chart-rate");
    return new uPlot({
      width: chartWidth(el), height: 220, legend: { live: false },
      scales: { x: { time: true }, lag: { range: (u, lo, hi) => [0, Math.max(1, isNum(hi) ? hi : 1)] } },
      axes: [{}, { label: "records / s", stroke: COLORS.throughput },
             { label: "lag (records)", scale: "lag", side: 1, grid: { show: false }, stroke: COLORS.lag }],
      series: [
        {},
        { label: "throughput (records/s)", stroke: COLORS.throughput, width: 1.5, spanGaps: true },
        { label: "lag (records)", stroke: COLORS.lag, width: 1.5, scale: "lag", spanGaps: true },
      ],
    }, [[], [], []], el);
  }

  // What the learner reports in its metric points: a mixture's member weights, or a forgetting factor.
  function learnerShape() {
    const names = [];
    let weights = false, forgetting = false;
    for (const p of state.points) {
      if (p.mixture_weights && typeof p.mixture_weights === "object") {
        weights = true;
        for (const k of Object.keys(p.mixture_weights)) if (!names.includes(k)) names.push(k);
      } else if (isNum(p.forgetting)) {
        forgetting = true;
      }
    }
    if (weights) return { kind: "weights", names };
    if (forgetting) return { kind: "forgetting", names: ["forgetting"] };
    return { kind: state.points.length ? "none" : "", names: [] };
  }

  function learnerChart(shape) {
    const el = $("chart-learner");
    el.textContent = "";
    const weights = shape.kind === "weights";
    return new uPlot({
      width: chartWidth(el), height: 220, legend: { live: false },
      scales: { x: { time: false }, y: weights ? { range: [0, 1] } : {} },
      axes: [{ label: "labelled samples learned" }, { label: weights ? "weight" : "forgetting factor g", size: 70 }],
      series: [{ label: "samples" }].concat(shape.names.map((n, i) => ({
        label: weights ? n : "forgetting factor g", stroke: weights ? MEMBER_COLORS[i % MEMBER_COLORS.length] :
          COLORS.forgetting, width: 1.5, spanGaps: true,
      }))),
    }, [[]].concat(shape.names.map(() => [])), el);
  }

  function renderAccuracy() {
    const p = state.points;
    state.charts.accuracy.setData([p.map((q) => q.labelled_seen), p.map((q) => (isNum(q.accuracy) ? q.accuracy : null)),
                                   p.map((q) => (isNum(q.accuracy_total) ? q.accuracy_total : null))]);
  }

  function renderRate() {
    const rows = state.timeRows;
    state.charts.rate.setData([rows.map((r) => r.t), rows.map((r) => r.throughput), rows.map((r) => r.lag)]);
  }

  function renderLearner() {
    const shape = learnerShape();
    const key = shape.kind + ":" + shape.names.join("|");
    if (key !== state.learnerShape) {
      state.learnerShape = key;
      if (state.charts.learner) state.charts.learner.destroy();
      state.charts.learner = null;
      $("learner-none").hidden = shape.kind !== "none";
      setText("learner-title", shape.kind === "weights" ? "Mixture weights (which member the predictions follow)" :
        shape.kind === "forgetting" ? "Forgetting factor g (Kalman head)" : "Forgetting factor / mixture weights");
      if (shape.kind === "weights" || shape.kind === "forgetting") state.charts.learner = learnerChart(shape);
    }
    if (!state.charts.learner) return;
    const p = state.points;
    const cols = shape.kind === "weights"
      ? shape.names.map((n) => p.map((q) => (q.mixture_weights && isNum(q.mixture_weights[n]) ? q.mixture_weights[n] : null)))
      : [p.map((q) => (isNum(q.forgetting) ? q.forgetting : null))];
    state.charts.learner.setData([p.map((q) => q.labelled_seen)].concat(cols));
  }

  // -- data --------------------------------------------------------------------------------------
  function addTimeRow(t, throughput, lag) {
    if (!isNum(t)) return;
    const row = { t, throughput: isNum(throughput) ? throughput : null, lag: isNum(lag) ? lag : null };
    const rows = state.timeRows;
    let i = rows.length;
    while (i > 0 && rows[i - 1].t > t) i--;
    if (i > 0 && rows[i - 1].t === t) return;
    rows.splice(i, 0, row);
    if (rows.length > MAX_TIME_ROWS) rows.splice(0, rows.length - MAX_TIME_ROWS);
  }

  function addPoints(points) {
    for (const p of points) {
      if (!isNum(p.labelled_seen)) continue;
      // A restart from an older snapshot (or a rollback) learns again what it did not cover: the newer
      // points replace those at or after their sample.
      while (state.points.length && state.points[state.points.length - 1].labelled_seen >= p.labelled_seen) {
        state.points.pop();
      }
      state.points.push(p);
      addTimeRow(p.t, p.throughput, p.lag);
    }
    if (state.points.length > MAX_POINTS) state.points.splice(0, state.points.length - MAX_POINTS);
  }

  async function getJSON(url) {
    const resp = await fetch(url, { cache: "no-store" });
    let body;
    try { body = await resp.json(); } catch (err) { throw new Error("HTTP " + resp.status); }
    if (!resp.ok) {
      const err = new Error(body.error || "HTTP " + resp.status);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  async function pollStatus() {
    try {
      const body = await getJSON("api/status");
      state.status = body.status;
      state.health = body.health;
      state.now = body.now;
      state.pipeline = body.pipeline;
      state.errors.status = null;
      addTimeRow(body.status.updated_at, body.status.throughput, body.status.lag);
      renderStatus();
      renderRate();
    } catch (err) {
      // 503 before the daemon built its first status: it is starting, not gone
      const starting = err.status === 503;
      state.errors.status = starting ? null : String(err.message || err);
      $("state").className = "badge " + (starting ? "starting" : "unreachable");
      setText("state", starting ? "starting" : "unreachable");
    }
    state.polls.status++;
    renderBanner();
    setTimeout(pollStatus, STATUS_EVERY_MS);
  }

  async function pollSeries() {
    try {
      const body = await getJSON("api/series?since=" + encodeURIComponent(state.cursor));
      state.cursor = body.cursor;
      state.errors.series = null;
      addPoints(body.metrics);
      for (const e of body.drift) state.drift.push(e);
      renderAccuracy();
      renderLearner();
      renderDrift();
      renderRate();
    } catch (err) {
      state.errors.series = String(err.message || err);
    }
    state.polls.series++;
    renderBanner();
    setTimeout(pollSeries, SERIES_EVERY_MS);
  }

  // -- the rest of the page ----------------------------------------------------------------------
  function renderStatus() {
    const s = state.status, h = state.health || {};
    setText("pipeline", state.pipeline + (s.replica ? " / replica " + s.replica : ""));
    document.title = "ocld " + state.pipeline + ": " + s.state;
    $("state").className = "badge " + s.state;
    setText("state", s.state);
    setText("ready", h.ready ? "ready" : "not ready: " + (h.reasons || []).join("; "));
    setText("updated", "status from " + (s.host || "?") + ", pid " + s.pid);
    setText("t-labelled", fmtInt(s.labelled_seen));
    setText("t-learner", s.learner || "");
    setText("t-accuracy", fmtNum(s.accuracy, 3));
    setText("t-accuracy-total", "since start " + fmtNum(s.accuracy_total, 3));
    setText("t-throughput", fmtInt(s.throughput));
    setText("t-lag", fmtInt(s.lag));
    setText("t-partitions", (s.partitions || []).length + " partition" + ((s.partitions || []).length === 1 ? "" : "s"));
    setText("t-drift", fmtInt(s.drift_count));
    setText("t-drift-kinds", "error " + fmtInt(s.drift_count_error) + " · input " + fmtInt(s.drift_count_input));
    setText("t-dlq", fmtInt(s.dlq_count));
    setText("t-dlq-dropped", s.dlq_dropped ? fmtInt(s.dlq_dropped) + " not taken by the broker" : "");
    const age = isNum(s.last_snapshot_at) ? state.now - s.last_snapshot_at : null;
    setText("t-snapshot-age", age === null ? "none yet" : ago(age));
    setText("t-snapshot", (isNum(s.model_version) ? "version " + s.model_version + " · " : "") +
      "unsnapshotted " + ago(s.unsnapshotted_s));
    const stale = (h.reasons || []).some((r) => r.indexOf("unsnapshotted") >= 0) || s.degraded;
    $("t-snapshot-age").parentElement.classList.toggle("warn", Boolean(stale));
    renderDlq(s.dlq_by_reason || {});
  }

  function renderDlq(byReason) {
    const el = $("dlq");
    const rows = Object.entries(byReason).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    el.textContent = "";
    if (!rows.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "none";
      el.appendChild(p);
      return;
    }
    const top = rows[0][1];
    for (const [reason, n] of rows) {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.dataset.reason = reason;
      const name = document.createElement("span");
      name.textContent = reason;
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = (100 * n / top).toFixed(1) + "%";
      const count = document.createElement("span");
      count.className = "n";
      count.textContent = fmtInt(n);
      bar.append(name, fill, count);
      el.appendChild(bar);
    }
  }

  function renderDrift() {
    const body = $("drift-table").tBodies[0];
    body.textContent = "";
    const shown = state.drift.slice(-12).reverse();
    for (const e of shown) {
      const tr = document.createElement("tr");
      tr.className = "drift-event";
      const cells = [fmtInt(e.index), e.kind || "", e.detector || "", e.action || "",
                     isNum(e.at) && isNum(state.now) ? ago(state.now - e.at) + " ago" : ""];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 1) td.className = e.kind;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    setText("drift-note", state.drift.length > shown.length ? "(newest " + shown.length + " of " + state.drift.length + ")" : "");
  }

  function renderBanner() {
    const el = $("banner");
    const msgs = [];
    if (state.errors.status) msgs.push("daemon unreachable (" + state.errors.status + "): retrying every second; " +
                                       "the page shows the last data it received");
    if (state.errors.series) msgs.push("history unavailable (" + state.errors.series + ")");
    el.hidden = !msgs.length;
    el.textContent = msgs.join(" · ");
  }

  function resize() {
    for (const [name, chart] of Object.entries(state.charts)) {
      if (chart) chart.setSize({ width: chartWidth($("chart-" + name)), height: chart.height });
    }
  }

  state.charts.accuracy = accuracyChart();
  state.charts.rate = rateChart();
  window.addEventListener("resize", resize);
  pollStatus();
  pollSeries();
})();

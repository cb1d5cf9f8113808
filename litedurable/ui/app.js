// litedurable timeline page. Plain JavaScript: no dependencies, no build step.
//
// Two modes:
// * served (`litedurable ui`): the workflow list at #/ and a workflow at #/wf/<id>, read from
//   the JSON API of litedurable/_ui.py and refreshed every 2 s;
// * exported (`litedurable ui --export`): window.LITEDURABLE_DATA holds one workflow; nothing
//   is fetched.
//
// The timeline is an SVG string (the HTML parser builds it, so no namespace URL is needed).
// Stable hooks for tests: g.lane[data-wf], g.step.kind-<kind>[data-step], .winner, .loser,
// .timer.future, .failed, .replayed, g.select-mark, .connector, g.recovery.
"use strict";

(function () {
  const EXPORTED = window.LITEDURABLE_DATA || null;
  const REFRESH_MS = 2000;
  const app = document.getElementById("app");
  const live = document.getElementById("live");
  const where = document.getElementById("where");
  const state = {
    filters: { status: "", name: "", queue: "" }, offset: 0, limit: 50,
    timer: null, current: null, selected: null, collapsed: new Set(),
  };
  const STATUSES = ["enqueued", "pending", "succeeded", "failed", "cancelled", "exhausted",
    "nondeterministic"];
  // One colour per owner (the process that recorded a step), in order of first appearance.
  const PALETTE = ["#8fb8e8", "#f2b77c", "#9bd3a4", "#c9a5e0", "#e89fb4", "#a7d7d9",
    "#d8cf8a", "#b5b5b5"];

  // -- small helpers --------------------------------------------------------------------

  function esc(value) {
    return String(value).replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  }

  function ms(iso) { return iso ? Date.parse(iso) : null; }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
    const s = Math.abs(seconds);
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    // Round to the smaller unit before choosing the larger: 3599.7 s is "1 h 0 min".
    const sec = Math.round(s);
    if (sec < 3600) return `${Math.floor(sec / 60)} min ${sec % 60} s`;
    const min = Math.round(s / 60);
    if (min < 1440) return `${Math.floor(min / 60)} h ${min % 60} min`;
    const hours = Math.round(s / 3600);
    return `${Math.floor(hours / 24)} d ${hours % 24} h`;
  }

  function ago(iso, nowIso) {
    return `${duration((ms(nowIso) - ms(iso)) / 1000)} ago`;
  }

  function json(value) { return esc(JSON.stringify(value, null, 2)); }

  function shortName(name) { return String(name).split(".").pop(); }

  function badge(status) { return `<span class="badge status-${esc(status)}">${esc(status)}</span>`; }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  function schedule(fn) {
    clearTimeout(state.timer);
    state.timer = setTimeout(fn, REFRESH_MS);
  }

  // -- routing --------------------------------------------------------------------------

  // "#/wf/<id>?step=<n>" (served) or "#?step=<n>" (exported): a workflow, and optionally the
  // step to select (``<child id>:<n>`` for a child's step), so a link can point at a step.
  function hashParts() {
    const [path, query] = location.hash.split("?");
    return { path, step: new URLSearchParams(query || "").get("step") };
  }

  function preselect(rootId, step) {
    const m = step && step.match(/^(?:(.*):)?(\d+)$/);
    if (m) state.selected = { wf: m[1] || rootId, step: Number(m[2]) };
  }

  function route() {
    clearTimeout(state.timer);
    const { path, step } = hashParts();
    if (EXPORTED) {
      live.textContent = `exported ${EXPORTED.now}`;
      preselect(EXPORTED.workflow_id, step);
      showWorkflow(EXPORTED);
      return;
    }
    if (path.startsWith("#/wf/")) {
      const id = decodeURIComponent(path.slice(5));
      if (!state.current || state.current.workflow_id !== id) {
        state.current = null; state.selected = null;
      }
      preselect(id, step);
      loadWorkflow(id);
    } else {
      state.current = null;
      loadList(true);
    }
  }

  // -- the list -------------------------------------------------------------------------

  function listShell() {
    const f = state.filters;
    const options = ["", ...STATUSES].map((s) =>
      `<option value="${s}"${s === f.status ? " selected" : ""}>${s || "any"}</option>`).join("");
    app.innerHTML = `
      <form class="filters" id="filters">
        <label>status<select name="status">${options}</select></label>
        <label>name<input name="name" value="${esc(f.name)}" placeholder="workflow name"></label>
        <label>queue<input name="queue" value="${esc(f.queue)}" placeholder="queue"></label>
        <button type="submit">Filter</button>
      </form>
      <div id="list"><p class="muted">Loading…</p></div>`;
    document.getElementById("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      for (const key of ["status", "name", "queue"]) state.filters[key] = data.get(key) || "";
      state.offset = 0;
      loadList(false);
    });
    document.getElementById("filters").addEventListener("change", (event) => {
      if (event.target.name === "status") event.target.form.requestSubmit();
    });
  }

  async function loadList(fresh) {
    if (fresh || !document.getElementById("list")) listShell();
    where.textContent = "workflows";
    const params = new URLSearchParams({ limit: state.limit, offset: state.offset });
    for (const [key, value] of Object.entries(state.filters)) if (value) params.set(key, value);
    try {
      const data = await getJSON(`api/workflows?${params}`);
      if (hashParts().path.startsWith("#/wf/")) return; // navigated away meanwhile
      renderList(data);
      live.textContent = `live · refreshed ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      live.textContent = `refresh failed: ${error.message}`;
    }
    schedule(() => loadList(false));
  }

  function renderList(data) {
    const rows = data.workflows.map((w) => `
      <tr data-id="${esc(w.workflow_id)}" class="workflow-row">
        <td>${badge(w.status)}</td><td>${esc(w.name)}</td>
        <td class="id mono" title="${esc(w.workflow_id)}">${esc(w.workflow_id)}</td>
        <td title="${esc(w.created_at)}">${ago(w.created_at, data.now)}</td>
        <td>${duration(w.duration)}</td>
        <td class="muted">${w.parent_id ? "child of " + esc(w.parent_id) : ""}
          ${w.error ? `<span class="status-failed">${esc(w.error)}</span>` : ""}</td>
      </tr>`).join("");
    const first = data.offset + 1;
    const last = data.offset + data.workflows.length;
    document.getElementById("list").innerHTML = `
      <table class="workflows">
        <thead><tr><th>status</th><th>name</th><th>workflow id</th><th>age</th>
          <th>duration</th><th></th></tr></thead>
        <tbody>${rows || `<tr><td colspan="6" class="muted">no workflows</td></tr>`}</tbody>
      </table>
      <div class="pager">
        <button id="prev" ${data.offset ? "" : "disabled"}>← newer</button>
        <span class="muted">${data.workflows.length ? `${first}–${last}` : ""}
          ${data.more ? "(more)" : ""}</span>
        <button id="next" ${data.more ? "" : "disabled"}>older →</button>
      </div>`;
    for (const tr of document.querySelectorAll("tr.workflow-row")) {
      tr.addEventListener("click", () => {
        location.hash = `#/wf/${encodeURIComponent(tr.dataset.id)}`;
      });
    }
    document.getElementById("prev").onclick = () => {
      state.offset = Math.max(0, state.offset - state.limit); loadList(false);
    };
    document.getElementById("next").onclick = () => {
      state.offset += state.limit; loadList(false);
    };
  }

  // -- one workflow ---------------------------------------------------------------------

  async function loadWorkflow(id) {
    try {
      const data = await getJSON(`api/workflows/${encodeURIComponent(id)}`);
      if (hashParts().path !== `#/wf/${encodeURIComponent(id)}`) return; // navigated away
      showWorkflow(data);
      live.textContent = running(data)
        ? `live · refreshed ${new Date().toLocaleTimeString()}` : "finished";
      if (running(data)) schedule(() => loadWorkflow(id));
    } catch (error) {
      app.innerHTML = `<p class="status-failed">${esc(error.message)}</p><p><a href="#/">all workflows</a></p>`;
    }
  }

  // Pending or enqueued, itself or any child: worth refreshing.
  function running(wf) {
    return wf.status === "pending" || wf.status === "enqueued" || wf.children.some(running);
  }

  function findWorkflow(wf, id) {
    if (wf.workflow_id === id) return wf;
    for (const child of wf.children) {
      const found = findWorkflow(child, id);
      if (found) return found;
    }
    return null;
  }

  function showWorkflow(wf) {
    state.current = wf;
    where.textContent = wf.workflow_id;
    const owners = ownersOf(wf);
    const failed = [];
    (function collect(w) {
      for (const s of w.steps) if (s.error) failed.push([w, s]);
      w.children.forEach(collect);
    })(wf);
    const legend = owners.map((o, i) =>
      `<span><i class="swatch" style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(o)}${i ? " (took over: recovery)" : ""}</span>`).join("");
    app.innerHTML = `
      ${EXPORTED ? "" : `<p><a href="#/">← all workflows</a></p>`}
      <h1>${esc(wf.name)} ${badge(wf.status)}</h1>
      <dl class="facts">
        <dt>workflow id</dt><dd class="mono">${esc(wf.workflow_id)}</dd>
        ${wf.parent_id ? `<dt>parent</dt><dd class="mono">${esc(wf.parent_id)}</dd>` : ""}
        <dt>created</dt><dd>${esc(wf.created_at)} (${ago(wf.created_at, wf.now)})</dd>
        <dt>updated</dt><dd>${esc(wf.updated_at)}</dd>
        <dt>duration</dt><dd>${duration(wf.duration)}</dd>
        <dt>app version</dt><dd>${esc(wf.app_version)}</dd>
        ${wf.recovery_attempts ? `<dt>recoveries</dt><dd>${wf.recovery_attempts}</dd>` : ""}
        ${wf.deadline ? `<dt>deadline</dt><dd>${esc(wf.deadline)}</dd>` : ""}
        <dt>inputs</dt><dd class="mono">${esc(JSON.stringify(wf.inputs))}</dd>
        ${wf.output !== null ? `<dt>output</dt><dd class="mono">${esc(JSON.stringify(wf.output))}</dd>` : ""}
        ${wf.error ? `<dt>error</dt><dd class="status-failed">${esc(wf.error)}</dd>` : ""}
      </dl>
      <div class="legend">${legend}
        <span><i class="swatch" style="background:repeating-linear-gradient(45deg,#999 0 2px,#fff 2px 5px)"></i>replayed (recorded by an earlier owner)</span>
        <span><i class="swatch" style="border:2px solid #d4a000"></i>select winner</span>
        <span><i class="swatch" style="border:1px dashed #555"></i>timer still to fire</span>
        <span><i class="swatch" style="background:#f7c6c9;border-color:#cf222e"></i>failed</span>
      </div>
      <div class="timeline-box" id="timeline">${timeline(wf, owners)}</div>
      <div class="details" id="details"><span class="muted">Click a step to see its output, error and call site.</span></div>
      ${failed.length ? `<h2>Failed steps</h2>` + failed.map(([w, s]) => `
        <div class="failure" data-wf="${esc(w.workflow_id)}" data-step="${esc(s.step)}">
          <b>${esc(w.workflow_id)} · step ${s.step} ${esc(shortName(s.name))}</b>:
          <span class="status-failed">${esc(s.error)}</span>
          ${s.traceback ? `<pre class="traceback">${esc(s.traceback)}</pre>` : ""}</div>`).join("") : ""}
      ${wf.traceback ? `<h2>Workflow traceback</h2><pre class="traceback">${esc(wf.traceback)}</pre>` : ""}
      ${extras(wf)}`;
    document.getElementById("timeline").addEventListener("click", onTimelineClick);
    if (state.selected) showStep(state.selected.wf, state.selected.step);
  }

  // Mailbox, events, streams and promises, where the workflow has any.
  function extras(wf) {
    let html = "";
    if (wf.messages.length) {
      html += `<h2>Mailbox</h2><table class="workflows"><tr><th>topic</th><th>message</th><th>sent</th><th>read by step</th></tr>` +
        wf.messages.map((m) => `<tr><td>${esc(m.topic ?? "(default)")}</td><td class="mono">${esc(JSON.stringify(m.message))}</td>
          <td>${esc(m.sent_at)}</td><td>${m.read_by_step ?? "unread"}</td></tr>`).join("") + `</table>`;
    }
    if (Object.keys(wf.events).length) html += `<h2>Events</h2><pre>${json(wf.events)}</pre>`;
    if (Object.keys(wf.streams).length) html += `<h2>Streams</h2><pre>${json(wf.streams)}</pre>`;
    if (wf.promises.length) html += `<h2>Promises</h2><pre>${json(wf.promises)}</pre>`;
    return html;
  }

  function ownersOf(wf) {
    const seen = [];
    (function walk(w) {
      for (const o of w.owners) if (!seen.includes(o)) seen.push(o);
      w.children.forEach(walk);
    })(wf);
    return seen;
  }

  // -- the timeline ---------------------------------------------------------------------

  // Lanes, top to bottom: each workflow's own lane (the calls its code made in order), then
  // one lane per `go` branch and per `after` timer, then each child's lanes, indented
  // (collapsed: the child's lane shows its lifetime only).
  function lanes(wf, depth, via, out) {
    const collapsed = depth > 0 && state.collapsed.has(wf.workflow_id);
    out.push({ type: "workflow", wf, depth, via, collapsed });
    if (collapsed) return out;
    for (const s of wf.steps) {
      if (s.kind === "go" || s.kind === "after") out.push({ type: "branch", wf, step: s, depth });
      if (s.kind === "child") {
        const child = wf.children.find((c) => c.workflow_id === s.child_id);
        if (child) lanes(child, depth + 1, s, out);
      }
    }
    return out;
  }

  function stepEnd(s, nowMs) {
    if (s.unfired) return ms(s.ended_at); // its workflow ended first: the bar stops there
    if ((s.kind === "sleep" || s.kind === "after") && s.wake_at) return ms(s.wake_at);
    return s.finished_at ? ms(s.finished_at) : nowMs;
  }

  function timeline(root, owners) {
    const nowMs = ms(root.now);
    const rows = lanes(root, 0, null, []);
    // The time range: everything recorded, and "now" while something runs. A timer that
    // fires far beyond that is clipped at the right edge (labelled with its wake-up).
    let t0 = Infinity, t1 = -Infinity;
    const future = [];
    (function span(w) {
      t0 = Math.min(t0, ms(w.created_at));
      t1 = Math.max(t1, ms(w.updated_at));
      if (w.status === "pending" || w.status === "enqueued") t1 = Math.max(t1, nowMs);
      for (const s of w.steps) {
        t0 = Math.min(t0, ms(s.started_at));
        t1 = Math.max(t1, s.finished_at ? ms(s.finished_at) : ms(s.started_at));
        if (s.wake_at && s.future) future.push(ms(s.wake_at));
        else if (s.wake_at && !s.unfired) t1 = Math.max(t1, ms(s.wake_at));
      }
      w.children.forEach(span);
    })(root);
    const base = Math.max(t1 - t0, 1);
    for (const wake of future) if (wake - t0 <= 4 * base) t1 = Math.max(t1, wake);
    if (t1 <= t0) t1 = t0 + 1;

    const LABEL = 270, ROW = 26, BAR = 14, TOP = 28;
    const width = Math.max(900, (app.clientWidth || 1300) - 42); // main's padding, the border
    const plot = width - LABEL - 70;
    const x = (t) => LABEL + Math.min(1, Math.max(0, (t - t0) / (t1 - t0))) * plot;
    const height = TOP + rows.length * ROW + 10;
    const rowOf = new Map(); // "wf/step" -> row index, for select connectors
    rows.forEach((r, i) => {
      if (r.type === "workflow") {
        for (const s of r.wf.steps) rowOf.set(`${r.wf.workflow_id}/${s.step}`, i); // its own lane
      }
      if (r.type === "branch") rowOf.set(`${r.wf.workflow_id}/${r.step.step}`, i);
      if (r.type === "workflow" && r.via) rowOf.set(`${r.wf.parent_id}/${r.via.step}`, i);
    });
    const yOf = (i) => TOP + i * ROW;
    const colour = (owner) => PALETTE[Math.max(0, owners.indexOf(owner)) % PALETTE.length];

    // Which candidates won and lost a select (a winner of any decision stays a winner: each
    // as_completed yield is a decision its candidates lose until they win one).
    const outcome = new Map();
    (function mark(w) {
      for (const s of w.steps) {
        if (!s.candidates || s.winner === null || s.winner === undefined) continue;
        s.candidates.forEach((c, i) => {
          const key = `${w.workflow_id}/${c}`;
          if (i === s.winner) outcome.set(key, "winner");
          else if (!outcome.has(key)) outcome.set(key, "loser");
        });
      }
      w.children.forEach(mark);
    })(root);

    const parts = [];
    const overlay = []; // drawn over every lane: select connectors
    parts.push(`<defs><pattern id="replayed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
      <rect width="2" height="6" fill="rgba(0,0,0,.28)"></rect></pattern></defs>`);
    parts.push(axis(t0, t1, x, height, LABEL, plot));

    // A bar for step s of workflow w in row i, with its attempts and labels.
    // ``limit``: where the next item of the lane begins (a label must end before it).
    function bar(w, s, i, limit) {
      const y = yOf(i) + (ROW - BAR) / 2;
      const start = ms(s.started_at);
      const end = stepEnd(s, nowMs);
      const clipped = end > t1;
      const x0 = x(start), x1 = Math.max(x(Math.min(end, t1)), x0 + 3);
      const classes = ["step", `kind-${s.kind}`];
      if (s.kind === "sleep" || s.kind === "after") classes.push("timer");
      if (s.future) classes.push("future");
      if (clipped) classes.push("clipped");
      if (!s.finished_at) classes.push("open");
      if (s.error) classes.push("failed");
      if (s.replayed) classes.push("replayed");
      const won = outcome.get(`${w.workflow_id}/${s.step}`);
      if (won) classes.push(won);
      const title = `step ${s.step} · ${s.kind} ${s.name}\n${s.started_at} → ${s.wake_at || s.finished_at || "open"}` +
        (s.owner ? `\nowner ${s.owner}${s.replayed ? " (replayed by a later owner)" : ""}` : "") +
        (s.error ? `\n${s.error}` : "") + (s.attempts.length ? `\n${s.attempts.length + 1} attempts` : "");
      let g = `<g class="${esc(classes.join(" "))}" data-wf="${esc(w.workflow_id)}" data-step="${esc(s.step)}" data-kind="${esc(s.kind)}"${s.owner ? ` data-owner="${esc(s.owner)}"` : ""}>
        <title>${esc(title)}</title>
        <rect class="bar" x="${x0}" y="${y}" width="${x1 - x0}" height="${BAR}" rx="2" fill="${colour(s.owner)}"></rect>`;
      if (s.replayed) g += `<rect class="hatch" x="${x0}" y="${y}" width="${x1 - x0}" height="${BAR}"></rect>`;
      // Retries: each failed attempt a red segment, ended by a tick where the retry began.
      for (const a of s.attempts) {
        const ax = x(ms(a.started_at)), ax1 = Math.max(x(ms(a.finished_at)), ax + 2);
        g += `<rect class="attempt" x="${ax}" y="${y + BAR - 4}" width="${ax1 - ax}" height="4"><title>${esc(a.error)}</title></rect>
          <line class="attempt-tick" x1="${ax1}" x2="${ax1}" y1="${y - 2}" y2="${y + BAR + 2}"></line>`;
      }
      let label = s.kind === "go" || s.kind === "after" ? ""
        : `${s.kind === "step" ? "" : s.kind + " "}${shortName(s.name === s.kind ? "" : s.name)}`;
      if (s.attempts.length) label += ` ×${s.attempts.length + 1} attempts`;
      if (s.wake_at && (s.kind === "sleep" || s.kind === "after")) {
        label = s.unfired ? `${s.kind} → never woke (the workflow ended first)`
          : `${s.kind} → ${s.future ? "wakes" : "woke"} ${s.wake_at.slice(11, 23)}`;
      }
      if (clipped) label += ` (in ${duration((end - nowMs) / 1000)}) ⇢`;
      // The label goes right of the bar if it fits before the next item, else inside the
      // bar if the bar is wide enough, else only in the tooltip.
      label = label.trim();
      const room = label.length * 6.2;
      const lx = x1 + 4 + room <= Math.min(limit, width - 4) ? x1 + 4 : x1 - x0 >= room + 8 ? x0 + 4 : null;
      if (label && lx !== null) {
        g += `<text class="bar-label" x="${lx}" y="${y + BAR - 3}">${esc(label)}</text>`;
      }
      return g + "</g>";
    }

    // A select (or as_completed yield): a diamond on the workflow's lane at its decision,
    // joined to each candidate's lane; the winner's connector is highlighted.
    function selectMark(w, s, i) {
      const at = s.finished_at ? ms(s.finished_at) : nowMs;
      const cx = x(at), cy = yOf(i) + ROW / 2;
      let g = "";
      s.candidates.forEach((c, k) => {
        const row = rowOf.get(`${w.workflow_id}/${c}`);
        if (row === undefined) return;
        const cls = k === s.winner ? "connector winner" : "connector";
        const ty = yOf(row) + ROW / 2;
        g += `<line class="${cls}" data-candidate="${esc(c)}" x1="${cx}" x2="${cx}" y1="${cy}" y2="${ty}"></line>`;
        if (k === s.winner) g += `<circle class="winner-dot" cx="${cx}" cy="${ty}" r="3.5"></circle>`;
      });
      const timedOut = s.winner === -1 ? " timed-out" : "";
      const wonStep = s.winner >= 0 ? s.candidates[s.winner] : null;
      const title = `step ${s.step} · ${s.kind} over steps ${s.candidates.join(", ")}: ` +
        (s.winner === null ? "undecided" : s.winner === -1 ? "timed out" : `step ${wonStep} won`);
      overlay.push(`<g class="connectors" data-wf="${esc(w.workflow_id)}" data-step="${esc(s.step)}">${g}</g>`);
      return `<g class="select-mark step kind-${esc(s.kind)}${timedOut}${s.replayed ? " replayed" : ""}" data-wf="${esc(w.workflow_id)}" data-step="${esc(s.step)}" data-winner-step="${esc(wonStep ?? "")}">
        <title>${esc(title)}</title>
        <path d="M${cx} ${cy - 7} L${cx + 7} ${cy} L${cx} ${cy + 7} L${cx - 7} ${cy} Z"></path></g>`;
    }

    rows.forEach((r, i) => {
      const y = yOf(i);
      const indent = 8 + r.depth * 16;
      let lane = `<g class="lane lane-${r.type}" data-wf="${esc(r.wf.workflow_id)}"${r.step ? ` data-step="${r.step.step}"` : ""} data-depth="${r.depth}">
        <rect class="lane-bg" x="0" y="${y}" width="${width}" height="${ROW}"></rect>`;
      if (r.type === "workflow") {
        const toggle = r.depth > 0
          ? `<text class="toggle" data-toggle="${esc(r.wf.workflow_id)}" x="${indent - 12}" y="${y + 17}">${r.collapsed ? "▸" : "▾"}</text>` : "";
        lane += `${toggle}<text class="lane-label" x="${indent}" y="${y + 17}">${r.depth ? "child " : ""}${esc(r.wf.name)} <tspan class="muted">${esc(r.wf.workflow_id.slice(0, 28))}</tspan></text>`;
        const end = r.wf.status === "pending" || r.wf.status === "enqueued" ? nowMs : ms(r.wf.updated_at);
        const lx = x(ms(r.wf.created_at));
        lane += `<rect class="life status-${esc(r.wf.status)}" x="${lx}" y="${y + 3}" width="${Math.max(x(end) - lx, 2)}" height="${ROW - 6}" rx="3"><title>${esc(`${r.wf.name} ${r.wf.status}, ${duration(r.wf.duration)}`)}</title></rect>`;
        if (!r.collapsed) {
          const own = r.wf.steps.filter((s) => s.kind !== "go" && s.kind !== "after")
            .sort((a, b) => ms(a.started_at) - ms(b.started_at));
          own.forEach((s, k) => {
            const next = own.slice(k + 1).find((n) => !n.candidates);
            const limit = next ? x(ms(next.started_at)) - 4 : width;
            lane += s.candidates ? selectMark(r.wf, s, i) : bar(r.wf, s, i, limit);
          });
        }
      } else {
        const s = r.step;
        lane += `<text class="lane-label sub" x="${indent + 14}" y="${y + 17}">${esc(s.kind)} ${s.kind === "after" ? "" : esc(shortName(s.name))} · step ${s.step}</text>`;
        lane += bar(r.wf, s, i, width);
      }
      parts.push(lane + "</g>");
    });

    // Recoveries: between the last instant an earlier owner recorded and the first the next
    // owner did, another process took the workflow over and replayed what was recorded.
    (function recoveries(w) {
      const i = rows.findIndex((r) => r.type === "workflow" && r.wf === w);
      for (let k = 1; k < w.owners.length; k++) {
        const before = w.steps.filter((s) => w.owners.indexOf(s.owner) < k);
        const after = w.steps.filter((s) => s.owner === w.owners[k] && s.finished_at);
        if (!before.length || !after.length || i < 0) continue;
        const from = Math.max(...before.map((s) => ms(s.finished_at || s.started_at)));
        const to = Math.min(...after.map((s) => ms(s.finished_at)));
        const rx = x(from), rw = Math.max(x(to) - rx, 2);
        overlay.unshift(`<g class="recovery" data-wf="${esc(w.workflow_id)}" data-owner="${esc(w.owners[k])}">
          <rect x="${rx}" y="${yOf(i)}" width="${rw}" height="${ROW}"></rect>
          <title>${esc(`owner ${w.owners[k]} took this workflow over (a recovery); the steps recorded before were replayed`)}</title></g>`);
        const right = rx > LABEL + 90;
        overlay.push(`<text class="recovery-label" x="${right ? rx - 3 : rx + rw + 3}" y="${yOf(i) + 10}" font-size="10" text-anchor="${right ? "end" : "start"}" fill="#9a6700">↻ recovered</text>`);
      }
      w.children.forEach(recoveries);
    })(root);

    parts.push(...overlay);
    if (running(root)) {
      parts.push(`<line class="now-line" x1="${x(nowMs)}" x2="${x(nowMs)}" y1="${TOP - 6}" y2="${height}"><title>now</title></line>`);
    }
    return `<svg class="timeline" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${parts.join("")}</svg>`;
  }

  // Ticks at a round interval, labelled from the workflow's start.
  function axis(t0, t1, x, height, left, plot) {
    const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 3e4, 6e4, 3e5, 6e5,
      18e5, 36e5, 72e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];
    const step = steps.find((s) => (t1 - t0) / s <= Math.max(4, plot / 110)) || 6048e5;
    let g = `<g class="axis"><text x="${left}" y="12">${esc(new Date(t0).toISOString())}</text>`;
    for (let t = 0; t <= t1 - t0 + 1e-9; t += step) {
      const px = x(t0 + t);
      g += `<line x1="${px}" x2="${px}" y1="16" y2="${height}"></line><text x="${px + 2}" y="25">+${duration(t / 1000)}</text>`;
    }
    return g + "</g>";
  }

  // -- clicks ---------------------------------------------------------------------------

  function onTimelineClick(event) {
    const toggle = event.target.closest("[data-toggle]");
    if (toggle) {
      const id = toggle.dataset.toggle;
      if (state.collapsed.has(id)) state.collapsed.delete(id); else state.collapsed.add(id);
      showWorkflow(state.current);
      return;
    }
    const g = event.target.closest("g.step");
    if (!g) return;
    state.selected = { wf: g.dataset.wf, step: Number(g.dataset.step) };
    showStep(state.selected.wf, state.selected.step);
  }

  function showStep(wfId, number) {
    const wf = findWorkflow(state.current, wfId);
    const s = wf && wf.steps.find((x) => x.step === number);
    if (!s) return;
    for (const el of document.querySelectorAll("g.step.selected")) el.classList.remove("selected");
    const el = document.querySelector(`g.step[data-wf="${CSS.escape(wfId)}"][data-step="${number}"]`);
    if (el) el.classList.add("selected");
    const took = s.finished_at ? duration((ms(s.finished_at) - ms(s.started_at)) / 1000) : "still open";
    const child = s.child_id ? `<dt>child</dt><dd class="mono">${EXPORTED ? esc(s.child_id) : `<a href="#/wf/${encodeURIComponent(s.child_id)}">${esc(s.child_id)}</a>`}</dd>` : "";
    document.getElementById("details").innerHTML = `
      <h3>step ${s.step} · ${esc(s.kind)} ${esc(s.name)} ${s.replayed ? `<span class="muted">(replayed)</span>` : ""}</h3>
      <dl class="facts">
        <dt>workflow</dt><dd class="mono">${esc(wfId)}</dd>
        <dt>called at</dt><dd class="mono">${esc(s.site || "(not recorded)")}</dd>
        <dt>recorded by</dt><dd class="mono">${esc(s.owner || "(not recorded)")}</dd>
        <dt>started</dt><dd>${esc(s.started_at)}</dd>
        <dt>finished</dt><dd>${esc(s.finished_at || "open")} (${took})</dd>
        ${s.wake_at ? `<dt>wake-up</dt><dd>${esc(s.wake_at)}${s.future ? " (still to come)" : s.unfired ? " (never: the workflow ended first)" : ""}</dd>` : ""}
        ${s.candidates ? `<dt>candidates</dt><dd>steps ${s.candidates.join(", ")}; ${s.winner === -1 ? "the timeout won" : s.winner === null ? "undecided" : `step ${s.candidates[s.winner]} won`}</dd>` : ""}
        ${child}
        ${s.attempts.length ? `<dt>attempts</dt><dd>${s.attempts.map((a, i) => `#${i + 1} ${esc(a.started_at)}: <span class="status-failed">${esc(a.error)}</span>`).join("<br>")}<br>#${s.attempts.length + 1}: ${s.error ? "failed" : "succeeded"}</dd>` : ""}
        <dt>input</dt><dd class="muted">step arguments are not journaled (the workflow's inputs are above)</dd>
        ${s.error ? `<dt>error</dt><dd class="status-failed">${esc(s.error)}</dd>` : `<dt>output</dt><dd><pre>${json(s.output)}</pre></dd>`}
      </dl>
      ${s.traceback ? `<pre class="traceback">${esc(s.traceback)}</pre>` : ""}`;
  }

  window.addEventListener("hashchange", route);
  route();
})();

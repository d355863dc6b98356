// The board, live: follows /api/v1/events and updates the server-rendered page in place.
// No framework and no build step; no inline script (the Content-Security-Policy forbids it).
// Label values are untrusted: they only ever reach the page as text (textContent), never as HTML.
"use strict";

(function () {
  const body = document.body;
  const view = body.dataset.view;
  if (!view || typeof EventSource === "undefined") {
    return; // the server-rendered page stands on its own
  }
  const EVENTS = [
    "rollout_started", "rollback_started", "health_changed", "analysis_measured", "analysis_finished", "rollout_finished",
    "rollout_revised", "rollout_superseded", "deployment_changed", "deployment_removed", "deployment_returned",
    "deployment_gone",
  ];
  const environment = body.dataset.environment || "";
  const name = body.dataset.name || "";
  const live = document.getElementById("live");

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function age(seconds) {
    seconds = Math.max(0, seconds);
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds >= size) return Math.floor(seconds / size) + unit;
    }
    return Math.floor(seconds) + "s";
  }

  function size(value) {
    for (const [unit, scale] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]]) {
      if (value >= scale) return (value / scale).toFixed(1) + " " + unit;
    }
    return value.toFixed(0) + " B";
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function healthText(d) {
    if (d.removed) return "removed";
    const names = Object.keys(d.health_checks);
    if (names.length === 0) return "—";
    const failing = names.filter((check) => !d.health_checks[check]);
    return failing.length === 0 ? "healthy" : "failing: " + failing.join(", ");
  }

  // -- a rollout's analysis (as boardanalysis.py renders it)

  function figure(value) {
    if (value === null || value === undefined) return "—";
    return typeof value === "string" ? value : String(Number(value.toPrecision(6)));
  }

  function limits(check) {
    const said = ["min", "max"].filter((k) => check[k] !== null).map((k) => `${k} ${figure(check[k])}`);
    if (typeof check.max_increase === "number") said.push(`+${Math.round(check.max_increase * 100)}% over baseline`);
    return said.join(", ") || "—";
  }

  function analysisState(a) {
    if (a.status !== "running") return "analysis " + a.status;
    if (a.ends_at === null) return "analysis waits for the containers";
    return "analysing, " + age(a.ends_at - Date.now() / 1000) + " left";
  }

  function analysisSpan(a) {
    const span = el("span", analysisState(a), "analysis analysis-" + a.status);
    if (a.status === "running" && a.ends_at) span.dataset.until = String(a.ends_at);
    return span;
  }

  function brief(check) {
    const m = check.measurements;
    return `${check.name} ${figure(check.baseline)} → ${figure(check.current)} (pass ${m.pass}, fail ${m.fail})`;
  }

  function fillAnalysis(a) {
    const section = document.getElementById("analysis");
    if (!section) return;
    const heading = el("h3", "Analysis");
    if (!a) return section.replaceChildren(heading, el("p", "none for this rollout", "quiet"));
    const head = el("p");
    head.append(analysisSpan(a), " ", el("small", `${a.mode} mode, failures ${a.failures} of ${a.failure_limit}` +
      (a.rollback_done ? ", rollback asked" : "")), el("span", a.reason ? " — " + a.reason : "", "reason"));
    const table = el("table");
    table.id = "analysis-checks";
    const heads = el("tr");
    for (const title of ["Check", "Query", "Baseline", "Current", "Limits", "Pass", "Fail", "No data", "Error",
      "Last"]) heads.append(el("th", title));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(heads);
    for (const c of a.checks) {
      const row = el("tr");
      row.dataset.check = c.name;
      const query = el("td");
      query.append(el("code", c.query));
      row.append(el("td", c.name), query, el("td", figure(c.baseline)), el("td", figure(c.current)),
        el("td", limits(c)), ...["pass", "fail", "nodata", "error"].map((r) => el("td", c.measurements[r])),
        el("td", c.last || "—"));
      table.tBodies[0].append(row);
    }
    section.replaceChildren(heading, head, table);
  }

  function detailHref(d) {
    return "deployment?" + new URLSearchParams({ environment: d.environment, name: d.name });
  }

  function setLive(text, on) {
    live.textContent = text;
    live.classList.toggle("on", on);
  }

  // -- the table of deployments

  function sameKey(row, d) {
    return row.dataset.name === d.name && row.dataset.environment === d.environment;
  }

  function healthClass(d) {
    return "health health-" + (d.removed ? "removed" : d.healthy ? "ok" : "bad");
  }

  function renderRow(d) {
    const row = el("tr", undefined, d.removed ? "removed" : undefined);
    row.dataset.name = d.name;
    row.dataset.environment = d.environment;
    row.dataset.status = statusOf(d);
    row.dataset.started = String(d.started_at);
    const link = el("a", d.name);
    link.href = detailHref(d);
    link.title = d.name;
    const first = el("td", undefined, "name");
    first.append(link);
    const env = el("td", d.environment);
    env.title = d.environment;
    const status = el("td", d.status.replace("_", " "), "status status-" + d.status);
    if (d.rollback) status.append(" ", el("span", "rollback", "tag"));
    if (d.status === "failed" && d.reason) {
      const reason = el("div", d.reason, "reason");
      reason.title = d.reason;
      status.append(reason);
    }
    if (d.analysis) {
      const state = el("div");
      state.append(analysisSpan(d.analysis));
      status.append(state, ...d.analysis.checks.map((check) => el("div", brief(check), "check-brief")));
    }
    const version = el("td", d.version);
    version.title = d.commit;
    const started = el("td", age(Date.now() / 1000 - d.started_at));
    started.dataset.since = String(d.started_at);
    started.title = when(d.started_at);
    row.append(
      first, env, status, version, el("td", d.revision), started,
      el("td", healthText(d), healthClass(d)),
      el("td", d.cpu_seconds.toFixed(1) + " s"), el("td", size(d.memory_bytes)),
      el("td", d.last_versions.join(", ")),
    );
    return row;
  }

  const STATUSES = ["failed", "in_progress", "success", "removed"]; // what needs attention first
  const wanted = body.dataset.status || "";
  const byName = body.dataset.order === "name";
  const pageRows = Number(body.dataset.rows || "100");
  const firstPage = (body.dataset.page || "1") === "1";

  function statusOf(d) {
    return d.removed ? "removed" : d.status;
  }

  function before(a, b) {
    // The server's order (boardparts.ordered): by name then environment (code points, like Python's
    // sort), or by status (failed first), the most recent first within one.
    if (!byName && a.status !== b.status) return STATUSES.indexOf(a.status) < STATUSES.indexOf(b.status);
    if (!byName && a.started !== b.started) return a.started > b.started;
    if (a.name !== b.name) return a.name < b.name;
    return a.environment < b.environment;
  }

  function sortKey(row) {
    const data = row.dataset;
    return { name: data.name, environment: data.environment, status: data.status, started: Number(data.started) };
  }

  function upsert(tbody, d) {
    const rows = Array.from(tbody.rows);
    const old = rows.find((row) => sameKey(row, d));
    if (old) old.remove();
    if (wanted && statusOf(d) !== wanted) return; // filtered out (now)
    const key = { name: d.name, environment: d.environment, status: statusOf(d), started: d.started_at };
    const next = rows.find((r) => r !== old && before(key, sortKey(r)));
    if (!next && rows.length >= pageRows && !old) return; // on a later page
    if (!next && !firstPage && !old) return;
    const row = renderRow(d);
    row.classList.add("changed");
    tbody.insertBefore(row, next || null);
    while (tbody.rows.length > pageRows) tbody.rows[tbody.rows.length - 1].remove();
  }

  function remove(tbody, key) {
    const old = Array.from(tbody.rows).find((row) => sameKey(row, key));
    if (old) old.remove();
  }

  function showEmpty(tbody) {
    document.getElementById("empty").hidden = tbody.rows.length > 0;
  }

  function onBoardEvent(payload) {
    if (environment && payload.environment !== environment) return;
    const tbody = document.querySelector("#deployments tbody");
    if (payload.deployment) upsert(tbody, payload.deployment);
    else remove(tbody, payload);
    showEmpty(tbody);
    addEnvironment(payload.environment);
    refreshSoon();
  }

  function addEnvironment(env) {
    const select = document.querySelector("select[name=environment]");
    if (!select || Array.from(select.options).some((option) => option.value === env)) return;
    select.append(new Option(env, env));
  }

  // The counts, the order over all pages and the watcher's health come from the server: the page itself
  // is fetched again (a second after the last event, at most every 5 s) and its parts swapped in. The
  // server escaped every value; DOMParser runs no script.
  let refreshTimer = null;
  let refreshDue = 0;

  function refreshSoon() {
    const now = Date.now();
    if (refreshTimer === null) refreshDue = now + 5000;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      reloadPage();
    }, Math.max(0, Math.min(1000, refreshDue - now)));
  }

  async function reloadPage() {
    let answer;
    try {
      answer = await fetch(location.href, { headers: { Accept: "text/html" } });
    } catch (error) {
      return; // the next event or tick tries again
    }
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const selector of ["#summary", "#deployments tbody", "#timeline tbody", "#revisions tbody", ".pager"]) {
      const mine = document.querySelector(selector);
      const theirs = fresh.querySelector(selector);
      if (mine && theirs) mine.replaceWith(document.adoptNode(theirs));
    }
    const tbody = document.querySelector("#deployments tbody, #timeline tbody");
    if (tbody) showEmpty(tbody);
  }

  const reloadBoard = reloadPage;

  // -- one deployment in detail

  function describe(payload) {
    switch (payload.event) {
      case "rollout_started": return `revision ${payload.revision} (${payload.version}) started`;
      case "rollback_started": return `rollback to ${payload.version} started (revision ${payload.revision})`;
      case "rollout_finished":
        return `revision ${payload.revision} (${payload.version}) ${payload.status}` +
          (payload.reason ? ": " + payload.reason : "");
      case "rollout_revised":
        return `revision ${payload.revision} (${payload.version}) revised to ${payload.status}` +
          (payload.reason ? ": " + payload.reason : "");
      case "rollout_superseded": return `revision ${payload.revision} (${payload.version}) superseded`;
      case "health_changed": return `container ${payload.instance.slice(0, 12)} ${payload.health}`;
      case "analysis_measured":
        return (payload.of_baseline ? `baseline of ${payload.check}: ` : `${payload.check}: `) +
          (payload.value === null ? "no data" : figure(payload.value)) +
          (payload.of_baseline ? "" : " " + payload.result) + (payload.reason ? ` (${payload.reason})` : "");
      case "analysis_finished":
        return `${payload.mode} analysis of revision ${payload.revision} (${payload.version}) ${payload.outcome}` +
          (payload.reason ? ": " + payload.reason : "") + (payload.rollback ? "; rolling back" : "");
      case "deployment_changed":
        return `revision ${payload.revision} (${payload.version}): ${payload.running} of ${payload.current} ` +
          "containers running, " + (payload.failing.length ? "failing: " + payload.failing.join(", ") : "healthy");
      case "deployment_removed": return `removed: ${payload.reason}`;
      case "deployment_returned": return `back at revision ${payload.revision} (${payload.version})`;
      case "deployment_gone": return `gone: ${payload.reason}`;
      default: return payload.event;
    }
  }

  function fillFacts(d) {
    const values = {
      status: d.status.replace("_", " ") + (d.rollback ? " (rollback)" : ""),
      reason: d.reason || "—",
      version: d.version,
      commit: d.commit || "—",
      image: d.image || "—",
      revision: d.revision,
      judge: d.judge.replace("_", " "),
      started_at: when(d.started_at),
      finished_at: when(d.finished_at),
      duration_seconds: d.duration_seconds === null ? "—" : d.duration_seconds.toFixed(1) + " s",
      health: healthText(d),
      cpu_seconds: d.cpu_seconds.toFixed(1) + " s",
      memory_bytes: size(d.memory_bytes),
      rollbacks: d.rollbacks,
    };
    for (const dd of document.querySelectorAll("#facts dd[data-field]")) {
      const value = values[dd.dataset.field];
      if (value !== undefined) dd.textContent = String(value);
    }
    const status = document.querySelector("#facts dd[data-field=status]");
    if (status) status.className = "status status-" + d.status;
  }

  function fillTables(detail) {
    const checks = document.getElementById("checks");
    const items = Object.entries(detail.health_checks).map(([check, ok]) =>
      el("li", `${check}: ${ok ? "passes" : "fails"}`, ok ? "health-ok" : "health-bad"));
    checks.replaceChildren(...(items.length ? items : [el("li", "none (no container of it seen)")]));
    document.querySelector("#members tbody").replaceChildren(...detail.members.map((m) => {
      const row = el("tr");
      const id = el("td");
      id.append(el("code", m.id.slice(0, 12)));
      row.append(id, el("td", m.version), el("td", m.current ? "yes" : "no"),
        el("td", m.running ? "running" : "stopped"), el("td", m.health),
        el("td", m.exit_code === null ? "—" : m.exit_code), el("td", m.restart_count),
        el("td", m.cpu_seconds.toFixed(1) + " s"), el("td", size(m.memory_bytes)));
      return row;
    }));
    document.querySelector("#revisions tbody").replaceChildren(...detail.revisions.map(revisionRow));
  }

  // -- rollouts: a deployment's revisions, the timeline across deployments (boardtimeline.py's rows)

  const VERDICTS = { in_progress: "in progress", success: "success", failed: "failed", unknown: "—" };

  function duration(seconds) {
    return seconds === null || seconds === undefined ? "—" : seconds.toFixed(1) + " s";
  }

  function verdictCell(item) {
    const cell = el("td", VERDICTS[item.status] || item.status, "status status-" + item.status);
    if (item.rollback) cell.append(" ", el("span", "rollback", "tag"));
    return cell;
  }

  function change(item) {
    return item.previous_version ? `${item.previous_version} → ${item.version}` : item.version;
  }

  function revisionRow(item) {
    const row = el("tr");
    row.dataset.revision = String(item.revision);
    const commit = el("td");
    commit.append(el("code", item.commit || "—"));
    const analysis = item.analysis || "—"; // the analysis's outcome; its figures are in the reason
    row.append(el("td", item.revision), el("td", change(item)), commit, verdictCell(item), el("td", item.reason || "—"),
      el("td", String(item.judge).replace("_", " ")), el("td", when(item.started_at)),
      el("td", duration(item.duration_seconds)), el("td", analysis));
    return row;
  }

  const TIMELINE_ROWS = 500; // as many as the server lists: the page keeps no more, however long it runs

  function timelineRow(item) {
    const row = el("tr");
    row.dataset.name = item.deployment;
    row.dataset.environment = item.environment;
    row.dataset.revision = String(item.revision);
    const time = el("td");
    time.append(el("time", when(item.started_at)));
    const link = el("a", item.deployment);
    link.href = detailHref({ name: item.deployment, environment: item.environment });
    link.title = item.deployment;
    const name = el("td");
    name.append(link);
    row.append(time, name, el("td", item.environment), el("td", change(item)), verdictCell(item),
      el("td", item.reason, "reason"), el("td", duration(item.duration_seconds)));
    return row;
  }

  const timelineItems = new Map(); // what the script drew: key → item (bounded like the rows)

  function itemKey(item) {
    return JSON.stringify([item.deployment, item.environment, item.revision]);
  }

  function onTimelineEvent(payload) {
    const tbody = document.querySelector("#timeline tbody");
    const d = payload.deployment;
    const key = itemKey({ deployment: payload.name, environment: payload.environment, revision: payload.revision });
    let item = timelineItems.get(key);
    if (payload.event === "rollout_started" || payload.event === "rollback_started") {
      const versions = d ? d.last_versions.filter((v) => v !== payload.version) : [];
      item = { deployment: payload.name, environment: payload.environment, revision: payload.revision,
        version: payload.version, previous_version: versions.length ? versions[0] : null, commit: payload.commit,
        status: "in_progress", reason: "", judge: payload.judge, started_at: d ? d.started_at : payload.at,
        finished_at: null, duration_seconds: null, rollback: payload.rollback, analysis: null };
    } else if (["rollout_finished", "rollout_revised"].includes(payload.event)) {
      const old = Array.from(tbody.rows).find((row) => row.dataset.name === payload.name &&
        row.dataset.environment === payload.environment && row.dataset.revision === String(payload.revision));
      if (!item && !old) return; // older than the span shown
      if (!item) { // a row the server drew: its verdict, reason and duration change in place
        old.querySelector("td.status").replaceWith(verdictCell({ status: payload.status, rollback: !!old.querySelector("td.status .tag") }));
        old.querySelector("td.reason").textContent = payload.reason || "";
        if (payload.duration_seconds !== undefined) old.cells[6].textContent = duration(payload.duration_seconds);
        return;
      }
      item = { ...item, status: payload.status, reason: payload.reason || "",
        duration_seconds: payload.duration_seconds === undefined ? item.duration_seconds : payload.duration_seconds };
    } else {
      return;
    }
    timelineItems.delete(key);
    timelineItems.set(key, item);
    const old = Array.from(tbody.rows).find((row) => row.dataset.name === item.deployment &&
      row.dataset.environment === item.environment && row.dataset.revision === String(item.revision));
    const row = timelineRow(item);
    row.classList.add("changed");
    if (old) old.replaceWith(row);
    else tbody.prepend(row);
    while (tbody.rows.length > TIMELINE_ROWS) tbody.rows[tbody.rows.length - 1].remove();
    while (timelineItems.size > TIMELINE_ROWS) timelineItems.delete(timelineItems.keys().next().value);
    document.getElementById("empty").hidden = true;
  }

  async function reloadTimeline() {
    // The feed of the JSON API; should it fail, the page as the server renders it.
    const query = new URLSearchParams({ since: body.dataset.since || "0", limit: String(TIMELINE_ROWS) });
    const answer = await fetch("api/v1/rollouts?" + query, { headers: { Accept: "application/json" } })
      .catch(() => null);
    if (!answer || !answer.ok) return reloadPage();
    const feed = await answer.json();
    timelineItems.clear();
    document.querySelector("#timeline tbody").replaceChildren(...feed.rollouts.map(timelineRow));
    document.getElementById("empty").hidden = feed.rollouts.length > 0;
  }

  async function reloadDetail() {
    const path = "api/v1/deployments/" + encodeURIComponent(environment) + "/" + encodeURIComponent(name);
    const answer = await fetch(path, { headers: { Accept: "application/json" } });
    if (!answer.ok) return;
    const detail = await answer.json();
    fillFacts(detail);
    fillTables(detail);
    fillAnalysis(detail.analysis);
  }

  function onDetailEvent(payload) {
    const events = document.getElementById("events");
    const quiet = events.querySelector(".quiet");
    if (quiet) quiet.remove();
    const item = el("li");
    item.append(el("time", when(payload.at)), " ", el("strong", payload.event.replace(/_/g, " ")),
      " ", el("span", describe(payload)));
    events.prepend(item);
    if (payload.deployment) {
      fillFacts(payload.deployment);
      fillAnalysis(payload.deployment.analysis);
      reloadDetail();
    }
  }

  // -- the stream

  const STREAM_RETRY_MS = 10000; // the stream's Retry-After when it refuses a client

  function connect() {
    const query = new URLSearchParams();
    if (environment) query.set("environment", environment);
    if (view === "detail") query.set("name", name);
    // Events between the page's rendering and this connection are replayed from there.
    if (body.dataset.lastEventId) query.set("last_event_id", body.dataset.lastEventId);
    const source = new EventSource("api/v1/events?" + query);
    source.onopen = () => setLive("live", true);
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return setLive("reconnecting…", false);
      // An answer other than the stream (503: the watcher has as many stream clients as it takes) ends
      // an EventSource for good: try again after the watcher's Retry-After, from the last event seen.
      setLive("stream full, retrying…", false);
      setTimeout(connect, STREAM_RETRY_MS);
    };
    const handle = { detail: onDetailEvent, timeline: onTimelineEvent }[view] || onBoardEvent;
    const reload = { detail: reloadDetail, timeline: reloadTimeline }[view] || reloadBoard;
    for (const kind of EVENTS) {
      source.addEventListener(kind, (message) => {
        body.dataset.lastEventId = message.lastEventId; // where a new connection goes on from
        handle(JSON.parse(message.data));
      });
    }
    source.addEventListener("resync", () => reload());
  }

  setInterval(() => {
    for (const cell of document.querySelectorAll("td[data-since]")) {
      cell.textContent = age(Date.now() / 1000 - Number(cell.dataset.since));
    }
    for (const span of document.querySelectorAll("span[data-until]")) {
      span.textContent = "analysing, " + age(Number(span.dataset.until) - Date.now() / 1000) + " left";
    }
  }, 5000);
  // CPU and memory change with every stats poll, which is no event: re-read them now and then.
  setInterval(() => {
    if (document.visibilityState !== "visible") return;
    if (view === "detail") reloadDetail();
    else if (view === "board") reloadBoard();
  }, 30000);
  connect();
})();

// deployd dashboard: reads the JSON API, follows GET /events, and redraws without reload.
// Routes: #/ is every repo and environment, #/OWNER/REPO is one repo.
"use strict";

const main = document.getElementById("main");
const live = document.getElementById("live");
const forget = document.getElementById("forget");
const tokenKey = "deployd-token";

// --- the API -----------------------------------------------------------------

class NeedsToken extends Error {}

function headers() {
  const t = sessionStorage.getItem(tokenKey);
  return t ? { Authorization: "Bearer " + t } : {};
}

async function api(path) {
  const res = await fetch(path, { headers: headers(), cache: "no-store" });
  if (res.status === 401) throw new NeedsToken();
  if (!res.ok) {
    let detail = "";
    try { detail = (await res.json()).detail || ""; } catch (e) { /* not a problem document */ }
    throw new Error(path + ": " + res.status + (detail ? ": " + detail : ""));
  }
  return res.json();
}

function repoPath(name) {
  const [owner, repo] = name.split("/");
  return "/deployment/" + encodeURIComponent(owner) + "/" + encodeURIComponent(repo);
}

// --- small DOM helpers (text is always set as text, never parsed as HTML) -----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const tone = {
  succeeded: "ok", Current: "ok",
  queued: "warn", applying: "warn", waiting: "warn", InProgress: "warn", Terminating: "warn",
  failed: "bad", error: "bad", Failed: "bad", NotFound: "bad", blocked: "bad",
};

function badge(text) {
  return h("span", { class: "badge " + (tone[text] || "idle") }, text);
}

function short(sha) { return sha ? sha.slice(0, 7) : ""; }

// githubCommit links a commit on GitHub when the repo's URL is GitHub's.
function githubCommit(url, sha) {
  const m = /^(?:https?:\/\/|ssh:\/\/git@|git@)github\.com[:/]([^/]+)\/([^/]+?)(?:\.git)?\/?$/.exec(url || "");
  return m ? "https://github.com/" + m[1] + "/" + m[2] + "/commit/" + sha : null;
}

function commit(url, sha, title) {
  if (!sha) return h("span", { class: "muted" }, "none yet");
  const code = h("code", { "data-sha": sha }, short(sha));
  const link = githubCommit(url, sha);
  return link ? h("a", { href: link, title: title || sha, rel: "noopener" }, code) : h("span", { title: title || sha }, code);
}

function ago(t) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}

function when(t) {
  if (!t) return h("span", { class: "muted" }, "–");
  return h("time", { datetime: t, title: new Date(t).toLocaleString(), "data-ago": "" }, ago(t));
}

function duration(r) {
  const end = r.ended ? Date.parse(r.ended) : Date.now();
  const s = Math.max(0, Math.round((end - Date.parse(r.started)) / 1000));
  const text = s < 60 ? s + "s" : Math.floor(s / 60) + "m " + (s % 60) + "s";
  return r.ended ? text : "running, " + text;
}

// workloads draws a ready bar per workload; named says whether to name each one.
function workloads(objects, named) {
  const ws = (objects || []).filter((o) => o.replicas);
  if (!ws.length) return h("span", { class: "muted" }, "–");
  return h("ul", { class: "workloads" }, ws.map((o) => {
    const r = o.replicas;
    return h("li", { class: "workload" },
      named ? h("span", {}, o.kind + " " + o.name) : null,
      h("meter", { min: 0, max: Math.max(r.desired, 1), value: r.available, low: Math.max(r.desired, 1) - 0.5, optimum: r.desired,
        "aria-label": o.name + ": " + r.available + " of " + r.desired + " ready" }),
      h("span", {}, r.available + "/" + r.desired + " ready"));
  }));
}

// td is a cell that says what it holds, for the phone layout where rows become cards.
function td(label, ...children) { return h("td", { "data-label": label }, h("div", {}, ...children)); }

// --- views -------------------------------------------------------------------

function envAge(e) {
  const cur = e.current;
  return cur ? when(cur.ended || cur.started) : when(null);
}

function commitCell(url, e) {
  const cur = e.current;
  const cell = [commit(url, e.deployedCommit)];
  if (cur && cur.commit.sha !== e.deployedCommit) {
    cell.push(h("span", { class: "next" }, "→ ", commit(url, cur.commit.sha, cur.commit.message), " " + cur.phase));
  }
  const p = e.promotion;
  if (p && p.waitingCommit) {
    cell.push(h("span", { class: "next", "data-promotion": "", title: p.reason || "" },
      "waiting for promotion from " + p.from + ": ", commit(url, p.waitingCommit), p.ready ? " (ready)" : ""));
  }
  return cell;
}

function phaseCell(e) {
  return [badge(e.phase), e.paused ? h("span", { class: "next warn" }, "paused" + (e.pauseReason ? ": " + e.pauseReason : "")) : null,
    e.inSync === false ? h("span", { class: "next warn", "data-drift": "" }, "out of sync" + (e.driftReason ? ": " + e.driftReason : "")) : null,
    e.checkError ? h("span", { class: "next error" }, "check failed: " + e.checkError) : null];
}

// driftNote says how an object drifted from what deployd applied, or nothing.
function driftNote(o) {
  if (!o.drift) return null;
  const what = o.drift.deleted ? "deleted" :
    "drifted: " + o.drift.fields.map((f) => f.path + (f.manager ? " by " + f.manager : "")).join(", ");
  return h("span", { class: "next warn", "data-drift": "" }, what);
}

// The overview keeps each repo's answer, so an event costs one request for its repo,
// not one per repo; a repo it does not know yet (a config reload) reloads them all.
const repos = new Map();
const stale = new Set();
let reloadAll = true;

async function loadRepos() {
  try {
    if (reloadAll) {
      reloadAll = false;
      stale.clear();
      const list = (await api("/deployments")).deployments;
      const names = [...new Set(list.map((d) => d.repo))];
      const answers = await Promise.all(names.map((n) => api(repoPath(n))));
      repos.clear();
      for (const r of answers) repos.set(r.repo, r);
      return;
    }
    const names = [...stale];
    stale.clear();
    const answers = await Promise.all(names.map((n) => api(repoPath(n))));
    for (const r of answers) repos.set(r.repo, r);
  } catch (e) {
    reloadAll = true;
    throw e;
  }
}

async function overview() {
  await loadRepos();
  const rows = [];
  for (const r of repos.values()) {
    for (const e of r.environments) {
      rows.push(h("tr", { "data-repo": r.repo, "data-env": e.environment },
        td("Repo", h("a", { href: "#/" + r.repo }, r.repo)),
        td("Environment", e.environment, h("span", { class: "next muted" }, e.namespace)),
        td("Phase", phaseCell(e)),
        td("Rollout", badge(e.rollout)),
        td("Commit", commitCell(r.url, e)),
        td("Age", envAge(e)),
        td("Workloads", workloads(e.objects, true))));
    }
  }
  return [
    h("h1", {}, "Deployments"),
    rows.length ? h("table", {},
      h("caption", {}, rows.length + " repo environment(s), updated live"),
      h("thead", {}, h("tr", {}, ["Repo", "Environment", "Phase", "Rollout", "Deployed commit", "Age", "Workloads"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)) : h("p", {}, "No repos in deployd's config yet."),
  ];
}

async function repoView(name) {
  const r = await api(repoPath(name));
  const histories = await Promise.all(r.environments.map((e) =>
    api(repoPath(name) + "/history?perPage=20&environment=" + encodeURIComponent(e.environment))));
  return [
    h("p", {}, h("a", { href: "#/" }, "← All deployments")),
    h("h1", {}, r.repo),
    h("p", { class: "muted" }, "from ", h("code", {}, r.url), " · ",
      h("a", { href: repoPath(name) + "/previews" }, "pull request previews")),
    r.environments.map((e, i) => h("section", { class: "panel", "aria-labelledby": "env-" + i, "data-env": e.environment },
      h("h2", { id: "env-" + i }, e.environment),
      h("dl", { class: "facts" },
        h("dt", {}, "Phase"), h("dd", {}, phaseCell(e)),
        h("dt", {}, "Rollout"), h("dd", {}, badge(e.rollout)),
        h("dt", {}, "Deployed commit"), h("dd", {}, commitCell(r.url, e)),
        h("dt", {}, "Namespace"), h("dd", {}, h("code", {}, e.namespace)),
        h("dt", {}, "Source"), h("dd", {}, h("code", {}, e.branch + ":" + e.path)),
        e.current && e.current.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, e.current.error)] : null),
      h("h3", {}, "Objects"),
      e.objects.length ? h("table", {},
        h("thead", {}, h("tr", {}, ["Kind", "Name", "Status", "Ready", "Message", "Since"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, e.objects.map((o) => h("tr", {},
          td("Kind", o.kind), td("Name", o.name), td("Status", badge(o.status)),
          td("Ready", o.replicas ? workloads([o], false) : "–"), td("Message", h("span", { class: "msg" }, o.message || ""), driftNote(o)),
          td("Since", when(o.changed)))))) : h("p", { class: "muted" }, "Nothing applied yet."),
      h("h3", {}, "History"),
      h("table", {},
        h("caption", {}, histories[i].total + " deployment(s) kept; the newest " + histories[i].records.length + " shown"),
        h("thead", {}, h("tr", {}, ["Deployment", "Commit", "Trigger", "Phase", "Started", "Duration"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, histories[i].records.map((rec) => h("tr", {},
          td("Deployment", rec.name),
          td("Commit", commit(r.url, rec.commit.sha, rec.commit.message), rec.commit.message ? h("span", { class: "next muted" }, rec.commit.message) : null),
          td("Trigger", rec.trigger),
          td("Phase", badge(rec.phase), rec.error ? h("span", { class: "next error" }, rec.error) : null),
          td("Started", when(rec.started)),
          td("Duration", duration(rec)))))))),
  ];
}

function tokenForm(message) {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true });
  const form = h("form", { class: "panel" },
    h("h1", {}, "This deployd needs a token"),
    h("p", {}, message),
    h("p", {}, h("label", { for: "token" }, "API token "), input, " ", h("button", { type: "submit" }, "Show deployments")),
    h("p", { class: "muted" }, "The token is the one in deployd's --api-token-file. It stays in this browser tab (sessionStorage) and is sent only to this deployd."));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(tokenKey, input.value.trim());
    restartStream();
  });
  return [form];
}

// --- rendering ---------------------------------------------------------------

let renders = 0;

// render draws the current route; a newer render wins over a slower older one.
async function render() {
  const n = ++renders;
  forget.hidden = !sessionStorage.getItem(tokenKey);
  const route = location.hash.replace(/^#\/?/, "");
  let nodes;
  try {
    nodes = route.split("/").length === 2 ? await repoView(decodeURIComponent(route)) : await overview();
    document.title = route ? route + " · deployd" : "deployd";
  } catch (e) {
    if (e instanceof NeedsToken) {
      const had = sessionStorage.getItem(tokenKey);
      nodes = tokenForm(had ? "The token given was refused. Paste the right one." : "deployd runs with --api-read-auth: its API answers only with the token.");
    } else {
      nodes = [h("h1", {}, "Could not read deployd's API"), h("p", { class: "error" }, e.message)];
    }
  }
  if (n !== renders) return;
  // Keep keyboard focus on the same link or field across a live redraw.
  const active = document.activeElement;
  const key = active && main.contains(active) ? active.getAttribute("href") || active.id : null;
  main.replaceChildren(...nodes.flat());
  if (key) {
    const again = [...main.querySelectorAll("a[href], [id]")].find((el) => el.getAttribute("href") === key || el.id === key);
    if (again) again.focus();
  }
}

let pending = null;

// refresh coalesces bursts of events into one redraw.
function refresh() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; render(); }, 50);
}

// --- the event stream (fetch, not EventSource, so it can send the token) ---

let stream = null;

function setLive(text) { if (live.textContent !== text) live.textContent = text; }

function dispatch(block) {
  let event = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (event !== "deployment" && event !== "object") return;
  const ev = JSON.parse(data);
  const route = location.hash.replace(/^#\/?/, "");
  if (!route) {
    if (repos.has(ev.repo)) stale.add(ev.repo);
    else reloadAll = true;
    refresh();
  } else if (decodeURIComponent(route).toLowerCase() === ev.repo.toLowerCase()) {
    refresh();
  }
}

async function follow() {
  let delay = 1000;
  for (;;) {
    const ctl = new AbortController();
    stream = ctl;
    try {
      const res = await fetch("/events", { headers: headers(), cache: "no-store", signal: ctl.signal });
      if (res.status === 401) {
        setLive("Not connected: the API needs a token");
        await render();
        await new Promise((resolve) => ctl.signal.addEventListener("abort", resolve)); // until a token is given
        continue;
      }
      if (!res.ok || !res.body) throw new Error("status " + res.status);
      delay = 1000;
      setLive("Live: following deployd's events");
      reloadAll = true;
      render(); // the stream is open, so no change after this read is missed
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          dispatch(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) continue; // restarted on purpose, e.g. with a new token
    }
    setLive("Disconnected: reconnecting in " + delay / 1000 + "s");
    render(); // what can still be read, or why not
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function restartStream() {
  if (stream) stream.abort();
}

forget.addEventListener("click", () => {
  sessionStorage.removeItem(tokenKey);
  restartStream();
});

window.addEventListener("hashchange", () => {
  reloadAll = true;
  render().then(() => main.focus());
});

// Ages tick without asking the server.
setInterval(() => {
  for (const t of document.querySelectorAll("time[data-ago]")) t.textContent = ago(t.getAttribute("datetime"));
}, 10000);

follow();

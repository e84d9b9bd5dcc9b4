// p2pnet's live page: polls the Maestro's /peers and /directory (same origin), draws the peers
// and their friend links, lists the directory, and searches through /ui/search.
// Plain DOM, no libraries, nothing loaded from elsewhere. Every text a peer sent goes through
// textContent, never innerHTML.
"use strict";

const POLL_MS = 1000; // peers and liveness
const DIRECTORY_EVERY = 5; // the directory every 5th poll, or at once when the peers' files changed
const MAX_ROWS = 500; // directory rows drawn (the filter narrows the rest)
const DIRECTORY_PAGE = 5000; // files per /directory request (the Maestro's largest page)
const MAX_FILES = 50000; // files the page holds at most (the count says when there are more)
const SVG_NS = "http://www.w3.org/2000/svg";

// read: members networks: open the page as /ui#token=TOKEN; the token stays in the fragment
// (never sent in a URL) and goes out as a Bearer header to the Maestro only.
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");

const state = {
  peers: [],
  files: [],
  totalFiles: 0,
  tick: 0,
  peersKey: "",
  mapKey: "",
  directoryKey: "",
  downSince: null,
  search: null, // {reached: Set, holders: Set}
};

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

class ApiError extends Error {
  constructor(status, name, detail) {
    super(detail);
    this.status = status;
    this.errorName = name;
  }
}

async function api(path) {
  const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
  const resp = await fetch(path, { headers, cache: "no-store" });
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    body = null;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, body && body.error, (body && body.detail) || resp.statusText);
  }
  return body;
}

const byName = (a, b) => a.name.localeCompare(b.name, undefined, { numeric: true });

function fmtAge(seconds) {
  if (seconds === undefined || seconds === null) return "?";
  if (seconds < 1) return "just now";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function safeHref(url) {
  return /^https?:\/\//.test(url || "") ? url : null;
}

// ---- status line ---------------------------------------------------------------------------

function setStatus(kind, text) {
  const el = $("status");
  el.dataset.state = kind;
  el.textContent = text;
  document.body.classList.toggle("stale", kind !== "ok");
}

function reportFailure(err) {
  if (err instanceof ApiError && err.status === 401) {
    setStatus(
      "unauthorized",
      "This network lets only its members read. Open the page as /ui#token=TOKEN " +
        "(python launcher.py token prints the operator's token).",
    );
    return;
  }
  state.downSince = state.downSince || new Date();
  const since = state.downSince.toLocaleTimeString();
  const why = err instanceof ApiError ? `it answered ${err.status}: ${err.message}` : "it does not answer";
  setStatus(
    "down",
    `The Maestro at ${location.host} is unreachable since ${since} (${why}). ` +
      "The page shows the last state it saw and keeps trying; check with: python launcher.py status",
  );
}

// ---- the map -------------------------------------------------------------------------------

function layout(peers) {
  const n = peers.length;
  const radius = n <= 12 ? 26 : Math.max(7, 26 * Math.sqrt(12 / n));
  const ring = n === 1 ? 0 : 300 - 40 - radius * 2;
  const pos = new Map();
  peers.forEach((p, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    pos.set(p.name, { x: 300 + ring * Math.cos(a), y: 300 + ring * Math.sin(a), r: radius });
  });
  return pos;
}

function linkPath(a, b) {
  // A curve bending to its right, so A->B and B->A stay apart; ends stop at the circles.
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const len = Math.hypot(dx, dy) || 1;
  const ux = dx / len;
  const uy = dy / len;
  const bend = Math.min(40, len / 5);
  const cx = (a.x + b.x) / 2 - uy * bend;
  const cy = (a.y + b.y) / 2 + ux * bend;
  const start = toward(a, cx, cy, a.r + 2);
  const end = toward(b, cx, cy, b.r + 6);
  return `M${start.x.toFixed(1)},${start.y.toFixed(1)} Q${cx.toFixed(1)},${cy.toFixed(1)} ${end.x.toFixed(1)},${end.y.toFixed(1)}`;
}

function toward(p, x, y, dist) {
  const dx = x - p.x;
  const dy = y - p.y;
  const len = Math.hypot(dx, dy) || 1;
  return { x: p.x + (dx / len) * dist, y: p.y + (dy / len) * dist };
}

function buildMap(peers) {
  const svg = $("map");
  svg.replaceChildren();
  const defs = s("defs");
  for (const role of ["primary", "backup"]) {
    const marker = s("marker", {
      id: "arrow-" + role,
      viewBox: "0 0 10 10",
      refX: 8,
      refY: 5,
      markerWidth: 7,
      markerHeight: 7,
      orient: "auto-start-reverse",
    });
    marker.append(s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow " + role }));
    defs.append(marker);
  }
  svg.append(defs);
  const pos = layout(peers);
  const links = s("g", { class: "links" });
  for (const p of peers) {
    for (const role of ["primary", "backup"]) {
      const friend = p.friends && p.friends[role];
      if (!friend || !pos.has(friend) || friend === p.name) continue;
      const path = s("path", {
        d: linkPath(pos.get(p.name), pos.get(friend)),
        class: "link " + role,
        "marker-end": `url(#arrow-${role})`,
        "data-from": p.name,
        "data-to": friend,
        "data-role": role,
      });
      path.append(s("title", {}, `${p.name} → ${friend} (${role} friend)`));
      links.append(path);
    }
  }
  svg.append(links);
  const nodes = s("g", { class: "nodes" });
  const small = peers.length > 24;
  for (const p of peers) {
    const { x, y, r } = pos.get(p.name);
    const g = s("g", { class: "peer", "data-peer": p.name, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})` });
    g.append(s("title"));
    g.append(s("circle", { r }));
    g.append(s("text", { class: "name", y: r + (small ? 10 : 15), "font-size": small ? 9 : 13 }, p.name));
    if (!small) g.append(s("text", { class: "sub", y: r + 29 }));
    g.append(s("text", { class: "count", y: 4, "font-size": small ? 8 : 12 }));
    nodes.append(g);
  }
  svg.append(nodes);
}

function updateMap(peers) {
  const key = JSON.stringify(peers.map((p) => [p.name, p.friends || null]));
  if (key !== state.mapKey) {
    buildMap(peers);
    state.mapKey = key;
  }
  const alive = new Map(peers.map((p) => [p.name, p.alive]));
  const reached = state.search ? state.search.reached : new Set();
  const holders = state.search ? state.search.holders : new Set();
  for (const p of peers) {
    const g = $("map").querySelector(`g.peer[data-peer="${CSS.escape(p.name)}"]`);
    g.dataset.alive = p.alive ? "true" : "false";
    g.dataset.reached = reached.has(p.name) ? "true" : "false";
    g.dataset.hit = holders.has(p.name) ? "true" : "false";
    g.querySelector("title").textContent =
      `${p.name}: ${p.alive ? "alive" : "not alive"}, heard ${fmtAge(p.age)}, ${p.files} file(s)\n` +
      `REST ${p.rest_url}\ngRPC ${p.grpc_address}`;
    g.querySelector("text.count").textContent = String(p.files);
    const sub = g.querySelector("text.sub");
    if (sub) sub.textContent = p.alive ? fmtAge(p.age) : "not alive · " + fmtAge(p.age);
  }
  for (const link of $("map").querySelectorAll("path.link")) {
    const up = alive.get(link.dataset.from) && alive.get(link.dataset.to);
    link.classList.toggle("down", !up);
  }
}

// ---- the peers' table ----------------------------------------------------------------------

function updatePeerTable(peers) {
  const rows = peers.map((p) => {
    const rest = safeHref(p.rest_url);
    return h(
      "tr",
      { "data-row": p.name, class: p.alive ? "alive" : "dead" },
      h("td", {}, h("span", { class: "dot" }), p.name),
      h("td", {}, p.alive ? "alive" : "not alive"),
      h("td", { title: `beats every ${p.heartbeat_interval} s` }, fmtAge(p.age)),
      h("td", { class: "num" }, String(p.files)),
      h("td", {}, rest ? h("a", { href: rest + "/info" }, p.rest_url) : String(p.rest_url)),
      h("td", {}, String(p.grpc_address)),
    );
  });
  $("peers").tBodies[0].replaceChildren(...rows);
  const select = $("search-from");
  const chosen = select.value;
  const options = [h("option", { value: "" }, "any live peer")];
  for (const p of peers) {
    options.push(h("option", { value: p.name, disabled: !p.alive }, p.name + (p.alive ? "" : " (not alive)")));
  }
  select.replaceChildren(...options);
  select.value = peers.some((p) => p.name === chosen) ? chosen : "";
}

// ---- the directory -------------------------------------------------------------------------

function holderChip(holder, shaIndex) {
  const chip = h(
    "span",
    {
      class: "chip" + (holder.alive ? "" : " dead") + (shaIndex >= 0 ? " sha" + (shaIndex % 4) : ""),
      "data-holder": holder.name,
      "data-alive": holder.alive ? "true" : "false",
      title: `${holder.name} (${holder.alive ? "alive" : "not alive"})\nsha256 ${holder.sha256 || "?"}`,
    },
    holder.name,
  );
  if (shaIndex >= 0) chip.append(h("code", {}, (holder.sha256 || "????????").slice(0, 8)));
  return chip;
}

function renderDirectory() {
  const filter = $("directory-filter").value.trim().toLowerCase();
  const files = filter ? state.files.filter((f) => f.name.toLowerCase().includes(filter)) : state.files;
  const rows = [];
  for (const f of files.slice(0, MAX_ROWS)) {
    const shas = [...new Set(f.peers.map((p) => p.sha256).filter(Boolean))].sort();
    const conflict = shas.length > 1;
    const sizes = [...new Set(f.peers.map((p) => p.size))];
    const holders = h("td", { class: "holders" });
    for (const p of f.peers) holders.append(holderChip(p, conflict ? shas.indexOf(p.sha256) : -1));
    if (conflict) {
      holders.append(
        h("span", { class: "warn", title: "these holders do not have the same content" }, `${shas.length} different sha256`),
      );
    }
    rows.push(
      h(
        "tr",
        { "data-file": f.name, "data-conflict": conflict ? "true" : "false" },
        h("td", {}, f.name),
        h("td", { class: "num" }, sizes.map(fmtBytes).join(" / ")),
        holders,
      ),
    );
  }
  $("directory").tBodies[0].replaceChildren(...rows);
  const conflicts = state.files.filter((f) => new Set(f.peers.map((p) => p.sha256).filter(Boolean)).size > 1).length;
  const shown = state.files.length < state.totalFiles ? ` (the first ${state.files.length} by name)` : "";
  $("directory-count").textContent =
    `${state.totalFiles} file(s)${shown}` + (conflicts ? `, ${conflicts} with holders that disagree` : "");
  $("directory-more").textContent =
    files.length > MAX_ROWS ? `showing ${MAX_ROWS} of ${files.length}; type in the filter to narrow` : "";
}

// ---- polling -------------------------------------------------------------------------------

async function fetchDirectory() {
  // /directory is paginated by file name: follow `next` until the last page (or MAX_FILES).
  const files = [];
  let after = "";
  for (;;) {
    const params = new URLSearchParams({ limit: String(DIRECTORY_PAGE) });
    if (after) params.set("after", after);
    const page = await api("/directory?" + params);
    files.push(...page.files);
    state.totalFiles = page.total !== undefined ? page.total : files.length;
    if (!page.next || files.length >= MAX_FILES) return files;
    after = page.next;
  }
}

async function poll() {
  try {
    const peers = (await api("/peers")).peers.slice().sort(byName);
    state.peers = peers;
    const key = JSON.stringify(peers.map((p) => [p.name, p.files, p.alive]));
    const peersChanged = key !== state.peersKey;
    state.peersKey = key;
    if (peersChanged || state.tick % DIRECTORY_EVERY === 0) {
      const files = await fetchDirectory();
      const dirKey = JSON.stringify(files);
      if (dirKey !== state.directoryKey) {
        state.files = files;
        state.directoryKey = dirKey;
        renderDirectory();
      }
    }
    updateMap(peers);
    updatePeerTable(peers);
    const alive = peers.filter((p) => p.alive).length;
    $("summary").textContent =
      `${peers.length} peer(s), ${alive} alive · ${state.totalFiles} file(s) · ` +
      `Maestro ${location.host} · refreshes every ${POLL_MS / 1000} s`;
    state.downSince = null;
    setStatus("ok", "updated " + new Date().toLocaleTimeString());
  } catch (err) {
    reportFailure(err);
  } finally {
    state.tick += 1;
    setTimeout(poll, POLL_MS);
  }
}

// ---- search --------------------------------------------------------------------------------

async function runSearch(event) {
  event.preventDefault();
  const query = $("search-input").value.trim();
  if (!query) return;
  const from = $("search-from").value;
  const params = new URLSearchParams({ query });
  if (from) params.set("peer", from);
  const summary = $("search-summary");
  summary.dataset.state = "searching";
  summary.textContent = `searching for “${query}”…`;
  $("search-results").replaceChildren();
  try {
    const answer = await api("/ui/search?" + params);
    showResults(answer);
  } catch (err) {
    summary.dataset.state = "error";
    summary.textContent = "search failed: " + err.message;
    state.search = null;
  }
  updateMap(state.peers);
}

function showResults(answer) {
  const files = new Map();
  for (const r of answer.results) {
    if (!files.has(r.file)) files.set(r.file, []);
    files.get(r.file).push(r);
  }
  const holders = new Set(answer.results.map((r) => r.peer));
  state.search = { reached: new Set(answer.visited), holders };
  const summary = $("search-summary");
  summary.dataset.state = "done";
  summary.replaceChildren(
    `${answer.results.length} result(s) for “${answer.query}” in ${files.size} file(s), searched from ${answer.from}. `,
    `Reached ${answer.visited.length} peer(s): ${answer.visited.join(", ") || "none"}; ${answer.messages} message(s).`,
  );
  if (answer.complete === false) {
    summary.append(h("span", { class: "warn" }, " Partial: some peers did not answer in time."));
  }
  if (answer.truncated) summary.append(" (first results only)");
  const items = [];
  for (const [file, hits] of [...files.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
    const li = h("li", { "data-file": file }, h("span", { class: "file" }, file), " ");
    for (const r of hits.sort((a, b) => String(a.peer).localeCompare(String(b.peer), undefined, { numeric: true }))) {
      li.append(h("span", { class: "chip", "data-holder": r.peer, title: `${r.grpc_address} · ${fmtBytes(r.size)}` }, r.peer));
    }
    items.push(li);
  }
  if (!items.length) items.push(h("li", { class: "muted" }, "no peer that was reached has a matching file"));
  $("search-results").replaceChildren(...items);
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", runSearch);
  $("directory-filter").addEventListener("input", renderDirectory);
  poll();
});

// The dashboard page: one view at a time, refreshed from the JSON API every
// REFRESH_MS. Every value is put in the page as text (el() below), never as
// markup: task names, log lines and metadata are anyone's strings.
"use strict";

const REFRESH_MS = 2000;
let current = "nodes";
let timer = null;
const logFilter = { worker: "", q: "" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function short(id) { return id ? String(id).slice(0, 12) : ""; }

function size(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const fill = el("span");
  fill.style.width = pct + "%";
  return el("span", {}, el("span", { class: "bar" }, fill), label);
}

// A table: columns are [header, row => cell content, optional class].
function table(name, columns, rows) {
  const head = el("tr", {}, ...columns.map(c => el("th", {}, c[0])));
  const body = rows.map(r => el("tr", {}, ...columns.map(c => el("td", c[2] ? { class: c[2] } : {}, c[1](r)))));
  if (!rows.length) body.push(el("tr", {}, el("td", { colspan: columns.length, class: "note" }, "none")));
  return el("table", { "data-table": name }, el("thead", {}, head), el("tbody", {}, ...body));
}

function chips(counts) {
  return el("div", { class: "chips" },
    ...Object.entries(counts || {}).map(([k, v]) => el("span", {}, `${k}: ${v}`)));
}

function json(v) { return v && Object.keys(v).length ? JSON.stringify(v) : ""; }

const views = {
  nodes(d) {
    const res = (n, k) => n.resources[k] ? `${n.resources[k][0]} / ${n.resources[k][1]}` : "";
    return [table("nodes", [
      ["Node", n => `${short(n.node_id)}${n.is_head ? " (head)" : ""}`, "mono"],
      ["Address", n => n.address, "mono"],
      ["State", n => n.state],
      ["CPU in use", n => res(n, "CPU")],
      // The host's actual use (the node's ray_node_* metrics), not what tasks reserved.
      ["CPU utilization", n => n.host ? bar(n.host.cpu_percent, 100, `${n.host.cpu_percent.toFixed(0)}%`) : ""],
      ["Memory used", n => n.host ? bar(n.host.mem_used, n.host.mem_total,
        `${size(n.host.mem_used)} / ${size(n.host.mem_total)}`) : ""],
      ["Object store", n => n.object_store ? bar(n.object_store.used, n.object_store.capacity,
        `${size(n.object_store.used)} / ${size(n.object_store.capacity)}`) : (n.error || "")],
      ["Objects", n => n.object_store ? n.object_store.num_objects : ""],
      ["Spilled", n => n.object_store ? size(n.object_store.spilled_bytes) : ""],
      ["Other resources", n => Object.entries(n.resources)
        .filter(([k]) => !["CPU", "memory", "object_store_memory"].includes(k))
        .map(([k, v]) => `${k}: ${v[0]}/${v[1]}`).join(", ")],
    ], d.nodes)];
  },
  jobs(d) {
    const when = ms => ms ? new Date(ms).toLocaleString() : "";
    return [table("jobs", [
      ["Job", j => j.job_id || "", "mono"], ["Submission", j => j.submission_id || "", "mono"],
      ["Type", j => j.type], ["Status", j => j.status], ["Entrypoint", j => j.entrypoint, "mono"],
      ["Started", j => when(j.start_time)], ["Ended", j => when(j.end_time)],
      ["Message", j => (j.message || "").split("\n")[0]], ["Metadata", j => json(j.metadata), "mono"],
    ], d.jobs)];
  },
  tasks(d) {
    const fn = Object.entries(d.by_function).map(([name, states]) => ({ name, states }));
    return [
      el("h2", {}, `By state (newest ${d.tasks.length} of ${d.total}${d.dropped ? `, ${d.dropped} dropped` : ""})`),
      chips(d.by_state),
      el("h2", {}, "By function"),
      table("functions", [["Function", f => f.name, "mono"],
        ["States", f => Object.entries(f.states).map(([s, n]) => `${s}: ${n}`).join(", ")]], fn),
      el("h2", {}, "Tasks"),
      table("tasks", [
        ["Task", t => short(t.task_id), "mono"], ["Name", t => t.name, "mono"], ["State", t => t.state],
        ["Type", t => t.type], ["Job", t => t.job_id, "mono"], ["Node", t => short(t.node_id), "mono"],
        ["Worker pid", t => t.worker_pid], ["Error", t => t.error_type || ""],
      ], d.tasks),
    ];
  },
  actors(d) {
    return [chips(d.by_state), table("actors", [
      ["Actor", a => short(a.actor_id), "mono"], ["Class", a => a.class_name, "mono"],
      ["Name", a => a.name], ["Namespace", a => a.namespace], ["State", a => a.state],
      ["Pid", a => a.pid], ["Node", a => short(a.node_id), "mono"], ["Restarts", a => a.num_restarts],
      ["Death cause", a => a.death_cause || ""],
    ], d.actors)];
  },
  placement_groups(d) {
    return [table("placement_groups", [
      ["Placement group", g => short(g.placement_group_id), "mono"], ["Name", g => g.name],
      ["Strategy", g => g.stats.strategy], ["State", g => g.state],
      ["Bundles", g => JSON.stringify(g.bundles.map(b => b.unit_resources)), "mono"],
      ["Nodes", g => g.bundles.map(b => short(b.node_id)).join(", "), "mono"],
    ], d.placement_groups)];
  },
  objects(d) {
    return [
      el("h2", {}, "Object stores"),
      table("stores", [
        ["Node", s => short(s.node_id), "mono"],
        ["Used", s => s.capacity ? bar(s.used, s.capacity, `${size(s.used)} / ${size(s.capacity)}`) : "no answer"],
        ["Objects", s => s.num_objects], ["Spilled now", s => s.capacity ? size(s.spilled_bytes_now) : ""],
        ["Spilled in total", s => s.capacity ? size(s.spilled_bytes_total) : ""],
      ], d.stores),
      ...d.missing.map(m => el("p", { class: "note" }, `no answer from ${m}`)),
      el("h2", {}, `References (${d.objects.length} of ${d.total}; ${size(d.total_bytes)} owned)`),
      table("objects", [
        ["Object", o => o.object_id, "mono"], ["Size", o => size(o.object_size)],
        ["Where", o => o.location || "pending"], ["Reference", o => o.reference_type],
        ["Holder", o => `${String(o.type).toLowerCase()} ${o.pid}`], ["Node", o => short(o.node_id), "mono"],
        ["Call site", o => o.call_site, "mono"],
      ], d.objects),
    ];
  },
  advice(d) {
    if (!d.jobs.length) return [el("p", { class: "note" }, "No anti-patterns seen so far.")];
    return d.jobs.flatMap(j => [
      el("h2", {}, `Job ${j.job_id}${j.dropped ? ` (${j.dropped} call sites not counted)` : ""}`),
      table(`advice-${j.job_id}`, [
        ["Anti-pattern", f => f.title],
        ["Count", f => `${f.count} ${f.unit}`],
        ["Call sites", f => el("div", {}, ...f.sites.slice(0, 5).map(s =>
          el("div", { class: "mono" }, `${s.where} ${s.label}: ${s.count}${s.detail ? ` (${s.detail})` : ""}`)))],
        ["Fix", f => el("div", {}, f.fix, " ", el("a", { href: f.doc, rel: "noreferrer" }, "(Ray's page)"))],
      ], j.findings),
    ]);
  },
  logs(d) {
    const pick = el("select", { id: "log-worker" }, el("option", { value: "" }, "all workers"),
      ...d.workers.map(w => el("option", { value: `${w.ip} ${w.pid}` },
        `${w.ip} pid=${w.pid}${w.name ? " " + w.name : ""} (${w.num_lines} lines)`)));
    pick.value = logFilter.worker;
    const search = el("input", { id: "log-search", type: "search", placeholder: "search" });
    search.value = logFilter.q;
    pick.onchange = () => { logFilter.worker = pick.value; refresh(); };
    search.oninput = () => { logFilter.q = search.value; };  // kept across refreshes
    search.onchange = () => refresh();
    const lines = d.lines.map(l => el("span", l.stderr ? { class: "err" } : {},
      `(${l.name || "worker"} pid=${l.pid}, ip=${l.ip}) ${l.text}\n`));
    return [el("div", { class: "logbar" }, pick, search),
            el("pre", { class: "log", id: "log-lines" }, ...lines)];
  },
};

function url(view) {
  if (view !== "logs") return `/api/${view}`;
  const [ip, pid] = logFilter.worker ? logFilter.worker.split(" ") : ["", ""];
  return `/api/logs?${new URLSearchParams({ ip, pid, q: logFilter.q })}`;
}

async function refresh() {
  clearTimeout(timer);
  const view = current;
  const main = document.getElementById("view");
  if (view === "timeline") {
    main.replaceChildren(el("p", {}, "The timeline of tasks, one row per worker, as a Chrome trace ",
      "(open it in Perfetto or chrome://tracing): ",
      el("a", { href: "/api/timeline", download: "" }, "download the trace")),
      el("p", { class: "note" }, "It needs task events; without them the download says so."));
    return;
  }
  let body;
  try {
    const response = await fetch(url(view), { credentials: "same-origin" });
    if (response.status === 401) { location.href = "/login"; return; }
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (e) {
    if (view === current) {
      document.getElementById("status").textContent = `cannot update: ${e.message}`;
      timer = setTimeout(refresh, REFRESH_MS);
    }
    return;
  }
  if (view !== current) return;  // the user moved on while this was loading
  const active = document.activeElement && document.activeElement.id;
  main.replaceChildren(...views[view](body));
  if (active && document.getElementById(active)) document.getElementById(active).focus();
  document.getElementById("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  timer = setTimeout(refresh, REFRESH_MS);
}

function show(view) {
  current = view;
  for (const b of document.querySelectorAll("nav button"))
    b.classList.toggle("active", b.dataset.view === view);
  location.hash = view;
  refresh();
}

for (const b of document.querySelectorAll("nav button")) b.onclick = () => show(b.dataset.view);
const linked = location.hash.slice(1);  // a reload keeps the view
show(linked in views || linked === "timeline" ? linked : "nodes");

"""The status page's HTML, rendered on the server from the same dicts ``/api/`` returns.

Four pages: the cluster (members, master and term, slots, disk, DDFS), jobs (running and past,
per-stage counts), one job (per-stage progress, a timeline of its tasks by node, failures with
their tracebacks, events) and one node (its tasks, workers and recent log events). Each page is
a complete document with a little JavaScript that fetches the page's fragment again every
second and swaps it in (no build step, nothing from a CDN). Dicts in, HTML text out, every
value escaped; the only clock read is for elapsed times and running tasks' bars.
"""
from __future__ import annotations

import html
import json
import time
from urllib.parse import quote

REFRESH_MS = 1000

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#eceff1;padding:8px 16px;display:flex;gap:18px;align-items:center}
header a{color:#eceff1;text-decoration:none}header b{font-size:16px}
main{padding:12px 16px}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff;min-width:50%}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-variant-numeric:tabular-nums}
th{background:#eceff1}.alive{color:#2e7d32}.suspect{color:#ef6c00}.dead{color:#c62828}
.left{color:#757575}.finished{color:#2e7d32}.failed,.killed{color:#c62828}.active{color:#1565c0}
.bar{display:inline-block;height:10px;background:#1565c0;vertical-align:middle}
.bar.done{background:#2e7d32}.bar.failed{background:#c62828}
.track{position:relative;height:16px;background:#eee;margin:2px 0;min-width:400px}
.task{position:absolute;top:2px;height:12px;background:#1565c0;border-right:1px solid #fff}
.task.done{background:#2e7d32}.task.failed{background:#c62828}
pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;max-height:300px}
.muted{color:#757575}.kv td:first-child{color:#555}
"""

SCRIPT = """
(function(){var t=new URLSearchParams(location.search).get('token');
function tick(){var u=new URL(location.href);u.searchParams.set('fragment','1');
fetch(u,{headers:t?{'X-Disco-Token':t}:{}}).then(function(r){if(r.ok)return r.text();})
.then(function(h){if(h!==undefined)document.getElementById('live').innerHTML=h;})
.catch(function(){}).finally(function(){setTimeout(tick,%d);});}
setTimeout(tick,%d);})();
""" % (REFRESH_MS, REFRESH_MS)


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def link(path: str, text, token: str | None) -> str:
    href = path + (f"?token={quote(token)}" if token else "")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def page(title: str, body: str, node: str, token: str | None) -> str:
    nav = " ".join(link(p, t, token) for p, t in (("/", "cluster"), ("/jobs", "jobs"),
                                                   ("/node", "this node")))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)} - disco"
            f"</title><style>{STYLE}</style></head><body><header><b>disco</b>{nav}"
            f"<span class='muted'>served by {esc(node)}</span></header>"
            f"<main id='live'>{body}</main><script>{SCRIPT}</script></body></html>")


def size(n) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def when(ts) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def elapsed(start, end=None, now=None) -> str:
    if not start:
        return ""
    secs = (end or now or time.time()) - start
    return f"{secs:.1f} s" if secs < 120 else f"{secs / 60:.1f} min"


def table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


# -- pages ---------------------------------------------------------------------------------

def cluster(data: dict, token: str | None) -> str:
    st = data["status"]
    master = st.get("master")
    rows = []
    for x in st["members"]:
        http = data.get("http", {}).get(x["address"])
        name = f'<a href="{esc(http)}/node">{esc(x["name"])}</a>' if http else esc(x["name"])
        if x["state"] in ("dead", "left"):
            slots = "-"
        else:
            slots = f'{x["slots"]["busy"]}/{x["slots"]["total"]}'
        rows.append([name, esc(x["address"]), f'<span class="{esc(x["state"])}">'
                     f'{esc(x["state"])}</span>', "master" if x["master"] else "", slots,
                     size(x.get("data", {}).get("blobs")), size(x["disk"]["used"]),
                     size(x["disk"]["free"])])
    out = [f"<h2>Cluster</h2><p>master <b>{esc(master or 'none')}</b>, term "
           f"{esc(st['term'])}, {len(st['members'])} members, voters "
           f"{esc(', '.join(st.get('voters', [])))}</p>",
           table(["member", "address", "state", "role", "slots busy/total", "DDFS data",
                  "filesystem used", "filesystem free"], rows)]
    ddfs = data.get("ddfs")
    if ddfs:
        out.append("<h2>DDFS</h2>" + table(
            ["tags", "blobs", "copies", "k", "bytes", "below k", "repairs", "retags"],
            [[esc(ddfs["tags"]), esc(ddfs["blobs"]), esc(ddfs["copies"]), esc(ddfs["k"]),
              size(ddfs["bytes"]), esc(ddfs["under_replicated"]),
              esc(ddfs["repairs_in_flight"]), esc(ddfs["retags_in_flight"])]]))
    if data.get("jobs") is not None:
        out.append("<h2>Recent jobs</h2>" + jobs_table(data["jobs"][:10], token))
    return "".join(out)


def stage_cells(counts: dict) -> str:
    parts = []
    for stage, c in (counts or {}).items():
        total = max(1, c.get("pending", 0) + c.get("running", 0) + c.get("done", 0))
        width = 120
        done = int(width * c.get("done", 0) / total)
        run = int(width * c.get("running", 0) / total)
        parts.append(f'{esc(stage)} <span class="bar done" style="width:{done}px"></span>'
                     f'<span class="bar" style="width:{run}px"></span> '
                     f'{c.get("done", 0)}/{total} done, {c.get("running", 0)} running, '
                     f'{c.get("failed", 0)} failed')
    return "<br>".join(parts)


def jobs_table(jobs: list[dict], token: str | None) -> str:
    rows = []
    for j in jobs:
        rows.append([link(f"/job/{quote(j['job'], safe='')}", j["job"], token),
                     f'<span class="{esc(j["status"])}">{esc(j["status"])}</span>',
                     esc(when(j.get("submitted"))), esc(elapsed(j.get("submitted"),
                                                               j.get("finished"))),
                     stage_cells(j.get("counts"))])
    if not rows:
        return "<p class='muted'>no jobs yet</p>"
    return table(["job", "status", "submitted", "elapsed", "stages"], rows)


def jobs(data: dict, token: str | None) -> str:
    return "<h2>Jobs</h2>" + jobs_table(data["jobs"], token)


def timeline(events: list[dict]) -> str:
    """One track per node, one bar per task attempt, from its start to its end."""
    spans, open_ = [], {}
    for e in events:
        task, node = e.get("task"), e.get("node")
        if not task:
            continue
        if e["type"] == "task_started":
            open_[task] = (node, e["time"])
        elif e["type"] in ("task_done", "task_failed") and task in open_:
            start_node, start = open_.pop(task)
            spans.append((start_node or node, task, start, e["time"],
                          "done" if e["type"] == "task_done" else "failed"))
    now = max([e["time"] for e in events] + ([time.time()] if open_ else []))
    for task, (node, start) in open_.items():
        spans.append((node, task, start, now, "running"))
    if not spans:
        return "<p class='muted'>no tasks yet</p>"
    t0 = min(s[2] for s in spans)
    t1 = max(max(s[3] for s in spans), t0 + 1e-3)
    out = []
    for node in sorted({s[0] or "?" for s in spans}):
        lanes: list[list] = []  # each lane: bars that do not overlap (one per slot in use)
        for n, task, start, end, state in sorted(spans, key=lambda s: s[2]):
            if (n or "?") != node:
                continue
            lane = next((ln for ln in lanes if ln[-1][1] <= start), None)
            if lane is None:
                lane = []
                lanes.append(lane)
            lane.append((start, end, task, state))
        for i, lane in enumerate(lanes):
            bars = []
            for start, end, task, state in lane:
                left = 100 * (start - t0) / (t1 - t0)
                width = max(0.5, 100 * (end - start) / (t1 - t0))
                bars.append(f'<div class="task {state}" title="{esc(task)} {end - start:.2f} s'
                            f' ({state})" style="left:{left:.2f}%;width:{width:.2f}%"></div>')
            label = esc(node) if i == 0 else ""
            out.append(f"<tr><td>{label}</td><td><div class='track'>{''.join(bars)}</div>"
                       "</td></tr>")
    return (f"<table><tr><th>node</th><th>tasks over {t1 - t0:.2f} s (one row per slot in "
            f"use; hover for the task)</th></tr>{''.join(out)}</table>")


def job(data: dict, token: str | None) -> str:
    st = data
    out = [f"<h2>Job {esc(st['job'])}</h2><p>status <span class='{esc(st['status'])}'>"
           f"<b>{esc(st['status'])}</b></span>, submitted {esc(when(st.get('submitted')))}, "
           f"elapsed {esc(elapsed(st.get('submitted'), st.get('finished')))}</p>",
           f"<p>{stage_cells(st.get('counts'))}</p>", "<h2>Timeline</h2>",
           timeline(st.get("events", []))]
    err = st.get("error")
    failures = [e for e in st.get("events", []) if e["type"] == "task_failed"]
    if err or failures:
        out.append("<h2>Failures</h2>")
        if err:
            out.append(f"<p>{esc(err.get('msg'))} (task {esc(err.get('task'))} on "
                       f"{esc(err.get('node'))}, input {esc(err.get('input'))})</p>"
                       f"<pre>{esc(err.get('traceback'))}</pre>")
        out.append(table(["time", "task", "node", "error"],
                         [[esc(when(e["time"])), esc(e.get("task")), esc(e.get("node")),
                           f"<pre>{esc(e['msg'])}</pre>"] for e in failures[-20:]]))
    if st.get("results") and st["status"] == "finished":
        shown = st["results"][:20]
        out.append("<h2>Results</h2><pre>" + esc("\n".join(
            r if isinstance(r, str) else " ".join(r) for r in shown)) + "</pre>")
    events = st.get("events", [])[-200:]
    out.append("<h2>Events</h2>" + table(
        ["time", "type", "stage", "task", "node", "message"],
        [[esc(when(e["time"])), esc(e["type"]), esc(e.get("stage")), esc(e.get("task")),
          esc(e.get("node")), esc(e["msg"])] for e in reversed(events)]))
    return "".join(out)


def node(data: dict, token: str | None) -> str:
    me = data["member"] or {}
    out = [f"<h2>Node {esc(data['node'])}</h2>", "<table class='kv'>" + "".join(
        f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in (
            ("address", esc(data["address"])), ("state", esc(me.get("state"))),
            ("master", esc(data.get("master"))), ("term", esc(data.get("term"))),
            ("slots busy/total", esc(f"{len(data['tasks'])}/{data['slots']}")),
            ("data dir", esc(data["data"])), ("pid", esc(data["pid"])))) + "</table>",
           "<h2>Tasks</h2>" + (table(["task"], [[esc(t)] for t in data["tasks"]])
                                if data["tasks"] else "<p class='muted'>no running tasks</p>"),
           "<h2>Workers</h2>" + (table(["pid", "job", "task"], [
               [esc(w["pid"]), esc(w["job"]), esc(w.get("task"))] for w in data["workers"]])
               if data["workers"] else "<p class='muted'>no workers</p>"),
           "<h2>Recent log events</h2>" + table(
               ["time", "level", "event", "fields"],
               [[esc(e.get("timestamp")), esc(e.get("level")), esc(e.get("event")),
                 esc(json.dumps({k: v for k, v in e.items()
                                 if k not in ("timestamp", "level", "event", "node")}))]
                for e in reversed(data["log"])])]
    return "".join(out)


def not_found(what: str) -> str:
    return f"<h2>Not found</h2><p>{esc(what)}</p>"

"""The node's HTTP port (``port + 2`` by default): the status page, ``/api/`` and ``/metrics``.

Use an ``HttpServer`` from the daemon::

    server = HttpServer(host, http_port, node_address, token, local_info, log)  # binds now
    server.start()          # serves on threads of its own
    server.stop()

Theory of operation. The server is a client of its own node: every page and API call asks the
node's control port (``mesh.client.Connection``, following ``NotMaster`` to the master for job
and DDFS requests), exactly as ``disco`` the command does, so it never touches the loop's
state; ``local_info()`` adds what only this process knows (its workers) and the log file gives
recent events. Pages are rendered by ``mesh.web``.

Routes (GET unless said): ``/`` the cluster, ``/jobs``, ``/job/NAME``, ``/node``; the same
with ``?fragment=1`` return only the page's live part (the page's script polls it); ``/api/
cluster``, ``/api/jobs``, ``/api/job/NAME`` (``?offset=N`` for events), ``/api/node``: the JSON
behind the pages; ``/api/logs?offset=N`` the node's log events from byte N (negative: the
last -N lines), for ``disco logs``; ``POST /api/job/NAME/kill`` and ``/purge``;
``/metrics``, the Prometheus text format.

Access: without a cluster secret the node binds loopback only and asks for nothing. With a
secret every request needs the token (``token_for(secret)``, the same on every node), as
``?token=...`` or the ``X-Disco-Token`` header (or ``Authorization: Bearer ...``); a POST only
by header. Anything else is 401.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


from common.error import DiscoError, JobNotFound, NotMaster
from mesh import message as m
from mesh import web
from mesh.client import Connection
from mesh.settings import PYTHON

JOBS_SHOWN = 100
COUNTS_SHOWN = 30
LOG_LINES = 100
ASK_TIMEOUT_S = 3.0
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, float("inf"))


def token_for(secret: bytes) -> str:
    """The status page's token: derived from the cluster secret, the same on every node."""
    return hmac.new(secret, b"disco-http-token-v1", hashlib.sha256).hexdigest()[:32]


class NodeView:
    """Asks the node (and through it the master) what the pages show."""

    def __init__(self, address: str, local_info, log_file: Path):
        self.address, self.local_info, self.log_file = address, local_info, log_file
        self._lock = threading.Lock()

    def ask(self, cls, master: bool = False, **fields):
        target = self.address
        for _ in range(3):
            conn = Connection(target, ASK_TIMEOUT_S)
            try:
                return conn.request(cls, **fields)
            except NotMaster as exc:
                if not master or not exc.master:
                    raise
                target = exc.master
            finally:
                conn.close()
        raise NotMaster("")

    def maybe(self, cls, **fields):
        try:
            return self.ask(cls, master=True, **fields)
        except DiscoError:
            return None

    def cluster(self) -> dict:
        status = self.ask(m.GetStatus)
        http = {}
        for x in status["members"]:
            host, _, port = x["address"].rpartition(":")
            http[x["address"]] = f"http://{host}:{int(port) + 2}"
        return {"status": status, "http": http, "ddfs": self.maybe(m.DdfsStatus),
                "jobs": self.jobs()["jobs"][:10] if self._has_master(status) else None}

    @staticmethod
    def _has_master(status: dict) -> bool:
        return bool(status.get("master"))

    def jobs(self) -> dict:
        listed = self.maybe(m.ListJobs) or []
        listed = sorted(listed, key=lambda j: j.get("submitted") or 0, reverse=True)[:JOBS_SHOWN]
        for j in listed[:COUNTS_SHOWN]:
            st = self.maybe(m.GetJobStatus, job=j["job"])
            if st:
                j["counts"] = st.get("counts")
        return {"jobs": listed}

    def job(self, name: str, offset: int = 0) -> dict | None:
        try:
            return self.ask(m.GetEvents, master=True, job=name, offset=offset)
        except DiscoError:
            return None

    def node(self) -> dict:
        hello = self.ask(m.Hello, python=PYTHON)
        status = self.ask(m.GetStatus)
        me = next((x for x in status["members"] if x["address"] == self.address), None)
        info = self.local_info()
        return {**hello, "member": me, "term": status["term"], "master": status["master"],
                "tasks": info["tasks"], "workers": info["workers"], "slots": info["slots"],
                "log": self.log_tail()}

    def logs(self, offset: int, limit: int = 2000) -> dict:
        """Log events from byte ``offset`` of the node's log (negative: about the last
        ``-offset`` lines); ``offset`` in the answer is where to go on from. A rotated file is
        read again from its start."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                if offset < 0:  # back far enough for -offset lines (long ones too)
                    start = max(0, size - 4096 * -offset)
                elif offset > size:
                    start = 0  # rotated since
                else:
                    start = offset
                f.seek(start)
                data = f.read(min(size - start, 16 << 20))
                pos = start + len(data)
        except OSError:
            return {"events": [], "offset": 0}
        if start and offset < 0:
            data = data.split(b"\n", 1)[-1]  # from a line's start
        end = data.rfind(b"\n") + 1
        events = []
        for line in data[:end].splitlines()[-(-offset if offset < 0 else limit):]:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return {"events": events, "offset": pos - (len(data) - end)}  # a partial line: later

    def log_tail(self) -> list[dict]:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 256 * LOG_LINES))
                lines = deque(f.read().splitlines(), LOG_LINES)
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class Metrics:
    """A prometheus_client collector that reads the node at each scrape."""

    def __init__(self, view: NodeView, counters):
        self.view, self.counters = view, counters

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        status = self.view.ask(m.GetStatus)
        me = next((x for x in status["members"] if x["address"] == self.view.address), {})
        states = GaugeMetricFamily("disco_members", "Cluster members by state, as this node "
                                   "sees them.", labels=["state"])
        for state in ("alive", "suspect", "dead", "left"):
            states.add_metric([state], sum(x["state"] == state for x in status["members"]))
        yield states
        master = status["master"] or ""
        yield GaugeMetricFamily("disco_is_master", "1 if this node is the master.",
                                value=int(bool(me) and me.get("master", False)))
        yield GaugeMetricFamily("disco_raft_term", "This node's Raft term.",
                                value=status["term"])
        yield GaugeMetricFamily("disco_master_known", "1 if this node knows a master.",
                                value=int(bool(master)))
        slots = me.get("slots", {})
        yield GaugeMetricFamily("disco_slots", "This node's task slots.",
                                value=slots.get("total", 0))
        yield GaugeMetricFamily("disco_slots_busy", "This node's busy task slots.",
                                value=slots.get("busy", 0))
        c = self.counters()
        for kind, help_ in (("started", "Tasks started on this node."),
                            ("finished", "Tasks finished on this node."),
                            ("failed", "Tasks failed on this node.")):
            fam = CounterMetricFamily(f"disco_tasks_{kind}", help_, labels=["stage"])
            for stage, n in sorted(c["tasks"].get(kind, {}).items()):
                fam.add_metric([stage], n)
            yield fam
        yield CounterMetricFamily("disco_data_served_bytes", "Bytes served by this node's data "
                                  "port (shuffle reads, blob reads).", value=c["served_bytes"])
        yield CounterMetricFamily("disco_data_requests", "Requests served by the data port.",
                                  value=c["served_requests"])
        yield CounterMetricFamily("disco_data_fetched_bytes", "Bytes this node's tasks read "
                                  "from other nodes' data ports (shuffle reads in).",
                                  value=c["fetched_bytes"])
        yield CounterMetricFamily("disco_ddfs_repair_bytes", "Bytes this node copied to repair "
                                  "DDFS blobs.", value=c["repair_bytes"])
        refused = CounterMetricFamily("disco_refused_frames", "Frames and connections refused, "
                                      "by kind.", labels=["kind"])
        for kind, n in sorted(status.get("refused", {}).items()):
            refused.add_metric([kind], n)
        yield refused
        rtt = status.get("probe_rtt")
        if rtt:
            from mesh.membership import RTT_BUCKETS
            hist = HistogramMetricFamily("disco_probe_rtt_seconds", "Round trips of this node's "
                                         "acknowledged membership probes.")
            total, buckets = 0, []
            for bound, n in zip(RTT_BUCKETS, rtt["buckets"]):
                total += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
            hist.add_metric([], buckets, sum_value=rtt["sum"])
            yield hist
        yield GaugeMetricFamily("disco_journal_bytes", "Size of this node's journal on disk.",
                                value=c["journal_bytes"])
        yield GaugeMetricFamily("disco_data_bytes", "Bytes of blobs in this node's volumes.",
                                value=c["blob_bytes"])
        yield from self._master_metrics()

    def _master_metrics(self):
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
        ddfs = self.view.maybe(m.DdfsStatus)
        if ddfs:
            for key, help_ in (("blobs", "DDFS blobs."), ("copies", "DDFS blob copies on alive "
                                                          "members."),
                               ("under_replicated", "DDFS blobs with fewer than k copies."),
                               ("repairs_in_flight", "DDFS repair copies in flight.")):
                yield GaugeMetricFamily(f"disco_ddfs_{key}", help_, value=ddfs[key])
        jobs = self.view.maybe(m.ListJobs)
        if jobs is not None:
            hist = HistogramMetricFamily("disco_job_duration_seconds", "Durations of the jobs "
                                         "the master remembers, submission to end.")
            ended = [j["finished"] - j["submitted"] for j in jobs if j.get("finished")]
            buckets = [(str(b) if b != float("inf") else "+Inf", sum(d <= b for d in ended))
                       for b in DURATION_BUCKETS]
            hist.add_metric([], buckets, sum_value=sum(ended))
            yield hist
            active = GaugeMetricFamily("disco_jobs", "Jobs the master remembers, by status.",
                                       labels=["status"])
            for status in ("active", "finished", "failed", "killed"):
                active.add_metric([status], sum(j["status"] == status for j in jobs))
            yield active


class HttpServer:
    def __init__(self, host: str, port: int, node_address: str, token: str | None,
                 local_info, counters, log_file: Path, log):
        self.token, self.log = token, log
        self.view = NodeView(node_address, local_info, log_file)
        self.metrics = Metrics(self.view, counters)
        self._registry = None  # made at the first scrape: prometheus_client costs a node's
        self._registry_lock = threading.Lock()  # start 30-50 ms to import
        self.refused = 0
        handler = _handler(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _scrape(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest
        with self._registry_lock:
            if self._registry is None:
                self._registry = CollectorRegistry(auto_describe=False)
                self._registry.register(self.metrics)
        return generate_latest(self._registry).decode()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(2.0)
        self.httpd.server_close()

    # -- requests --

    def allowed(self, query: dict, headers, post: bool) -> bool:
        if not self.token:
            return True
        given = headers.get("X-Disco-Token") or ""
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            given = given or auth[len("Bearer "):]
        if not given and not post:
            given = (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def get(self, path: str, query: dict) -> tuple[int, str, str]:
        """(status, content type, body) for a GET."""
        token = self.token
        fragment = "fragment" in query
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._scrape()
        if parts[:1] == ["api"]:
            return self._api(parts[1:], query)
        if not parts:
            data, render, title = self.view.cluster(), web.cluster, "cluster"
        elif parts == ["jobs"]:
            data, render, title = self.view.jobs(), web.jobs, "jobs"
        elif len(parts) == 2 and parts[0] == "job":
            data = self.view.job(parts[1])
            if data is None:
                return 404, "text/html", web.page("not found", web.not_found(
                    f"no job named {parts[1]}"), self.view.address, token)
            render, title = web.job, parts[1]
        elif parts == ["node"]:
            data, render, title = self.view.node(), web.node, "node"
        else:
            return 404, "text/html", web.page("not found", web.not_found(path),
                                              self.view.address, token)
        body = render(data, token)
        if fragment:
            return 200, "text/html; charset=utf-8", body
        return 200, "text/html; charset=utf-8", web.page(title, body, self.view.address, token)

    def _api(self, parts: list[str], query: dict) -> tuple[int, str, str]:
        if parts == ["cluster"]:
            data = self.view.cluster()
        elif parts == ["jobs"]:
            data = self.view.jobs()
        elif len(parts) == 2 and parts[0] == "job":
            offset = int((query.get("offset") or ["0"])[0] or 0)
            data = self.view.job(parts[1], offset)
            if data is None:
                return 404, "application/json", json.dumps({"error": "no such job"})
        elif parts == ["node"]:
            data = self.view.node()
        elif parts == ["logs"]:
            data = self.view.logs(int((query.get("offset") or ["-200"])[0]))
        else:
            return 404, "application/json", json.dumps({"error": "no such API"})
        return 200, "application/json", json.dumps(data, default=repr)

    def post(self, path: str) -> tuple[int, str, str]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if len(parts) == 4 and parts[:2] == ["api", "job"] and parts[3] in ("kill", "purge"):
            cls = m.KillJob if parts[3] == "kill" else m.PurgeJob
            try:
                self.view.ask(cls, master=True, job=parts[2])
            except JobNotFound as exc:
                return 404, "application/json", json.dumps({"error": str(exc)})
            except DiscoError as exc:
                return 400, "application/json", json.dumps({"error": str(exc)})
            self.log.info("http_job_" + parts[3], job=parts[2])
            return 200, "application/json", json.dumps({"job": parts[2], parts[3]: True})
        return 404, "application/json", json.dumps({"error": "no such API"})


def _handler(server: HttpServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "disco"

        def _reply(self, status: int, ctype: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, post: bool) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if not server.allowed(query, self.headers, post):
                server.refused += 1
                self._reply(401, "text/plain", "a token is needed: open the URL `disco start` "
                                               "printed (…?token=…) or send X-Disco-Token\n")
                return
            try:
                if post:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length:
                        self.rfile.read(min(length, 1 << 16))
                    reply = server.post(url.path)
                else:
                    reply = server.get(url.path, query)
            except DiscoError as exc:
                reply = 503, "text/plain", f"the node could not answer: {exc}\n"
            except Exception:  # a bug of ours: the page says so, the node goes on
                server.log.exception("http_request_failed", path=url.path)
                reply = 500, "text/plain", "internal error (see the node's log)\n"
            self._reply(*reply)

        def do_GET(self):  # noqa: N802 - http.server's name
            self._serve(post=False)

        def do_POST(self):  # noqa: N802
            self._serve(post=True)

        def log_message(self, fmt, *args):  # requests are not logged one by one
            pass

    return Handler


__all__ = ["HttpServer", "token_for"]

"""The node daemon: the one place that owns sockets and the clock (ARCHITECTURE "Processes").

Sockets:
- control ROUTER on ``port``: client requests (and, later, gossip and master commands);
- data ROUTER on ``port + 1``: ``Fetch`` of stored files (map outputs, results) by offset;
- worker ROUTER on an abstract ``ipc://`` name: the node's own worker processes.

Each loop turn reads the clock once, drains a bounded batch from each socket, decodes and
validates every frame (a bad one is answered with ``Error`` and logged, never raised), steps the
master and executor, then fires due timers. Client requests that wait for a job (``WaitJob``)
are parked and answered when the job ends or their deadline passes.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import time
from pathlib import Path

import zmq

from disco import log as disco_log
from disco.error import DiscoError, ProtocolError, UsageError
from disco.settings import PYTHON, NodeSettings, is_loopback
from mesh import message as m
from mesh.executor import Executor
from mesh.master import Master
from scheduler import core

BATCH = 256
TICK_S = 0.1
CHUNK_LIMIT = 8 << 20


class NodeDaemon:
    """One node: binds, serves until SIGTERM/SIGINT, then leaves cleanly."""

    def __init__(self, settings: NodeSettings):
        self.s = settings
        self.running = True
        self.started = time.time()
        self.waiters: list[tuple] = []  # (deadline, ident, rid, job)
        self._disk = (0.0, 0, 0)

    # -- life cycle --

    def run(self) -> int:
        self._prepare()
        self.log = disco_log.get(node=self.s.name)
        self.ctx = zmq.Context()
        try:
            self._bind()
            self._init_roles()
            self._write_pid()
            self.log.info("node_started", address=self.s.address, workers=self.s.workers,
                          data=str(self.s.data_dir), pid=os.getpid())
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _prepare(self) -> None:
        if self.s.secret_file:
            raise UsageError("--secret-file: CurveZMQ authentication is not in this release yet; "
                             "refusing to start rather than run without it")
        if not is_loopback(self.s.host) and not self.s.insecure:
            raise UsageError(f"refusing to bind {self.s.host}: without a cluster secret a node "
                             "binds loopback only; pass --insecure to override")
        for sub in ("logs", "jobs", "vol0"):
            (self.s.data_dir / sub).mkdir(parents=True, exist_ok=True)
        disco_log.configure(self.s.log_dir / "node.jsonl", node=self.s.name)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _bind(self) -> None:
        if self.s.insecure and not is_loopback(self.s.host):
            self.log.warning("insecure_bind", host=self.s.host)
        self.ctrl = self._router(f"tcp://{self.s.host}:{self.s.port}")
        self.data = self._router(f"tcp://{self.s.host}:{self.s.port + 1}")
        self.worker_endpoint = f"ipc://@disco-{os.getpid()}-{self.s.port}"
        self.wsock = self._router(self.worker_endpoint)
        self.poller = zmq.Poller()
        for sock in (self.ctrl, self.data, self.wsock):
            self.poller.register(sock, zmq.POLLIN)

    def _router(self, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, m.MAX_FRAME_BYTES + 4096)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            raise UsageError(f"cannot bind {endpoint}: {exc.strerror}") from None
        return sock

    def _init_roles(self) -> None:
        self.executor = Executor(self.worker_endpoint, self.s.data_dir, self.s.name,
                                 self.s.address, self._send_worker, self._worker_lost,
                                 self.log, spare=self.s.spare_workers)
        self.master = Master(self.s.data_dir, self._assign, self._cancel, self.log,
                             self.s.max_failures)
        self.master.on_job_end = self._job_ended
        self.master.step(time.monotonic(), core.NodeSlots(self.s.name, self.s.workers))

    def _write_pid(self) -> None:
        """``disco.pid`` holds the pid; ``node.json`` tells ``disco stop/status --data`` the port."""
        info = {"pid": os.getpid(), "name": self.s.name, "address": self.s.address}
        for path, text in ((self.s.data_dir / "node.json", json.dumps(info)),
                           (self.s.pid_file, f"{os.getpid()}\n")):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def _on_signal(self, signum, frame) -> None:
        self.running = False

    def _shutdown(self) -> None:
        if hasattr(self, "executor"):
            self.executor.stop()
        if hasattr(self, "log"):
            self.log.info("node_stopped")
        try:
            if self.s.pid_file.read_text().strip() == str(os.getpid()):
                self.s.pid_file.unlink()
        except OSError:
            pass
        self.ctx.destroy(linger=0)

    # -- the loop --

    def _loop(self) -> None:
        next_tick = 0.0
        while self.running:
            now = time.monotonic()
            timeout_ms = max(0, int((next_tick - now) * 1000))
            try:
                ready = dict(self.poller.poll(timeout_ms))
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:  # a signal arrived; the flag is checked above
                    continue
                raise
            now = time.monotonic()
            if self.wsock in ready:
                self._drain(self.wsock, self._on_worker_frames, now)
            if self.ctrl in ready:
                self._drain(self.ctrl, self._on_control_frames, now)
            if self.data in ready:
                self._drain(self.data, self._on_data_frames, now)
            if now >= next_tick:
                self._tick(now)
                next_tick = now + TICK_S

    def _drain(self, sock: zmq.Socket, handler, now: float) -> None:
        for _ in range(BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                handler(frames, now)
            except Exception:  # a handler bug must never stop the node
                self.log.exception("handler_failed", socket=sock.TYPE)

    def _tick(self, now: float) -> None:
        self.executor.tick(now)
        self.master.step(now, core.Tick())
        if self.waiters:
            due = [w for w in self.waiters if w[0] <= now]
            self.waiters = [w for w in self.waiters if w[0] > now]
            for _, ident, rid, job in due:
                self._reply(ident, rid, self.master.status(job))

    # -- control socket --

    def _on_control_frames(self, frames: list, now: float) -> None:
        if len(frames) != 2:
            self.log.warning("bad_frame_count", count=len(frames))
            if len(frames) > 2 or len(frames) == 1:
                self._error(frames[0], 0, "protocol", "expected exactly one message frame")
            return
        ident, frame = frames
        try:
            msg = m.decode(frame)
        except ProtocolError as exc:
            self.log.warning("bad_message", error=str(exc), bytes=len(frame))
            self._error(ident, 0, "protocol", str(exc))
            return
        rid = getattr(msg, "rid", 0)
        handler = self._CONTROL.get(type(msg))
        if handler is None:
            self._error(ident, rid, "protocol", f"{msg.TYPE} is not a request this node serves")
            return
        try:
            body = handler(self, msg, now, ident)
        except DiscoError as exc:
            self._error(ident, rid, type(exc).__name__, str(exc))
            return
        if body is not _PARKED:
            self._reply(ident, rid, body)

    def _reply(self, ident: bytes, rid: int, body) -> None:
        self.ctrl.send_multipart([ident, m.encode(m.Reply(rid=rid, body=body))])

    def _error(self, ident: bytes, rid: int, code: str, msg: str) -> None:
        self.ctrl.send_multipart([ident, m.encode(m.Error(rid=rid, code=code, msg=msg))])

    def _hello(self, msg, now, ident):
        return {"node": self.s.name, "address": self.s.address, "master": self.s.address,
                "version": m.VERSION, "python": PYTHON}

    def _submit(self, msg, now, ident):
        if msg.python != PYTHON:
            raise UsageError(f"the client runs Python {msg.python} but this cluster runs Python "
                             f"{PYTHON}; job functions cannot move between minor versions")
        return {"job": self.master.submit(now, msg.prefix, msg.jobpack)}

    def _wait_job(self, msg, now, ident):
        record = self.master.record(msg.job)
        if record.status != core.ACTIVE or msg.timeout_s <= 0:
            return self.master.status(msg.job)
        self.waiters.append((now + min(msg.timeout_s, 60.0), ident, msg.rid, msg.job))
        return _PARKED

    def _status(self, msg, now, ident):
        used, free = self._disk_usage(now)
        slots = {"busy": self.executor.busy(), "total": self.s.workers}
        member = {"name": self.s.name, "address": self.s.address, "state": "alive",
                  "master": True, "slots": slots, "disk": {"used": used, "free": free}}
        return {"node": self.s.name, "master": self.s.name, "term": 1, "members": [member]}

    def _nodeinfo(self, msg, now, ident):
        node = self.master.scheduler.nodes.get(self.s.name)
        return {"master": self.s.name, "nodes": [{
            "name": self.s.name, "address": self.s.address, "slots": self.s.workers,
            "busy": node.busy if node else 0,
            "blacklisted": self.s.name in self.master.scheduler.blacklist,
            "workers": len(self.executor.workers), "uptime_s": round(time.time() - self.started, 1)}]}

    def _disk_usage(self, now: float) -> tuple[int, int]:
        stamp, used, free = self._disk
        if now - stamp > 5.0 or stamp == 0.0:
            used = sum(f.stat().st_size for f in self.s.data_dir.rglob("*") if f.is_file())
            free = shutil.disk_usage(self.s.data_dir).free
            self._disk = (now, used, free)
        return used, free

    _CONTROL = {
        m.Hello: _hello,
        m.SubmitJob: _submit,
        m.WaitJob: _wait_job,
        m.GetJobStatus: lambda self, msg, now, i: self.master.status(msg.job),
        m.GetEvents: lambda self, msg, now, i: self.master.events(msg.job, msg.offset),
        m.ListJobs: lambda self, msg, now, i: self.master.list_jobs(),
        m.KillJob: lambda self, msg, now, i: self.master.kill(now, msg.job),
        m.PurgeJob: lambda self, msg, now, i: self.master.purge(now, msg.job),
        m.GetJobDict: lambda self, msg, now, i: self.master.record(msg.job).header,
        m.GetNodeInfo: _nodeinfo,
        m.Blacklist: lambda self, msg, now, i: self.master.step(now, core.NodeBlacklisted(msg.node)),
        m.Whitelist: lambda self, msg, now, i: self.master.step(now, core.NodeWhitelisted(msg.node)),
        m.GetStatus: _status,
    }

    # -- master -> this node --

    def _assign(self, node: str, task: dict) -> None:
        self.executor.assign(task)

    def _cancel(self, node: str, task_id: str) -> None:
        self.executor.cancel(task_id)

    def _job_ended(self, job: str) -> None:
        self.executor.job_ended(job)
        done = [w for w in self.waiters if w[3] == job]
        self.waiters = [w for w in self.waiters if w[3] != job]
        for _, ident, rid, name in done:
            self._reply(ident, rid, self.master.status(name))

    # -- worker socket --

    def _send_worker(self, wid: bytes, msg) -> None:
        self.wsock.send_multipart([wid, m.encode(msg)])

    def _worker_lost(self, task: dict, why: str) -> None:
        self.master.step(time.monotonic(), core.TaskFailed(task["id"], self.s.name, why))

    def _on_worker_frames(self, frames: list, now: float) -> None:
        if len(frames) != 2:
            return
        wid, frame = frames
        try:
            msg = m.decode(frame)
        except ProtocolError as exc:
            self.log.warning("bad_worker_message", error=str(exc))
            return
        if isinstance(msg, m.WorkerReady):
            self.executor.on_ready(wid, now)
        elif isinstance(msg, m.TaskMessage):
            task = self.executor.task_of(wid)
            if task is not None:
                self.master.task_message(task["job"], task["id"], self.s.name, msg.msg)
        elif isinstance(msg, (m.TaskDone, m.TaskFailed)):
            self._task_end(wid, msg, now)

    def _task_end(self, wid: bytes, msg, now: float) -> None:
        task = self.executor.on_task_end(wid, now)
        if task is None or task["id"] != msg.task:
            return
        if isinstance(msg, m.TaskDone):
            event = core.TaskFinished(msg.task, self.s.name, list(msg.outputs))
            self.log.info("task_done", job=task["job"], task=msg.task, stage=task["stage"],
                          **{k: v for k, v in msg.stats.items() if isinstance(v, (int, float))})
        else:
            event = core.TaskFailed(msg.task, self.s.name, msg.error, msg.traceback, msg.retryable)
            self.log.warning("task_failed", job=task["job"], task=msg.task,
                             stage=task["stage"], error=msg.error)
        self.master.step(now, event)

    # -- data socket --

    def _on_data_frames(self, frames: list, now: float) -> None:
        if len(frames) != 2:
            return
        ident, frame = frames
        try:
            msg = m.decode(frame)
            if not isinstance(msg, m.Fetch):
                raise ProtocolError(f"{msg.TYPE} is not served on the data port")
            header, data = self._read(msg)
        except DiscoError as exc:
            self.log.warning("bad_data_request", error=str(exc))
            rid = getattr(locals().get("msg"), "rid", 0)
            self.data.send_multipart([ident, m.encode(m.Error(rid=rid, code=type(exc).__name__,
                                                              msg=str(exc)))])
            return
        self.data.send_multipart([ident, m.encode(header), data], copy=False)

    def _read(self, msg: m.Fetch):
        path = self._data_path(msg.path)
        length = min(max(msg.length, 0), CHUNK_LIMIT)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(msg.offset)
                data = f.read(length)
        except FileNotFoundError:
            raise DataNotFound(f"{msg.path} does not exist on {self.s.name}") from None
        except OSError as exc:
            raise DataNotFound(f"{msg.path} cannot be read on {self.s.name}: {exc.strerror}") from None
        eof = msg.offset + len(data) >= size
        return m.Chunk(rid=msg.rid, offset=msg.offset, size=size, eof=eof), data

    def _data_path(self, rel: str) -> Path:
        root = self.s.data_dir.resolve()
        path = (root / rel.lstrip("/")).resolve()
        if root not in path.parents or not rel.startswith("vol"):
            raise ProtocolError(f"path {rel!r} is outside this node's volumes")
        return path


class DataNotFound(DiscoError):
    """A fetched path does not exist or cannot be read."""


_PARKED = object()


def main(settings: NodeSettings) -> int:
    return NodeDaemon(settings).run()

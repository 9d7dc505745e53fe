"""The node daemon: the thin loop around the node core (ARCHITECTURE "Pure cores, thin loops").

It alone owns sockets and the clock: the control ROUTER on ``port`` (clients, gossip, Raft,
master commands, reports), one channel per worker process (``mesh.channel``, polled beside
them; ``mesh.executor`` makes them), one DEALER per peer (``mesh.peers``); the data ROUTER on
``port + 1`` is served by its own thread (``mesh.dataserver``), so a big read never delays a
heartbeat.

Each turn reads the clock once, drains a bounded batch from each socket, decodes and validates
every frame (a bad one is answered with ``Error``, counted and logged, never raised), steps the
node core (``mesh.node``) and carries out the actions it returns, in order: journal writes are
fsynced before anything after them goes out. Bulk deletes run on the janitor thread.
"""
from __future__ import annotations

import collections
import errno
import os
import random
import signal
import time

import zmq

from common.error import PortInUse, ProtocolError, UsageError, code_of
from mesh import event as ev
from mesh import log as mesh_log
from mesh import message as m
from mesh import raft as rf
from mesh import security
from mesh.client import check_seed
from mesh.copier import Copier
from mesh.datadir import DataDir, digest_of
from mesh.dataserver import DataServer
from mesh.executor import Executor
from mesh.httpserver import HttpServer, token_for
from mesh.janitor import Janitor
from mesh.journal import Journal
from mesh.membership import Config as MeshConfig
from mesh.node import Node
from mesh.peers import Peers
from mesh.scrubthread import ScrubThread
from mesh.settings import PYTHON, NodeSettings, is_loopback
from mesh.transport import bind_router
from storage import repair as rp
from storage.volume import Volumes

BATCH = 256
TICK_S = 0.1
COMMIT_WINDOW_S = 0.02  # finished tasks' journal entries share an fsync for this long


class NodeDaemon:
    """One node: binds, serves until SIGTERM/SIGINT, then leaves cleanly."""

    def __init__(self, settings: NodeSettings, zygote=None):
        self.s = settings
        self._zygote = zygote  # its workers' zygote if started already, else None
        self.running = True
        self.dir = DataDir(settings.data_dir, settings.pid_file)
        self.refused = {"bad_frames": 0, "bad_messages": 0, "bad_data_requests": 0,
                        "unauthenticated": 0}  # shown by `disco status --json`
        self.events: collections.deque = collections.deque()  # from the executor, undelivered
        self.task_counts = {"started": {}, "finished": {}, "failed": {}}  # by stage, /metrics

    # -- life cycle --

    def run(self) -> int:
        # an embedded node (``local:N``) lives as long as the process that started it
        by = os.environ.pop("DISCO_EMBEDDED_BY", "")
        self._embedded_by = int(by) if by.isdigit() else 0
        self._prepare()
        self.log = mesh_log.get(node=self.s.name)
        self.ctx = zmq.Context()
        try:
            self._bind()
            self._init_node()
            self.dir.write_pid(self.s.name, self.s.address)
            self.log.info("node_started", address=self.s.address, workers=self.s.workers,
                          data=str(self.s.data_dir), pid=os.getpid(),
                          http=self.http.url if self.http else None)
            if self.http is not None:
                self.http.start()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _prepare(self) -> None:
        self.keys, self.token = None, None
        if self.s.secret_file:
            path = self.s.secret_path
            self.keys = security.keys_from_file(path)
            self.token = token_for(security.read_secret(path))
            os.environ["DISCO_SECRET_FILE"] = path  # our clients, peers and workers use it too
        elif not is_loopback(self.s.host) and not self.s.insecure:
            raise UsageError(f"refusing to bind {self.s.host}: without a cluster secret a node "
                             "binds loopback only; pass --insecure to override")
        self.dir.prepare()
        self.volumes = Volumes(self.s.data_dir)
        self._stale_partials = len(self.volumes.clean_partials(0.0, time.time()))  # none survive
        self.volumes.scan()
        mesh_log.configure(self.s.log_dir / "node.jsonl", node=self.s.name)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _bind(self) -> None:
        if self.keys is None and not is_loopback(self.s.host):
            self.log.warning("insecure_bind", host=self.s.host)
        self.zap = None
        if self.keys is not None:  # before any bind, so no connection is ever unchecked
            self.zap = security.ZapHandler(self.ctx, self.keys, self._unauthenticated)
        self.ctrl = bind_router(self.ctx, f"tcp://{self.s.host}:{self.s.port}", self.keys)
        self.data = DataServer(self.ctx, f"tcp://{self.s.host}:{self.s.port + 1}",
                               self.s.data_dir, self.s.name, self.keys, self.volumes)
        self.data.start()
        self.http = None
        if self.s.http_port:
            try:
                self.http = HttpServer(self.s.host, self.s.http_port, self.s.address, self.token,
                                       self._local_info, self._counters,
                                       self.s.log_dir / "node.jsonl", self.log)
            except OSError as exc:
                kind = PortInUse if exc.errno == errno.EADDRINUSE else UsageError
                raise kind(f"cannot serve HTTP on {self.s.host}:{self.s.http_port}: "
                           f"{exc.strerror} (--http-port N picks another port, 0 turns "
                           "the status page off)") from None
        self.poller = zmq.Poller()
        for sock in (self.ctrl,) + ((self.zap.sock,) if self.zap else ()):
            self.poller.register(sock, zmq.POLLIN)
        self._polled: dict[int, tuple] = {}  # worker channel fd -> (its worker, poll flags)

    def _unauthenticated(self, address: str, mechanism: str) -> None:
        self.refused["unauthenticated"] += 1
        self.log.warning("connection_refused", peer=address, mechanism=mechanism,
                         why="no cluster secret", refused=self.zap.refused)

    def _init_node(self) -> None:
        self.peers = Peers(self.ctx)
        for seed in self.s.join:
            check_seed(seed, self.log)
        self.journal = Journal(self.s.data_dir)
        known = [p for p in self.dir.known_peers()
                 if p != self.s.address and p not in self.s.join]
        cfg = ev.NodeConfig(
            name=self.s.name, address=self.s.address, incarnation=self.dir.bump_incarnation(),
            seeds=tuple(self.s.join) + tuple(known), founder=not self.s.join, python=PYTHON,
            pid=os.getpid(), data_dir=str(self.s.data_dir), slots=self.s.workers,
            max_failures=self.s.max_failures, dead_voter_s=self.s.dead_voter_s,
            speculation=self.s.speculation,
            wall_offset=time.time() - time.monotonic(),
            mesh=getattr(MeshConfig, self.s.mesh_preset)(), raft=rf.Config(),
            ddfs=rp.Config(k=self.s.blob_replicas, gc_delay_s=self.s.gc_delay_s),
            commit_window_s=COMMIT_WINDOW_S)
        self.node = Node(cfg, self.journal.load(), random.Random())
        self.janitor = Janitor(roots=list(self.volumes.volumes) + [
            self.s.data_dir / d for d in ("jobs", "jobpacks")], node_name=self.s.name,
            spare_roots=[self.s.data_dir / "vol0"])  # where workers write their outputs
        self.janitor.start()
        if self._stale_partials:
            self.log.info("partial_blobs_removed", count=self._stale_partials)
        self._blobs_reported = False
        self._blob_bytes, self._sizes = 0, {}  # what the volumes hold, kept from their changes
        self.copier = Copier(self.volumes, self.s.name, self.s.repair_bytes_s)
        self.copier.start()
        self.scrub = ScrubThread(self.volumes, self.janitor, self.s.name, self.s.scrub_bytes_s)
        self.scrub.start()
        self.executor = Executor(self.s.data_dir, self.s.name,
                                 self.s.address, self._send_worker, self._worker_lost,
                                 self.log, spare=self.s.spare_workers, slots=self.s.workers,
                                 zygote=self._zygote)

    def _on_signal(self, signum, frame) -> None:
        self.running = False

    def _shutdown(self) -> None:
        if hasattr(self, "node"):
            self._step(time.monotonic(), ev.Stopping())  # seen as left, never dead
        # running tasks are handed back (the master sees us leave); what the janitor has not
        # deleted in 2 s stays as trash, removed at the next start
        for part, args in (("http", ()), ("executor", ()), ("copier", ()), ("scrub", ()),
                           ("data", ()), ("janitor", (2.0,))):
            if getattr(self, part, None) is not None:
                getattr(self, part).stop(*args)
        if hasattr(self, "peers"):
            self.peers.close(linger_ms=500)
        if hasattr(self, "log"):
            self.log.info("node_stopped")
        self.dir.remove_pid()
        self.ctx.destroy(linger=0)

    # -- the loop --

    def _loop(self) -> None:
        next_tick = 0.0
        while self.running:
            wake = next_tick
            flush_at = self.node.next_flush_at()
            if flush_at is not None:
                wake = min(wake, flush_at)
            timeout_ms = max(0, int((wake - time.monotonic()) * 1000 + 0.999))
            self._poll_workers()
            try:
                ready = dict(self.poller.poll(timeout_ms))
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:  # a signal arrived; the flag is checked above
                    continue
                raise
            now = time.monotonic()
            if self.zap is not None and self.zap.sock in ready:
                for _ in range(BATCH):
                    self.zap.handle()
                    if not self.zap.sock.poll(0):
                        break
            for fd, (worker, _) in list(self._polled.items()):
                if fd in ready:
                    self._on_worker_channel(worker, ready[fd], now)
            if self.ctrl in ready:
                self._drain(self.ctrl, self._on_control_frames, now)
            if now >= next_tick:
                if self._embedded_by and os.getppid() != self._embedded_by:
                    self.log.warning("embedding_process_gone", pid=self._embedded_by)
                    self.running = False
                # what a worker said just before it exited is read before the executor buries
                # it: its last TaskDone counts, not "worker died"
                for worker, _ in list(self._polled.values()):
                    self._on_worker_channel(worker, zmq.POLLIN, now)
                self.executor.tick(now)
                self._step(now, self._tick(now))
                next_tick = now + TICK_S
            self._step(now, ev.Flush())

    def _tick(self, now: float) -> ev.Tick:
        used, free = self.dir.disk_usage(now)
        refused = {**self.refused, "bad_data_requests": self.data.bad_requests}
        added, removed = self.volumes.changes()
        if not self._blobs_reported:  # the first tick: every copy the volumes hold
            self._blobs_reported = True
            added, removed = list(self.volumes.inventory().values()), []
        for b in added:
            self._blob_bytes += b.size - self._sizes.get(b.name, 0)
            self._sizes[b.name] = b.size
        self._blob_bytes -= sum(self._sizes.pop(n, 0) for n in removed)
        return ev.Tick(tuple(self.executor.task_ids()), used, free, refused,
                       blob_bytes=self._blob_bytes,
                       blobs_added=tuple(_blob_row(b) for b in added),
                       blobs_removed=tuple(removed), copies_ended=tuple(self.copier.ended()))

    def _drain(self, sock: zmq.Socket, handler, now: float) -> None:
        for _ in range(BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                handler(frames, now)
            except Exception:  # a bug of ours must never stop the node
                self.log.exception("handler_failed", socket=sock.TYPE)
                if sock is self.ctrl and len(frames) == 2:
                    self._error(frames[0], 0, "internal", f"request failed on {self.s.name}")

    def _step(self, now: float, event) -> None:
        """Step the node core and carry out its actions; events they cause come next."""
        self.events.append(event)
        while self.events:
            for action in self.node.step(now, self.events.popleft()):
                _ACTIONS[type(action)](self, action)

    # -- control socket --

    def _on_control_frames(self, frames: list, now: float) -> None:
        if len(frames) != 2:
            self.refused["bad_frames"] += 1
            self.log.warning("bad_frame_count", count=len(frames))
            if len(frames) > 2 or len(frames) == 1:
                self._error(frames[0], 0, "protocol", "expected exactly one message frame")
            return
        ident, frame = frames
        try:
            msg = m.decode(frame)
            event = ev.Request(ident, msg)
            if isinstance(msg, m.SubmitJob):  # the pack's header, never its pickled code
                event = ev.Submission(ident, msg, m.jobpack_header(msg.jobpack),
                                      digest_of(msg.jobpack))
        except ProtocolError as exc:
            self.refused["bad_messages"] += 1
            self.log.warning("bad_message", error=str(exc), bytes=len(frame))
            self._error(ident, 0, code_of(exc), str(exc))  # undecodable: no rid to echo
            return
        self._step(now, event)

    def _error(self, ident: bytes, rid: int, code: str, msg: str) -> None:
        self.ctrl.send_multipart([ident, m.encode(m.Error(rid=rid, code=code, msg=msg))])

    # -- worker socket --

    def _send_worker(self, wid: bytes, msg) -> None:
        worker = self.executor.workers.get(wid)
        if worker is not None and worker.channel is not None:
            worker.channel.send(m.encode(msg))

    def _worker_lost(self, task: dict, why: str) -> None:
        self.events.append(ev.LocalReport(task, "failed", {"error": why}))

    def _poll_workers(self) -> None:
        """Poll each live worker channel: for input, and for output while some waits."""
        live = self.executor.channels()
        for fd, (worker, _) in list(self._polled.items()):
            if live.get(fd) is not worker:
                self.poller.unregister(fd)
                del self._polled[fd]
        for fd, worker in live.items():
            flags = zmq.POLLIN | (zmq.POLLOUT if worker.channel.pending else 0)
            known = self._polled.get(fd)
            if known is None:
                self.poller.register(fd, flags)
            elif known[1] != flags:
                self.poller.modify(fd, flags)
            else:
                continue
            self._polled[fd] = (worker, flags)

    def _on_worker_channel(self, worker, events: int, now: float) -> None:
        channel = worker.channel
        if events & zmq.POLLOUT:
            channel.flush()
        if not events & (zmq.POLLIN | zmq.POLLERR):
            return
        for frame in channel.receive():
            try:
                self._on_worker_frame(worker.wid, frame, now)
            except Exception:  # a bug of ours must never stop the node
                self.log.exception("handler_failed", socket="worker")

    def _on_worker_frame(self, wid: bytes, frame: bytes, now: float) -> None:
        try:
            msg = m.decode(frame)
        except ProtocolError as exc:
            self.log.warning("bad_worker_message", error=str(exc))
            return
        report = self.executor.on_message(wid, msg, now)
        if report is not None:
            if report.kind in ("done", "failed"):
                self._count("finished" if report.kind == "done" else "failed", report.task)
            self._step(now, report)

    # -- carrying out the node core's actions --

    def _send(self, a: ev.Send) -> None:
        if not self.peers.send(a.address, a.msg):
            self.events.append(ev.Undeliverable(a.address, a.msg))

    def _reply(self, a: ev.Reply) -> None:
        self.ctrl.send_multipart([a.ident, m.encode(m.Reply(rid=a.rid, body=a.body))])

    def _store_jobpack(self, a: ev.StoreJobpack) -> None:
        try:
            self.dir.store_jobpack(a.digest, a.data, a.hashed)
        except (OSError, ValueError) as exc:  # not acknowledged: others may make the majority
            self.log.error("jobpack_not_stored", digest=a.digest[:12], error=str(exc))
            return
        if isinstance(a.then, ev.Send):
            self._send(a.then)
        elif a.then is not None:
            self.events.append(a.then)

    def _drop_job_data(self, a: ev.DropJobData) -> None:
        for path in self.dir.job_paths(a.job, a.jobpack):
            self.janitor.remove(path)

    def _collect_jobpacks(self, a: ev.CollectJobpacks) -> None:
        for path in self.dir.stale_jobpacks(a.keep, a.grace_s):
            self.janitor.remove(path)

    def _delete_blob(self, a: ev.DeleteBlob) -> None:
        for path in self.volumes.remove(a.blob):
            self.janitor.remove(path)

    def _start_task(self, a: ev.StartTask) -> None:
        self._count("started", a.task)
        self.executor.assign(a.task)

    def _count(self, kind: str, task: dict) -> None:
        by_stage = self.task_counts[kind]
        stage = task.get("stage", "?")
        by_stage[stage] = by_stage.get(stage, 0) + 1

    # -- what the HTTP thread reads (plain values, copied) --

    def _local_info(self) -> dict:
        workers = [{"pid": getattr(w.popen, "known_pid", w.popen.pid), "job": w.job,
                    "task": (w.task or {}).get("id")}
                   for w in list(self.executor.workers.values())]
        return {"tasks": list(self.executor.task_ids()), "workers": workers,
                "slots": self.s.workers}

    def _counters(self) -> dict:
        journal = sum(p.stat().st_size for p in (self.s.data_dir / "journal").glob("*")
                      if p.is_file())
        return {"tasks": {k: dict(v) for k, v in self.task_counts.items()},
                "served_bytes": self.data.served_bytes, "served_requests": self.data.served_requests,
                "fetched_bytes": self.executor.fetched_bytes,
                "repair_bytes": self.copier.copied_bytes, "journal_bytes": journal,
                "blob_bytes": self._blob_bytes}

    def _fact(self, a: ev.Fact) -> None:
        getattr(self.log, a.level, self.log.info)(a.event, **a.fields)


_ACTIONS = {
    ev.Send: NodeDaemon._send,
    ev.Reply: NodeDaemon._reply,
    ev.Fail: lambda self, a: self._error(a.ident, a.rid, a.code, a.msg),
    rf.Persist: lambda self, a: self.journal.persist(a),
    ev.StoreJobpack: NodeDaemon._store_jobpack,
    ev.StartTask: NodeDaemon._start_task,
    ev.CancelTask: lambda self, a: self.executor.cancel(a.task),
    ev.RetireJob: lambda self, a: self.executor.job_ended(a.job),
    ev.DropJobData: NodeDaemon._drop_job_data,
    ev.CollectJobpacks: NodeDaemon._collect_jobpacks,
    ev.RememberMembers: lambda self, a: self.dir.remember_members(a.addresses),
    ev.ForgetPeer: lambda self, a: self.peers.forget(a.address),
    ev.StoreCopy: lambda self, a: self.copier.copy(a),
    ev.DeleteBlob: NodeDaemon._delete_blob,
    ev.Fact: NodeDaemon._fact,
}


def _blob_row(info) -> list:
    return [info.name, info.size, info.checksum, info.path, info.mtime]


def main(settings: NodeSettings, zygote=None) -> int:
    """Run a node; ``zygote``: its worker zygote, started already (``mesh.spawner``)."""
    return NodeDaemon(settings, zygote).run()

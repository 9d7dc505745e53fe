"""The node daemon: the one place that owns sockets and the clock (ARCHITECTURE "Processes").

Sockets:
- control ROUTER on ``port``: client requests, gossip, master commands and task reports;
- data ROUTER on ``port + 1``: ``Fetch`` of stored files (map outputs, results) by offset;
- worker ROUTER on an abstract ``ipc://`` name: the node's own worker processes.

- one DEALER per peer (``mesh.peers``) for one-way gossip, commands and reports.

Each loop turn reads the clock once, drains a bounded batch from each socket, decodes and
validates every frame (a bad one is answered with ``Error`` and logged, never raised), steps the
cores, then fires due timers. Every node runs the membership core (gossip, failure detection)
and the Raft core (quorum election, the replicated job journal in ``<data>/journal``); the
Raft leader is the master: it also runs the job table and scheduler (``mesh.master``) and sends
``Assign``/``Cancel`` to nodes (itself directly), which answer with ``Report``s. Job requests
sent to a node that is not master are answered ``not_master`` with the master's address, which
the client follows. Client requests that wait for a job (``WaitJob``) are parked and answered
when the job ends or their deadline passes.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import zmq

from disco import log as disco_log
from disco.error import DiscoError, ProtocolError, UsageError
from disco.settings import PYTHON, NodeSettings, is_loopback
from mesh import membership as mb
from mesh import raft as rf
from mesh.journal import Journal
from mesh import message as m
from mesh import security
from mesh.executor import Executor
from mesh.master import Master
from mesh.peers import Peers
from scheduler import core

BATCH = 256
TICK_S = 0.1
CHUNK_LIMIT = 8 << 20
LOST_REPORT_S = 3.0  # a running task missing from its node's gossip this long has failed


class NodeDaemon:
    """One node: binds, serves until SIGTERM/SIGINT, then leaves cleanly."""

    def __init__(self, settings: NodeSettings):
        self.s = settings
        self.running = True
        self.started = time.time()
        self.waiters: list[tuple] = []  # (deadline, ident, rid, job)
        self.refused = {"bad_frames": 0, "bad_messages": 0, "bad_data_requests": 0,
                        "unauthenticated": 0}  # shown by `disco status --json`
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
        self.keys = None
        if self.s.secret_file:
            path = str(Path(self.s.secret_file).expanduser().absolute())
            self.keys = security.keys_from_file(path)
            os.environ["DISCO_SECRET_FILE"] = path  # our clients, peers and workers use it too
        elif not is_loopback(self.s.host) and not self.s.insecure:
            raise UsageError(f"refusing to bind {self.s.host}: without a cluster secret a node "
                             "binds loopback only; pass --insecure to override")
        for sub in ("logs", "jobs", "vol0"):
            (self.s.data_dir / sub).mkdir(parents=True, exist_ok=True)
        disco_log.configure(self.s.log_dir / "node.jsonl", node=self.s.name)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _bind(self) -> None:
        if self.keys is None and not is_loopback(self.s.host):
            self.log.warning("insecure_bind", host=self.s.host)
        self.zap = None
        if self.keys is not None:  # before any bind, so no connection is ever unchecked
            self.zap = security.ZapHandler(self.ctx, self.keys, self._refused)
        self.ctrl = self._router(f"tcp://{self.s.host}:{self.s.port}")
        self.data = self._router(f"tcp://{self.s.host}:{self.s.port + 1}")
        self.worker_endpoint = f"ipc://@disco-{os.getpid()}-{self.s.port}"
        self.wsock = self._router(self.worker_endpoint)
        self.poller = zmq.Poller()
        for sock in (self.ctrl, self.data, self.wsock):
            self.poller.register(sock, zmq.POLLIN)
        if self.zap is not None:
            self.poller.register(self.zap.sock, zmq.POLLIN)

    def _refused(self, address: str, mechanism: str) -> None:
        self.refused["unauthenticated"] += 1
        self.log.warning("connection_refused", peer=address, mechanism=mechanism,
                         why="no cluster secret", refused=self.zap.refused)

    def _router(self, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        security.serve(sock, self.keys)
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
        now = time.monotonic()
        self.peers = Peers(self.ctx)
        self._check_seeds()
        self.incarnation = self._bump_incarnation()
        self.members = mb.Membership(self.s.name, self.s.address, self.incarnation,
                                     self.s.join + self._known_peers(),
                                     rng=random.Random(),
                                     config=getattr(mb.Config, self.s.mesh_preset)(),
                                     meta=self._meta(now))
        self.journal = Journal(self.s.data_dir)
        self.raft = rf.Raft(self.s.name, self.journal.load(), random.Random(),
                            founder=not self.s.join)
        self._entries: list = []  # proposals of this loop turn, one Raft batch (one fsync)
        self._submits: dict[str, tuple] = {}  # job -> (ident, rid) of the parked SubmitJob
        self._submit_tokens: dict[str, str] = {}  # token -> job, while being committed
        self._voters_journaled = False
        self.executor = Executor(self.worker_endpoint, self.s.data_dir, self.s.name,
                                 self.s.address, self._send_worker, self._worker_lost,
                                 self.log, spare=self.s.spare_workers)
        self.master = self._new_master()
        self._node_inc: dict[str, int] = {}  # scheduler node -> incarnation it was added with
        self._missing: dict[str, float] = {}  # running task -> when its node stopped listing it

    def _new_master(self) -> Master:
        master = Master(self.s.data_dir, self._assign, self._cancel, self._propose, self.log,
                        self.s.max_failures)
        master.on_job_end = self._job_ended
        return master

    def _known_peers(self) -> tuple:
        """Members seen alive before a restart: asked again, so a restarted node finds its
        cluster even without --join."""
        try:
            peers = json.loads((self.s.data_dir / "members.json").read_text())
        except (OSError, ValueError):
            return ()
        return tuple(p for p in peers if isinstance(p, str) and p != self.s.address
                     and p not in self.s.join)

    def _remember_members(self) -> None:
        path = self.s.data_dir / "members.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(x.address for x in self.members.alive())))
        os.replace(tmp, path)

    def _check_seeds(self) -> None:
        """Refuse to join a cluster of another protocol version or Python minor version."""
        from disco.client import Connection
        for seed in self.s.join:
            conn = Connection(seed, 2.0)
            try:
                hello = conn.request(m.Hello, python=PYTHON, client="node")
            except DiscoError as exc:
                self.log.warning("seed_unreachable", seed=seed, error=str(exc))
                continue
            finally:
                conn.close()
            if hello.get("version") != m.VERSION or hello.get("python") != PYTHON:
                raise UsageError(
                    f"cannot join {seed}: it runs protocol {hello.get('version')} on Python "
                    f"{hello.get('python')}, this node runs protocol {m.VERSION} on Python {PYTHON}")

    def _bump_incarnation(self) -> int:
        """One more than the last start's, persisted (fsynced) before the node announces it."""
        path = self.s.data_dir / "incarnation"
        try:
            last = int(path.read_text().strip())
        except (OSError, ValueError):
            last = 0
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{last + 1}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return last + 1

    def _meta(self, now: float) -> dict:
        used, free = self._disk_usage(now)
        tasks = self.executor.task_ids() if hasattr(self, "executor") else []
        return {"slots": self.s.workers, "busy": len(tasks), "tasks": tasks,
                "disk_used": used, "disk_free": free}

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
        if hasattr(self, "members"):
            self._step_members(time.monotonic(), mb.Leave())  # seen as left, never dead
        if hasattr(self, "executor"):
            self.executor.stop()  # running tasks are handed back: the master sees us leave
        if hasattr(self, "peers"):
            self.peers.close(linger_ms=500)
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
            if self.zap is not None and self.zap.sock in ready:
                for _ in range(BATCH):
                    self.zap.handle()
                    if not self.zap.sock.poll(0):
                        break
            if self.wsock in ready:
                self._drain(self.wsock, self._on_worker_frames, now)
            if self.ctrl in ready:
                self._drain(self.ctrl, self._on_control_frames, now)
            if self.data in ready:
                self._drain(self.data, self._on_data_frames, now)
            if now >= next_tick:
                self._tick(now)
                next_tick = now + TICK_S
            if self._entries:
                entries, self._entries = tuple(self._entries), []
                self._step_raft(now, rf.Propose(entries))

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
        self._step_members(now, mb.SetMeta(self._meta(now)))
        self._step_members(now, mb.Tick())
        self._step_raft(now, rf.Tick())
        if self.raft.is_leader:
            self.raft.learners = {x.name for x in self.members.alive()} - {self.s.name}
            self._manage_voters(now)
            self._sync_nodes(now)
            self.master.step(now, core.Tick())
        if self.waiters:
            due = [w for w in self.waiters if w[0] <= now]
            self.waiters = [w for w in self.waiters if w[0] > now]
            for _, ident, rid, job in due:
                self._reply(ident, rid, self.master.status(job))

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
        except ProtocolError as exc:
            self.refused["bad_messages"] += 1
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
        except Exception as exc:  # a bug of ours: the sender still gets an answer
            self.log.exception("request_failed", request=msg.TYPE)
            self._error(ident, rid, "internal", f"{msg.TYPE} failed on {self.s.name}: {exc!r}")
            return
        if body is not _PARKED:
            self._reply(ident, rid, body)

    def _reply(self, ident: bytes, rid: int, body) -> None:
        self.ctrl.send_multipart([ident, m.encode(m.Reply(rid=rid, body=body))])

    def _error(self, ident: bytes, rid: int, code: str, msg: str) -> None:
        self.ctrl.send_multipart([ident, m.encode(m.Error(rid=rid, code=code, msg=msg))])

    def _hello(self, msg, now, ident):
        return {"node": self.s.name, "address": self.s.address, "master": self._master_address(),
                "term": self.raft.term, "version": m.VERSION, "python": PYTHON,
                "pid": os.getpid(), "data": str(self.s.data_dir)}

    def _submit(self, msg, now, ident):
        if msg.python != PYTHON:
            raise UsageError(f"the client runs Python {msg.python} but this cluster runs Python "
                             f"{PYTHON}; job functions cannot move between minor versions")
        known = self.master.tokens.get(msg.token) if msg.token else None
        if known is not None:
            return {"job": known}  # a retry of a submission that was committed
        pending = self._submit_tokens.get(msg.token) if msg.token else None
        if pending is not None and pending in self._submits:
            self._submits[pending] = (ident, msg.rid)  # a retry while it is being committed
            return _PARKED
        entry = self.master.submission(msg.prefix, msg.jobpack, msg.token)
        self._propose(entry)
        self._submits[entry["job"]] = (ident, msg.rid)
        if msg.token:
            self._submit_tokens[msg.token] = entry["job"]
        return _PARKED  # answered once the job is in the journal of a majority

    def _wait_job(self, msg, now, ident):
        record = self.master.record(msg.job)
        if record.status != core.ACTIVE or msg.timeout_s <= 0:
            return self.master.status(msg.job)
        self.waiters.append((now + min(msg.timeout_s, 60.0), ident, msg.rid, msg.job))
        return _PARKED

    def _status(self, msg, now, ident):
        rows = []
        for member in sorted(self.members.members.values(), key=lambda x: x.name):
            meta = self._meta(now) if member.name == self.s.name else member.meta
            rows.append({"name": member.name, "address": member.address, "state": member.state,
                         "master": member.name == self.raft.leader,
                         "incarnation": member.incarnation,
                         "slots": {"busy": meta.get("busy", 0), "total": meta.get("slots", 0)},
                         "disk": {"used": meta.get("disk_used", 0),
                                  "free": meta.get("disk_free", 0)}})
        return {"node": self.s.name, "master": self.raft.leader, "term": self.raft.term,
                "members": rows, "voters": sorted(self.raft.voters),
                "refused": dict(self.refused)}

    def _nodeinfo(self, msg, now, ident):
        sched = self.master.scheduler
        nodes = []
        for member in self.members.alive():
            node = sched.nodes.get(member.address)
            nodes.append({"name": member.name, "address": member.address,
                          "slots": member.meta.get("slots", 0), "busy": node.busy if node else 0,
                          "blacklisted": member.address in sched.blacklist
                          or member.name in sched.blacklist, "state": member.state})
        return {"master": self.s.name, "term": self.raft.term, "nodes": nodes}

    def _disk_usage(self, now: float) -> tuple[int, int]:
        """Used and free bytes of the filesystem holding the data dir: one statvfs a second,
        never a walk of the data dir from the loop (it may hold millions of files)."""
        stamp, used, free = self._disk
        if now - stamp > 1.0 or stamp == 0.0:
            usage = shutil.disk_usage(self.s.data_dir)
            used, free = usage.used, usage.free
            self._disk = (now, used, free)
        return used, free

    def _master_only(handler):
        def wrapped(self, msg, now, ident):
            if not self.raft.is_leader:
                raise NotMaster(self._master_address() or "")
            return handler(self, msg, now, ident)
        return wrapped

    def _blacklist(self, msg, now, ident):
        self.master.step(now, core.NodeBlacklisted(self._node_key(msg.node)))

    def _whitelist(self, msg, now, ident):
        self.master.step(now, core.NodeWhitelisted(self._node_key(msg.node)))

    def _purge(self, msg, now, ident):
        self.master.purge(now, msg.job)  # every node deletes the job's data when committed

    _CONTROL = {
        m.Hello: _hello,
        m.SubmitJob: _master_only(_submit),
        m.WaitJob: _master_only(_wait_job),
        m.GetJobStatus: _master_only(lambda self, msg, now, i: self.master.status(msg.job)),
        m.GetEvents: _master_only(lambda self, msg, now, i: self.master.events(msg.job, msg.offset)),
        m.ListJobs: _master_only(lambda self, msg, now, i: self.master.list_jobs()),
        m.KillJob: _master_only(lambda self, msg, now, i: self.master.kill(now, msg.job)),
        m.PurgeJob: _master_only(_purge),
        m.GetJobDict: _master_only(lambda self, msg, now, i: self.master.record(msg.job).header),
        m.GetNodeInfo: _master_only(_nodeinfo),
        m.Blacklist: _master_only(_blacklist),
        m.Whitelist: _master_only(_whitelist),
        m.GetStatus: _status,
        m.Gossip: lambda self, msg, now, i: self._on_gossip(msg, now),
        m.Assign: lambda self, msg, now, i: self._on_assign(msg, now),
        m.Cancel: lambda self, msg, now, i: self._on_cancel(msg, now),
        m.Report: lambda self, msg, now, i: self._on_report(msg, now),
        m.JobEnded: lambda self, msg, now, i: self._on_job_ended(msg, now),
        m.Raft: lambda self, msg, now, i: self._on_raft(msg, now),
    }

    def _on_raft(self, msg: m.Raft, now: float):
        self._step_raft(now, rf.Message(msg.kind, msg.sender, msg.body))
        return _PARKED

    # -- the mesh: membership and election --

    def _step_members(self, now: float, event) -> None:
        for action in self.members.step(now, event):
            if isinstance(action, mb.SendGossip):
                self.peers.send(action.address, m.Gossip(sender=self.s.name, python=PYTHON,
                                                          body=action.entries))
            elif isinstance(action, mb.MemberChanged):
                member = self.members.members.get(action.name)
                self.log.info("member_" + action.new, member=action.name, was=action.old,
                              incarnation=member.incarnation if member else None)
                if action.new in (mb.DEAD, mb.LEFT) and member is not None:
                    self.peers.forget(member.address)
                if action.new == mb.ALIVE and action.old is None:
                    self._remember_members()

    def _step_raft(self, now: float, event) -> None:
        for action in self.raft.step(now, event):
            if isinstance(action, rf.Persist):
                self.journal.persist(action)  # fsynced before any send that follows it
            elif isinstance(action, rf.Send):
                member = self.members.members.get(action.to)
                if member is not None:
                    self.peers.send(member.address, m.Raft(kind=action.kind, sender=self.s.name,
                                                           body=action.body))
            elif isinstance(action, rf.Apply):
                self._apply(now, action.entry)
            elif isinstance(action, rf.RoleChanged):
                self._role_changed(now, action)

    def _role_changed(self, now: float, action: rf.RoleChanged) -> None:
        self.log.info("raft_" + action.role, term=action.term, leader=action.leader)
        if action.role == rf.LEADER:
            self._take_over(now)
        elif self.master.jobs or self._submits or self.waiters:
            self._step_down()

    def _take_over(self, now: float) -> None:
        """Become master: rebuild the job table from the committed journal, then schedule."""
        self.log.info("became_master", term=self.raft.term)
        self.master = self._new_master()
        self._node_inc.clear()
        for _, entry in self.raft.log[:self.raft.applied]:
            self.master.apply(now, entry, restore=True)
        self.master.finish_restore(f"{self.s.name} is master in term {self.raft.term}; job resumed")
        self._sync_nodes(now)
        self.master.lost_nodes_after_restore(now, {x.address for x in self.members.alive()})

    def _step_down(self) -> None:
        """We are no longer master: tell parked clients where to go; forget the job table."""
        leader = self._master_address() or ""
        for ident, rid in self._submits.values():
            self._error(ident, rid, "NotMaster", leader)
        for _, ident, rid, _ in self.waiters:
            self._error(ident, rid, "NotMaster", leader)
        self._submits.clear()
        self._submit_tokens.clear()
        self.waiters.clear()
        self.master = self._new_master()
        self.log.warning("stepped_down", term=self.raft.term, leader=self.raft.leader)

    def _propose(self, entry: dict) -> None:
        self._entries.append(entry)

    def _apply(self, now: float, entry: dict) -> None:
        """A committed journal entry: every node keeps job packs; the master acts on the rest."""
        kind, job = entry.get("type"), entry.get("job")
        if kind == "submit":
            self._store_jobpack(job, entry["jobpack"])
        elif kind == "purge":
            self.executor.job_ended(job)
            shutil.rmtree(self.s.data_dir / "vol0" / "jobs" / job, ignore_errors=True)
            shutil.rmtree(self.s.data_dir / "jobs" / job, ignore_errors=True)
        if not self.raft.is_leader:
            return
        self.master.apply(now, entry)
        waiting = self._submits.pop(job, None) if kind == "submit" else None
        if kind == "submit":
            self._submit_tokens.pop(entry.get("token", ""), None)
        if waiting is not None:
            self._reply(waiting[0], waiting[1], {"job": job})

    def _store_jobpack(self, job: str, jobpack: bytes) -> None:
        path = self.s.data_dir / "jobs" / job / "jobpack"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(jobpack)
        os.replace(tmp, path)

    def _manage_voters(self, now: float) -> None:
        """Voters follow membership, one change at a time: alive members join; members that
        left, or have been dead for ``dead_voter_s`` (DISCO_DEAD_VOTER_S, 60 s), go, so that
        losses one after another cannot exhaust the majority."""
        if any(e.get("type") == "voters" for e in self._entries) or \
                any(e.get("type") == "voters" for _, e in self.raft.log[self.raft.commit:]):
            return  # one configuration change in flight at a time
        voters = list(self.raft.voters)
        members = self.members.members
        joiner = next((x.name for x in self.members.alive() if x.name not in voters
                       and x.state == mb.ALIVE), None)
        leaver = next((v for v in voters if v != self.s.name and v in members and (
            members[v].state == mb.LEFT or (members[v].state == mb.DEAD
                                            and now - members[v].changed > self.s.dead_voter_s))),
                      None)
        if joiner:
            voters.append(joiner)
        elif leaver:
            voters.remove(leaver)
            self.log.info("voter_removed", member=leaver, state=members[leaver].state)
        elif self._voters_journaled or any(e.get("type") == "voters" for _, e in self.raft.log):
            self._voters_journaled = True
            return
        self._propose({"type": "voters", "voters": sorted(voters)})

    def _sync_nodes(self, now: float) -> None:
        """Feed the scheduler the alive members' slots; lost or restarted members are lost."""
        sched = self.master.scheduler
        live = {x.address: x for x in self.members.alive()}
        for address in list(sched.nodes):
            member = live.get(address)
            if member is None or member.incarnation != self._node_inc.get(address):
                self.master.step(now, core.NodeLost(address))
                self._node_inc.pop(address, None)
        for address, member in live.items():
            slots = int(member.meta.get("slots", 0))
            node = sched.nodes.get(address)
            if node is None or node.slots != slots:
                self._node_inc[address] = member.incarnation
                self.master.step(now, core.NodeSlots(address, slots))
        self._reconcile(now, live)

    def _reconcile(self, now: float, live: dict) -> None:
        """A task the master thinks runs on a node that no longer lists it lost its report."""
        held = {address: set(member.meta.get("tasks", ())) for address, member in live.items()}
        held[self.s.address] = set(self.executor.task_ids())
        missing = {}
        for task_id, node in self.master.running_tasks():
            if node in held and task_id not in held[node]:
                since = self._missing.get(task_id, now)
                missing[task_id] = since
                if now - since > LOST_REPORT_S:
                    self.log.warning("task_vanished", task=task_id, on=node)
                    self.master.step(now, core.TaskFailed(
                        task_id, node, f"task vanished from {node} (its report was lost)"))
                    missing.pop(task_id)
        self._missing = missing

    def _master_address(self) -> str | None:
        member = self.members.members.get(self.raft.leader or "")
        return member.address if member else None

    def _node_key(self, node: str) -> str:
        """Scheduler nodes are keyed by address; accept a member's name too."""
        member = self.members.members.get(node)
        return member.address if member else node

    def _broadcast(self, msg) -> None:
        for member in self.members.peers():
            self.peers.send(member.address, msg)

    def _on_gossip(self, msg: m.Gossip, now: float):
        if msg.python != PYTHON:
            self.log.warning("peer_refused", peer=msg.sender, python=msg.python, ours=PYTHON)
            return _PARKED
        self._step_members(now, mb.GossipIn(msg.sender, msg.body))
        return _PARKED

    def _fresh(self, term: int, master: str, what: str) -> bool:
        if not self.raft.accepts(term):
            self.log.warning("stale_term_refused", what=what, term=term, current=self.raft.term,
                             sender=master)
            return False
        return True

    def _on_assign(self, msg: m.Assign, now: float):
        if self._fresh(msg.term, msg.master, "assign"):
            self.executor.assign({**msg.task, "master": msg.master})
        return _PARKED

    def _on_cancel(self, msg: m.Cancel, now: float):
        if self._fresh(msg.term, msg.master, "cancel"):
            self.executor.cancel(msg.task)
        return _PARKED

    def _on_job_ended(self, msg: m.JobEnded, now: float):
        if self._fresh(msg.term, "", "job_ended"):
            self.executor.job_ended(msg.job)
            if msg.purge:
                shutil.rmtree(self.s.data_dir / "vol0" / "jobs" / msg.job, ignore_errors=True)
                shutil.rmtree(self.s.data_dir / "jobs" / msg.job, ignore_errors=True)
        return _PARKED

    def _on_report(self, msg: m.Report, now: float):
        if not self.raft.is_leader:
            self.log.warning("report_ignored", task=msg.task, node=msg.node, why="not master")
            return _PARKED
        if msg.kind == "message":
            self.master.task_message(msg.job, msg.task, msg.node, msg.msg)
        elif msg.kind == "done":
            self.master.finished(msg.task, msg.node, list(msg.outputs))
        elif msg.lost:
            self.master.step(now, core.InputLost(msg.task, msg.node, msg.lost))
        else:
            self.master.step(now, core.TaskFailed(msg.task, msg.node, msg.error, msg.traceback,
                                                  msg.retryable))
        return _PARKED

    def _report(self, task: dict, kind: str, **fields) -> None:
        """Tell the master about one of our tasks: directly when we are it, else by message."""
        report = m.Report(term=self.raft.term, node=self.s.address, job=task["job"],
                          task=task["id"], kind=kind, **fields)
        if self.raft.is_leader:
            self._on_report(report, time.monotonic())
            return
        address = self._master_address()
        if address is None or not self.peers.send(address, report):
            self.log.warning("report_undeliverable", task=task["id"], kind=kind)

    # -- master -> this node --

    def _assign(self, node: str, task: dict) -> None:
        task = {**task, "master": self.s.address,
                "jobpack": f"disco://{self.s.address}/jobs/{task['job']}/jobpack"}
        if node == self.s.address:
            self.executor.assign(task)
        elif not self.peers.send(node, m.Assign(term=self.raft.term, master=self.s.address,
                                                task=task)):
            self.master.step(time.monotonic(), core.TaskFailed(task["id"], node,
                                                               f"cannot reach {node}"))

    def _cancel(self, node: str, task_id: str) -> None:
        if node == self.s.address:
            self.executor.cancel(task_id)
        else:
            self.peers.send(node, m.Cancel(term=self.raft.term, master=self.s.address,
                                           task=task_id))

    def _job_ended(self, job: str) -> None:
        self.executor.job_ended(job)
        self._broadcast(m.JobEnded(term=self.raft.term, job=job))
        done = [w for w in self.waiters if w[3] == job]
        self.waiters = [w for w in self.waiters if w[3] != job]
        for _, ident, rid, name in done:
            self._reply(ident, rid, self.master.status(name))

    # -- worker socket --

    def _send_worker(self, wid: bytes, msg) -> None:
        self.wsock.send_multipart([wid, m.encode(msg)])

    def _worker_lost(self, task: dict, why: str) -> None:
        self._report(task, "failed", error=why)

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
                self._report(task, "message", msg=msg.msg)
        elif isinstance(msg, (m.TaskDone, m.TaskFailed)):
            self._task_end(wid, msg, now)

    def _task_end(self, wid: bytes, msg, now: float) -> None:
        task = self.executor.on_task_end(wid, now)
        if task is None or task["id"] != msg.task:
            return
        log = self.log.bind(job=task["job"], task=msg.task, stage=task["stage"])
        if isinstance(msg, m.TaskDone):
            log.info("task_done", **{k: v for k, v in msg.stats.items()
                                     if isinstance(v, (int, float))})
            self._report(task, "done", outputs=list(msg.outputs))
        else:
            log.warning("task_failed", error=msg.error, lost=msg.lost or None)
            self._report(task, "failed", error=msg.error, traceback=msg.traceback,
                         retryable=msg.retryable, lost=msg.lost)

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
            self.refused["bad_data_requests"] += 1
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
        parts = Path(rel.lstrip("/")).parts
        jobpack = len(parts) == 3 and parts[0] == "jobs" and parts[2] == "jobpack"
        if root not in path.parents or not (rel.startswith("vol") or jobpack):
            raise ProtocolError(f"path {rel!r} is outside this node's volumes")
        return path


class NotMaster(DiscoError):
    """A job request reached a node that is not the master; the message is the master's address."""


class DataNotFound(DiscoError):
    """A fetched path does not exist or cannot be read."""


_PARKED = object()


def main(settings: NodeSettings) -> int:
    return NodeDaemon(settings).run()

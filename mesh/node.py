"""The node core: every decision one node makes, as a pure state machine.

Theory of operation
-------------------
A node composes four cores and owns what sits between them:

- membership (``mesh.membership``, SWIM + Lifeguard): who is alive; each member's gossiped
  meta carries its slots and the tasks it holds;
- Raft (``mesh.raft``): the elected leader is the master; the journal replicates what must
  survive it (``scheduler.entry``). Every node applies every committed entry to its
  ``JournalState``, so a new master starts from state it already holds, and the log is
  compacted into snapshots every ``compact_every`` entries;
- the job table and scheduler (``scheduler.jobtable``), on the master only;
- DDFS (``mesh.ddfs``): the tag store applied from the journal on every node, this node's blob
  copies reported to the master, and on the master tag requests, blob placement on the ring and
  the repair planner (``storage.repair``).

The node core decides: which members are voters (alive members join, members that left or are
dead for ``dead_voter_s`` go, one change at a time); which members the scheduler may use (slots
from gossip; a restarted member is a lost one); which running tasks vanished from their node's
gossip (their report was lost: failed after ``lost_report_s``); fencing (master commands of an
older term are refused); routing task reports (to the local table, or to the master); applying
committed entries; parked client requests (submits until committed, waits until the job ends
or their deadline) and submission tokens (a retried submit gets the same job).

A submit goes: the master stores the job pack under its content hash, sends it to the other
voters (``PutJobpack``), and proposes the ``Submit`` entry once a majority of voters has it
fsynced (``JobpackStored``); the entry names those holders, so any node's worker can fetch it.

Events in (``step(now, event)``): ``Tick`` (with what the loop knows of this node: its tasks,
disk and refusal counts), ``Request`` (a decoded control-port message), ``Submission`` (a
``SubmitJob`` whose pack the loop parsed and hashed), ``LocalReport`` (from this node's
executor), ``Undeliverable``, ``Flush`` (end of a loop turn: proposals go to Raft as one batch,
one fsync) and ``Stopping``. Actions out: ``Send``, ``Reply``, ``Fail``, ``raft.Persist``
(fsync before any later action), ``StoreJobpack``, ``StartTask``, ``CancelTask``,
``RetireJob``, ``DropJobData``, ``RememberMembers``, ``ForgetPeer``, ``StoreCopy``,
``DeleteBlob`` and ``Fact``s to log.
"""
from __future__ import annotations

import msgpack

from common.error import code_of

from mesh import membership as mb
from mesh import message as m
from mesh import raft as rf
from mesh.ddfs import DDFS_REQUESTS, DdfsCore
from mesh.request import PARKED, ClientRequests, Refusal, _PendingSubmit
from scheduler import core
from scheduler import entry as en
from scheduler import jobtable as jt
from scheduler.jobtable import Fact
from storage import tags as tg
from mesh.event import (
    NodeConfig, Tick, Request, Submission, LocalReport, Undeliverable,
    Flush, Stopping, Send, Reply, Fail, StoreJobpack, CollectJobpacks,
    StartTask, CancelTask, RetireJob, DropJobData, RememberMembers, ForgetPeer,
)

class Node(ClientRequests, DdfsCore):
    def __init__(self, cfg: NodeConfig, raft_state: rf.State, rng):
        self.cfg = cfg
        self.members = mb.Membership(cfg.name, cfg.address, cfg.incarnation, cfg.seeds, rng=rng,
                                     config=cfg.mesh, meta=self._meta(Tick()))
        self.raft = rf.Raft(cfg.name, raft_state, rng, config=cfg.raft, founder=cfg.founder)
        snap = raft_state.snapshot
        self.state, tags = _unpack_state(snap.data) if snap else (en.JournalState(),
                                                                   tg.TagStore())
        self._init_ddfs(tags)
        self.table: jt.JobTable | None = None
        self.tick = Tick()
        self.waiters: list[tuple] = []  # (deadline, ident, rid, job)
        self.submits: dict[str, _PendingSubmit] = {}
        self.submit_tokens: dict[str, str] = {}
        self.node_inc: dict[str, int] = {}
        self.missing: dict[str, float] = {}
        self.bad_peer_messages = 0
        self._takeover_at = 0  # leader, waiting for its first entry to be applied
        self._entries: list = []
        self._first_entry_at: float | None = None  # when the oldest unproposed entry came
        self._now = 0.0
        self._out: list = []

    # -- the one entry point --

    def step(self, now: float, event) -> list:
        self._now, self._out = now, []
        _EVENTS[type(event)](self, event)
        return self._out

    @property
    def is_master(self) -> bool:
        return self.raft.is_leader and self.table is not None

    def master_address(self) -> str | None:
        member = self.members.members.get(self.raft.leader or "")
        return member.address if member else None

    # -- events --

    def _on_tick(self, ev: Tick) -> None:
        self.tick = ev
        self._members(mb.SetMeta(self._meta(ev)))
        self._members(mb.Tick())
        self._raft(rf.Tick())
        if self.is_master:
            self.raft.learners = {x.name for x in self.members.alive()} - {self.cfg.name}
            self._manage_voters()
            self._sync_nodes()
            self._table(core.Tick())
        self._ddfs_tick(ev)
        self._expire_parked()
        self._on_flush(Flush())

    def _on_flush(self, ev: Flush) -> None:
        if self._entries:
            if self._first_entry_at is None:
                self._first_entry_at = self._now
            if self._defer_commit():
                return
            entries, self._entries = tuple(self._entries), []
            self._first_entry_at = None
            self._raft(rf.Propose(entries))

    def _defer_commit(self) -> bool:
        """Group commit: while tasks still run, finished tasks' entries wait up to
        ``commit_window_s`` (or 256 of them) to share one fsync; anything else goes at once."""
        window = self.cfg.commit_window_s
        return (window > 0 and self.table is not None and len(self._entries) < 256
                and self._now - self._first_entry_at < window
                and all(e.get("type") == "done" for e in self._entries)
                and self.table.unreleased() > 0)

    def next_flush_at(self) -> float | None:
        """When entries waiting to be proposed must go (the loop wakes up for it): at once for
        entries a flush has not seen yet (a job's end proposed while a flush committed its
        last task waited for the next tick), else when a group commit's window closes."""
        if not self._entries:
            return None
        if self._first_entry_at is None:
            return self._now
        return self._first_entry_at + self.cfg.commit_window_s

    def _on_stopping(self, ev: Stopping) -> None:
        self._members(mb.Leave())

    def _on_request(self, ev: Request) -> None:
        self._serve(ev.ident, ev.msg, getattr(ev.msg, "rid", 0))

    def _on_submission(self, ev: Submission) -> None:
        self._serve(ev.ident, ev, ev.msg.rid)

    def _serve(self, ident: bytes, msg, rid: int) -> None:
        handler = _REQUESTS.get(type(msg))
        if handler is None:
            self._out.append(Fail(ident, rid, "protocol",
                                  f"{msg.TYPE} is not a request this node serves"))
            return
        try:
            body = handler(self, msg, ident)
        except Refusal as exc:
            self._out.append(Fail(ident, rid, exc.code, str(exc)))
            return
        except (jt.JobNotFound, jt.BadJob) as exc:  # the user's: answered with its wire code
            self._out.append(Fail(ident, rid, code_of(exc), str(exc)))
            return
        if body is not PARKED:
            self._out.append(Reply(ident, rid, body))

    def _on_local_report(self, ev: LocalReport) -> None:
        task = ev.task
        report = m.Report(term=self.raft.term, node=self.cfg.address, job=task["job"],
                          task=task["id"], kind=ev.kind, **ev.fields)
        if self.is_master:
            self._report(report)
            return
        address = self.master_address()
        if address is None:
            self._fact("report_undeliverable", "warning", task=task["id"], kind=ev.kind)
        else:
            self._out.append(Send(address, report))

    def _on_undeliverable(self, ev: Undeliverable) -> None:
        if isinstance(ev.msg, m.Assign) and self.is_master:
            self._table(core.TaskFailed(ev.msg.task["id"], ev.address,
                                        f"cannot reach {ev.address}"))
        elif isinstance(ev.msg, m.Report):
            self._fact("report_undeliverable", "warning", task=ev.msg.task, kind=ev.msg.kind)

    # -- peer messages --

    def _gossip(self, msg: m.Gossip, ident):
        if msg.python != self.cfg.python:
            self._fact("peer_refused", "warning", peer=msg.sender, python=msg.python,
                       ours=self.cfg.python)
        else:
            self._members(mb.GossipIn(msg.sender, msg.body))
        return PARKED

    def _fresh(self, term: int, sender: str, what: str) -> bool:
        if self.raft.accepts(term):
            return True
        self._fact("stale_term_refused", "warning", what=what, term=term,
                   current=self.raft.term, sender=sender)
        return False

    def _assign(self, msg: m.Assign, ident):
        if self._fresh(msg.term, msg.master, "assign"):
            task = msg.task
            if not all(isinstance(task.get(k), str) and task.get(k) for k in ("id", "job", "stage")):
                self._dropped("assign", msg.master, "assign", "the task has no id, job or stage")
            else:
                self._out.append(StartTask({**task, "master": msg.master}))
        return PARKED

    def _cancel(self, msg: m.Cancel, ident):
        if self._fresh(msg.term, msg.master, "cancel"):
            self._out.append(CancelTask(msg.task))
        return PARKED

    def _job_ended(self, msg: m.JobEnded, ident):
        if self._fresh(msg.term, "", "job_ended"):
            self._out.append(RetireJob(msg.job))
            if msg.purge:
                self._out.append(DropJobData(msg.job))
        return PARKED

    def _put_jobpack(self, msg: m.PutJobpack, ident):
        if self._fresh(msg.term, msg.master, "put_jobpack"):
            self._out.append(StoreJobpack(msg.digest, msg.jobpack, then=Send(
                msg.master, m.JobpackStored(term=msg.term, node=self.cfg.name,
                                            digest=msg.digest))))
        return PARKED

    def _jobpack_stored(self, msg: m.JobpackStored, ident):
        if self.is_master and msg.term == self.raft.term:
            for name, pending in list(self.submits.items()):
                if pending.entry.jobpack == msg.digest:
                    self._pack_stored(name, msg.node)
        return PARKED

    def _raft_message(self, msg: m.Raft, ident):
        self._raft(rf.Message(msg.kind, msg.sender, msg.body))
        return PARKED

    def _report_message(self, msg: m.Report, ident):
        if not self.is_master:
            self._fact("report_ignored", "warning", task=msg.task, node=msg.node,
                       why="not master")
        else:
            self._report(msg)
        return PARKED

    def _report(self, msg: m.Report) -> None:
        if msg.kind == "message":
            self._table(jt.TaskNote(msg.job, msg.task, msg.node, msg.msg))
        elif msg.kind == "done":
            self._table(core.TaskReported(msg.task, msg.node))  # its slot is free now
            self._entries.append(en.to_wire(en.Done(msg.task, msg.node, tuple(msg.outputs))))
        elif msg.lost:
            self._table(core.InputLost(msg.task, msg.node, msg.lost))
        else:
            self._table(core.TaskFailed(msg.task, msg.node, msg.error, msg.traceback,
                                        msg.retryable, msg.elsewhere))

    # -- submissions --

    def _pack_stored(self, name: str, voter: str) -> None:
        pending = self.submits.get(name)
        if pending is None or pending.proposed:
            return
        pending.acks.add(voter)
        voters = set(self.raft.voters)
        if len(pending.acks & voters) * 2 > len(voters):
            holders = tuple(sorted(a for a in map(self._address, pending.acks) if a))
            entry = en.Submit(**{**pending.entry.__dict__, "holders": holders})
            pending.entry, pending.proposed = entry, True
            self._entries.append(en.to_wire(entry))

    def _expire_parked(self) -> None:
        now = self._now
        due = [w for w in self.waiters if w[0] <= now]
        self.waiters = [w for w in self.waiters if w[0] > now]
        for _, ident, rid, job in due:
            self._answer_wait(ident, rid, job)
        for name, pending in list(self.submits.items()):
            if not pending.proposed and pending.deadline <= now:
                del self.submits[name]
                self.submit_tokens.pop(pending.entry.token, None)
                self._out.append(Fail(pending.ident, pending.rid, "CommError",
                                      "the job pack could not be stored on a majority of "
                                      f"voters within {self.cfg.pack_timeout_s:g} s"))

    def _answer_wait(self, ident: bytes, rid: int, job: str) -> None:
        """Only a master has waiters (a step-down answers them ``NotMaster``)."""
        try:
            self._out.append(Reply(ident, rid, self.table.status(job)))
        except jt.JobNotFound as exc:  # purged while waited for
            self._out.append(Fail(ident, rid, "UsageError", str(exc)))

    # -- the cores' actions --

    def _members(self, event) -> None:
        for action in self.members.step(self._now, event):
            if isinstance(action, mb.SendGossip):
                self._out.append(Send(action.address, m.Gossip(
                    sender=self.cfg.name, python=self.cfg.python, body=action.entries)))
            elif isinstance(action, mb.MemberChanged):
                self._member_changed(action)
            elif isinstance(action, mb.Dropped):
                self._dropped("gossip", action.sender, action.kind, action.why)

    def _dropped(self, protocol: str, sender: str, kind: str, why: str) -> None:
        """A core ignored a malformed message of a peer: said, and counted in status."""
        self.bad_peer_messages += 1
        self._fact("peer_message_dropped", "warning", protocol=protocol, sender=sender,
                   kind=kind, why=why, count=self.bad_peer_messages)

    def _member_changed(self, action: mb.MemberChanged) -> None:
        member = self.members.members.get(action.name)
        self._fact("member_" + action.new, member=action.name, was=action.old,
                   incarnation=member.incarnation if member else None)
        if action.new in (mb.DEAD, mb.LEFT) and member is not None:
            self._out.append(ForgetPeer(member.address))
        if action.new == mb.ALIVE and action.old is None:
            self._out.append(RememberMembers(tuple(sorted(x.address
                                                          for x in self.members.alive()))))

    def _raft(self, event) -> None:
        for action in self.raft.step(self._now, event):
            if isinstance(action, rf.Persist):
                self._out.append(action)
            elif isinstance(action, rf.Send):
                address = self._address(action.to)
                if address is not None:
                    self._out.append(Send(address, m.Raft(kind=action.kind, sender=self.cfg.name,
                                                          body=action.body)))
            elif isinstance(action, rf.Apply):
                self._apply(action.entry)
            elif isinstance(action, rf.RoleChanged):
                self._role_changed(action)
            elif isinstance(action, rf.Dropped):
                self._dropped("raft", action.sender, action.kind, action.why)
            elif isinstance(action, rf.Restore):
                self.state, self.tags = _unpack_state(action.snapshot.data)
                self._fact("snapshot_installed", index=action.snapshot.index)
        if self._takeover_at and self.raft.is_leader and self.raft.applied >= self._takeover_at:
            self._takeover_at = 0
            self._take_over()
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self.raft.applied - self.raft.snapshot_index >= self.cfg.compact_every:
            for action in self.raft.step(self._now, rf.Compact(
                    self.raft.applied, _pack_state(self.state, self.tags))):
                self._out.append(action)  # a Persist of the snapshot
            self._fact("journal_compacted", index=self.raft.applied)
            keep = {j.jobpack for j in self.state.jobs.values()} | \
                {p.entry.jobpack for p in self.submits.values()}
            self._out.append(CollectJobpacks(frozenset(keep), self.cfg.pack_grace_s))

    def _apply(self, wire: dict) -> None:
        if tg.is_tag_entry(wire):
            self._apply_tag_entry(wire)
            return
        try:
            entry = en.from_wire(wire)
        except ValueError as exc:
            self._fact("bad_journal_entry", "warning", error=str(exc))
            return
        if isinstance(entry, en.Purge):
            self.state.apply(entry)
            self._out.append(RetireJob(entry.job))
            self._out.append(DropJobData(entry.job))  # its pack goes at the next collection
        else:
            self.state.apply(entry)
        if not self.is_master:
            return
        self._table(jt.Committed(entry))
        if isinstance(entry, en.Submit):
            pending = self.submits.pop(entry.job, None)
            self.submit_tokens.pop(entry.token, None)
            if pending is not None:
                self._out.append(Reply(pending.ident, pending.rid, {"job": entry.job}))

    def _role_changed(self, action: rf.RoleChanged) -> None:
        self._fact("raft_" + action.role, term=action.term, leader=action.leader)
        if action.role == rf.LEADER:
            self._ddfs_lead()
            # master once this term's first entry is applied: then every entry a predecessor
            # committed is applied here too, and the journal state is complete [Raft 5.4.2, 8]
            self._takeover_at = self.raft.last_index()
            return
        self._takeover_at = 0
        if self.table is not None or self.submits or self.waiters or self.planner is not None:
            self._step_down()

    def _take_over(self) -> None:
        """Become master: the job table from the journal state this node already holds."""
        self._fact("became_master", term=self.raft.term)
        self.node_inc.clear()
        self.table, actions = jt.JobTable.restore(
            self.state, self._now, {x.address for x in self.members.alive()},
            f"{self.cfg.name} is master in term {self.raft.term}; job resumed",
            max_failures=self.cfg.max_failures, wall_offset=self.cfg.wall_offset,
            salt=self.cfg.pid, speculation=self.cfg.speculation)
        self._table_actions(actions)
        self._sync_nodes()

    def _step_down(self) -> None:
        """No longer master: parked clients learn where to go; the job table is forgotten."""
        leader = self.master_address() or ""
        for pending in self.submits.values():
            self._out.append(Fail(pending.ident, pending.rid, "NotMaster", leader))
        for _, ident, rid, _ in self.waiters:
            self._out.append(Fail(ident, rid, "NotMaster", leader))
        self._ddfs_step_down(leader)
        self.submits.clear()
        self.submit_tokens.clear()
        self.waiters.clear()
        self.table = None
        self._entries = []  # a follower's proposals go nowhere
        self._first_entry_at = None
        self._fact("stepped_down", "warning", term=self.raft.term, leader=self.raft.leader)

    def _table(self, event) -> None:
        if self.table is not None:
            self._table_actions(self.table.step(self._now, event))

    def _table_actions(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, core.AssignTask):
                self._send_task(action.node, action.task)
            elif isinstance(action, core.CancelTask):
                self._out.append(CancelTask(action.task) if action.node == self.cfg.address
                                 else Send(action.node, m.Cancel(term=self.raft.term,
                                                                 master=self.cfg.address,
                                                                 task=action.task)))
            elif isinstance(action, jt.Propose):
                self._entries.append(en.to_wire(action.entry))
            elif isinstance(action, jt.JobClosed):
                self._job_closed(action.job)
            else:
                self._out.append(action)  # a Fact

    def _send_task(self, node: str, task: dict) -> None:
        job = self.state.jobs.get(task["job"])
        digest = job.jobpack if job else ""
        holders = job.holders if job else ()
        task = {**task, "master": self.cfg.address, "jobpack": digest,
                "jobpack_urls": [f"disco://{h}/jobpacks/{digest}" for h in holders]}
        if node == self.cfg.address:
            self._out.append(StartTask(task))
        else:
            self._out.append(Send(node, m.Assign(term=self.raft.term, master=self.cfg.address,
                                                 task=task)))

    def _job_closed(self, job: str) -> None:
        self._out.append(RetireJob(job))
        for member in self.members.peers():
            self._out.append(Send(member.address, m.JobEnded(term=self.raft.term, job=job)))
        done = [w for w in self.waiters if w[3] == job]
        self.waiters = [w for w in self.waiters if w[3] != job]
        for _, ident, rid, name in done:
            self._answer_wait(ident, rid, name)

    # -- what the master decides on every tick --

    def _manage_voters(self) -> None:
        """Voters follow membership, one change at a time: alive members that hold the log up
        to the commit index join (a learner first catches up); members that
        left, or are dead for ``dead_voter_s``, go, so losses one after another keep a
        majority."""
        if self.raft.config_pending() or any(e.get("type") == "voters" for e in self._entries):
            return
        voters = list(self.raft.voters)
        members = self.members.members
        joiner = next((x.name for x in self.members.alive() if x.name not in voters
                       and x.state == mb.ALIVE and self.raft.caught_up(x.name)), None)
        leaver = next((v for v in voters if v != self.cfg.name and v in members and (
            members[v].state == mb.LEFT or (members[v].state == mb.DEAD and
                                            self._now - members[v].changed > self.cfg.dead_voter_s))),
                      None)
        if joiner:
            voters.append(joiner)
        elif leaver:
            voters.remove(leaver)
            self._fact("voter_removed", member=leaver, state=members[leaver].state)
        elif self.raft.config_journaled():
            return
        self._entries.append(en.to_wire(en.Voters(tuple(sorted(voters)))))

    def _sync_nodes(self) -> None:
        """Feed the scheduler the alive members' slots (a suspect member's no more than it
        uses); lost or restarted members are lost."""
        sched = self.table.scheduler
        live = {x.address: x for x in self.members.alive()}
        for address in list(sched.nodes):
            member = live.get(address)
            if member is None or member.incarnation != self.node_inc.get(address):
                self._table(core.NodeLost(address))
                self.node_inc.pop(address, None)
        for address, member in live.items():
            slots = int(member.meta.get("slots", 0))
            node = sched.nodes.get(address)
            queue = member.state != mb.SUSPECT
            if not queue:  # a suspect keeps what it runs, gets nothing new (a master just lost
                slots = min(slots, node.busy if node else 0)  # is suspect first)
            if node is None or (node.slots, node.queue) != (slots, queue):
                self.node_inc[address] = member.incarnation
                self._table(core.NodeSlots(address, slots, queue=queue))
        self._reconcile(live)

    def _reconcile(self, live: dict) -> None:
        """A task the master thinks runs on a node that no longer lists it lost its report."""
        held = {address: set(member.meta.get("tasks", ())) for address, member in live.items()}
        held[self.cfg.address] = set(self.tick.tasks)
        missing = {}
        for task_id, node in self.table.running_tasks():
            if node in held and task_id not in held[node]:
                since = self.missing.get(task_id, self._now)
                missing[task_id] = since
                if self._now - since > self.cfg.lost_report_s:
                    self._fact("task_vanished", "warning", task=task_id, on=node)
                    self._table(core.TaskFailed(
                        task_id, node, f"task vanished from {node} (its report was lost)"))
                    missing.pop(task_id)
        self.missing = missing

    # -- helpers --

    def _meta(self, tick: Tick) -> dict:
        return {"slots": self.cfg.slots, "busy": len(tick.tasks), "tasks": list(tick.tasks),
                "disk_used": tick.disk_used, "disk_free": tick.disk_free,
                "blob_bytes": tick.blob_bytes}

    def _address(self, name: str) -> str | None:
        member = self.members.members.get(name)
        return member.address if member else None

    def _fact(self, event: str, level: str = "info", **fields) -> None:
        self._out.append(Fact(event, level, {k: v for k, v in fields.items() if v is not None}))

    def check_invariants(self) -> None:
        self.raft.check_invariants()
        self.members.check_invariants()
        self.state.check_invariants()
        self.tags.check_invariants()
        if self.planner is not None:
            self.planner.check_invariants()
        if self.table is not None:
            self.table.check_invariants()
        assert self.table is None or self.raft.is_leader, "a job table on a non-leader"


def _pack_state(state: en.JournalState, tags: tg.TagStore) -> bytes:
    return msgpack.packb({**state.snapshot(), "tags": tags.snapshot()}, use_bin_type=True)


def _unpack_state(data: bytes) -> tuple[en.JournalState, tg.TagStore]:
    plain = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return en.JournalState.from_snapshot(plain), tg.TagStore.from_snapshot(plain.get("tags"))


_REQUESTS = {
    m.Hello: Node._hello, Submission: Node._submit, m.WaitJob: Node._wait_job,
    m.GetStatus: Node._status, m.GetNodeInfo: Node._nodeinfo, m.KillJob: Node._kill,
    m.PurgeJob: Node._purge, m.Blacklist: Node._blacklist, m.Whitelist: Node._whitelist,
    m.GetJobStatus: Node._query, m.GetEvents: Node._query, m.GetJobDict: Node._query,
    m.ListJobs: Node._query, m.RemakeResult: Node._remake_result,
    m.Gossip: Node._gossip, m.Assign: Node._assign, m.Cancel: Node._cancel,
    m.JobEnded: Node._job_ended, m.PutJobpack: Node._put_jobpack,
    m.JobpackStored: Node._jobpack_stored, m.Raft: Node._raft_message,
    m.Report: Node._report_message, **DDFS_REQUESTS,
}
_EVENTS = {Tick: Node._on_tick, Request: Node._on_request, Submission: Node._on_submission,
           LocalReport: Node._on_local_report, Undeliverable: Node._on_undeliverable,
           Flush: Node._on_flush, Stopping: Node._on_stopping}

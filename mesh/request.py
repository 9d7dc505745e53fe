"""The node core's answers to client requests (a part of ``mesh.node.Node``).

Each handler takes the decoded message and the client's identity and returns the reply's body,
``PARKED`` (answered later: a submit until it is committed, a wait until its job ends), or
raises ``Refusal(code, msg)``, which the client receives as an ``Error`` with that code.
Job requests reach only the master; elsewhere they are refused ``NotMaster`` with the master's
address, which the client follows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mesh import message as m
from mesh.event import Request, Send, StoreJobpack, Submission
from scheduler import core
from scheduler import entry as en
from scheduler import jobtable as jt

@dataclass
class _PendingSubmit:
    ident: bytes
    rid: int
    entry: en.Submit
    deadline: float
    acks: set = field(default_factory=set)
    proposed: bool = False


class Refusal(Exception):
    def __init__(self, code: str, msg: str):
        super().__init__(msg)
        self.code = code


PARKED = object()  # a request answered later


class ClientRequests:
    """Mixed into ``Node``: uses its cores, table, state and parked requests."""


    def _master_only(handler):
        def wrapped(self, msg, ident):
            if not self.is_master:
                raise Refusal("NotMaster", self.master_address() or "")
            return handler(self, msg, ident)
        return wrapped

    def _hello(self, msg, ident):
        return {"node": self.cfg.name, "address": self.cfg.address,
                "master": self.master_address(), "term": self.raft.term, "version": m.VERSION,
                "python": self.cfg.python, "pid": self.cfg.pid, "data": self.cfg.data_dir}

    @_master_only
    def _submit(self, ev: Submission, ident):
        msg = ev.msg
        if msg.python != self.cfg.python:
            raise Refusal("UsageError", f"the client runs Python {msg.python} but this cluster "
                           f"runs Python {self.cfg.python}; job functions cannot move between "
                           "minor versions")
        if msg.token and msg.token in self.state.tokens:
            return {"job": self.state.tokens[msg.token]}  # a retry of a committed submission
        pending = self.submit_tokens.get(msg.token) if msg.token else None
        if pending in self.submits:
            self.submits[pending].ident, self.submits[pending].rid = ident, msg.rid
            return PARKED  # a retry while it is being committed
        if ev.header is None:
            raise Refusal("ProtocolError", "job pack is malformed (expected a msgpack map with "
                           "header and code)")
        header = jt.check_header(ev.header)
        name = self.table.new_name(msg.prefix or "Job")
        entry = en.Submit(name, header, ev.digest, self.table.wall, msg.token)
        pending = _PendingSubmit(ident, msg.rid, entry, self._now + self.cfg.pack_timeout_s)
        self.submits[name] = pending
        if msg.token:
            self.submit_tokens[msg.token] = name
        self._out.append(StoreJobpack(ev.digest, msg.jobpack, then=Request(b"", m.JobpackStored(
            term=self.raft.term, node=self.cfg.name, digest=ev.digest)), hashed=True))
        for voter in self.raft.voters:
            address = self._address(voter)
            if voter != self.cfg.name and address:
                self._out.append(Send(address, m.PutJobpack(
                    term=self.raft.term, master=self.cfg.address, digest=ev.digest,
                    jobpack=msg.jobpack)))
        return PARKED  # answered once the job is in the journal of a majority

    @_master_only
    def _remake_result(self, msg, ident):
        state = self.state.jobs.get(msg.job)
        alive = frozenset(x.address for x in self.members.alive())
        self._table(jt.RemakeAsked(msg.job, msg.url, alive, dict(state.done) if state else {}))
        record = self.table.record(msg.job)
        if not record.remaking or msg.timeout_s <= 0:
            return self.table.status(msg.job)
        deadline = self._now + min(msg.timeout_s, self.cfg.wait_max_s)
        self.waiters.append((deadline, ident, msg.rid, msg.job))
        return PARKED

    @_master_only
    def _wait_job(self, msg, ident):
        record = self.table.record(msg.job)
        if record.status != core.ACTIVE or msg.timeout_s <= 0:
            return self.table.status(msg.job)
        deadline = self._now + min(msg.timeout_s, self.cfg.wait_max_s)
        self.waiters.append((deadline, ident, msg.rid, msg.job))
        return PARKED

    def _status(self, msg, ident):
        rows = []
        for member in sorted(self.members.members.values(), key=lambda x: x.name):
            meta = self._meta(self.tick) if member.name == self.cfg.name else member.meta
            rows.append({"name": member.name, "address": member.address, "state": member.state,
                         "master": member.name == self.raft.leader,
                         "incarnation": member.incarnation,
                         "slots": {"busy": meta.get("busy", 0), "total": meta.get("slots", 0)},
                         "disk": {"used": meta.get("disk_used", 0),
                                  "free": meta.get("disk_free", 0)},
                         "data": {"blobs": meta.get("blob_bytes", 0)}})
        return {"node": self.cfg.name, "master": self.raft.leader, "term": self.raft.term,
                "members": rows, "voters": sorted(self.raft.voters),
                "probe_rtt": {"buckets": list(self.members.rtt_buckets),
                              "sum": self.members.rtt_sum, "count": self.members.rtt_count},
                "refused": {**self.tick.refused, "bad_peer_messages": self.bad_peer_messages}}

    @_master_only
    def _nodeinfo(self, msg, ident):
        sched = self.table.scheduler
        nodes = []
        for member in self.members.alive():
            node = sched.nodes.get(member.address)
            nodes.append({"name": member.name, "address": member.address,
                          "slots": member.meta.get("slots", 0), "busy": node.busy if node else 0,
                          "scheduled": node is not None and node.slots > 0,
                          "blacklisted": member.address in sched.blacklist
                          or member.name in sched.blacklist, "state": member.state})
        return {"master": self.cfg.name, "term": self.raft.term, "nodes": nodes}

    @_master_only
    def _kill(self, msg, ident):
        record = self.table.record(msg.job)
        self._table(core.JobKilled(msg.job))
        if record.status != core.ACTIVE:
            return self.table.status(msg.job)
        # answered once the job's end is committed: a status read after kill() says killed
        self.waiters.append((self._now + self.cfg.wait_max_s, ident, msg.rid, msg.job))
        return PARKED

    @_master_only
    def _purge(self, msg, ident):
        self._table(jt.PurgeAsked(msg.job))  # every node deletes its data once committed

    def _member_address(self, node: str) -> str:
        """The address of the member named or addressed ``node``; else a usage error."""
        members = self.members.members
        if node in members:
            return members[node].address
        if any(x.address == node for x in members.values()):
            return node
        known = ", ".join(sorted(x.name for x in members.values()))
        raise Refusal("UsageError", f"no member named {node!r} (members: {known})")

    @_master_only
    def _blacklist(self, msg, ident):
        self._table(core.NodeBlacklisted(self._member_address(msg.node)))

    @_master_only
    def _whitelist(self, msg, ident):
        self._table(core.NodeWhitelisted(self._member_address(msg.node)))

    @_master_only
    def _query(self, msg, ident):
        t = self.table
        if isinstance(msg, m.GetJobStatus):
            return t.status(msg.job, msg.stage or None)
        if isinstance(msg, m.GetEvents):
            return t.events(msg.job, msg.offset)
        if isinstance(msg, m.GetJobDict):
            return t.record(msg.job).header
        return t.list_jobs()

"""The node core (mesh.node), scripted: events in, exact actions out.

A one-node cluster (the founder, its only voter) is master after its first ticks, so a submit
commits at the next flush; two-node scripts show the job-pack replication rule and fencing.
"""
from __future__ import annotations

import random

import msgpack
import pytest

from mesh import event as ev
from mesh import message as m
from mesh import raft as rf
from mesh.datadir import digest_of
from mesh.node import Node
from scheduler import entry as en

PY = "3.11"
A, B = "127.0.0.1:9000", "127.0.0.1:9010"


def jobpack(inputs=("raw://a",), partitions=1, has_reduce=False) -> tuple[bytes, dict]:
    header = {"inputs": list(inputs), "partitions": partitions, "has_map": True,
              "has_reduce": has_reduce}
    return msgpack.packb({"header": header, "code": b"x"}, use_bin_type=True), header


class Script:
    """One node core, its durable state applied as the daemon would, virtual time."""

    def __init__(self, name="a", address=A, founder=True, state=None, **cfg):
        self.cfg = ev.NodeConfig(name=name, address=address, founder=founder, python=PY,
                                 pid=7, slots=2, **cfg)
        self.node = Node(self.cfg, state or rf.State(), random.Random(1))
        self.now = 0.0
        self.persisted: list[rf.Persist] = []

    def step(self, event, dt=0.0) -> list:
        self.now += dt
        out = self.node.step(self.now, event)
        self.persisted += [a for a in out if isinstance(a, rf.Persist)]
        for stored in [a for a in out if isinstance(a, ev.StoreJobpack) and a.then]:
            if isinstance(stored.then, ev.Send):
                out.append(stored.then)  # as the daemon does once the pack is fsynced
            else:
                out += self.step(stored.then)
        if self.peer_votes:
            for answer in [self._peer_answer(a.msg) for a in out if isinstance(a, ev.Send)
                           and isinstance(a.msg, m.Raft)]:
                if answer is not None:
                    out += self.step(ev.Request(b"b", answer))
        return out

    peer_votes = False

    def _peer_answer(self, msg: m.Raft):
        """Voter b, played by the script: grants votes and acknowledges every append."""
        body = msg.body
        if msg.kind in ("pre_vote", "vote"):
            return m.Raft(kind=msg.kind + "_reply", sender="b",
                          body={"term": body["term"], "granted": True})
        if msg.kind == "append":
            return m.Raft(kind="append_reply", sender="b", body={
                "term": body["term"], "success": True,
                "match": body["prev_index"] + len(body["entries"])})
        return None

    def tick(self, tasks=(), dt=0.1) -> list:
        return self.step(ev.Tick(tuple(tasks)), dt)

    def until_master(self) -> list:
        out = []
        for _ in range(50):
            out += self.tick()
            if self.node.is_master:
                return out + self.tick()
        raise AssertionError("never became master")

    def submit(self, rid=1, token="", python=PY, pack=None) -> list:
        pack, header = pack or jobpack()
        msg = m.SubmitJob(rid=rid, prefix="J", jobpack=pack, python=python, token=token)
        out = self.step(ev.Submission(b"client", msg, header, digest_of(pack)))
        return out + self.step(ev.Flush())

    def started(self, out) -> list[dict]:
        return [a.task for a in out if isinstance(a, ev.StartTask)]

    def state(self) -> rf.State:
        """What a journal holding every Persist so far would load."""
        term, voted, log, snap = 0, None, [], None
        for p in self.persisted:
            term, voted = p.term, p.voted_for
            if p.snapshot is not None:
                log = [(t, e) for t, e, i in log if i > p.snapshot.index]
                snap = p.snapshot
            if p.truncate_from is not None:
                log = [x for x in log if x[2] < p.truncate_from]
            base = snap.index if snap else 0
            for t, e in p.entries:
                log.append((t, e, base + len(log) + 1))
        return rf.State(term, voted, [(t, e) for t, e, _ in log], snap)


def kinds(out, cls) -> list:
    return [a for a in out if isinstance(a, cls)]


def facts(out) -> list[str]:
    return [a.event for a in out if isinstance(a, ev.Fact)]


# ---- election and take-over --------------------------------------------------------------

def test_founder_becomes_master_and_journals_its_voters():
    s = Script()
    out = s.until_master()
    assert "became_master" in facts(out)
    entries = [e for p in s.persisted for _, e in p.entries]
    assert {"type": "voters", "voters": ("a",)} in entries


def test_hello_answers_anywhere_job_requests_only_on_the_master():
    s = Script(founder=False)
    (reply,) = s.step(ev.Request(b"c", m.Hello(rid=3, python=PY)))
    assert isinstance(reply, ev.Reply) and reply.body["node"] == "a" and reply.body["pid"] == 7
    (fail,) = s.step(ev.Request(b"c", m.ListJobs(rid=4)))
    assert fail == ev.Fail(b"c", 4, "NotMaster", "")


# ---- submissions -------------------------------------------------------------------------

def test_submit_stores_the_pack_commits_then_answers_and_starts_the_map():
    s = Script()
    s.until_master()
    pack, header = jobpack()
    out = s.submit(pack=(pack, header))
    stores = kinds(out, ev.StoreJobpack)
    mine = m.JobpackStored(term=s.node.raft.term, node="a", digest=digest_of(pack))
    assert stores == [ev.StoreJobpack(digest_of(pack), pack, then=ev.Request(b"", mine),
                                      hashed=True)]
    (reply,) = kinds(out, ev.Reply)
    job = reply.body["job"]
    assert job.startswith("J@")
    (task,) = s.started(out)
    assert task["job"] == job and task["jobpack"] == digest_of(pack)
    assert task["jobpack_urls"] == [f"disco://{A}/jobpacks/{digest_of(pack)}"]
    assert out.index(stores[0]) < out.index(kinds(out, rf.Persist)[0]) < out.index(reply)


def test_the_masters_own_copy_counts_only_once_it_is_stored():
    s = Script()
    s.until_master()
    pack, header = jobpack()
    msg = m.SubmitJob(rid=1, prefix="J", jobpack=pack, python=PY)
    out = s.node.step(s.now, ev.Submission(b"client", msg, header, digest_of(pack)))
    out += s.node.step(s.now, ev.Flush())  # the store never reported back (disk full)
    assert not kinds(out, ev.Reply) and not [p for p in kinds(out, rf.Persist) if p.entries]
    out = s.node.step(s.now + 11, ev.Tick())
    (fail,) = kinds(out, ev.Fail)
    assert fail.code == "CommError" and "majority" in fail.msg


def test_a_retried_submit_with_its_token_gets_the_same_job():
    s = Script()
    s.until_master()
    first = kinds(s.submit(token="t1"), ev.Reply)[0].body["job"]
    again = s.submit(rid=2, token="t1")
    assert kinds(again, ev.Reply) == [ev.Reply(b"client", 2, {"job": first})]
    assert not kinds(again, ev.StoreJobpack)


@pytest.mark.parametrize("python,pack,code", [
    ("2.7", None, "UsageError"),
    (PY, (b"\x80", None), "ProtocolError"),
    (PY, jobpack(partitions=0), "UsageError"),
])
def test_bad_submissions_are_refused_with_a_code(python, pack, code):
    s = Script()
    s.until_master()
    out = s.submit(python=python, pack=pack)
    (fail,) = kinds(out, ev.Fail)
    assert fail.code == code and not kinds(out, ev.StoreJobpack)


def test_two_voters_the_submit_waits_for_the_other_voter_to_hold_the_pack():
    s = Script()
    s.peer_votes = True
    s.until_master()
    for inc in range(1, 31):  # b, alive (a fresh incarnation each time: no probe needs answers)
        s.step(ev.Request(b"b", m.Gossip(sender="b", python=PY, body={
            "kind": "sync", "seq": inc, "updates": [["b", B, inc, "alive", {"slots": 1}, "b"]]})))
        s.tick(dt=0.1)
        if "b" in s.node.raft.voters and not s.node.raft.config_pending():
            break
    assert set(s.node.raft.voters) == {"a", "b"}
    pack, header = jobpack()
    out = s.submit(pack=(pack, header))
    (put,) = [a for a in kinds(out, ev.Send) if isinstance(a.msg, m.PutJobpack)]
    assert put.address == B and put.msg.digest == digest_of(pack)
    assert not any(e.get("type") == "submit" for p in kinds(out, rf.Persist) for _, e in p.entries)
    out = s.step(ev.Request(b"b", m.JobpackStored(term=s.node.raft.term, node="b",
                                                  digest=digest_of(pack))))
    out += s.step(ev.Flush())
    (p,) = [p for p in kinds(out, rf.Persist) if p.entries]
    (_, entry), = p.entries
    assert entry["type"] == "submit" and tuple(entry["holders"]) == (A, B)


# ---- tasks, reports, waits, purges -------------------------------------------------------

def test_a_local_done_report_finishes_the_job_and_wakes_its_waiter():
    s = Script()
    s.until_master()
    out = s.submit()
    job = kinds(out, ev.Reply)[0].body["job"]
    (task,) = s.started(out)
    assert s.step(ev.Request(b"w", m.WaitJob(rid=9, job=job, timeout_s=30))) == []
    out = s.step(ev.LocalReport(task, "done", {"outputs": [{"label": 0, "url": "u", "size": 1}]}))
    out += s.step(ev.Flush())  # the done entry commits; the job ends; its end is proposed
    assert [a for a in kinds(out, ev.Reply) if a.rid == 9] == []  # not before it is durable
    assert s.node.state.jobs[job].end is None
    out = s.step(ev.Flush())  # the end commits at the next turn's flush: now it is over
    assert s.node.state.jobs[job].end.status == "finished"
    (woken,) = [a for a in kinds(out, ev.Reply) if a.rid == 9]
    assert woken.body["status"] == "finished"
    assert woken.body["counts"] == {"map": {"pending": 0, "running": 0, "done": 1, "failed": 0}}
    assert ev.RetireJob(job) in out


def test_a_parked_wait_is_answered_at_its_deadline():
    s = Script()
    s.until_master()
    job = kinds(s.submit(), ev.Reply)[0].body["job"]
    s.step(ev.Request(b"w", m.WaitJob(rid=5, job=job, timeout_s=0.5)))
    assert not kinds(s.tick(dt=0.2), ev.Reply)
    (reply,) = kinds(s.tick(dt=0.4), ev.Reply)
    assert reply.rid == 5 and reply.body["status"] == "active"


def test_purge_drops_the_jobs_data_and_later_collects_its_unused_pack():
    s = Script(compact_every=6, pack_grace_s=60.0)
    s.until_master()
    pack, header = jobpack()
    job = kinds(s.submit(pack=(pack, header), token="t"), ev.Reply)[0].body["job"]
    out = s.step(ev.Request(b"c", m.PurgeJob(rid=2, job=job))) + s.step(ev.Flush())
    assert ev.DropJobData(job) in out  # the pack may serve a submission not yet committed
    assert job not in s.node.state.jobs and not s.node.state.tokens
    for i in range(6):
        out += s.submit(rid=4 + i, pack=jobpack(inputs=("raw://b",)))
    collect = kinds(out, ev.CollectJobpacks)[-1]  # at the last compaction
    assert digest_of(pack) not in collect.keep and collect.grace_s == 60.0
    assert digest_of(jobpack(inputs=("raw://b",))[0]) in collect.keep


def test_a_task_missing_from_its_nodes_task_list_fails_after_the_grace():
    s = Script(lost_report_s=1.0)
    s.until_master()
    (task,) = s.started(s.submit())
    s.tick(tasks=[task["id"]])
    out = []
    for _ in range(15):
        out += s.tick(tasks=[])  # the executor no longer lists it: its report was lost
    assert "task_vanished" in facts(out)
    assert len(s.started(out)) == 1  # and it runs again


# ---- fencing -----------------------------------------------------------------------------

def test_master_commands_of_an_older_term_are_refused():
    s = Script(founder=False)
    s.node.raft.term = 5
    task = {"id": "j:map:0", "job": "j", "stage": "map"}
    out = s.step(ev.Request(b"m", m.Assign(term=4, master=B, task=task)))
    assert facts(out) == ["stale_term_refused"] and not kinds(out, ev.StartTask)
    out = s.step(ev.Request(b"m", m.Assign(term=5, master=B, task=task)))
    assert kinds(out, ev.StartTask) == [ev.StartTask({**task, "master": B})]
    assert facts(s.step(ev.Request(b"m", m.PutJobpack(term=3, master=B, digest="d",
                                                       jobpack=b"")))) == ["stale_term_refused"]


@pytest.mark.parametrize("task", [{}, {"id": "j:map:0", "stage": "map"},
                                  {"id": 7, "job": "j", "stage": "map"},
                                  {"id": "j:map:0", "job": "", "stage": "map"}])
def test_an_assignment_of_a_malformed_task_is_dropped_and_said(task):
    """A task without its id, job and stage never reaches the executor (its backlog would
    hold it for good)."""
    s = Script(founder=False)
    s.node.raft.term = 5
    out = s.step(ev.Request(b"m", m.Assign(term=5, master=B, task=task)))
    assert facts(out) == ["peer_message_dropped"] and not kinds(out, ev.StartTask)


def test_a_report_reaching_a_non_master_is_ignored_and_said_so():
    s = Script(founder=False)
    report = m.Report(term=1, node=B, job="j", task="j:map:0", kind="done")
    assert facts(s.step(ev.Request(b"b", report))) == ["report_ignored"]


# ---- the journal: snapshots and restarts -------------------------------------------------

def test_compaction_snapshots_the_state_and_a_restart_restores_it():
    s = Script(compact_every=8)
    s.until_master()
    jobs = []
    for i in range(6):
        out = s.submit(rid=i + 1, token=f"t{i}")
        jobs.append(kinds(out, ev.Reply)[0].body["job"])
        (task,) = s.started(out)
        s.step(ev.LocalReport(task, "done", {"outputs": []}))
        s.step(ev.Flush())
    snaps = [p.snapshot for p in s.persisted if p.snapshot is not None]
    assert snaps, "no snapshot after 8 entries"
    restarted = Script(state=s.state())
    assert set(restarted.node.state.jobs) == set(jobs)
    assert restarted.node.state.tokens == {f"t{i}": job for i, job in enumerate(jobs)}
    restarted.until_master()
    status = restarted.step(ev.Request(b"c", m.GetJobStatus(rid=1, job=jobs[0])))
    assert status[0].body["status"] == "finished"


def test_journal_state_after_submit_and_purge_is_empty():
    state = en.replay([en.Submit("j", {"inputs": []}, "d", 1.0, "t"), en.Done("j:map:0", A, ()),
                       en.End("j", "finished", 2.0), en.Purge("j")])
    assert state.jobs == {} and state.tokens == {}
    assert en.JournalState.from_snapshot(state.snapshot()).jobs == {}


def test_entries_round_trip_their_wire_form():
    for entry in (en.Submit("j", {"inputs": ["x"]}, "d", 1.5, "t", (A,)),
                  en.Done("j:map:0", A, ({"label": 0},)), en.End("j", "failed", 2.0, (), {"msg": "x"}),
                  en.Purge("j"), en.Voters(("a", "b")), en.Noop()):
        assert en.from_wire(msgpack.unpackb(msgpack.packb(en.to_wire(entry)))) == entry
    with pytest.raises(ValueError):
        en.from_wire({"type": "nonsense"})


def test_finished_tasks_share_one_commit_while_others_still_run():
    """Group commit: with a window, a done entry waits while other tasks run; a lone last
    task's entry goes at once."""
    s = Script(commit_window_s=0.005)
    s.until_master()
    out = s.submit(pack=jobpack(inputs=("raw://a", "raw://b")))
    tasks = s.started(out)
    assert len(tasks) == 2  # two slots
    s.step(ev.LocalReport(tasks[0], "done", {"outputs": []}))
    assert s.step(ev.Flush()) == [] and len(s.node._entries) == 1  # held back
    assert s.node.next_flush_at() == pytest.approx(s.now + 0.005)
    out = s.step(ev.LocalReport(tasks[1], "done", {"outputs": []}))
    out += s.step(ev.Flush())  # nothing runs any more: both go in one proposal now
    (persist,) = [p for p in kinds(out, rf.Persist) if p.entries]
    assert [e["type"] for _, e in persist.entries] == ["done", "done"]

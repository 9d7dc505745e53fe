"""A deterministic simulator for whole node cores (``mesh.node.Node``) running real jobs.

Theory of operation
-------------------
N hosts (``n0`` founds the cluster, the others join through it) each run a real node core, fed
the way ``mesh.daemon`` feeds it: a ``Tick`` every 0.1 virtual s with the fake executor's task
ids, a ``Request`` per message from a peer (``ident`` = the sender's address) or a client, a
``Submission`` built from a ``SubmitJob`` as the daemon builds it, ``LocalReport``s from the
executor and a ``Flush`` after every delivery. Actions are carried out in order, as the daemon
does: ``raft.Persist`` goes to an in-memory journal with ``mesh.journal``'s rules (entries and
snapshots are stored msgpack-packed, so a restart sees what the disk would give back), a
``Send`` to an unknown address comes back as ``Undeliverable``. Every message crosses the
network as bytes (``mesh.message.encode``/``decode``), so a schema bug shows up here too.

The network is a priority queue of deliveries with a seeded random delay: loss, duplication,
reordering, partitions (``partition``/``heal``). Hosts crash (everything but the journal, the
fsynced job packs and the remembered members is lost, the map outputs included), stop (leave
gracefully, files kept), restart (a new core from the journal, incarnation + 1) and pause
(nothing is delivered or stepped; what arrived is delivered on waking up, old terms and all).

The fake executor runs word counts: a map over ``raw://<words>`` writes per-label counts
(``crc32(word) % partitions``) into its host's file store at ``disco://<address>/vol0/jobs/
<job>/map-<index>-<label>.drec``; a reduce reads its label's inputs from the hosts that hold
them and reports ``failed`` with ``lost`` when one cannot be read (down, cut off, paused, or the
file is gone), so the master re-runs the producer; 2% of tasks die. Job packs are kept as
``mesh.datadir`` keeps them (a pack stored again gets a fresh mtime; ``CollectJobpacks``
deletes unused ones older than the grace). Each ``Session`` is one user's job: submit (the same
token on every retry, ``NotMaster`` redirects followed, another node tried after a time-out),
wait (``WaitJob`` or ``GetJobStatus``), check, maybe purge.

Invariants, after every step of every core (``Sim.violations``, or an ``AssertionError`` naming
the seed when ``strict``): each core's ``check_invariants()``; at most one leader per term;
every Apply agrees with one committed history (state machine safety) and every snapshot a core
starts from or installs equals the replay of that history; a fenced master command
(``Assign``, ``Cancel``, ``JobEnded``, ``PutJobpack``) of an older term than the node's is
refused with a ``stale_term_refused`` fact and has no effect, a current one takes effect; no
peer is sent a ``Reply`` or ``Fail``; a stored pack matches its digest. In the committed
history: successive voters differ by at most one member (starting from the founder alone); a
job name and a token each belong to one submission; every holder a ``Submit`` names holds the
pack, and no node deletes the pack of a live job that names it; a ``Done`` carries exactly the
outputs that node's executor reported for that task (one of its runs); a second ``End`` of a
job says what the first said (``end_count`` counts them); a finished job's results hold each
task output (``map-<i>-<label>`` or ``reduce-<label>``) once, each was really written, and
together they equal the job's model. Clients: a submit is answered with the job of that very
submission; a job the journal committed is known to the master; the final status a client saw
is the one the journal keeps. ``settle`` heals every fault and then requires every job to finish
(liveness), naming the cause when it is a known one (``liveness_cause``).
"""
from __future__ import annotations

import hashlib
import heapq
import random
import zlib
from collections import Counter, deque

import msgpack

from mesh import event as ev
from mesh import membership as mb
from mesh import message as m
from mesh import raft as rf
from mesh.node import Node
from scheduler import entry as en
from storage import tags as tg

PYTHON = "3.11"
TICK_S = 0.1
DELIVER, TICK, TASK, CLIENT, TIMER, CALL = range(6)
FENCED = {m.Assign: ev.StartTask, m.Cancel: ev.CancelTask, m.JobEnded: ev.RetireJob,
          m.PutJobpack: ev.StoreJobpack}


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def words_of(url: str) -> list:
    return url[len("raw://"):].split()


def label_of(word: str, partitions: int) -> int:
    return zlib.crc32(word.encode()) % partitions


def model(header: dict) -> Counter:
    """What a word count job's results must hold."""
    return Counter(w for url in header["inputs"] for w in words_of(url))


# ---- the journal on disk, in memory --------------------------------------------------------

class MemJournal:
    """``mesh.journal.Journal``'s rules without files: state, snapshot, base and log records."""

    def __init__(self):
        self.term, self.voted_for = 0, None
        self.snapshot: bytes | None = None  # the packed snapshot file
        self.base = 0
        self.records: list[bytes] = []      # packed [term, entry] records

    def persist(self, p: rf.Persist) -> None:
        self.term, self.voted_for = p.term, p.voted_for
        if p.snapshot is not None:
            s = p.snapshot
            self.snapshot = pack({"index": s.index, "term": s.term, "voters": list(s.voters),
                                  "data": s.data})
            kept = self.records[s.index - self.base:]
            if p.truncate_from is not None:
                kept = kept[:max(0, p.truncate_from - 1 - s.index)]
            self.base, self.records = s.index, kept
        elif p.truncate_from is not None and p.truncate_from <= self.base + len(self.records):
            self.records = self.records[:max(0, p.truncate_from - 1 - self.base)]
        self.records.extend(pack([t, e]) for t, e in p.entries)

    def load(self) -> rf.State:
        snapshot = None
        if self.snapshot is not None:
            raw = unpack(self.snapshot)
            snapshot = rf.Snapshot(raw["index"], raw["term"], tuple(raw["voters"]), raw["data"])
        assert self.base == (snapshot.index if snapshot else 0)
        return rf.State(self.term, self.voted_for, [tuple(unpack(r)) for r in self.records],
                        snapshot)


# ---- hosts ---------------------------------------------------------------------------------

class Host:
    """One machine: what survives a crash (journal, job packs, member list) and what does not
    (the core, its running tasks, its map outputs)."""

    def __init__(self, index: int):
        self.name, self.address = f"n{index}", f"10.0.0.{index + 1}:8989"
        self.founder = index == 0
        self.journal = MemJournal()
        self.jobpacks: dict[str, bytes] = {}
        self.pack_time: dict[str, float] = {}  # when each pack file was written (its mtime)
        self.remembered: tuple = ()
        self.incarnation = 0
        self.gen = 0            # events of an earlier life are dropped
        self.core: Node | None = None
        self.paused_until: float | None = None
        self.held: list = []    # deliveries that arrived while paused
        self.tick_missed = False
        self.store: dict[str, Counter] = {}
        self.runs: dict[int, dict] = {}
        self.applied = 0        # the index this core has applied up to

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def awake(self) -> bool:
        return self.core is not None and self.paused_until is None


# ---- the client ----------------------------------------------------------------------------

class Session:
    """One user's job: submit (same token on every retry), wait, check, maybe purge."""

    def __init__(self, sim: "Sim", index: int, header: dict, purge: bool):
        self.sim, self.index, self.header, self.purge = sim, index, header, purge
        self.ident = f"client-{index}".encode()
        self.token = f"token-{sim.seed}-{index}"
        self.jobpack = pack({"header": header, "code": b"wordcount", "files": {}})
        self.stage = "submit"   # submit, wait, purge, done
        self.job: str | None = None
        self.final: dict | None = None
        self.target = sim.rng.choice(sim.hosts).address
        self.rid = 0
        self.tries = 0

    def request(self) -> None:
        self.rid += 1
        self.tries += 1
        rid, sim = self.rid, self.sim
        if self.stage == "submit":
            msg = m.SubmitJob(rid=rid, prefix=self.header["prefix"], jobpack=self.jobpack,
                              python=PYTHON, token=self.token)
            timeout = 4.0
        elif self.stage == "wait" and sim.rng.random() < 0.5:
            msg, timeout = m.WaitJob(rid=rid, job=self.job, timeout_s=2.0), 4.0
        elif self.stage == "wait":
            msg, timeout = m.GetJobStatus(rid=rid, job=self.job), 2.0
        else:
            msg, timeout = m.PurgeJob(rid=rid, job=self.job), 2.0
        sim.client_send(self, msg)
        sim.at(sim.now + timeout, TIMER, self, rid)

    def timed_out(self, rid: int) -> None:
        if rid == self.rid and self.stage != "done":
            self.target = self.sim.rng.choice(self.sim.hosts).address  # look elsewhere
            self.request()

    def answered(self, reply) -> None:
        if getattr(reply, "rid", None) != self.rid or self.stage == "done":
            return  # a late answer to an abandoned request
        self.rid += 1  # no second answer to this request counts
        if isinstance(reply, m.Error):
            self._refused(reply)
        elif self.stage == "submit":
            self.job = reply.body["job"]
            self.sim.client_got_job(self)
            self.stage = "wait"
            self.request()
        elif self.stage == "wait":
            if reply.body["status"] == "active":
                self.sim.at(self.sim.now + 0.2, CALL, self.request)
                return
            self.final = reply.body
            self.sim.client_saw_final(self)
            self.stage = "purge" if self.purge else "done"
            if self.purge:
                self.request()
        else:
            self.stage = "done"

    def _refused(self, err: m.Error) -> None:
        if err.code == "NotMaster":
            self.target = err.msg or self.sim.rng.choice(self.sim.hosts).address
            self.sim.at(self.sim.now + (0.02 if err.msg else 0.3), CALL, self.request)
        elif err.code == "CommError":  # the pack did not reach a majority in time
            self.sim.at(self.sim.now + 0.5, CALL, self.request)
        elif err.code == "JobNotFound" and self.stage == "purge":
            self.sim.facts["client_purge_retry_refused"] += 1  # the first try got through
            self.stage = "done"
        elif err.code == "JobNotFound" and self.stage == "wait":
            self.sim.violation("unknown_job", f"{self.sim.hosts_by_address[self.target].name}"
                               f" says {err.msg} for committed job {self.job}")
            self.sim.at(self.sim.now + 0.3, CALL, self.request)
        else:
            self.sim.violation("client_refused", f"{self.stage}: {err.code}: {err.msg}")
            self.stage = "done"


# ---- the simulator -------------------------------------------------------------------------

class Sim:
    def __init__(self, seed: int, n: int = 3, loss: float = 0.0, dup: float = 0.0,
                 delay: tuple = (0.001, 0.02), compact_every: int = 2000, strict: bool = True,
                 wire: bool = True, dead_voter_s: float = 60.0, slots: int = 2,
                 trace=None, **node_options):
        self.seed, self.rng = seed, random.Random(seed)
        self.trace = trace  # a callable given (time, host name, what) for every step, or None
        self.loss, self.dup, self.delay, self.wire, self.strict = loss, dup, delay, wire, strict
        self.compact_every, self.dead_voter_s, self.slots = compact_every, dead_voter_s, slots
        self.node_options = node_options  # more NodeConfig fields, e.g. pack_grace_s
        self.hosts = [Host(i) for i in range(n)]
        self.hosts_by_address = {h.address: h for h in self.hosts}
        self.cut: set[frozenset] = set()
        self.now = 0.0
        self.queue: list = []
        self.seq = 0
        self.runs = 0
        self.sessions: list[Session] = []
        self.facts: Counter = Counter()
        self.violations: list[tuple[str, str]] = []
        # what the checks compare against
        self.leaders: dict[int, str] = {}
        self.history: list[bytes] = []      # the committed entries, packed
        self.voters: tuple = (self.hosts[0].name,)
        self.submits: dict[str, en.Submit] = {}
        self.tokens: dict[str, str] = {}
        self.ends: dict[str, en.End] = {}   # the first committed End of each job
        self.end_count: Counter = Counter()  # committed End entries per job
        self.purged: set[str] = set()
        self.written: dict[str, Counter] = {}     # every file ever written: url -> counts
        self.reported: dict[tuple, set] = {}      # (task, node address) -> packed outputs

    # -- the queue --

    def at(self, when: float, kind: int, target, payload=None) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, kind, target, payload))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        queue = self.queue
        while queue and queue[0][0] <= end:
            when, _, kind, target, payload = heapq.heappop(queue)
            self.now = max(self.now, when)
            _KINDS[kind](self, target, payload)
        self.now = end

    def run_until(self, predicate, limit_s: float, step_s: float = 0.05) -> bool:
        """Run in small steps until ``predicate()`` holds; False if ``limit_s`` passed first."""
        deadline = self.now + limit_s
        while not predicate():
            if self.now >= deadline:
                return False
            self.run(step_s)
        return True

    def master(self) -> Host | None:
        masters = [h for h in self.hosts if h.awake and h.core.is_master]
        return max(masters, key=lambda h: h.core.raft.term) if masters else None

    def violation(self, check: str, detail: str) -> None:
        self.violations.append((check, detail))
        if self.strict:
            raise AssertionError(f"seed {self.seed}: {check}: {detail} (t={self.now:.2f})")

    # -- hosts --

    def start(self, host: Host) -> None:
        host.incarnation += 1
        host.gen += 1
        seeds = () if host.founder else (self.hosts[0].address,)
        seeds += tuple(a for a in host.remembered if a != host.address and a not in seeds)
        cfg = ev.NodeConfig(
            name=host.name, address=host.address, incarnation=host.incarnation, seeds=seeds,
            founder=host.founder, python=PYTHON, pid=self.rng.randrange(1000, 60000),
            slots=self.slots, max_failures=50, dead_voter_s=self.dead_voter_s,
            lost_report_s=1.0, pack_timeout_s=3.0, compact_every=self.compact_every,
            wall_offset=1.7e9, mesh=mb.Config.loopback(), raft=rf.Config(),
            **self.node_options)
        state = host.journal.load()
        host.core = Node(cfg, state, random.Random(self.rng.random()))
        host.applied = host.core.raft.applied
        if state.snapshot is not None:
            self._check_snapshot(host, state.snapshot)
        self._watch(host)
        host.paused_until, host.held, host.tick_missed = None, [], False
        self.at(self.now + self.rng.uniform(0, TICK_S), TICK, host, host.gen)

    def _watch(self, host: Host) -> None:
        """See what Raft hands the node core: every Apply and Restore."""
        raft = host.core.raft
        step = raft.step

        def watched(now, event):
            out = step(now, event)
            for action in out:
                if type(action) is rf.Apply:
                    self._applied(host, action)
                elif type(action) is rf.Restore:
                    self._check_snapshot(host, action.snapshot)
            return out
        raft.step = watched

    def crash(self, host: Host) -> None:
        host.core, host.paused_until, host.held = None, None, []
        host.gen += 1
        host.runs.clear()
        host.store.clear()  # intermediate output is not fsynced: a crash loses it

    def stop(self, host: Host) -> None:
        """Leave gracefully (files stay), then go down."""
        if host.awake:
            self._step(host, ev.Stopping())
        host.core, host.paused_until, host.held = None, None, []
        host.gen += 1
        host.runs.clear()

    def pause(self, host: Host, seconds: float) -> None:
        if host.awake:
            host.paused_until = self.now + seconds
            self.at(host.paused_until, CALL, lambda: self.wake(host, host.gen))

    def wake(self, host: Host, gen: int) -> None:
        if host.gen != gen or host.paused_until is None:
            return
        host.paused_until = None
        held, host.held = host.held, []
        for kind, payload in held:
            self.at(self.now, kind, host, payload)
        if host.tick_missed:
            host.tick_missed = False
            self.at(self.now, TICK, host, host.gen)

    def partition(self, *groups) -> None:
        self.cut = {frozenset((a, b)) for g in groups for h in groups if g is not h
                    for a in g for b in h}

    def heal(self) -> None:
        self.cut = set()

    def reachable(self, a: Host, b: Host) -> bool:
        return a is b or frozenset((a.name, b.name)) not in self.cut

    # -- stepping a core the way the daemon does --

    def _step(self, host: Host, event) -> None:
        events = deque([event])
        while events and host.core is not None:
            event = events.popleft()
            before = host.core.raft.term
            actions = host.core.step(self.now, event)
            if self.trace is not None:
                self.trace(self.now, host.name, event, actions)
            if type(event) is ev.Request and type(event.msg) in FENCED:
                self._check_fencing(host, event.msg, before, actions)
            for action in actions:
                carry = _ACTIONS.get(type(action))
                if carry is None:
                    raise AssertionError(f"the simulator cannot carry out {action!r}: teach it "
                                         "as mesh/daemon.py does")
                carry(self, host, action, events)
            self._check_core(host)

    def _check_core(self, host: Host) -> None:
        core = host.core
        try:
            core.check_invariants()
        except AssertionError as exc:
            self.violation("check_invariants", f"{host.name}: {exc!r}")
        if core.raft.is_leader:
            holder = self.leaders.setdefault(core.raft.term, host.name)
            if holder != host.name:
                self.violation("two_leaders", f"{holder} and {host.name} in term "
                               f"{core.raft.term}")

    def _check_fencing(self, host: Host, msg, term: int, actions: list) -> None:
        stale = msg.term < term
        refused = any(type(a) is ev.Fact and a.event == "stale_term_refused" for a in actions)
        acted = any(type(a) is FENCED[type(msg)] for a in actions)
        if stale != refused or acted == stale:
            self.violation("fencing", f"{host.name} at term {term} got {msg.TYPE} of term "
                           f"{msg.term}: refused={refused}, acted={acted}")

    def _tick(self, host: Host, gen: int) -> None:
        if gen != host.gen or host.core is None:
            return
        if host.paused_until is not None:
            host.tick_missed = True
            return
        tasks = tuple(task["id"] for task in host.runs.values())
        self._step(host, ev.Tick(tasks))
        self.at(self.now + TICK_S, TICK, host, gen)

    def _deliver(self, host: Host, payload) -> None:
        if host.core is None:
            return
        if host.paused_until is not None:
            host.held.append((DELIVER, payload))
            return
        ident, frame = payload
        msg = m.decode(frame) if self.wire else frame
        if isinstance(msg, m.SubmitJob):
            event = self._submission(ident, msg)
        else:
            event = ev.Request(ident, msg)
        self._step(host, event)
        self._flush(host)

    def _flush(self, host: Host) -> None:
        """The end of the daemon's loop turn. A Flush with nothing proposed does nothing, so
        it is skipped then (half the steps of a run)."""
        if host.core is not None and getattr(host.core, "_entries", True):
            self._step(host, ev.Flush())

    @staticmethod
    def _submission(ident: bytes, msg: m.SubmitJob) -> ev.Submission:
        """As ``mesh.daemon`` builds it: the pack's msgpack header, and its sha256."""
        try:
            header = unpack(msg.jobpack)["header"]
            header = header if isinstance(header, dict) else None
        except Exception:
            header = None
        return ev.Submission(ident, msg, header, hashlib.sha256(msg.jobpack).hexdigest())

    # -- the network --

    def _send(self, host: Host, a: ev.Send, events: deque) -> None:
        to = self.hosts_by_address.get(a.address)
        if to is None:
            events.append(ev.Undeliverable(a.address, a.msg))
            return
        if not to.up and self.rng.random() < 0.05:  # its queue is full
            events.append(ev.Undeliverable(a.address, a.msg))
            return
        frame = m.encode(a.msg) if self.wire else a.msg
        if not self.reachable(host, to) or self.rng.random() < self.loss:
            return
        for _ in range(2 if self.rng.random() < self.dup else 1):
            self.at(self.now + self.rng.uniform(*self.delay), DELIVER, to,
                    (host.address.encode(), frame))

    def client_send(self, session: Session, msg) -> None:
        to = self.hosts_by_address[session.target]
        if self.rng.random() < self.loss / 4:  # clients hold TCP connections: drops are rarer
            return
        frame = m.encode(msg) if self.wire else msg
        self.at(self.now + self.rng.uniform(*self.delay), DELIVER, to, (session.ident, frame))

    def _answer(self, host: Host, a, events: deque) -> None:
        session = next((s for s in self.sessions if s.ident == a.ident), None)
        if session is None:
            self.violation("peer_answered", f"{host.name} answered {a.ident!r}: {a}")
            return
        msg = m.Reply(rid=a.rid, body=a.body) if type(a) is ev.Reply else \
            m.Error(rid=a.rid, code=a.code, msg=a.msg)
        frame = m.encode(msg) if self.wire else msg
        if self.rng.random() >= self.loss / 4:
            self.at(self.now + self.rng.uniform(*self.delay), CLIENT, session, frame)

    def _client(self, session: Session, frame) -> None:
        session.answered(m.decode(frame) if self.wire else frame)

    # -- the fake executor --

    def _start_task(self, host: Host, a: ev.StartTask, events: deque) -> None:
        self.runs += 1
        host.runs[self.runs] = a.task
        self.at(self.now + self.rng.uniform(0.05, 0.6), TASK, host, (host.gen, self.runs))

    def _cancel_task(self, host: Host, a: ev.CancelTask, events: deque) -> None:
        for run, task in list(host.runs.items()):
            if task["id"] == a.task:
                del host.runs[run]

    def _retire_job(self, host: Host, a: ev.RetireJob, events: deque) -> None:
        for run, task in list(host.runs.items()):
            if task["job"] == a.job:
                del host.runs[run]

    def _task_end(self, host: Host, payload) -> None:
        gen, run = payload
        if gen != host.gen or host.core is None:
            return
        if host.paused_until is not None:
            host.held.append((TASK, payload))
            return
        task = host.runs.pop(run, None)
        if task is None:
            return  # cancelled
        if self.rng.random() < 0.02:
            report = ev.LocalReport(task, "failed", {"error": "worker process died (signal 9)"})
        else:
            report = self._run_task(host, task)
        self._step(host, report)
        self._flush(host)

    def _run_task(self, host: Host, task: dict) -> ev.LocalReport:
        if not self._fetch_jobpack(host, task):
            return ev.LocalReport(task, "failed", {"error": "job pack unavailable"})
        job = self.submits.get(task["job"])
        if job is None:
            self.violation("task_of_unknown_job", f"{host.name} runs {task['id']}")
            return ev.LocalReport(task, "failed", {"error": "unknown job"})
        header, counts = job.header, Counter()
        for url in task["inputs"]:
            if url.startswith("raw://"):
                counts.update(words_of(url))
                continue
            data = self._read(host, url)
            if data is None:
                return ev.LocalReport(task, "failed", {"error": f"cannot read {url}",
                                                       "traceback": "", "retryable": True,
                                                       "lost": url})
            counts.update(data)
        parts = header["partitions"] if header["has_reduce"] or header["partitions"] > 1 else 1
        if task["stage"] == "map":
            by_label: dict[int, Counter] = {}
            for word, n in counts.items():
                by_label.setdefault(label_of(word, parts), Counter())[word] = n
            files = {f"map-{task['index']}-{label}": (label, c) for label, c in by_label.items()}
        else:
            files = {f"reduce-{task['label']}-0": (task["label"], counts)} if counts else {}
        outputs = []
        for stem, (label, c) in sorted(files.items()):
            url = f"disco://{host.address}/vol0/jobs/{task['job']}/{stem}.drec"
            host.store[url] = self.written[url] = c
            outputs.append({"label": label, "url": url, "size": sum(c.values()),
                            "records": len(c)})
        self.reported.setdefault((task["id"], host.address), set()).add(pack(outputs))
        return ev.LocalReport(task, "done", {"outputs": outputs})

    def _fetch_jobpack(self, host: Host, task: dict) -> bool:
        digest = task.get("jobpack")
        if digest in host.jobpacks:
            return True
        for url in task.get("jobpack_urls", ()):
            holder = self.hosts_by_address.get(url.split("/")[2])
            if holder and holder.awake and self.reachable(host, holder) and \
                    digest in holder.jobpacks:
                self._keep_pack(host, digest, holder.jobpacks[digest])
                return True
        return False

    def _read(self, host: Host, url: str) -> Counter | None:
        holder = self.hosts_by_address.get(url.split("/")[2])
        if holder is None or not holder.awake or not self.reachable(host, holder):
            return None
        return holder.store.get(url)

    def _drop_job_data(self, host: Host, a: ev.DropJobData, events: deque) -> None:
        prefix = f"disco://{host.address}/vol0/jobs/{a.job}/"
        for url in [u for u in host.store if u.startswith(prefix)]:
            del host.store[url]
        if a.jobpack is not None:
            self._drop_pack(host, a.jobpack)

    def _collect_jobpacks(self, host: Host, a, events: deque) -> None:
        for digest, stored in list(host.pack_time.items()):
            if digest not in a.keep and self.now - stored > a.grace_s:
                self._drop_pack(host, digest)

    def _drop_pack(self, host: Host, digest: str) -> None:
        host.jobpacks.pop(digest, None)
        host.pack_time.pop(digest, None)
        for name, job in self.submits.items():
            if job.jobpack == digest and name not in self.purged and host.address in job.holders:
                self.violation("pack_dropped", f"{host.name} deleted the pack of live job "
                               f"{name}, which names it a holder")

    def _store_jobpack(self, host: Host, a: ev.StoreJobpack, events: deque) -> None:
        if hashlib.sha256(a.data).hexdigest() != a.digest:
            self.violation("pack_digest", f"{host.name} stored a pack under a wrong digest")
        self._keep_pack(host, a.digest, a.data)
        if isinstance(a.then, ev.Send):  # as the daemon: acknowledged once stored
            self._send(host, a.then, events)
        elif a.then is not None:
            events.append(a.then)

    def _keep_pack(self, host: Host, digest: str, data: bytes) -> None:
        """As ``DataDir.store_jobpack``: a pack already there is kept, its mtime refreshed."""
        host.jobpacks.setdefault(digest, data)
        host.pack_time[digest] = self.now

    def _persist(self, host: Host, a: rf.Persist, events: deque) -> None:
        host.journal.persist(a)

    def _remember(self, host: Host, a: ev.RememberMembers, events: deque) -> None:
        host.remembered = tuple(a.addresses)

    def _fact(self, host: Host, a, events: deque) -> None:
        self.facts[a.event] += 1

    # -- the committed history --

    def _applied(self, host: Host, a: rf.Apply) -> None:
        if a.index != host.applied + 1:
            self.violation("apply_order", f"{host.name} applied {a.index} after {host.applied}")
        host.applied = a.index
        key = pack(a.entry)
        if a.index == len(self.history) + 1:
            self.history.append(key)
            self._committed(unpack(key))
        elif a.index > len(self.history) or self.history[a.index - 1] != key:
            self.violation("state_machine_safety", f"{host.name} applied {a.entry} at "
                           f"{a.index}, others applied another entry there")

    def _check_snapshot(self, host: Host, snap: rf.Snapshot) -> None:
        host.applied = snap.index
        if snap.index > len(self.history):
            self.violation("snapshot", f"{host.name} has a snapshot past the history")
            return
        data = snap.data if isinstance(snap.data, dict) else unpack(snap.data)
        entries = [unpack(e) for e in self.history[:snap.index]]
        tags = tg.TagStore()
        for e in entries:
            if tg.is_tag_entry(e):
                tags.apply(e)
        want = {**en.replay(e for e in entries if not tg.is_tag_entry(e)).snapshot(),
                "tags": tags.snapshot()}
        if pack(data) != pack(want):
            self.violation("snapshot", f"{host.name}'s snapshot at {snap.index} differs from "
                           "the replay of the committed history")

    def _committed(self, wire: dict) -> None:
        if tg.is_tag_entry(wire):
            return
        try:
            entry = en.from_wire(wire)
        except ValueError as exc:
            self.violation("bad_entry", str(exc))
            return
        handler = _COMMITTED.get(type(entry))
        if handler is not None:
            handler(self, entry)

    def _voters_entry(self, e: en.Voters) -> None:
        new = set(e.voters)
        if len(new ^ set(self.voters)) > 1:
            self.violation("voters", f"{sorted(self.voters)} -> {sorted(new)}")
        self.voters = tuple(e.voters)

    def _submit_entry(self, e: en.Submit) -> None:
        old = self.submits.get(e.job)
        if old is not None:
            if old != e:
                self.violation("job_name_reused", f"{e.job}: tokens {old.token} and {e.token}")
            return
        if e.token and self.tokens.setdefault(e.token, e.job) != e.job:
            self.violation("token_made_two_jobs", f"{e.token}: {self.tokens[e.token]} and "
                           f"{e.job}")
        self.submits[e.job] = e
        if not e.holders:
            self.violation("holders", f"{e.job} has no holders")
        for address in e.holders:
            if e.jobpack not in self.hosts_by_address[address].jobpacks:
                self.violation("holders", f"{e.job} names {address}, which lacks its pack")

    def _done_entry(self, e: en.Done) -> None:
        if pack(list(e.outputs)) not in self.reported.get((e.task, e.node), ()):
            self.violation("done_outputs", f"{e.task} on {e.node}: outputs never reported")

    def _end_entry(self, e: en.End) -> None:
        self.end_count[e.job] += 1
        first = self.ends.setdefault(e.job, e)
        if first is not e:
            if (first.status, first.results) != (e.status, e.results):
                self.violation("ended_twice", f"{e.job}: {first.status} {len(first.results)} "
                               f"results, then {e.status} {len(e.results)} results")
            return
        if e.status == "finished":
            self._check_results(e.job, list(e.results), "committed")

    def _check_results(self, job: str, results: list, where: str) -> None:
        header = self.submits[job].header
        if len(set(results)) != len(results):
            self.violation("results", f"{where} {job}: a result twice")
        parts = header["partitions"]
        got, producers = Counter(), set()
        for url in results:
            data = self.written.get(url)
            if data is None:
                self.violation("results", f"{where} {job}: {url} was never written")
                return
            stem = url.rsplit("/", 1)[1]  # map-<index>-<label> or reduce-<label>-0
            if stem in producers:
                self.violation("results", f"{where} {job}: two copies of {stem}")
            producers.add(stem)
            if header["has_reduce"]:
                label = int(stem.split("-")[1])
                if any(label_of(w, parts) != label for w in data) and header["has_map"]:
                    self.violation("results", f"{where} {job}: {url} holds another label")
            got.update(data)
        if got != model(header):
            self.violation("results", f"{where} {job}: results differ from the model")

    def _purge_entry(self, e: en.Purge) -> None:
        self.purged.add(e.job)

    # -- what clients saw --

    def client_got_job(self, s: Session) -> None:
        job = self.submits.get(s.job)
        if job is None or job.token != s.token or job.header != s.header:
            self.violation("wrong_job", f"client {s.index} was given {s.job}, "
                           f"{'not committed' if job is None else 'another submission'}")

    def client_saw_final(self, s: Session) -> None:
        if s.final["status"] == "finished":
            self._check_results(s.job, list(s.final["results"]), "seen")

    def check_end(self) -> None:
        """After the run: every client's final status is the one the journal kept."""
        for s in self.sessions:
            if s.final is None:
                continue
            if s.final["status"] != "finished":
                self.violation("job_not_finished", f"client {s.index}: {s.job} "
                               f"{s.final['status']}: {s.final.get('error')}")
            end = self.ends.get(s.job)
            if end is None or (end.status, list(end.results)) != (
                    s.final["status"], list(s.final["results"])):
                self.violation("uncommitted_status", f"client {s.index} saw {s.job} "
                               f"{s.final['status']} with {len(s.final['results'])} results; "
                               f"the journal has {end.status if end else 'no end'}")

    # -- scenarios --

    def add_jobs(self, count: int, start: float, span: float) -> None:
        vocabulary = "a b c d e f g h".split()
        for _ in range(count):
            inputs = ["raw://" + " ".join(self.rng.choice(vocabulary)
                                          for _ in range(self.rng.randint(0, 6)))
                      for _ in range(self.rng.randint(1, 4))]
            kind = self.rng.random()
            has_map, has_reduce = kind < 0.9, kind >= 0.35
            header = {"inputs": inputs, "has_map": has_map, "has_reduce": has_reduce,
                      "partitions": self.rng.randint(1, 3), "sort": False, "profile": False,
                      "owner": "sim@host", "functions": {}, "prefix": "WordCount",
                      "python": PYTHON}
            if self.sessions and self.rng.random() < 0.15:  # the very same pack again
                header = self.sessions[-1].header
            session = Session(self, len(self.sessions), header, self.rng.random() < 0.3)
            self.sessions.append(session)
            self.at(start + self.rng.uniform(0, span), CALL, session.request)

    def describe(self) -> str:
        """Each host's Raft view, for a failure message."""
        rows = []
        for h in self.hosts:
            r = h.core.raft
            rows.append(f"{h.name}: term {r.term} {r.role} voters {','.join(r.voters)} "
                        f"commit {r.commit}/{r.last_index()}")
        return "; ".join(rows)

    def done(self) -> bool:
        return all(s.stage == "done" for s in self.sessions)


def _call(sim: Sim, fn, payload) -> None:
    fn() if payload is None else fn(payload)


def _timer(sim: Sim, session: Session, rid: int) -> None:
    session.timed_out(rid)


_KINDS = {DELIVER: Sim._deliver, TICK: Sim._tick, TASK: Sim._task_end, CLIENT: Sim._client,
          TIMER: _timer, CALL: _call}
_ACTIONS = {
    ev.Send: Sim._send, ev.Reply: Sim._answer, ev.Fail: Sim._answer, rf.Persist: Sim._persist,
    ev.StoreJobpack: Sim._store_jobpack, ev.StartTask: Sim._start_task,
    ev.CancelTask: Sim._cancel_task, ev.RetireJob: Sim._retire_job,
    ev.DropJobData: Sim._drop_job_data, ev.RememberMembers: Sim._remember,
    ev.ForgetPeer: lambda sim, host, a, events: None, ev.Fact: Sim._fact,
    ev.CollectJobpacks: Sim._collect_jobpacks,
}
_COMMITTED = {en.Voters: Sim._voters_entry, en.Submit: Sim._submit_entry,
              en.Done: Sim._done_entry, en.End: Sim._end_entry, en.Purge: Sim._purge_entry}


def chaos(seed: int, strict: bool = True) -> Sim:
    """One seeded run: 3 to 5 hosts join, clients submit jobs, faults for a while; then every
    fault heals and every job must end finished, with its model's counts."""
    rng = random.Random(seed)
    sim = Sim(seed, n=rng.randint(3, 5), loss=rng.choice([0.0, 0.02, 0.1]),
              dup=rng.choice([0.0, 0.03]), delay=(0.001, rng.choice([0.01, 0.05])),
              compact_every=rng.choice([5, 20, 2000]), dead_voter_s=rng.choice([4.0, 60.0]),
              strict=strict, pack_grace_s=rng.choice([10.0, 600.0]))  # above any one fault
    sim.start(sim.hosts[0])
    for host in sim.hosts[1:]:
        sim.at(rng.uniform(0, 2), CALL, sim.start, host)
    sim.add_jobs(rng.randint(2, 4), start=1.0, span=6.0)
    window = rng.uniform(4, 10)
    for _ in range(rng.randint(1, 6)):
        sim.at(rng.uniform(1.5, window), CALL, _fault, sim)
    sim.run(window)
    settle(sim)
    return sim


def _fault(sim: Sim) -> None:
    rng = sim.rng
    masters = [h for h in sim.hosts if h.awake and h.core.is_master]
    host = masters[0] if masters and rng.random() < 0.5 else rng.choice(sim.hosts)
    fault = rng.choice(["crash", "crash", "stop", "pause", "partition", "partition"])
    if fault in ("crash", "stop") and host.up:
        (sim.crash if fault == "crash" else sim.stop)(host)
        sim.at(sim.now + rng.uniform(0.5, 8), CALL, _restart, (sim, host, host.gen))
    elif fault == "pause":
        sim.pause(host, rng.uniform(0.3, 3))
    elif fault == "partition":
        side = {h.name for h in rng.sample(sim.hosts, rng.randint(1, len(sim.hosts) // 2))}
        sim.partition(side, {h.name for h in sim.hosts} - side)
        sim.at(sim.now + rng.uniform(0.5, 5), CALL, sim.heal)


def _restart(args) -> None:
    sim, host, gen = args
    if host.gen == gen and not host.up:
        sim.start(host)


def settle(sim: Sim, limit_s: float = 40.0) -> None:
    """Heal everything and run until every client is done (or fail after ``limit_s``)."""
    sim.heal()
    for host in sim.hosts:
        if not host.up:
            sim.start(host)
        elif host.paused_until is not None:
            sim.wake(host, host.gen)
    deadline = sim.now + limit_s
    while not sim.done() and sim.now < deadline:
        sim.run(0.5)
    if not sim.done():
        stages = Counter(s.stage for s in sim.sessions)
        cause = liveness_cause(sim)
        sim.violation("liveness" + (":" + cause if cause else ""),
                      f"clients not done after {limit_s:g} s of calm: {dict(stages)}; "
                      f"{sim.describe()}")
    seen = [s.job for s in sim.sessions if s.final is not None]
    sim.run_until(lambda: all(job in sim.ends for job in seen), 3.0)  # the last ends commit
    sim.check_end()


def liveness_cause(sim: Sim) -> str:
    """A name for why a calm cluster makes no progress, when it is one we know."""
    up = [h for h in sim.hosts if h.up]
    for host in up:
        named = any(host.name in other.core.raft.voters for other in up if other is not host)
        if named and not host.core.raft.voters:
            return "voter_without_config"  # a voter that never got the log refuses every vote
    for host in up:
        alive = {x.name for x in host.core.members.alive()}
        if any(other.name not in alive for other in up):
            return "membership_split"      # up and reachable, yet never heard of again
    return ""

"""A deterministic simulator for DDFS's pure storage cores: the ring, the tag store, the planner.

Theory of operation
-------------------
N hosts (4 to 8) each hold blob copies on a "disk" (name -> the report row ``[name, size,
checksum, path, mtime]``, mtime by the host's own, slightly skewed, wall clock) that survives a
crash unless the disk is lost too. Each host runs what ``mesh.ddfs`` runs on a node, glued the
same way: every ``TICK_S`` it nets its disk changes (as ``storage.volume.changes`` does) into a
delta and reports to the master it knows (in full when the master or the term changes and every
``full_every_s``, else the delta; nothing while it knows no master); it carries out the
master's ``CopyBlob`` on a serial copier (``mesh.copier``: size / rate seconds per copy, the
sources tried in order, each must be up, reachable and hold the blob at both ends of the
transfer; the outcome goes to its master as ``CopyDone`` on the next tick) and ``DropBlob`` at
once, refusing both when their term is older than the one it knows.

One host at a time is the master (the Raft leader; the journal is modelled, not run): it holds
a ``storage.repair.Planner`` (empty when it is elected, refilled by the reports) and a
``storage.tags.TagStore`` built at takeover from a (msgpack round-tripped) snapshot of the
committed entries. It answers ``BlobPlace`` and ``TagWrite`` as ``mesh.ddfs`` does, and plans
every ``PLAN_S``: copies and drops become messages, a retag a journal entry. A proposed entry
commits after a random delay while the master reaches a majority; when the master crashes or
steps down, an entry that reached a majority is committed by the next master at its takeover,
the others are lost (Raft's rule), and parked clients are told ``NotMaster``. A master cut off
from the majority steps down after ``lease_s``; the majority elects a new one ``elect_s`` after
it has none. Membership is modelled per observer: a host is dead to another once it has been
down or cut off from it for ``detect_s``, alive again ``join_s`` after it is back.

The network is a heap of deliveries with a seeded delay, FIFO per link (as TCP), rare long
stalls, loss while a lossy period lasts, and dropped when the link is cut or the receiver
restarted. Clients ask the master (following ``NotMaster`` hints, retrying with the same ``op``
after a time-out): push a blob to ``BlobPlace``'s nodes (acknowledged only when all its copies
exist; some pushes ask for their own number of copies), then usually tag it (add, update or
not, or put) within ``tag_window_s``, a slow client maybe only after ``gc_delay_s``, sometimes
never (garbage); they copy a tag's replica sets to another tag (``ddfs tag`` of old URLs),
sometimes deleting the first at once (a move), and delete tags.

Faults, during the chaos window: crash (disk kept) and restart, crash with disk loss, the
master's crash, a minority (maybe holding the master) cut off and healed, lossy periods, a node
blacklisted (alive, but no new copies) for a while. Then ``settle``: faults stop, everything
heals, all but a random minority of hosts are up (some crashed then, if too few were down).

Invariants (``Sim.violations``; raised with the seed when ``strict``), after every step. A drop
is judged by what its master could know when it planned it: a URL named only by a client write
proposed after that (one that read the URLs from a tag since deleted) is a race no planner can
see (``late_tag_raced``, counted); the planner's own retags always count as known.

- (a) ``acked_blob_lost``: an acknowledged blob never loses its last copy unless at least ``k``
  (its push's) of its copies went with lost disks, or it was collected as garbage;
  ``drop_below_k``: a drop carried out never leaves a referenced blob with fewer than ``k``
  copies on disks, up or down (counting copies the planner relied on that went with a disk:
  those are faults);
- (b) ``tag_state``: after every commit the store equals an independent model of the committed
  history (blob keys per tag, in order), a move leaves every set of its blob at the new URLs,
  and the master's own store equals the committed one; a client's answer is its op's first
  committed result (``acked_uncommitted``/``answer``); at the end every acknowledged add/put
  still holds its blobs and every acknowledged delete holds, unless a later committed write to
  that tag replaced them (``acked_write_lost``);
- (c) ``gc_dropped_referenced``: a ``DropBlob`` carried out never deletes a copy a committed tag
  names (or a write pending when it was planned), nor (``gc_dropped_young``) one younger than
  ``gc_delay_s``; the planner never orders one its own tags name
  (``planner_dropped_referenced``); no blob a committed tag names vanishes from every disk
  (``referenced_blob_gone``) unless lost to ``k`` disks;
- (d) ``not_repaired``: ``repair_bound_s`` after settling began (computed from the config and
  the copies missing then; for a blob a client named anew since, after that), and each second
  for a while after, every referenced blob with a copy on an up host has ``min(k, up hosts)``
  copies on up, alive hosts (``k`` its push's own, if it asked for one), and its tags name
  only those copies;
- the cores' ``check_invariants()``: the planner's after every plan, the tag store's after
  every commit.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field

import msgpack

from mesh import message as m
from storage import repair as rp
from storage import tags as tg

WALL = 1.7e9         # virtual time 0 as wall seconds
TICK_S = 0.5         # a node's loop turn that reports its blob changes (the daemon's is 0.1 s)
PLAN_S = 1.0         # mesh.ddfs.PLAN_EVERY_S
CALL_TIMEOUT_S = 2.0
TAGS = ("t0", "t1", "t2", "t3")
CHECKSUM = "c0ffee"
PARKED = object()


# ---- the seeded config -----------------------------------------------------------------------

@dataclass(frozen=True)
class Params:
    n: int = 5
    k: int = 3
    delay_s: tuple = (0.001, 0.02)
    stall: float = 0.01          # chance a delivery stalls its link for up to 1.5 s
    loss: float = 0.1            # loss while a lossy period lasts
    detect_s: float = 2.0
    join_s: float = 0.5
    lease_s: float = 0.8
    elect_s: tuple = (1.0, 2.0)  # after the cluster has no master
    commit_s: tuple = (0.005, 0.1)
    skew_s: float = 1.0          # each host's wall clock is off by up to this
    rate: float = 4e6            # bytes/s of a repair copy or a push
    size: tuple = (1_000, 1_000_000)
    tag_window_s: float = 8.0    # clients tag a blob within this of its push, or never
    planner: rp.Config = field(default_factory=lambda: rp.Config(
        k=3, per_node=2, max_inflight=16, copy_timeout_s=6.0, gc_delay_s=30.0, settle_s=3.0,
        full_every_s=6.0))

    @classmethod
    def random(cls, rng: random.Random) -> "Params":
        n = rng.randint(4, 8)
        k = rng.choice([2, 3, 3, 3])
        lease = rng.uniform(0.5, 1.0)
        window = rng.uniform(3.0, 10.0)
        skew = rng.choice([0.0, 1.0])
        # a delay shorter than the tag window makes the pending-write guard and late tags
        # common; a longer one keeps every tagged blob young
        gc_delay = rng.choice([rng.uniform(3.0, 12.0), window + rng.uniform(5.0, 30.0)])
        return cls(
            n=n, k=k, delay_s=(0.001, rng.choice([0.01, 0.05, 0.2])),
            stall=rng.choice([0.0, 0.01]), loss=rng.choice([0.02, 0.1, 0.3]),
            detect_s=rng.uniform(0.5, 4.0), join_s=rng.uniform(0.1, 1.0), lease_s=lease,
            elect_s=(lease + 0.3, lease + rng.uniform(0.5, 2.0)), skew_s=skew,
            commit_s=(0.005, rng.choice([0.1, 0.5, 2.0])),
            rate=rng.choice([2e5, 2e6, 8e6]), tag_window_s=window,
            planner=rp.Config(
                k=k, per_node=rng.choice([1, 2, 4]), max_inflight=rng.choice([4, 16]),
                copy_timeout_s=rng.uniform(3.0, 10.0), gc_delay_s=gc_delay,
                settle_s=rng.uniform(0.0, 5.0),
                full_every_s=rng.uniform(2.0, 10.0)))

    @property
    def copy_max_s(self) -> float:
        return self.size[1] / self.rate

    def repair_bound_s(self, missing: int, queued: int) -> float:
        """How long after settling began every referenced blob must be back at k: a master
        (elected, its view joined, dead hosts detected), every report in full (a lost delta is
        mended by the next full one), an order lost before settling timed out, the copiers'
        leftover orders done, then ``missing`` copies ``per_node`` per round (a round: the
        copies, their CopyDone with the next tick, the next plan; as if all went to one
        target), two rounds more for rebalancing copies holding a target's slots, the retag
        committed, and slack for the network."""
        c, net = self.planner, self.delay_s[1] + 1.5 * (self.stall > 0)
        master = self.elect_s[1] + 0.3 + max(self.join_s, self.detect_s) + 0.3
        reports = TICK_S + net + c.full_every_s
        round_s = c.per_node * self.copy_max_s + TICK_S + PLAN_S + 2 * net
        rounds = math.ceil(missing / c.per_node) + 2
        return (master + reports + c.copy_timeout_s + queued * self.copy_max_s
                + rounds * round_s + PLAN_S + self.commit_s[1] + 2 * net + 2.0)


# ---- hosts -------------------------------------------------------------------------------------

class Host:
    """One storage node: its disk (kept over a crash unless lost) and its process (not kept)."""

    def __init__(self, index: int, skew: float):
        self.name, self.address = f"n{index}", f"10.0.0.{index + 1}:8989"
        self.skew = skew
        self.disk: dict[str, list] = {}
        self.up = False
        self.gen = 0
        self.term = 0                 # Raft's current term: in the journal, kept over a crash
        self.role: Master | None = None
        self.fresh_process()

    def fresh_process(self) -> None:
        self.master: str | None = None            # the master's address as this node knows it
        self.reported: tuple | None = None        # (master, term) of the last full report
        self.full_at = -1e9
        self.delta: tuple[list, list] = ([], [])
        self.changes: tuple[dict, dict] = ({}, {})  # netted since the last tick (volume.changes)
        self.orders: list = []                    # the copier's queue of CopyBlob orders
        self.copying: m.CopyBlob | None = None
        self.ended: list = []                     # (blob, error) of copies not yet told

    def store(self, row: list) -> None:
        name = row[0]
        self.disk[name] = row
        self.changes[1].pop(name, None)
        self.changes[0][name] = row

    def remove(self, name: str) -> None:
        del self.disk[name]
        self.changes[0].pop(name, None)
        self.changes[1][name] = None


@dataclass
class Proposal:
    entry: dict
    at: float         # when it was proposed (-inf for the planner's own retags: see ``since``)
    rep_at: float     # when it reached a majority (inf: not yet)


class Master:
    """The master role on a host: the planner (soft state) and its view of the journal."""

    def __init__(self, host: Host, term: int, cfg: rp.Config, now: float):
        self.host, self.term = host, term
        self.planner = rp.Planner(cfg)
        self.tags: tg.TagStore | None = None      # built at takeover
        self.active = False
        self.held_since = now
        self.next_plan = 0.0
        self.pending: dict[str, tuple] = {}       # op -> (call, rid, blobs it names)
        self.log: list[Proposal] = []             # proposed, not yet committed
        self.ops = itertools.count(1)


# ---- clients -------------------------------------------------------------------------------

@dataclass
class Pushed:
    name: str
    k: int
    urls: list
    at: float


class Call:
    """One request to the master, asked again (the same op) until answered or past deadline."""

    def __init__(self, sim: "Sim", make, done, deadline: float):
        self.sim, self.make, self.done, self.deadline = sim, make, done, deadline
        self.rid = 0
        self.target: str | None = None
        self.over = False

    def ask(self) -> None:
        sim = self.sim
        if self.over:
            return
        if sim.now > self.deadline:
            self.over = True
            self.done(None)
            return
        self.rid += 1
        if self.target is None:
            self.target = sim.rng.choice(sim.hosts).address
        sim.client_send(self, self.rid, self.make(self.rid))
        sim.at(sim.now + CALL_TIMEOUT_S, sim.timed_out, (self, self.rid))

    def answered(self, rid: int, reply) -> None:
        if rid != self.rid or self.over:
            return
        self.rid += 1
        if isinstance(reply, m.Error) and reply.code == "NotMaster":
            self.target = reply.msg or None
            self.sim.at(self.sim.now + (0.05 if reply.msg else 0.3), lambda _: self.ask())
            return
        self.over = True
        self.done(reply)


# ---- the simulator -----------------------------------------------------------------------

class Sim:
    def __init__(self, seed: int, params: Params | None = None, strict: bool = True,
                 trace: bool = False):
        self.seed, self.rng = seed, random.Random(seed)
        self.p = params or Params()
        self.strict = strict
        self.trace: list | None = [] if trace else None
        self.hosts = [Host(i, self.rng.uniform(-self.p.skew_s, self.p.skew_s))
                      for i in range(self.p.n)]
        self.by_address = {h.address: h for h in self.hosts}
        self.now, self.queue, self.seq = 0.0, [], 0
        self.link_free: dict[tuple, float] = {}    # FIFO per link: its last delivery time
        self.isolated: frozenset = frozenset()      # host names cut off from the others
        self.lossy = False
        self.blacklist: set[str] = set()            # addresses the scheduler blacklisted
        self.settling = False
        # membership, per observer: name -> name -> alive
        self.views = {h.name: {x.name: False for x in self.hosts} for h in self.hosts}
        self.vstate: dict[tuple, tuple] = {}       # (observer, host) -> (connected, token)
        # the journal
        self.term = 0
        self.master: Master | None = None
        self.electing = False
        self.minority_since: float | None = None    # since when the master lacks a majority
        self.carried: list[Proposal] = []           # reached a majority, not yet committed
        self.history: list[dict] = []
        self.reference = tg.TagStore()              # every node's store: the committed entries
        self.model: dict[str, list] = {}            # tag -> blob keys, in order (independent)
        self.first_result: dict[str, dict] = {}     # op -> its result when first committed
        self.op_index: dict[str, int] = {}          # op -> its index in the history
        self.acked_writes: list[tuple] = []         # (op, kind, tag, blob keys)
        self.since: dict[str, dict] = {}            # tag -> URL -> since when it names it
        self.client_named: dict[str, float] = {}    # blob -> its last client write's proposal
        self.ref_since: dict[str, float] = {}       # blob -> since when tags name it unbroken
        # blobs
        self.pushed: dict[str, Pushed] = {}         # acknowledged pushes
        self.lost_disks: Counter = Counter()        # blob -> copies lost with their disk
        self.collected: set[str] = set()            # blobs some copy of which went as garbage
        self.lost_copies: set[tuple] = set()        # (address, blob) lost with a disk, not back
        self.last_drop: dict[str, float] = {}       # blob -> when its last drop carried out was planned
        self.facts: Counter = Counter()
        self.violations: list[tuple[str, str]] = []
        self.clients = itertools.count()
        self.bound = math.inf                       # the repair bound computed at settling
        self.settled_at = math.inf                  # when settling began
        self.repaired_after: float | None = None    # when repair was first complete then

    # -- the queue --

    def at(self, when: float, fn, arg=None) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, fn, arg))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        queue = self.queue
        while queue and queue[0][0] <= end:
            when, _, fn, arg = heapq.heappop(queue)
            self.now = max(self.now, when)
            fn(arg)
        self.now = end

    def violation(self, check: str, detail: str) -> None:
        self.violations.append((check, detail))
        if self.strict:
            raise AssertionError(f"seed {self.seed}: {check}: {detail} (t={self.now:.2f})")

    def log(self, *what) -> None:
        if self.trace is not None:
            self.trace.append((round(self.now, 3),) + what)

    def wall(self, host: Host) -> float:
        return WALL + self.now + host.skew

    def store(self, host: Host, row: list) -> None:
        self.lost_copies.discard((host.address, row[0]))
        host.store(row)

    # -- connectivity and membership --

    def linked(self, a: Host, b: Host) -> bool:
        return a.up and b.up and ((a.name in self.isolated) == (b.name in self.isolated))

    def client_reaches(self, h: Host) -> bool:
        return h.up and h.name not in self.isolated

    def majority(self, host: Host) -> bool:
        return sum(1 for h in self.hosts if self.linked(host, h)) * 2 > len(self.hosts)

    def _membership(self) -> None:
        """Each observer's view follows connectivity: dead after ``detect_s``, alive again
        ``join_s`` after a host is back (a crash and restart within ``detect_s`` goes unseen,
        as SWIM would see only a new incarnation)."""
        for o in self.hosts:
            if not o.up:
                continue
            for h in self.hosts:
                if h is o:
                    continue
                connected = self.linked(o, h)
                key = (o.name, h.name)
                was, token = self.vstate.get(key, (None, 0))
                if connected == was:
                    continue
                self.vstate[key] = (connected, token + 1)
                delay = self.p.join_s if connected else self.p.detect_s
                self.at(self.now + delay, self._seen, (o, h, token + 1, o.gen))

    def _seen(self, arg) -> None:
        o, h, token, gen = arg
        connected, now_token = self.vstate[(o.name, h.name)]
        if token == now_token and gen == o.gen and o.up:
            self.views[o.name][h.name] = connected

    def alive_to(self, master: Master) -> set:
        view = self.views[master.host.name]
        return {h.address for h in self.hosts if view[h.name] or h is master.host}

    def writable(self, master: Master) -> list:
        """Alive and not blacklisted (``mesh.ddfs._writable``)."""
        return sorted(self.alive_to(master) - self.blacklist)

    # -- hosts --

    def start(self, host: Host) -> None:
        host.up = True
        host.gen += 1
        host.fresh_process()
        self.views[host.name] = {x.name: x is host for x in self.hosts}
        for key in [k for k in self.vstate if k[0] == host.name]:
            del self.vstate[key]
        self.at(self.now + self.rng.uniform(0, TICK_S), self._tick, (host, host.gen))
        self._connectivity()
        if self.master is not None and self.linked(host, self.master.host):
            self._tell_master(host)
        self.log("start", host.name)

    def crash(self, host: Host, lose_disk: bool = False) -> None:
        if not host.up:
            return
        self.log("crash", host.name, lose_disk)
        host.up = False  # parked clients get no answer from a crashed master
        if host.role is not None:
            self._step_down(host.role)
        host.gen += 1
        host.fresh_process()
        if lose_disk:
            for name in list(host.disk):
                del host.disk[name]
                self.lost_disks[name] += 1
                self.lost_copies.add((host.address, name))
                self._copy_destroyed(name, "disk")
            self.facts["disk_lost"] += 1
        self._connectivity()

    def isolate(self, names) -> None:
        self.isolated = frozenset(names)
        self.log("isolate", sorted(self.isolated))
        self._connectivity()

    def heal(self) -> None:
        if not self.isolated:
            return
        self.isolated = frozenset()
        self.log("heal")
        self._connectivity()
        if self.master is not None:
            for h in self.hosts:
                if h.up:
                    self._tell_master(h)

    def _connectivity(self) -> None:
        """After a host went up or down or the cut changed: views follow, a master without a
        majority loses its lease ``lease_s`` later (if it has not got one back), and a cluster
        without a master elects one."""
        self._membership()
        master = self.master
        if master is not None and not self.majority(master.host):
            if self.minority_since is None:
                self.minority_since = self.now
                self.at(self.now + self.p.lease_s, self._lease_lost, (master, self.now))
        else:
            self.minority_since = None
        self._want_master()

    # -- the master --

    def _want_master(self) -> None:
        if self.master is None and not self.electing:
            self.electing = True
            self.at(self.now + self.rng.uniform(*self.p.elect_s), self._elect)

    def _elect(self, _=None) -> None:
        self.electing = False
        if self.master is not None:
            return
        candidates = [h for h in self.hosts if h.up and self.majority(h)]
        if not candidates:
            self.electing = True
            self.at(self.now + 0.5, self._elect)
            return
        host = self.rng.choice(candidates)
        self.term += 1
        master = Master(host, self.term, self.p.planner, self.now)
        host.role, self.master = master, master
        host.term = self.term
        host.master, host.reported = host.address, None
        self.facts["master_elected"] += 1
        self.log("elected", host.name, self.term)
        self.at(self.now + self.rng.uniform(0.01, 0.2), self._take_over, master)
        for h in self.hosts:
            if h is not host and self.linked(h, host):
                self._tell_master(h)

    def _tell_master(self, host: Host) -> None:
        """``host`` hears of the master (and its term) a little later, if still linked."""
        self.at(self.now + self.rng.uniform(0.02, 0.3), self._learn, (host, host.gen))

    def _learn(self, arg) -> None:
        host, gen = arg
        master = self.master
        if gen != host.gen or master is None or not self.linked(host, master.host):
            return
        host.term = max(host.term, master.term)
        host.master = master.host.address

    def _take_over(self, master: Master) -> None:
        """Commit what predecessors got onto a majority, then serve from the committed tags."""
        if self.master is not master:
            return
        carried, self.carried = self.carried, []
        for proposal in carried:
            self._committed(proposal)
        snap = msgpack.unpackb(msgpack.packb(self.reference.snapshot(), use_bin_type=True),
                               raw=False)
        master.tags = tg.TagStore.from_snapshot(snap)
        self._compare_stores(master, None)
        master.active = True

    def _lease_lost(self, arg) -> None:
        master, since = arg
        if self.master is master and self.minority_since == since:
            self.facts["master_lease_lost"] += 1
            self._step_down(master)
            self._want_master()

    def _step_down(self, master: Master) -> None:
        self.log("step_down", master.host.name, master.term)
        for call, rid, _ in master.pending.values():
            self._client_answer(master.host, call, rid, m.Error(rid=rid, code="NotMaster",
                                                                msg=""))
        self.carried.extend(p for p in master.log if p.rep_at <= self.now)
        master.log.clear()
        master.host.role = None
        if self.master is master:
            self.master, self.minority_since = None, None

    def propose(self, master: Master, entry: dict) -> None:
        rep = self.now + self.rng.uniform(0.001, self.p.commit_s[0] + 0.01) \
            if self.majority(master.host) else math.inf
        at = -math.inf if entry["type"] == "blob_moved" else self.now
        master.log.append(Proposal(entry, at, rep))
        self.at(self.now + self.rng.uniform(*self.p.commit_s), self._commit, master)

    def _commit(self, master: Master) -> None:
        """Commit the log's head entries in order while the master reaches a majority."""
        if self.master is not master or not master.log:
            return
        if not self.majority(master.host):
            self.at(self.now + 0.2, self._commit, master)
            return
        while master.log:
            proposal = master.log.pop(0)
            proposal.rep_at = min(proposal.rep_at, self.now)
            self._committed(proposal, master)

    def _committed(self, proposal: Proposal, master: Master | None = None) -> None:
        entry = proposal.entry
        self.log("commit", entry)
        self.history.append(entry)
        op = entry.get("op") or ""
        again = op in self.first_result
        touched = sorted(self.reference.by_blob.get(entry.get("blob"), ())) \
            if entry["type"] == "blob_moved" else [entry["tag"]]
        before = {t: self._urls_of(t) for t in touched}
        result = self.reference.apply(entry)
        self._named_since(before, proposal.at)
        self._referenced_since(before, entry, proposal.at)
        for s in entry.get("urls", ()) if entry["type"] != "blob_moved" else ():
            key = tg.set_key(s)
            self.client_named[key] = max(self.client_named.get(key, -math.inf), proposal.at)
        if op and not again:
            self.first_result[op], self.op_index[op] = result, len(self.history)
        if not again:
            self._model_apply(entry)
        self._check_tag(entry)
        at = self.ref_since.get(entry["blob"], -math.inf) if entry["type"] == "blob_moved" \
            else proposal.at  # a retag's blob counts as named since its client write
        self._check_named_exist(entry, at)
        try:
            self.reference.check_invariants()
        except AssertionError as exc:
            self.violation("check_invariants", f"tags: {exc!r}")
        if master is not None and master.tags is not None:
            master.tags.apply(entry)
            if entry["type"] == "blob_moved":
                master.planner.retagged(entry["blob"])
            self._compare_stores(master, entry.get("tag"))
            pending = master.pending.pop(op, None)
            if pending is not None:
                call, rid, _ = pending
                self._client_answer(master.host, call, rid, m.Reply(rid=rid, body=result))

    # -- a node's loop turn (mesh.ddfs._ddfs_tick) --

    def _tick(self, arg) -> None:
        host, gen = arg
        if gen != host.gen:
            return
        added, removed = host.changes
        host.changes = ({}, {})
        host.delta[0].extend(list(r) for r in added.values())
        host.delta[1].extend(removed)
        self._report(host)
        ended, host.ended = host.ended, []
        for blob, error in ended:
            done = m.CopyDone(term=host.term, node=host.address, blob=blob, error=error)
            if host.role is not None:
                self._copy_done(host, done)
            elif host.master:
                self.send(host, host.master, done)
        role = host.role
        if role is not None and role.active and self.now >= role.next_plan:
            role.next_plan = self.now + PLAN_S
            self._plan(role)
        self.at(self.now + TICK_S, self._tick, arg)

    def _report(self, host: Host) -> None:
        if host.master is None:
            return
        key = (host.master, host.term)
        full = key != host.reported or self.now - host.full_at >= self.p.planner.full_every_s
        added, removed = host.delta
        if not full and not added and not removed:
            return
        if full:
            host.reported, host.full_at = key, self.now
            msg = m.BlobReport(term=host.term, node=host.address, full=True,
                               added=[list(r) for r in host.disk.values()])
        else:
            msg = m.BlobReport(term=host.term, node=host.address, full=False, added=added,
                               removed=removed)
        host.delta = ([], [])
        if host.role is not None:
            self._blob_report(host, msg)
        else:
            self.send(host, host.master, msg)

    # -- the network --

    def send(self, src: Host, address: str, msg, meta=None) -> None:
        dst = self.by_address[address]
        if not self.linked(src, dst) or (self.lossy and self.rng.random() < self.p.loss):
            return
        when = self.now + self.rng.uniform(*self.p.delay_s)
        if self.p.stall and self.rng.random() < self.p.stall:
            when += self.rng.uniform(0.1, 1.5)
        link = (src.name, dst.name)
        when = max(when, self.link_free.get(link, 0.0))
        self.link_free[link] = when
        self.at(when, self._deliver, (src, dst, dst.gen, msg, meta))

    def _deliver(self, arg) -> None:
        src, dst, gen, msg, meta = arg
        if gen != dst.gen or not dst.up or (src.name in self.isolated) != (
                dst.name in self.isolated):
            return  # the receiver restarted (its connections are gone) or the link is cut
        _MESSAGES[type(msg)](self, dst, msg, meta)

    def client_send(self, call: Call, rid: int, msg) -> None:
        host = self.by_address[call.target]
        if self.lossy and self.rng.random() < self.p.loss / 4:
            return  # clients hold TCP connections: drops are rarer
        self.at(self.now + self.rng.uniform(*self.p.delay_s), self._client_request,
                (host, host.gen, call, rid, msg))

    def timed_out(self, arg) -> None:
        call, rid = arg
        if rid == call.rid and not call.over:
            call.target = None
            call.ask()

    def _client_request(self, arg) -> None:
        host, gen, call, rid, msg = arg
        if gen != host.gen or not self.client_reaches(host):
            return
        role = host.role
        if role is None or not role.active:
            self._client_answer(host, call, rid, m.Error(rid=rid, code="NotMaster",
                                                         msg=host.master or ""))
            return
        reply = _REQUESTS[type(msg)](self, role, msg, call, rid)
        if reply is not PARKED:
            self._client_answer(host, call, rid, reply)

    def _client_answer(self, host: Host, call: Call, rid: int, reply) -> None:
        if isinstance(reply, m.Reply) and isinstance(call.make(rid), m.TagWrite):
            self._check_answer(call.make(rid), reply.body)
        if not self.client_reaches(host) or (self.lossy and self.rng.random() < self.p.loss / 4):
            return
        self.at(self.now + self.rng.uniform(*self.p.delay_s), self._client_reply,
                (call, rid, reply))

    def _client_reply(self, arg) -> None:
        call, rid, reply = arg
        call.answered(rid, reply)

    # -- the master's requests (mesh.ddfs) --

    def _blob_place(self, master: Master, msg: m.BlobPlace, call: Call, rid: int):
        writable = self.writable(master)
        k = msg.replicas or min(self.p.planner.k, len(writable))
        if k > len(writable):
            return m.Error(rid=rid, code="UsageError", msg=f"{k} replicas asked for, but "
                           f"{len(writable)} nodes can take new blobs now")
        wall_us = int(self.wall(master.host) * 1e6)
        name = tg.blob_name(msg.prefix, wall_us, master.term, next(master.ops), msg.replicas)
        nodes = master.planner.ring(writable).replicas(name, k)
        return m.Reply(rid=rid, body={"name": name, "nodes": nodes, "replicas": k})

    def _tag_get(self, master: Master, msg: m.TagGet, call: Call, rid: int):
        tag = master.tags.get(msg.tag)
        if tag is None:
            return m.Error(rid=rid, code="DataNotFound", msg=f"tag {msg.tag!r} does not exist")
        return m.Reply(rid=rid, body=tag.public())

    def _tag_write(self, master: Master, msg: m.TagWrite, call: Call, rid: int):
        if msg.op in master.tags.ops:
            return m.Reply(rid=rid, body=master.tags.ops[msg.op])
        if msg.op in master.pending:
            _, _, blobs = master.pending[msg.op]
            master.pending[msg.op] = (call, rid, blobs)
            return PARKED
        try:
            entry = master.tags.check_write(msg.kind, msg.tag, msg.urls, msg.attr, msg.value)
        except tg.TagNotFound as exc:
            return m.Error(rid=rid, code="DataNotFound", msg=str(exc))
        entry.update(op=msg.op, wall=self.wall(master.host), update=bool(msg.update))
        blobs = {tg.set_key(s) for s in entry.get("urls", ()) if tg.blob_of(s[0])}
        master.pending[msg.op] = (call, rid, blobs)
        self.propose(master, entry)
        return PARKED

    # -- the master's planner (mesh.ddfs._plan) and the messages it gets --

    def _plan(self, master: Master) -> None:
        alive = self.alive_to(master)
        pending = set()
        for _, _, blobs in master.pending.values():
            pending |= blobs
        referenced = master.tags.referenced()
        actions = master.planner.plan(self.now, self.wall(master.host), alive,
                                      self.writable(master),
                                      referenced, pending, master.held_since)
        self._check_core(master)
        for action in actions:
            self.log("plan", master.host.name, action)
            self.facts["plan_" + type(action).__name__.lower()] += 1
            _PLANNED[type(action)](self, master, action, referenced)

    def _order_copy(self, master: Master, a: rp.Copy, referenced: dict) -> None:
        msg = m.CopyBlob(term=master.term, master=master.host.address, blob=a.blob,
                         size=a.size, checksum=a.checksum, sources=list(a.sources))
        if a.target == master.host.address:
            self._copy_blob(master.host, msg)
        else:
            self.send(master.host, a.target, msg)

    def _order_retag(self, master: Master, a: rp.Retag, referenced: dict) -> None:
        self.propose(master, {"type": "blob_moved", "blob": a.blob, "urls": list(a.urls)})

    def _order_drop(self, master: Master, a: rp.Drop, referenced: dict) -> None:
        copy = master.planner.map.copies.get(a.blob, {}).get(a.node)
        if copy is not None and rp.blob_url(a.node, copy.path) in referenced.get(a.blob, ()):
            self.violation("planner_dropped_referenced", f"{a} although its tags name it")
        counted = tuple(master.planner.map.copies.get(a.blob, ()))  # the copies it relied on
        if any((n, a.blob) in self.lost_copies and self.by_address[n].up for n in counted):
            self.facts["drop_relied_on_restarted_empty_disk"] += 1
        msg = m.DropBlob(term=master.term, master=master.host.address, blob=a.blob)
        if a.node == master.host.address:
            self._drop_blob(master.host, msg, (self.now, counted))
        else:
            self.send(master.host, a.node, msg, (self.now, counted))

    def _blob_report(self, host: Host, msg: m.BlobReport, meta=None) -> None:
        self.log("report", host.name, msg)
        if host.role is not None:
            host.role.planner.map.report(msg.node, msg.full, msg.added, msg.removed)

    def _copy_done(self, host: Host, msg: m.CopyDone, meta=None) -> None:
        if host.role is not None:
            planner = host.role.planner
            (planner.copy_failed if msg.error else planner.copied)(msg.node, msg.blob)

    def _check_core(self, master: Master) -> None:
        try:
            master.planner.check_invariants()
        except AssertionError as exc:
            self.violation("check_invariants", f"planner: {exc!r}")

    # -- a node's orders --

    def _copy_blob(self, host: Host, msg: m.CopyBlob, meta=None) -> None:
        if msg.term < host.term:
            self.facts["stale_term_refused"] += 1
            return
        if msg.blob in host.disk:
            done = m.CopyDone(term=msg.term, node=host.address, blob=msg.blob)
            if host.role is not None and host.address == msg.master:
                self._copy_done(host, done)
            else:
                self.send(host, msg.master, done)
            return
        if all(o.blob != msg.blob for o in host.orders) and (
                host.copying is None or host.copying.blob != msg.blob):
            host.orders.append(msg)
            self._next_copy(host)

    def _next_copy(self, host: Host) -> None:
        if host.copying is not None or not host.orders:
            return
        order = host.copying = host.orders.pop(0)
        self.at(self.now + 0.001, self._copy_from, (host, host.gen, order, 0))

    def _copy_from(self, arg) -> None:
        """Try the order's sources in turn (mesh.copier); one copy at a time per node."""
        host, gen, order, i = arg
        if gen != host.gen:
            return
        if order.blob in host.disk:
            self._copy_ended(host, order, "")
            return
        if i >= len(order.sources):
            self._copy_ended(host, order, "no source could give it")
            return
        src = self.by_address[order.sources[i].split("/")[2]]
        if not self.linked(host, src) or order.blob not in src.disk:
            self.at(self.now + 0.01, self._copy_from, (host, gen, order, i + 1))
            return
        self.at(self.now + order.size / self.p.rate + self.rng.uniform(*self.p.delay_s),
                self._copy_stored, (host, gen, order, i, src, src.gen))

    def _copy_stored(self, arg) -> None:
        host, gen, order, i, src, src_gen = arg
        if gen != host.gen:
            return
        if src.gen != src_gen or not self.linked(host, src) or order.blob not in src.disk:
            self._copy_from((host, gen, order, i + 1))  # the source went away meanwhile
            return
        row = src.disk[order.blob]
        if order.blob not in host.disk:
            self.store(host, [row[0], row[1], row[2], row[3], self.wall(host)])
            self.log("copied", host.name, order.blob, src.name)
            self.facts["blob_copied"] += 1
        self._copy_ended(host, order, "")

    def _copy_ended(self, host: Host, order: m.CopyBlob, error: str) -> None:
        host.ended.append((order.blob, error))
        host.copying = None
        self._next_copy(host)

    def _drop_blob(self, host: Host, msg: m.DropBlob, meta: tuple) -> None:
        """Carry out a drop (planned by the master at ``planned``), checking (c): no copy a
        committed tag names, unless that naming began after the drop was planned (a client
        tagged URLs it read before their tag went: a race no planner can see), and no copy
        younger than the delay."""
        if msg.term < host.term:
            self.facts["stale_term_refused"] += 1
            return
        row = host.disk.get(msg.blob)
        if row is None:
            return
        planned, counted = meta
        since = self.named_since(rp.blob_url(host.address, row[3]))
        if since is not None and since <= planned:
            self.violation("gc_dropped_referenced", f"{host.name} dropped {msg.blob} (planned "
                           f"at {planned:.2f}, term {msg.term}), which a committed tag names "
                           f"since {since:.2f}")
        elif since is not None:
            self.facts["late_tag_raced"] += 1
        age = self.wall(host) - row[4]
        if age < self.p.planner.gc_delay_s - 2 * self.p.skew_s:
            self.violation("gc_dropped_young", f"{host.name} dropped {msg.blob} (term "
                           f"{msg.term}) {age:.1f} s old")
        host.remove(msg.blob)
        self.log("dropped", host.name, msg.blob, msg.term)
        self.facts["blob_dropped"] += 1
        self.last_drop[msg.blob] = max(self.last_drop.get(msg.blob, -math.inf), planned)
        if msg.blob not in self.reference.by_blob:
            self.collected.add(msg.blob)
        unseen = sum(1 for n in counted if (n, msg.blob) in self.lost_copies)
        self._below_k(msg.blob, planned, unseen)
        self._copy_destroyed(msg.blob, "drop")

    # -- the checks --

    def copies(self, blob: str) -> list[Host]:
        return [h for h in self.hosts if blob in h.disk]

    def blob_named_since(self, blob: str) -> float | None:
        """Since when committed tags have named ``blob`` without a break (None: they do not):
        the proposal of the client write that began it; a retag only moves its URLs."""
        return self.ref_since.get(blob)

    def k_of(self, blob: str) -> int:
        pushed = self.pushed.get(blob)
        return pushed.k if pushed else min(self.p.k, len(self.hosts))

    def _below_k(self, blob: str, planned: float, unseen: int) -> None:
        """A drop never leaves a referenced blob with fewer than k copies on disk (up or
        down), counting those ``unseen``: copies the planner relied on that went with a disk,
        before its membership could see it or after it planned (faults, not the planner)."""
        since = self.blob_named_since(blob)
        held = len(self.copies(blob)) + unseen
        if since is not None and since <= planned and held < self.k_of(blob):
            self.violation("drop_below_k", f"a drop (planned at {planned:.2f}) left {blob} "
                           f"with {held} copies on disk; tags name it since {since:.2f}")

    def _copy_destroyed(self, blob: str, how: str) -> None:
        """(a): the last copy of an acknowledged or referenced blob goes only with k disks,
        or as garbage."""
        if self.copies(blob):
            return
        pushed = self.pushed.get(blob)
        since = self.blob_named_since(blob)
        if pushed is None and since is None:
            return
        if self.lost_disks[blob] >= self.k_of(blob):
            self.facts["blob_lost_to_disks"] += 1
        elif since is not None and since <= self.last_drop.get(blob, -math.inf):
            self.violation("referenced_blob_gone", f"{blob}: the last copy went ({how}; "
                           f"{self.lost_disks[blob]} lost with disks) while a committed tag "
                           f"names it (since {since:.2f})")
        elif since is not None:
            self.facts["late_tag_raced"] += 1
        elif blob in self.collected:
            self.facts["garbage_collected"] += 1
        else:
            self.violation("acked_blob_lost", f"{blob}: the last copy went with a disk, "
                           f"{self.lost_disks[blob]} of {pushed.k} lost so")

    def _check_named_exist(self, entry: dict, at: float) -> None:
        """(c): a committed write names no blob that drops planned after it was proposed
        (so while it was pending) removed from every disk."""
        for s in entry.get("urls", ()):
            blob = tg.blob_of(s[0]) if s else None
            if not blob or self.copies(blob) or self.lost_disks[blob] >= self.k_of(blob):
                continue
            if self.last_drop.get(blob, -math.inf) >= at:
                self.violation("referenced_blob_gone", f"{entry['type']} {entry.get('tag')} "
                               f"committed naming {blob}, dropped from every disk while it "
                               "was pending")
            else:
                self.facts["late_tag_raced"] += 1

    def _urls_of(self, tag: str) -> set:
        held = self.reference.get(tag)
        return {u for s in held.urls for u in s} if held else set()

    def _named_since(self, before: dict, at: float) -> None:
        """Keep, per tag and URL, when its present naming began (the proposal of the entry that
        began it; -inf for the planner's retags, whose drops it must always know of)."""
        for tag, old in before.items():
            now = self._urls_of(tag)
            since = self.since.setdefault(tag, {})
            for url in old - now:
                del since[url]
            for url in sorted(now - old):
                since[url] = at
            if not now and tag not in self.reference.tags:
                del self.since[tag]

    def _referenced_since(self, before: dict, entry: dict, at: float) -> None:
        blobs = {tg.blob_of(u) for urls in before.values() for u in urls}
        blobs |= {tg.set_key(s) for s in entry.get("urls", ())}
        for blob in sorted(b for b in blobs if b):
            if blob not in self.reference.by_blob:
                self.ref_since.pop(blob, None)
            else:
                self.ref_since.setdefault(blob, at)

    def named_since(self, url: str) -> float | None:
        """Since when a committed tag names ``url`` (None: none does)."""
        times = [s[url] for s in self.since.values() if url in s]
        return min(times) if times else None

    def _model_apply(self, e: dict) -> None:
        kind, tag = e["type"], e.get("tag")
        keys = [tg.set_key(s) for s in e.get("urls", ())]
        if kind == "tag_add":
            old = self.model.get(tag, [])
            if e.get("update"):  # Disco's set semantics: blob names without their stamps
                seen, new = {_unstamped(k) for k in old}, []
                for key in keys:
                    if _unstamped(key) not in seen:
                        seen.add(_unstamped(key))
                        new.append(key)
                keys = new
            self.model[tag] = keys + old
        elif kind == "tag_put":
            self.model[tag] = keys
        elif kind == "tag_delete":
            self.model.pop(tag, None)

    def _check_tag(self, entry: dict) -> None:
        if entry["type"] == "blob_moved":
            for name in sorted(self.reference.by_blob.get(entry["blob"], ())):
                for s in self.reference.tags[name].urls:
                    if tg.set_key(s) == entry["blob"] and s != entry["urls"]:
                        self.violation("tag_state", f"{name} holds {s} after a move to "
                                       f"{entry['urls']}")
            return
        tag = entry["tag"]
        held = self.reference.get(tag)
        got = None if held is None else [tg.set_key(s) for s in held.urls]
        if got != self.model.get(tag):
            self.violation("tag_state", f"{tag}: the store holds {got}, the committed history "
                           f"says {self.model.get(tag)}")

    def _compare_stores(self, master: Master, tag: str | None) -> None:
        names = [tag] if tag else sorted(set(self.reference.tags) | set(master.tags.tags))
        for name in names:
            ours, theirs = master.tags.get(name), self.reference.get(name)
            if (ours and ours.public()) != (theirs and theirs.public()):
                self.violation("tag_state", f"the master's {name} differs from the committed "
                               f"one: {ours and ours.urls} vs {theirs and theirs.urls}")

    def _check_answer(self, msg: m.TagWrite, body: dict) -> None:
        first = self.first_result.get(msg.op)
        if first is None:
            self.violation("acked_uncommitted", f"{msg.kind} {msg.tag} ({msg.op}) answered, "
                           "never committed")
        elif body != first:
            self.violation("answer", f"{msg.op} answered {body}, committed as {first}")

    def unrepaired(self) -> list[str]:
        """(d): what keeps a referenced blob that still has a copy on an up host from being at
        k on alive hosts with its tags naming only those copies. A blob a client named anew
        since settling began (a slow client's late tag of old URLs) has its bound from then."""
        master = self.master
        if master is None or not master.active:
            return ["no master"]
        alive = self.alive_to(master)
        referenced = self.reference.referenced()
        out = []
        for blob in sorted(referenced):
            holders = self.copies(blob)
            if not any(h.up for h in holders):
                continue  # lost, or only on hosts left down: nothing to repair from
            named = self.client_named.get(blob, -math.inf)
            if named > self.settled_at and self.now < named + self.bound:
                continue
            live = {rp.blob_url(h.address, h.disk[blob][3]) for h in holders
                    if h.up and h.address in alive}
            k = self.blob_k(blob)
            if len(live) < k or not referenced[blob] <= live:
                out.append(f"{blob}: {len(live)} live copies of {k}; tags name "
                           f"{sorted(referenced[blob] - live)} not alive")
        return out

    def check_repaired(self) -> None:
        for problem in self.unrepaired():
            self.violation("not_repaired", problem)

    def check_end(self) -> None:
        """(b) at the end: every acknowledged write holds unless a later one replaced it."""
        for op, kind, tag, keys in self.acked_writes:
            index = self.op_index[op]
            later = [e for e in self.history[index:] if e.get("tag") == tag and
                     e["type"] in ("tag_put", "tag_delete", "tag_add")]
            if kind == "delete":
                if not later and tag in self.reference.tags:
                    self.violation("acked_write_lost", f"{tag} deleted ({op}) but there")
                continue
            if any(e["type"] != "tag_add" for e in later):
                continue
            held = self.reference.get(tag)
            # an update may drop a blob whose name (without its stamp) the tag holds already
            have = {_unstamped(tg.set_key(s)) for s in held.urls} if held else set()
            wanted = {_unstamped(k) for k in keys}
            if not wanted <= have:
                self.violation("acked_write_lost", f"{kind} {tag} ({op}): "
                               f"{sorted(wanted - have)} missing")

    # -- settling --

    def blob_k(self, blob: str) -> int:
        """The copies a blob is to have on up hosts: its push's own k, else the cluster's."""
        up = sum(1 for h in self.hosts if h.up)
        return min(tg.blob_replicas(blob) or self.p.planner.k, up)

    def missing_copies(self) -> int:
        out = 0
        for blob in sorted(set(self.pushed) | set(self.reference.by_blob)):
            up = sum(1 for h in self.copies(blob) if h.up)
            if up:
                out += max(0, self.blob_k(blob) - up)
        return out

    def settle(self, extra_s: float = 6.0) -> float:
        """Stop the faults, heal, restart all but a random minority of the down hosts; check
        (d) at the bound and each second for ``extra_s`` more. Returns the bound."""
        self.settling, self.lossy = True, False
        self.blacklist.clear()
        self.heal()
        down = [h for h in self.hosts if not h.up]
        keep = self.rng.randint(0, (len(self.hosts) - 1) // 2)
        for host in self.rng.sample(down, max(0, len(down) - keep)):
            self.start(host)
        up = [h for h in self.hosts if h.up]
        for host in self.rng.sample(up, max(0, keep - len(down))):
            self.crash(host)  # a minority stays down, disks kept
        queued = max(len(h.orders) + 1 for h in self.hosts)
        bound = self.bound = self.p.repair_bound_s(self.missing_copies(), queued)
        self.settled_at = self.now
        self.facts["unrepairable"] += sum(1 for b in self.reference.by_blob
                                          if not any(h.up for h in self.copies(b)))
        started, step = self.now, 0.5
        while self.now - started < bound - step / 2:
            self.run(step)
            if self.repaired_after is None and not self.unrepaired():
                self.repaired_after = self.now - started
        self.run(started + bound - self.now)
        self.check_repaired()
        for _ in range(int(extra_s)):
            self.run(1.0)
            self.check_repaired()
        self.check_end()
        return bound


_MESSAGES = {m.BlobReport: Sim._blob_report, m.CopyDone: Sim._copy_done,
             m.CopyBlob: Sim._copy_blob, m.DropBlob: Sim._drop_blob}
_REQUESTS = {m.BlobPlace: Sim._blob_place, m.TagWrite: Sim._tag_write, m.TagGet: Sim._tag_get}
_PLANNED = {rp.Copy: Sim._order_copy, rp.Retag: Sim._order_retag, rp.Drop: Sim._order_drop}


# ---- clients -------------------------------------------------------------------------------

class Client:
    """A user: pushes blobs, tags ``tag_share`` of them within the window, copies and deletes
    tags now and then."""

    def __init__(self, sim: Sim, tag_share: float = 0.8, own_k: float = 0.2):
        self.sim, self.name = sim, f"c{next(sim.clients)}"
        self.tag_share, self.own_k = tag_share, own_k
        self.ops = itertools.count(1)
        self.recent: list[Pushed] = []

    def op(self) -> str:
        return f"{self.name}/{next(self.ops)}"

    def push(self, tries: int = 3) -> None:
        """Push one blob: most with the cluster's k, some asking for their own (--replicas)."""
        sim = self.sim
        prefix = f"{self.name}-b"
        replicas = sim.rng.choice([1, 2, 3, 4]) if sim.rng.random() < self.own_k else 0
        call = Call(sim, lambda rid: m.BlobPlace(rid=rid, prefix=prefix, replicas=replicas),
                    lambda reply: self._placed(reply, tries), sim.now + 20.0)
        call.ask()

    def _placed(self, reply, tries: int) -> None:
        if not isinstance(reply, m.Reply):
            return
        sim = self.sim
        name, nodes, k = reply.body["name"], reply.body["nodes"], reply.body["replicas"]
        size = sim.rng.randint(*sim.p.size)
        path = f"vol0/blob/{zlib.crc32(name.encode()) & 0xff:02x}/{name}"
        row = [name, size, CHECKSUM, path, 0.0]
        state = {"left": len(nodes), "ok": True}
        for address in nodes:
            host = sim.by_address[address]
            when = sim.now + size / sim.p.rate + sim.rng.uniform(*sim.p.delay_s)
            sim.at(when, self._stored, (host, host.gen, row, state, nodes, k, tries))

    def _stored(self, arg) -> None:
        host, gen, row, state, nodes, k, tries = arg
        sim = self.sim
        if gen == host.gen and sim.client_reaches(host):
            if row[0] not in host.disk:
                sim.store(host, row[:4] + [sim.wall(host)])
                sim.log("pushed", host.name, row[0])
        else:
            state["ok"] = False
        state["left"] -= 1
        if state["left"]:
            return
        name = row[0]
        if state["ok"] and all(name in sim.by_address[a].disk for a in nodes):
            urls = [rp.blob_url(a, row[3]) for a in nodes]
            pushed = sim.pushed[name] = Pushed(name, k, urls, sim.now)
            sim.facts["push_acked"] += 1
            self.recent = [p for p in self.recent if sim.now - p.at < sim.p.tag_window_s / 2]
            self.recent.append(pushed)
            if sim.rng.random() < self.tag_share:
                late = sim.rng.random() < 0.25  # a slow client: maybe after the delay
                wait = sim.rng.uniform(0, 1.5 * sim.p.planner.gc_delay_s) if late else \
                    sim.rng.uniform(0, sim.p.tag_window_s / 2)
                sim.at(sim.now + wait, self.tag, pushed)
        else:
            sim.facts["push_failed"] += 1
            if tries > 1:
                sim.at(sim.now + 0.3, lambda _: self.push(tries - 1))

    def tag(self, pushed: Pushed) -> None:
        """Tag ``pushed``, maybe with other recent pushes, within the window from now."""
        sim = self.sim
        others = [p for p in self.recent if p is not pushed and
                  sim.now - p.at < sim.p.tag_window_s / 2]
        chosen = [pushed] + sim.rng.sample(others, sim.rng.randint(0, min(2, len(others))))
        kind = "put" if sim.rng.random() < 0.15 else "add"
        self.write(kind, sim.rng.choice(TAGS), [p.urls for p in chosen],
                   deadline=sim.now + sim.p.tag_window_s)

    def copy_tag(self, _=None) -> None:
        """Read a tag and add (some of) its replica sets to another, as ``ddfs tag`` of
        another tag's URLs does: old blobs named again, maybe while the first tag goes."""
        sim = self.sim
        source, target = sim.rng.sample(TAGS, 2)

        def got(reply):
            if isinstance(reply, m.Reply) and reply.body["urls"]:
                sets = reply.body["urls"]
                chosen = sim.rng.sample(sets, sim.rng.randint(1, min(4, len(sets))))
                self.write("add", target, chosen, sim.now + 6.0)
                if sim.rng.random() < 0.4:  # a move: the source goes at once
                    self.write("delete", source, [], sim.now + 6.0)
        Call(sim, lambda rid: m.TagGet(rid=rid, tag=source), got, sim.now + 6.0).ask()

    def delete(self, _=None) -> None:
        self.write("delete", self.sim.rng.choice(TAGS), [], self.sim.now + 6.0)

    def write(self, kind: str, tag: str, urls: list, deadline: float) -> None:
        sim, op = self.sim, self.op()
        update = kind == "add" and sim.rng.random() < 0.5
        keys = [tg.set_key(s) for s in urls]

        def done(reply):
            if isinstance(reply, m.Reply):
                sim.acked_writes.append((op, kind, tag, keys))
                sim.facts["tag_write_acked"] += 1
            else:
                sim.facts["tag_write_abandoned"] += 1
        call = Call(sim, lambda rid: m.TagWrite(rid=rid, kind=kind, tag=tag, urls=urls,
                                                update=update, op=op), done, deadline)
        call.ask()


# ---- a seeded run --------------------------------------------------------------------------

def chaos(seed: int, strict: bool = True, trace: bool = False) -> Sim:
    """One seeded run: a cluster forms, clients push and tag, faults for a while; then
    ``settle`` checks that repair catches up."""
    rng = random.Random(seed)
    sim = Sim(seed, Params.random(rng), strict=strict, trace=trace)
    for host in sim.hosts:
        sim.at(rng.uniform(0, 1), lambda h: sim.start(h), host)
    window = rng.uniform(30, 60)
    clients = [Client(sim) for _ in range(rng.randint(1, 3))]
    for _ in range(rng.randint(10, 30)):
        sim.at(rng.uniform(2, window - 5), lambda c: c.push(), rng.choice(clients))
    for _ in range(rng.randint(1, 6)):
        sim.at(rng.uniform(5, window), lambda c: c.delete(), rng.choice(clients))
    for _ in range(rng.randint(0, 8)):
        sim.at(rng.uniform(5, window + 20), lambda c: c.copy_tag(), rng.choice(clients))
    for _ in range(rng.randint(2, 10)):
        sim.at(rng.uniform(3, window), _fault, sim)
    sim.run(window)
    sim.settle()
    return sim


def _fault(sim: Sim) -> None:
    if sim.settling:
        return
    rng = sim.rng
    fault = rng.choice(["crash", "crash", "crash_master", "lose_disk", "isolate", "isolate",
                        "lossy", "blacklist"])
    up = [h for h in sim.hosts if h.up]
    if fault in ("crash", "lose_disk", "crash_master") and up:
        host = sim.master.host if fault == "crash_master" and sim.master else rng.choice(up)
        sim.crash(host, lose_disk=fault == "lose_disk")
        sim.at(sim.now + rng.uniform(0.5, 12), _restart, (sim, host, host.gen))
    elif fault == "isolate":
        names = [h.name for h in sim.hosts]
        if sim.master is not None and rng.random() < 0.4:
            first = [sim.master.host.name]
        else:
            first = []
        size = rng.randint(1, len(names) // 2)
        rest = [x for x in names if x not in first]
        sim.isolate(first + rng.sample(rest, size - len(first)))
        sim.at(sim.now + rng.uniform(0.5, 10), _heal, (sim, sim.isolated))
    elif fault == "blacklist" and up:
        address = rng.choice(up).address
        sim.blacklist.add(address)
        sim.at(sim.now + rng.uniform(2, 15), sim.blacklist.discard, address)
    elif fault == "lossy":
        sim.lossy = True
        sim.at(sim.now + rng.uniform(1, 10), _calm_network, sim)


def _heal(args) -> None:
    sim, cut = args
    if sim.isolated == cut:  # not a later partition
        sim.heal()


def _calm_network(sim: Sim) -> None:
    sim.lossy = False


def _restart(args) -> None:
    sim, host, gen = args
    if host.gen == gen and not host.up and not sim.settling:
        sim.start(host)


def _unstamped(key: str) -> str:
    """A replica set's key (``tg.set_key``) as ``update`` compares it (``tg.update_key``)."""
    return key.split("$", 1)[0] if "://" not in key else key

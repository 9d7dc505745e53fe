"""A deterministic simulator for the Raft core: seeded network, virtual clock, faults.

Every node is a real ``mesh.raft.Raft``; the network is a priority queue of deliveries with a
seeded random delay. Faults: loss, duplication, reordering (random delays), partitions (cut),
crashes and restarts from persisted state, and pauses.

Each node's state machine is the list of entries it has applied (``applied``); with
``compact`` > 0 a node that has just applied something compacts its log (``raft.Compact``) with
that probability, its snapshot being the list as JSON. A restarted node starts from its own
snapshot; a lagging one may be sent the leader's (``raft.Restore``, counted in ``restores``).

After every delivery the invariants are checked: at most one leader per term, and every node's
state machine after applying i entries equals the first i entries of one common history (state
machine safety), whether it got there by ``Apply`` or by ``Restore``. The same seed always
replays the same run.
"""
from __future__ import annotations

import heapq
import json
import random
from dataclasses import dataclass, field

from mesh import raft


@dataclass
class Disk:
    """What a node's journal holds: the same rules as ``mesh.journal``, in memory."""
    term: int = 0
    voted_for: str | None = None
    log: list = field(default_factory=list)  # entries after the snapshot
    snapshot: raft.Snapshot | None = None

    def apply(self, p: raft.Persist) -> None:
        self.term, self.voted_for = p.term, p.voted_for
        base = self.snapshot.index if self.snapshot else 0
        if p.snapshot is not None:
            del self.log[:p.snapshot.index - base]
            self.snapshot, base = p.snapshot, p.snapshot.index
        if p.truncate_from is not None:
            del self.log[max(0, p.truncate_from - 1 - base):]
        self.log.extend(p.entries)


def image(entries: list) -> bytes:
    """A state machine (the applied entries) as snapshot data."""
    return json.dumps(entries, sort_keys=True).encode()


class Sim:
    def __init__(self, n: int, seed: int, loss: float = 0.0, dup: float = 0.0,
                 delay: tuple = (0.001, 0.02), compact: float = 0.0):
        self.seed, self.rng = seed, random.Random(seed)
        self.loss, self.dup, self.delay, self.compact_rate = loss, dup, delay, compact
        self.names = [f"n{i}" for i in range(n)]
        self.disks = {name: Disk() for name in self.names}
        self.nodes: dict[str, raft.Raft] = {}
        self.down: set[str] = set()
        self.paused: dict[str, float] = {}
        self.cut: set[frozenset] = set()
        self.now = 0.0
        self.queue: list = []
        self.seq = 0
        self.leaders: dict[int, str] = {}
        self.applied: dict[str, list] = {name: [] for name in self.names}  # the state machines
        self.restores: dict[str, int] = {name: 0 for name in self.names}
        self.history: list = []  # the one committed sequence every node must agree with
        # every node starts as a voter of the full configuration
        for name in self.names:
            self.disks[name].log = [(0, {"type": "voters", "voters": list(self.names)})]
            self._boot(name)

    def _boot(self, name: str) -> None:
        d = self.disks[name]
        state = raft.State(d.term, d.voted_for, list(d.log), d.snapshot)
        self.nodes[name] = raft.Raft(name, state, random.Random(self.rng.random()))
        self.applied[name] = []
        if d.snapshot is not None:  # the application loads its own snapshot at start
            self._restored(name, d.snapshot)

    # -- faults --

    def crash(self, name: str) -> None:
        self.down.add(name)

    def restart(self, name: str) -> None:
        self.down.discard(name)
        self._boot(name)

    def partition(self, *groups) -> None:
        self.cut = {frozenset((a, b)) for g in groups for h in groups if g is not h
                    for a in g for b in h}

    def heal(self) -> None:
        self.cut = set()

    def pause(self, name: str, seconds: float) -> None:
        self.paused[name] = self.now + seconds

    # -- running --

    def propose(self, entry: dict) -> bool:
        for name, node in self.nodes.items():
            if name not in self.down and node.is_leader and name not in self.paused:
                self._carry(name, node.step(self.now, raft.Propose((entry,))))
                return True
        return False

    def compact(self, name: str) -> None:
        """The node's application snapshots its state machine at everything it has applied."""
        node = self.nodes[name]
        if node.applied > node.snapshot_index:
            self._carry(name, node.step(self.now, raft.Compact(node.applied,
                                                               image(self.applied[name]))))

    def run(self, seconds: float, tick: float = 0.02) -> None:
        end = self.now + seconds
        next_tick = self.now
        while self.now < end:
            if self.queue and self.queue[0][0] <= next_tick:
                at, _, to, msg = heapq.heappop(self.queue)
                self.now = max(self.now, at)
                if to in self.down or to in self.paused:
                    continue
                self._carry(to, self.nodes[to].step(self.now, msg))
            else:
                self.now = next_tick
                for name in list(self.paused):
                    if self.paused[name] <= self.now:
                        del self.paused[name]
                for name, node in self.nodes.items():
                    if name not in self.down and name not in self.paused:
                        self._carry(name, node.step(self.now, raft.Tick()))
                next_tick += tick

    def _carry(self, name: str, actions) -> None:
        applied = False
        for action in actions:
            if isinstance(action, raft.Dropped):  # our own cores send nothing malformed
                raise AssertionError(f"{name} dropped a message: {action}")
            if isinstance(action, raft.Persist):
                self.disks[name].apply(action)
            elif isinstance(action, raft.Send):
                self._send(name, action)
            elif isinstance(action, raft.Apply):
                self._applied(name, action)
                applied = True
            elif isinstance(action, raft.Restore):
                self.restores[name] += 1
                self._restored(name, action.snapshot)
            elif isinstance(action, raft.RoleChanged) and action.role == raft.LEADER:
                holder = self.leaders.setdefault(action.term, name)
                assert holder == name, (f"seed {self.seed}: two leaders in term {action.term}: "
                                        f"{holder} and {name}")
        self.nodes[name].check_invariants()
        if applied and self.compact_rate and self.rng.random() < self.compact_rate:
            self.compact(name)

    def _send(self, sender: str, action: raft.Send) -> None:
        if frozenset((sender, action.to)) in self.cut or self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            self.seq += 1
            at = self.now + self.rng.uniform(*self.delay)
            msg = raft.Message(action.kind, sender, action.body)
            heapq.heappush(self.queue, (at, self.seq, action.to, msg))

    def _applied(self, name: str, action: raft.Apply) -> None:
        mine = self.applied[name]
        assert action.index == len(mine) + 1, f"seed {self.seed}: {name} applied out of order"
        mine.append(action.entry)
        if len(mine) > len(self.history):
            self.history.append(action.entry)
        assert self.history[len(mine) - 1] == action.entry, (
            f"seed {self.seed}: {name} applied {action.entry} at {action.index}, "
            f"others applied {self.history[len(mine) - 1]}")

    def _restored(self, name: str, snapshot: raft.Snapshot) -> None:
        machine = json.loads(snapshot.data)
        assert len(machine) == snapshot.index, f"seed {self.seed}: {name} snapshot size"
        assert machine == self.history[:snapshot.index], (
            f"seed {self.seed}: {name} restored a snapshot at {snapshot.index} that differs "
            f"from the history others applied")
        self.applied[name] = machine

    def leader(self) -> str | None:
        live = [n for n, node in self.nodes.items()
                if n not in self.down and n not in self.paused and node.is_leader]
        return max(live, key=lambda n: self.nodes[n].term) if live else None

"""A deterministic simulator for the membership core (SWIM + Lifeguard).

Real ``mesh.membership.Membership`` instances on a seeded network with per-message delay and
loss, a virtual clock, crashes, restarts, leaves, cuts and *slow* members (a slow member only
gets to run every ``slow_dt`` seconds, so it answers late and probes late, like a process
starved of CPU). Facts (``MemberChanged``) are recorded with their time for assertions.
"""
from __future__ import annotations

import heapq
import random

from mesh import membership as mb


class SwimSim:
    def __init__(self, n: int, seed: int = 0, loss: float = 0.0, delay=(0.001, 0.01),
                 config: mb.Config | None = None, seeds_of=None):
        self.seed, self.rng = seed, random.Random(seed)
        self.loss, self.delay = loss, delay
        self.cfg = config or mb.Config.loopback()
        self.now = 0.0
        self.nodes: dict[str, mb.Membership] = {}
        self.crashed: set[str] = set()
        self.cut: set[str] = set()
        self.slow: dict[str, float] = {}
        self._next_run: dict[str, float] = {}
        self.inbox: dict[str, list] = {}
        self.queue: list = []
        self.seq = 0
        self.facts: list = []  # (time, observer, MemberChanged)
        for i in range(n):
            name = f"n{i}"
            self.add(name, seeds=() if i == 0 else ((seeds_of or (lambda i: "n0"))(i),))

    def add(self, name: str, seeds=(), incarnation: int = 1) -> None:
        self.nodes[name] = mb.Membership(name, name, incarnation, seeds,
                                         random.Random(self.rng.random()), self.cfg,
                                         meta={"slots": 1})
        self.crashed.discard(name)
        self.inbox[name] = []

    def leave(self, name: str) -> None:
        self._carry(name, self.nodes[name].step(self.now, mb.Leave()))
        self.crashed.add(name)

    def run(self, seconds: float, dt: float = 0.02) -> None:
        end = self.now + seconds
        while self.now < end:
            step_end = self.now + dt
            while self.queue and self.queue[0][0] <= step_end:
                at, _, to, sender, body = heapq.heappop(self.queue)
                self.now = max(self.now, at)
                if to in self.crashed or to not in self.nodes:
                    continue
                self.inbox[to].append((sender, body))
                if to not in self.slow:
                    self._drain(to)
            self.now = step_end
            for name, node in list(self.nodes.items()):
                if name in self.crashed:
                    continue
                if name in self.slow:
                    if self.now < self._next_run.get(name, 0.0):
                        continue
                    self._next_run[name] = self.now + self.slow[name]
                    self._drain(name)
                self._carry(name, node.step(self.now, mb.Tick()))
                node.check_invariants()

    def _drain(self, name: str) -> None:
        inbox, self.inbox[name] = self.inbox[name], []
        for sender, body in inbox:
            self._carry(name, self.nodes[name].step(self.now, mb.GossipIn(sender, body)))

    def _carry(self, sender: str, actions) -> None:
        for action in actions:
            if isinstance(action, mb.Dropped):  # our own cores send nothing malformed
                raise AssertionError(f"{sender} dropped a message: {action}")
            if isinstance(action, mb.MemberChanged):
                self.facts.append((self.now, sender, action))
                continue
            if {sender, action.address} & self.cut or self.rng.random() < self.loss:
                continue
            self.seq += 1
            at = self.now + self.rng.uniform(*self.delay)
            heapq.heappush(self.queue, (at, self.seq, action.address, sender, action.entries))

    def view(self, name: str) -> dict:
        return {x.name: x.state for x in self.nodes[name].members.values()}

    def first_time(self, observer: str, member: str, state: str) -> float | None:
        for at, who, fact in self.facts:
            if who == observer and fact.name == member and fact.new == state:
                return at
        return None

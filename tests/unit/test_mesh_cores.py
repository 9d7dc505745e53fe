"""The membership core on a small seeded in-memory network (no sockets, no clock).

Election and the journal are Raft (``mesh.raft``), simulated in ``tests/sim``.
"""
from __future__ import annotations

import random


from mesh import membership as mb

CFG = mb.Config.loopback()


class Net:
    """N members gossiping over a seeded lossy network, with a virtual clock."""

    def __init__(self, n: int, seed: int = 0, loss: float = 0.0):
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.crashed: set[str] = set()
        self.cut: set[str] = set()
        self.facts: list = []
        self.nodes: dict[str, tuple] = {}
        for i in range(n):
            self.add(f"n{i}", seeds=() if i == 0 else ("n0",))

    def add(self, name: str, seeds=(), incarnation: int = 1):
        mem = mb.Membership(name, name, incarnation, seeds, random.Random(self.rng.random()), CFG,
                            meta={"slots": 1})
        self.nodes[name] = mem
        self.crashed.discard(name)

    def run(self, seconds: float, dt: float = 0.05):
        end = self.now + seconds
        while self.now < end:
            self.now += dt
            for name, mem in list(self.nodes.items()):
                if name in self.crashed:
                    continue
                self.deliver(name, mem.step(self.now, mb.Tick()))
                mem.check_invariants()

    def deliver(self, sender: str, actions):
        for action in actions:
            if isinstance(action, mb.MemberChanged):
                self.facts.append((sender, action))
                continue
            target = action.address
            if target in self.crashed or target not in self.nodes or self.rng.random() < self.loss:
                continue
            if {sender, target} & self.cut:
                continue
            mem = self.nodes[target]
            self.deliver(target, mem.step(self.now, mb.GossipIn(sender, action.entries)))

    def view(self, name: str) -> dict:
        return {x.name: x.state for x in self.nodes[name].members.values()}


def test_members_join_through_a_seed_and_converge():
    net = Net(5, seed=1)
    net.run(3)
    for name in net.nodes:
        assert net.view(name) == {f"n{i}": "alive" for i in range(5)}


def test_crashed_member_goes_suspect_then_dead_within_the_bound():
    net = Net(4, seed=2)
    net.run(2)
    net.crashed.add("n3")
    net.run(CFG.suspect_after + 0.3)
    assert all(net.view(n)["n3"] == "suspect" for n in ("n0", "n1", "n2"))
    net.run(CFG.dead_after - CFG.suspect_after + 0.3)
    assert all(net.view(n)["n3"] == "dead" for n in ("n0", "n1", "n2"))


def test_leaving_member_is_left_everywhere_and_never_dead():
    net = Net(4, seed=3)
    net.run(2)
    mem = net.nodes["n2"]
    net.deliver("n2", mem.step(net.now, mb.Leave()))
    net.crashed.add("n2")
    net.run(CFG.dead_after * 2)
    assert all(net.view(n)["n2"] == "left" for n in ("n0", "n1", "n3"))


def test_restarted_member_rejoins_with_a_higher_incarnation():
    net = Net(3, seed=4)
    net.run(2)
    net.crashed.add("n2")
    net.run(CFG.dead_after + 0.5)
    assert net.view("n0")["n2"] == "dead"
    net.add("n2", seeds=("n0",), incarnation=2)
    net.run(1.5)
    assert net.view("n0")["n2"] == "alive" and net.view("n1")["n2"] == "alive"
    assert net.nodes["n0"].members["n2"].incarnation == 2


def test_malformed_entries_are_ignored():
    mem = mb.Membership("a", "a", 1)
    mem.step(0.0, mb.GossipIn("b", [["b"], "junk", ["b", "b", "x", 1, "alive", {}],
                                     ["c", "c", 1, 1, "weird", {}], ["d", "d", 1, 1, "alive", {}]]))
    assert set(mem.members) == {"a", "d"}

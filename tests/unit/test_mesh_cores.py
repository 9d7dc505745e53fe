"""Membership and election cores, on a small seeded in-memory network (no sockets, no clock)."""
from __future__ import annotations

import random

import pytest

from mesh import election as el
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
        self.nodes[name] = (mem, el.Election(name, founder=not seeds))
        self.crashed.discard(name)

    def run(self, seconds: float, dt: float = 0.05):
        end = self.now + seconds
        while self.now < end:
            self.now += dt
            for name, (mem, elect) in list(self.nodes.items()):
                if name in self.crashed:
                    continue
                self.deliver(name, mem.step(self.now, mb.Tick()))
                alive = tuple(x.name for x in mem.alive())
                self.facts += elect.step(el.View(alive, mem.heard_from_peer))
                mem.check_invariants()
                elect.check_invariants()

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
            mem, elect = self.nodes[target]
            _, sender_elect = self.nodes[sender]
            self.deliver(target, mem.step(self.now, mb.GossipIn(sender, action.entries)))
            if sender_elect.master:
                elect.step(el.Claim(sender_elect.term, sender_elect.master))

    def view(self, name: str) -> dict:
        return {x.name: x.state for x in self.nodes[name][0].members.values()}

    def masters(self) -> set:
        return {(e.term, e.master) for n, (_, e) in self.nodes.items() if n not in self.crashed}


def test_members_join_through_a_seed_and_converge():
    net = Net(5, seed=1)
    net.run(3)
    for name in net.nodes:
        assert net.view(name) == {f"n{i}": "alive" for i in range(5)}
    assert net.masters() == {(1, "n0")}


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
    mem, _ = net.nodes["n2"]
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
    assert net.nodes["n0"][0].members["n2"].incarnation == 2


def test_master_loss_elects_the_smallest_alive_name_with_a_higher_term():
    net = Net(4, seed=5)
    net.run(2)
    assert net.masters() == {(1, "n0")}
    net.crashed.add("n0")
    net.run(CFG.dead_after + 1.5)
    assert net.masters() == {(2, "n1")}


def test_master_is_sticky_when_a_smaller_name_joins():
    net = Net(2, seed=6)
    net.nodes.clear()
    net.add("n5")
    net.add("n7", seeds=("n5",))
    net.run(2)
    net.add("n1", seeds=("n7",))
    net.run(2)
    assert net.masters() == {(1, "n5")}


def test_joining_node_never_founds_its_own_cluster_before_hearing_one():
    net = Net(1, seed=7)
    net.add("n9", seeds=("nowhere",))
    net.run(5)
    _, elect = net.nodes["n9"]
    assert elect.master is None and elect.term == 0


@pytest.mark.parametrize("seed", range(30))
def test_seeded_lossy_runs_keep_one_master_per_term(seed):
    net = Net(5, seed=seed, loss=0.2)
    net.run(3)
    by_term: dict[int, set] = {}
    victim = f"n{seed % 5}"
    net.crashed.add(victim)
    net.run(CFG.dead_after + 2)
    for fact in net.facts:
        if isinstance(fact, el.MasterChanged) and fact.master:
            by_term.setdefault(fact.term, set()).add(fact.master)
    assert all(len(masters) == 1 for masters in by_term.values()), by_term
    survivors = {e.master for n, (_, e) in net.nodes.items() if n not in net.crashed}
    assert len(survivors) == 1 and victim not in survivors


def test_malformed_entries_are_ignored():
    mem = mb.Membership("a", "a", 1)
    mem.step(0.0, mb.GossipIn("b", [["b"], "junk", ["b", "b", "x", 1, "alive", {}],
                                     ["c", "c", 1, 1, "weird", {}], ["d", "d", 1, 1, "alive", {}]]))
    assert set(mem.members) == {"a", "d"}


def test_stale_terms_are_refused():
    elect = el.Election("b", founder=False)
    elect.step(el.Claim(3, "a"))
    assert elect.accepts(3) and elect.accepts(4) and not elect.accepts(2)

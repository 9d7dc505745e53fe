"""Membership (SWIM + Lifeguard) under a seeded simulated network (issue 4 items 1, 5, 6)."""
from __future__ import annotations

import os
import statistics

import pytest

from mesh import membership as mb
from swimsim import SwimSim

pytestmark = pytest.mark.sim

SEEDS = int(os.environ.get("SIM_SEEDS", "60"))


def test_members_join_through_a_seed_and_converge():
    sim = SwimSim(6, seed=1)
    sim.run(3)
    for name in sim.nodes:
        assert sim.view(name) == {f"n{i}": "alive" for i in range(6)}


def test_crash_is_suspected_then_dead_at_every_survivor_within_the_bound():
    sim = SwimSim(5, seed=2)
    sim.run(2)
    crash_at = sim.now
    sim.crashed.add("n3")
    sim.run(5)
    for observer in ("n0", "n1", "n2", "n4"):
        dead = sim.first_time(observer, "n3", "dead")
        assert dead is not None and dead - crash_at <= 5.0, (observer, dead)
        suspect = sim.first_time(observer, "n3", "suspect")
        assert suspect is None or suspect <= dead


def test_leaving_member_is_left_everywhere_and_never_dead():
    sim = SwimSim(4, seed=3)
    sim.run(2)
    sim.leave("n2")
    sim.run(8)
    for observer in ("n0", "n1", "n3"):
        assert sim.view(observer)["n2"] == "left"
        assert sim.first_time(observer, "n2", "dead") is None


def test_restart_with_a_higher_incarnation_is_alive_again():
    sim = SwimSim(3, seed=4)
    sim.run(2)
    sim.crashed.add("n2")
    sim.run(5)
    assert sim.view("n0")["n2"] == "dead"
    sim.add("n2", seeds=("n0",), incarnation=2)
    sim.run(2)
    assert sim.view("n0")["n2"] == "alive" and sim.view("n1")["n2"] == "alive"


def test_suspected_member_refutes_with_a_higher_incarnation():
    sim = SwimSim(4, seed=5)
    sim.run(2)
    rumour = {"kind": "gossip", "updates": [["n1", "n1", 1, "suspect", {}, "n2"]]}
    sim._carry("n0", sim.nodes["n0"].step(sim.now, mb.GossipIn("n2", rumour)))
    assert sim.view("n0")["n1"] == "suspect"
    sim.run(3)
    assert all(sim.view(o)["n1"] == "alive" for o in ("n0", "n2", "n3"))
    assert sim.nodes["n1"].me.incarnation > 1
    assert not any(f.name == "n1" and f.new == "dead" for _, _, f in sim.facts)


def test_a_slow_member_does_not_get_healthy_members_declared_dead():
    # Lifeguard: n4 runs only every 0.5 s (a starved process); it must not kill the others
    sim = SwimSim(5, seed=6, loss=0.05)
    sim.run(2)
    sim.slow["n4"] = 0.5
    sim.run(30)
    healthy = {"n0", "n1", "n2", "n3"}
    false = [(t, o, f) for t, o, f in sim.facts if f.name in healthy and f.new == "dead"]
    assert not false, false[:5]
    assert sim.nodes["n4"].awareness > 0  # it noticed that it is the slow one


def test_ten_percent_loss_has_no_false_deaths(request):
    seeds = [request.config.getoption("--seed")] if request.config.getoption("--seed") \
        is not None else range(max(1, SEEDS // 10))
    for seed in seeds:
        sim = SwimSim(8, seed=seed, loss=0.1)
        sim.run(30)
        deaths = [f for _, _, f in sim.facts if f.new == "dead"]
        assert not deaths, f"seed {seed}: {deaths[:3]}"


def test_crash_detection_time_figures():
    """Crash-to-dead at every survivor over many seeds (printed; the SPEC bound is 5 s)."""
    times = []
    for seed in range(20):
        sim = SwimSim(5, seed=100 + seed)
        sim.run(2)
        crash_at = sim.now
        sim.crashed.add("n2")
        sim.run(6)
        for observer in ("n0", "n1", "n3", "n4"):
            dead = sim.first_time(observer, "n2", "dead")
            assert dead is not None, (seed, observer)
            times.append(dead - crash_at)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"\ncrash-to-dead (sim, 5 members): p50 {statistics.median(times):.2f} s, p99 {p99:.2f} s")
    assert p99 <= 3.0  # issue 4's target (SPEC's bound is 5 s)

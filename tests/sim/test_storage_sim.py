"""DDFS's ring, tag store and repair planner under a seeded cluster (``storagesim`` has the
theory).

Replay one seed with ``pytest tests/sim/test_storage_sim.py --seed N`` (strict: the first
violation is raised with its seed). ``STORAGE_SIM_SEEDS`` sets how many seeds the chaos test
tries (300 by default, on both cores); the ``slow`` test runs ``STORAGE_SIM_SEEDS_SLOW`` (20,000
by default) and prints seeds/s.

Bugs the simulator found stay below as regression scenarios, each with its chaos seed.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections import Counter

import pytest

import storagesim as ss
from storage import repair as rp
from storage.ring import Ring

pytestmark = pytest.mark.sim

SEEDS = int(os.environ.get("STORAGE_SIM_SEEDS", "300"))
SLOW_SEEDS = int(os.environ.get("STORAGE_SIM_SEEDS_SLOW", "20000"))
WORKERS = 2


def formed(seed: int = 1, **params) -> ss.Sim:
    """Every host started and a master serving, no faults."""
    sim = ss.Sim(seed, ss.Params(**params))
    for host in sim.hosts:
        sim.start(host)
    sim.run(3.0)
    assert sim.master is not None and sim.master.active
    return sim


def push(sim: ss.Sim, tag: str | None = "t0", seconds: float = 3.0) -> ss.Pushed:
    """One client push, tagged as soon as it is acknowledged (unless ``tag`` is None); returns
    the acknowledged blob."""
    client = ss.Client(sim, tag_share=0.0, own_k=0.0)
    before = set(sim.pushed)
    client.push()
    deadline = sim.now + seconds
    while set(sim.pushed) == before and sim.now < deadline:
        sim.run(0.01)
    (name,) = set(sim.pushed) - before
    pushed = sim.pushed[name]
    if tag is not None:
        client.write("add", tag, [pushed.urls], sim.now + 5.0)
        sim.run(seconds)
    return pushed


# ---- the cluster and its blobs ---------------------------------------------------------------

def test_a_push_lands_on_the_rings_nodes_and_its_tag_commits():
    sim = formed(1)
    pushed = push(sim)
    ring = Ring(sim.writable(sim.master))
    assert [u.split("/")[2] for u in pushed.urls] == ring.replicas(pushed.name, 3)
    assert {h.address for h in sim.copies(pushed.name)} == set(ring.replicas(pushed.name, 3))
    assert list(sim.reference.tags) == ["t0"]
    assert sim.reference.referenced()[pushed.name] == set(pushed.urls)
    assert not sim.violations


def test_a_lost_disk_is_repaired_and_the_tags_follow():
    sim = formed(2)
    pushed = push(sim)
    victim = sim.copies(pushed.name)[0]
    if victim is sim.master.host:
        victim = sim.copies(pushed.name)[1]
    sim.crash(victim, lose_disk=True)
    sim.run(15.0)
    live = {h.address for h in sim.copies(pushed.name) if h.up}
    named = {u.split("/")[2] for u in sim.reference.referenced()[pushed.name]}
    assert len(live) == 3 and named == live
    assert sim.facts["plan_copy"] and sim.facts["plan_retag"]
    sim.check_repaired()
    assert not sim.violations


def test_an_untagged_blob_is_collected_after_the_delay_and_a_tagged_one_kept():
    sim = formed(3, planner=rp.Config(k=3, gc_delay_s=5.0, settle_s=0.0, full_every_s=2.0))
    kept, garbage = push(sim), push(sim, tag=None)
    sim.run(10.0)
    assert len(sim.copies(kept.name)) == 3 and not sim.copies(garbage.name)
    assert sim.facts["garbage_collected"] == 1 and not sim.violations


def test_a_new_master_rebuilds_its_map_from_full_reports():
    sim = formed(4)
    pushed = push(sim)
    old = sim.master.host
    sim.crash(old)
    sim.run(8.0)
    master = sim.master
    assert master is not None and master.host is not old and master.active
    assert pushed.name in master.planner.map.copies
    assert {h.address for h in sim.hosts if h.up} <= master.planner.map.full
    assert not sim.violations


def test_a_master_cut_off_from_the_majority_steps_down_and_one_is_elected_there():
    sim = formed(5, n=5)
    old = sim.master.host
    other = next(h for h in sim.hosts if h is not old)
    sim.isolate([old.name, other.name])
    sim.run(5.0)
    assert sim.facts["master_lease_lost"] == 1
    assert sim.master is not None and sim.master.host.name not in sim.isolated
    sim.heal()
    push(sim)
    assert not sim.violations


def test_the_same_seed_replays_the_same_run():
    first, again = ss.chaos(7, strict=False), ss.chaos(7, strict=False)
    assert first.history == again.history and first.facts == again.facts
    assert first.now == again.now


# ---- bugs the simulator found (each scenario failed before its fix) -------------------------

FAST_GC = rp.Config(k=3, gc_delay_s=1.0, settle_s=0.0, full_every_s=2.0)


def test_no_copy_of_an_under_replicated_blob_is_dropped_as_an_extra():
    """Was: a master that took over with only itself in view (k = 1) retagged a blob to its
    one copy; once its view grew (k = 3, two live copies) the unnamed copy was dropped as an
    "extra copy" although the blob was under k and that copy was its repair's source
    (``drop_below_k``; found by the simulator, chaos seed 104 replays it)."""
    sim = formed(20, n=4, planner=FAST_GC, join_s=3.0, elect_s=(0.5, 0.6), lease_s=0.3)
    blobs = [push(sim) for _ in range(3)]
    for host in sim.hosts:
        sim.crash(host)
    for host in sim.hosts:
        sim.start(host)  # the master elected sees only itself for join_s: k = 1
    sim.run(1.0)
    master = sim.master.host
    pushed = next(p for p in blobs if master in sim.copies(p.name))
    third = next(h for h in sim.copies(pushed.name) if h is not master)
    sim.crash(third)  # so its view grows to the other holder and the non-holder: k = 3
    sim.run(15.0)
    assert not sim.violations, sim.violations[:1]
    assert sim.facts["plan_retag"] and len(sim.copies(pushed.name)) >= 3


def test_a_blacklisted_nodes_copy_still_counts_towards_k():
    """Was: k was counted over the writable (alive, not blacklisted) nodes, so with two of four
    blacklisted it was 2: a blob was retagged to two copies and its third, on an alive but
    blacklisted node, dropped as an extra (``drop_below_k``; chaos seed 14 replays it)."""
    sim = formed(21, n=4, planner=FAST_GC)
    pushed = push(sim)
    holders = sim.copies(pushed.name)
    other = next(h for h in sim.hosts if h not in holders)
    black = next(h for h in holders if h is not sim.master.host)
    sim.blacklist |= {black.address, other.address}
    sim.run(10.0)
    assert not sim.violations, sim.violations[:1]
    assert len(sim.copies(pushed.name)) == 3
    assert sim.reference.referenced()[pushed.name] == set(pushed.urls)


@pytest.mark.parametrize("timeout_s, cut_s", [(300.0, 0.6), (2.0, 4.0)],
                         ids=["report_lost", "reports_lost_past_the_time_out"])
def test_a_copy_ordered_dropped_no_longer_counts(timeout_s, cut_s):
    """Was: a copy the planner had ordered dropped counted as live until its node reported it
    gone; with that report lost, a blacklisting moved the ring onto the dropped copy, a retag
    named it and the copy it replaced was dropped as an extra: two copies left, the tags naming
    one that was gone (``drop_below_k``). Then, with the first fix, the same once
    ``copy_timeout_s`` had passed with no report (chaos seed 571 replays both)."""
    sim = formed(22, n=4, detect_s=30.0, planner=rp.Config(
        k=3, gc_delay_s=1.0, settle_s=0.0, full_every_s=30.0, copy_timeout_s=timeout_s))
    master = sim.master.host
    pushed = next(p for p in (push(sim) for _ in range(4)) if master in sim.copies(p.name))
    spare = next(h for h in sim.hosts if h not in sim.copies(pushed.name))
    sim.store(spare, list(master.disk[pushed.name]))  # a stray old copy: an extra
    while pushed.name in spare.disk:
        sim.run(0.01)
    sim.isolate([spare.name])  # its report of the drop is lost (and any copy ordered there)
    named = [h for h in sim.copies(pushed.name) if h is not master]
    sim.blacklist.add(named[0].address)  # the ring now wants the spare, not named[0]
    sim.run(cut_s)
    sim.heal()
    sim.run(5.0)
    assert not sim.violations, sim.violations[:1]
    assert len(sim.copies(pushed.name)) >= 3


def test_untagged_garbage_is_not_copied_back_as_it_goes():
    """Was: collection dropped an untagged blob's old copies one by one, while repair, seeing
    a young copy (so not garbage yet), copied it back from that one: copies and drops of
    garbage for ever, which held the copy slots a tagged blob's repair waited for
    (``not_repaired``, found by slow-run seed 10368)."""
    sim = formed(23, n=4, rate=2e5, size=(200_000, 200_000), planner=rp.Config(
        k=3, gc_delay_s=5.0, settle_s=0.0, full_every_s=2.0, per_node=1))
    garbage = push(sim, tag=None)
    holder = next(h for h in sim.copies(garbage.name) if h is not sim.master.host)
    sim.crash(holder)  # stays down: the blob is repaired from its young copies
    sim.run(40.0)
    assert sim.copies(garbage.name) == [holder]  # collected, but on the host left down
    assert sim.facts["blob_copied"] <= 2, sim.facts
    assert not sim.violations, sim.violations[:1]


@pytest.mark.parametrize("seed", [104, 14, 571, 10368],
                         ids=["under_k_extra", "blacklist_k", "dropped_copy_counted",
                              "garbage_copied_back"])
def test_chaos_seeds_that_found_bugs(seed):
    """Each fails when its fix alone is taken out of today's planner (571 for both parts of
    the third), with the simulator as it is now: a change to the simulator moves what a seed
    does, so the scenarios above are the lasting regressions."""
    sim = ss.chaos(seed, strict=False)
    assert not sim.violations, sim.violations[:1]


# ---- many seeds -----------------------------------------------------------------------------

def run_seed(seed: int):
    """One chaos seed: (seed, its violations, its facts, its bound), an exception as one."""
    try:
        sim = ss.chaos(seed, strict=False)
        return seed, sim.violations[:5], dict(sim.facts)
    except Exception:
        return seed, [("exception", traceback.format_exc(limit=-8))], {}


def run_seeds(seeds) -> tuple[list, Counter, float]:
    started = time.monotonic()
    seeds = list(seeds)
    if len(seeds) < 20:
        results = list(map(run_seed, seeds))
    else:
        with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
            results = pool.map(run_seed, seeds, chunksize=8)
    facts = Counter()
    for _, _, f in results:
        facts.update(f)
    return results, facts, time.monotonic() - started


def failures(results) -> list[str]:
    return [f"seed {seed}: {check}: {detail}" for seed, violations, _ in results
            for check, detail in violations[:1]]


def test_chaos_seeds_keep_every_invariant_and_repair_in_time(request):
    chosen = request.config.getoption("--seed")
    if chosen is not None:  # replay: strict, the first violation raised with its seed
        ss.chaos(chosen, strict=True)
        return
    results, facts, seconds = run_seeds(range(SEEDS))
    print(f"\n{SEEDS} storage sim seeds in {seconds:.1f} s ({SEEDS / seconds:.1f} seeds/s)")
    failed = failures(results)
    assert not failed, "\n".join(failed[:10])
    # the fault paths were exercised (a check that never runs passes vacuously)
    for fact in ("master_elected", "master_lease_lost", "disk_lost", "plan_copy", "plan_retag",
                 "plan_drop", "garbage_collected", "push_failed", "tag_write_abandoned",
                 "late_tag_raced", "unrepairable"):
        assert facts[fact] > 0, (fact, facts)


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_chaos_many_seeds():
    results, _, seconds = run_seeds(range(SLOW_SEEDS))
    failed = failures(results)
    print(f"\n{SLOW_SEEDS} storage sim seeds in {seconds:.0f} s: {SLOW_SEEDS / seconds:.1f} "
          f"seeds/s on {WORKERS} processes; {len(failed)} failed")
    assert not failed, "\n".join(failed[:20])

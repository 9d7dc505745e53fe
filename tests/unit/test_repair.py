"""The repair and collection planner (storage/repair.py): reports in, exact actions out."""
from __future__ import annotations

from storage import repair as rp
from storage.ring import Ring

NODES = [f"h{i}:1" for i in range(5)]


def row(name, mtime=0.0, size=10):
    return [name, size, "c0ffee", f"vol0/blob/ab/{name}", mtime]


def url(node, name):
    return f"disco://{node}/vol0/blob/ab/{name}"


def planner(**cfg) -> rp.Planner:
    return rp.Planner(rp.Config(**{"k": 3, "gc_delay_s": 100.0, "settle_s": 0.0, **cfg}))


def holding(p: rp.Planner, name: str, nodes, mtime=0.0) -> None:
    for n in NODES:
        p.map.report(n, n not in p.map.full, [row(name, mtime)] if n in nodes else [], [])


def plan(p, alive=NODES, referenced=None, pending=(), now=10.0, wall=50.0, writable=None):
    return p.plan(now, wall, set(alive), list(writable or alive), referenced or {},
                  set(pending), 0.0)


def test_a_healthy_blob_needs_nothing():
    p = planner()
    want = Ring(NODES).replicas("a", 3)
    holding(p, "a", want)
    assert plan(p, referenced={"a": {url(n, "a") for n in want}}) == []


def test_a_lost_copy_is_copied_to_the_rings_next_node_from_a_live_one():
    p = planner()
    want = Ring(NODES).replicas("a", 3)
    holding(p, "a", want)
    alive = [n for n in NODES if n != want[0]]
    actions = plan(p, alive=alive, referenced={"a": {url(n, "a") for n in want}})
    target = Ring(alive).replicas("a", 3)
    new = [n for n in target if n not in want]
    assert actions == [rp.Copy(new[0], "a", tuple(url(n, "a") for n in want[1:]), 10,
                               "c0ffee")]
    # in flight: not ordered twice
    assert plan(p, alive=alive, referenced={"a": {url(n, "a") for n in want}}) == []
    # stored: the next plan moves the tags to the live copies
    p.map.report(new[0], False, [row("a")], [])
    p.copied(new[0], "a")
    actions = plan(p, alive=alive, referenced={"a": {url(n, "a") for n in want}})
    assert actions == [rp.Retag("a", tuple(url(n, "a") for n in target))]
    assert plan(p, alive=alive, referenced={"a": {url(n, "a") for n in want}}) == []  # once
    p.retagged("a")
    assert plan(p, alive=alive, referenced={"a": {url(n, "a") for n in target}}) == []


def test_blobs_with_fewer_copies_are_repaired_first_and_in_bounded_numbers():
    p = planner(max_inflight=2, per_node=5)
    holding(p, "two", NODES[:2])
    holding(p, "one", NODES[:1])
    holding(p, "one-b", NODES[1:2])
    actions = plan(p, alive=NODES)
    assert [a.blob for a in actions] == ["one", "one"]
    assert len(p.inflight) == 2


def test_copies_per_target_are_bounded():
    p = planner(per_node=1, max_inflight=99)
    for i in range(6):
        holding(p, f"b{i}", NODES[:1])
    targets = [a.target for a in plan(p, alive=NODES[:3])]
    assert sorted(targets) == sorted(set(targets)) and len(targets) == 2


def test_a_timed_out_copy_is_ordered_again():
    p = planner(copy_timeout_s=5.0)
    holding(p, "a", NODES[:1])
    first = plan(p, alive=NODES[:2], now=10.0)
    assert len(first) == 1
    assert plan(p, alive=NODES[:2], now=12.0) == []
    assert plan(p, alive=NODES[:2], now=16.0) == first


def test_dead_holders_do_not_count_and_a_blob_with_no_live_copy_is_left_alone():
    p = planner()
    holding(p, "a", NODES[:1])
    assert plan(p, alive=NODES[1:]) == []


def test_blacklisted_nodes_get_no_copies():
    p = planner()
    holding(p, "a", NODES[:1])
    actions = plan(p, alive=NODES, writable=NODES[:1] + NODES[3:])
    assert {a.target for a in actions} <= set(NODES[3:])


def test_unreferenced_blobs_go_only_after_the_delay_and_never_while_a_tag_write_names_them():
    p = planner()
    want = Ring(NODES).replicas("a", 3)
    holding(p, "a", want, mtime=950.0)
    assert plan(p, wall=1000.0) == []                 # 50 s old: pushed, maybe not tagged yet
    assert plan(p, wall=1100.0, pending={"a"}) == []  # a tag write in flight names it
    drops = plan(p, wall=1100.0)
    assert sorted(drops, key=lambda d: d.node) == [rp.Drop(n, "a", "unreferenced")
                                                   for n in sorted(want)]


def test_a_referenced_copy_is_never_dropped():
    p = planner()
    holding(p, "a", NODES, mtime=0.0)  # five old copies, tags name three
    refs = {url(n, "a") for n in NODES[:3]}
    drops = plan(p, wall=10_000.0, referenced={"a": refs},
                 writable=NODES)
    dropped = {d.node for d in drops if isinstance(d, rp.Drop)}
    assert dropped.isdisjoint(NODES[:3])


def test_extra_copies_go_once_tags_name_others_that_are_there():
    p = planner()
    want = Ring(NODES).replicas("a", 3)
    extra = next(n for n in NODES if n not in want)
    holding(p, "a", want + [extra])
    actions = plan(p, wall=10_000.0, referenced={"a": {url(n, "a") for n in want}})
    assert actions == [rp.Drop(extra, "a", "extra copy")]


def test_no_collection_until_every_alive_member_reported_in_full():
    p = planner()
    p.map.report(NODES[0], True, [row("a")], [])
    assert plan(p, alive=NODES[:2], wall=10_000.0, writable=NODES[:2]) == []
    p.map.report(NODES[1], True, [], [])
    assert plan(p, alive=NODES[:2], wall=10_000.0, writable=NODES[:2]) == [
        rp.Drop(NODES[0], "a", "unreferenced")]


def test_no_collection_before_the_master_settled():
    p = planner(settle_s=5.0)
    holding(p, "a", NODES[:1])
    assert p.plan(3.0, 10_000.0, set(NODES), NODES, {}, set(), 0.0) == []
    assert p.plan(6.0, 10_000.0, set(NODES), NODES, {}, set(), 0.0) == [
        rp.Drop(NODES[0], "a", "unreferenced")]


def test_a_join_moves_only_the_blobs_the_ring_moves():
    p = planner()
    before = Ring(NODES[:4])
    names = [f"b{i}" for i in range(200)]
    for i, name in enumerate(names):
        for n in before.replicas(name, 3):
            p.map.report(n, i == 0 and n not in p.map.full, [row(name)], [])
    refs = {name: {url(n, name) for n in before.replicas(name, 3)} for name in names}
    p.cfg.max_inflight = 10_000
    p.cfg.per_node = 10_000
    copies = [a for a in plan(p, alive=NODES, referenced=refs) if isinstance(a, rp.Copy)]
    after = Ring(NODES)
    moved = [name for name in names if NODES[4] in after.replicas(name, 3)]
    assert sorted(a.blob for a in copies) == sorted(moved)
    assert {a.target for a in copies} == {NODES[4]}


def test_restart_forgets_copies_until_reported():
    p = planner()
    holding(p, "a", NODES[:3])
    p.map.node_gone(NODES[0])
    assert set(p.map.copies["a"]) == set(NODES[1:3])
    p.map.check_invariants()


def test_no_copy_of_an_under_replicated_blob_is_dropped_because_tags_name_fewer():
    """Found by the storage simulator (seed 113): a new master whose view held only itself
    (k = 1) retagged a blob to its one copy; once the view grew (k = 3, two live copies) the
    unnamed second copy counted as an "extra copy" and was dropped, though the blob was under
    k and that copy was the source of its repair."""
    p = planner()
    holding(p, "a", NODES[:2], mtime=0.0)
    actions = plan(p, wall=10_000.0, referenced={"a": {url(NODES[0], "a")}})
    assert not [a for a in actions if isinstance(a, rp.Drop)], actions
    assert [a.blob for a in actions if isinstance(a, rp.Copy)] == ["a"]


def test_a_blacklisted_nodes_copy_still_counts_towards_k():
    """Found by the storage simulator (seed 185): with two of four nodes blacklisted the
    writable ring had two nodes, so k became 2; the planner retagged a blob to two copies and
    dropped its third, on an alive but blacklisted node, as an extra: k = 3 means three copies
    on alive nodes, the blacklist only says where new ones may go."""
    p = planner()
    writable = NODES[:2]
    holding(p, "a", NODES[:3])
    refs = {"a": {url(n, "a") for n in NODES[:3]}}
    assert plan(p, alive=NODES[:4], writable=writable, wall=10_000.0, referenced=refs) == []


def test_a_copy_on_a_blacklisted_node_moves_to_a_writable_one_before_it_goes():
    p = planner()
    black = NODES[4]
    writable = NODES[:4]
    want = Ring(writable).replicas("a", 3)
    holding(p, "a", want[:2] + [black])
    refs = {"a": {url(n, "a") for n in want[:2] + [black]}}
    actions = plan(p, writable=writable, wall=10_000.0, referenced=refs)
    assert actions == [rp.Copy(want[2], "a", tuple(url(n, "a") for n in want[:2] + [black]),
                               10, "c0ffee")]
    p.map.report(want[2], False, [row("a")], [])
    p.copied(want[2], "a")
    assert plan(p, writable=writable, wall=10_000.0, referenced=refs) == [
        rp.Retag("a", tuple(url(n, "a") for n in want))]
    p.retagged("a")
    refs = {"a": {url(n, "a") for n in want}}
    assert plan(p, writable=writable, wall=10_000.0, referenced=refs) == [
        rp.Drop(black, "a", "extra copy")]


def test_a_copy_ordered_dropped_no_longer_counts():
    """Found by the storage simulator (seed 66 of a run of 3,000): a copy the planner had
    ordered dropped still counted as live until its node reported it gone (never, if that node
    crashed first): a retag named it, and the next plan dropped another copy as an extra,
    leaving the blob at two copies with its tags naming one that was gone."""
    p = planner()
    want = Ring(NODES).replicas("a", 3)
    extra = next(n for n in NODES if n not in want)
    holding(p, "a", want + [extra])
    refs = {"a": {url(n, "a") for n in want}}
    assert plan(p, wall=10_000.0, referenced=refs) == [rp.Drop(extra, "a", "extra copy")]
    assert plan(p, wall=10_000.0, referenced=refs) == []  # not ordered again
    # a named holder dies before the drop is reported: the dropped copy is no source, no
    # retag names it, and no other copy goes
    alive = [n for n in NODES if n != want[0]]
    actions = plan(p, alive=alive, wall=10_000.0, referenced=refs)
    assert [type(a) for a in actions] == [rp.Copy], actions
    assert actions[0].target != extra
    assert not any(extra in s for s in actions[0].sources)


def test_a_dropped_copy_counts_again_only_when_a_report_says_it_is_there():
    """Also found by the simulator (seeds 11706 and 18662 of 20,000): counting a dropped copy
    again once the order timed out let a copy whose removal report was lost count again, with
    the same retag and second drop as above. It counts again when reported back anew, or when
    a full report that came after the time-out still holds it (then the order was lost)."""
    p = planner(copy_timeout_s=5.0)
    want = Ring(NODES).replicas("a", 3)
    extra = next(n for n in NODES if n not in want)
    holding(p, "a", want + [extra])
    refs = {"a": {url(n, "a") for n in want}}
    assert plan(p, wall=10_000.0, referenced=refs, now=10.0) == [
        rp.Drop(extra, "a", "extra copy")]
    assert plan(p, wall=10_000.0, referenced=refs, now=16.0) == []  # timed out, no report
    assert plan(p, wall=10_000.0, referenced=refs, now=30.0) == []
    # a full report after the time-out still holds it: the order was lost, it goes again
    p.map.report(extra, True, [row("a")], [])
    assert plan(p, wall=10_000.0, referenced=refs, now=31.0) == [
        rp.Drop(extra, "a", "extra copy")]
    # reported gone, then a new copy there: it counts at once
    p.map.report(extra, False, [], ["a"])
    p.map.report(extra, False, [row("a", mtime=20.0)], [])
    p.map.check_invariants()
    assert plan(p, wall=10_000.0, referenced=refs, now=32.0) == [
        rp.Drop(extra, "a", "extra copy")]


def test_under_k_counts_by_each_blobs_own_k():
    p = planner()
    holding(p, "a", NODES[:3])      # three copies, one on a blacklisted node: at k
    holding(p, "b", NODES[:1])      # one copy: under
    holding(p, "c", NODES[2:4])     # two, both on blacklisted nodes: under (a third can go)
    writable = NODES[:2]
    assert p.under_k(set(NODES[:4]), writable) == 2
    assert p.under_replicated(set(NODES[:4]), 2) == 1  # k from the writable alone misses "c"


def test_a_blob_with_copies_to_spare_waits_for_its_busy_ring_node():
    """Copying elsewhere now and to the ring's node later moves the bytes twice."""
    p = planner(per_node=1)
    alive = NODES[1:]
    want = Ring(alive).replicas("a", 3)
    holding(p, "a", [n for n in want[:2]] + [NODES[0]])  # NODES[0] dies: two copies left
    p.inflight[(want[2], "other")] = 9.0  # the ring's third node is busy
    acts = [a for a in plan(p, alive=alive) if isinstance(a, rp.Copy) and a.blob == "a"]
    assert acts == []
    del p.inflight[(want[2], "other")]
    acts = [a for a in plan(p, alive=alive) if isinstance(a, rp.Copy) and a.blob == "a"]
    assert [a.target for a in acts] == [want[2]]


def test_a_last_copy_does_not_wait_for_a_busy_ring_node():
    p = planner(per_node=1)
    alive = NODES[1:]
    want = Ring(alive).replicas("b", 3)
    holding(p, "b", [want[0]])
    for w in want[1:]:
        p.inflight[(w, f"other-{w}")] = 9.0
    acts = [a for a in plan(p, alive=alive) if isinstance(a, rp.Copy) and a.blob == "b"]
    assert acts and all(a.target not in want for a in acts)


def test_a_just_pushed_blob_is_not_repaired_before_its_copies_can_report():
    """A push stores k copies at once, but the holders' reports come one by one: a blob seen
    with one copy a moment after its push is not under-replicated yet."""
    p = planner()
    holding(p, "new", NODES[:1], mtime=49.0)  # one copy reported, one second old
    assert [a for a in plan(p, wall=50.0) if isinstance(a, rp.Copy)] == []
    assert [a.blob for a in plan(p, wall=52.5) if isinstance(a, rp.Copy)] == ["new", "new"]


def test_an_unreferenced_blob_goes_whole_once_all_its_copies_are_old():
    """Found by the storage simulator (seed 10368 of 20,000): collection dropped an untagged
    blob's old copies one by one while repair, seeing a young copy (so not garbage), copied it
    back from that one: copies and drops of garbage for ever, which held the copy slots a
    tagged blob's repair waited for. Now an untagged blob is kept whole (and repaired) while
    any live copy is young, and goes whole once none is."""
    p = planner(max_inflight=99, per_node=9)
    p.map.report(NODES[0], True, [row("g", mtime=0.0)], [])
    p.map.report(NODES[1], True, [row("g", mtime=9_990.0)], [])  # a repair copy, 10 s old
    for n in NODES[2:]:
        p.map.report(n, True, [], [])
    actions = plan(p, wall=10_000.0)
    assert not [a for a in actions if isinstance(a, rp.Drop)], actions
    (copy,) = [a for a in actions if isinstance(a, rp.Copy)]
    assert plan(p, wall=20_000.0) == []  # all old now, but a copy of it is under way
    p.map.report(copy.target, False, [row("g", mtime=10_001.0)], [])
    p.copied(copy.target, "g")
    actions = plan(p, wall=20_000.0)  # every copy old, none being made: all go
    assert sorted(a.node for a in actions) == sorted(NODES[:2] + [copy.target])
    assert {type(a) for a in actions} == {rp.Drop}

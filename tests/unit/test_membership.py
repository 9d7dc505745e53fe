"""The membership core (mesh/membership.py): scripted events in, exact actions out.

Organised like the papers: SWIM (Das, Gupta, Motivala, DSN 2002) §3.1 failure detector, §4.2
suspicion, §4.1 infection-style dissemination, §4.3 round-robin probe targets, then join, leave
and push-pull; Lifeguard (Dadgar, Phillips, Currey) local health (LHA-Probe), dynamic suspicion
(LHA-Suspicion) and the buddy system; then metadata and malformed peer input.

Timings use the LAN preset (probe every 1 s, timeout 0.5 s): its periods are exact binary
fractions, so virtual times compare exactly. Every step runs ``check_invariants``. Where the core
differs from the papers on purpose the test says so in a comment ("Deviation").
"""
from __future__ import annotations

import math
import random

import pytest

from mesh import membership as mb
from mesh.membership import (ALIVE, DEAD, LEFT, RTT_BUCKETS, SUSPECT, GossipIn, Leave,
                             SendGossip, SetMeta, Tick)

LAN = mb.Config.lan()
# LAN suspicion bounds for up to 9 members: min = 4.0 * max(1, log10(N+1)) * 1 s, max = 6 * min
LOW, HIGH = 4.0, 24.0


def addr(name: str) -> str:
    return f"tcp://{name}"  # distinct from the name, so that a mix-up shows


def name_of(address: str) -> str:
    return address.removeprefix("tcp://")


def entry(name: str, state: str = ALIVE, inc: int = 1, by: str = "", meta=None) -> list:
    return [name, addr(name), inc, state, meta or {}, by]


def sent(actions, kind: str | None = None) -> list[SendGossip]:
    return [a for a in actions if isinstance(a, SendGossip)
            and (kind is None or a.entries["kind"] == kind)]


def changed(actions) -> list[tuple]:
    return [(a.name, a.old, a.new) for a in actions if isinstance(a, mb.MemberChanged)]


def died(actions, name: str) -> bool:
    return (name, SUSPECT, DEAD) in changed(actions)


class Node:
    """One member plus a clock; every step checks the invariants."""

    def __init__(self, name="a", inc=1, peers=(), seeds=(), seed=0, config=LAN, meta=None):
        self.m = mb.Membership(name, addr(name), inc, seeds, random.Random(seed), config,
                               meta=meta)
        self.now = 0.0
        for peer in peers:
            self.hear(peer)

    def __call__(self, event, now: float | None = None) -> list:
        if now is not None:
            self.now = now
        actions = self.m.step(self.now, event)
        self.m.check_invariants()
        return actions

    def hear(self, sender: str, kind: str = "gossip", inc: int = 1, updates=(), meta=None,
             now: float | None = None, **fields) -> list:
        body = {"kind": kind, "address": addr(sender), "inc": inc, "meta": meta or {},
                "updates": [list(u) for u in updates], **fields}
        return self(GossipIn(sender, body), now)

    def tick(self, now: float) -> list:
        return self(Tick(), now)

    def state(self, name: str) -> str | None:
        member = self.m.members.get(name)
        return member.state if member else None

    def inc(self, name: str) -> int:
        return self.m.members[name].incarnation

    def run(self, until: float, answer=(), dt: float = 0.25) -> list:
        """Tick every ``dt`` up to ``until``; members in ``answer`` ack our pings at once."""
        out = []
        while self.now + dt <= until:
            actions = self.tick(self.now + dt)
            out += actions
            for ping in sent(actions, "ping"):
                if name_of(ping.address) in answer:
                    out += self.hear(name_of(ping.address), "ack", seq=ping.entries["seq"])
        return out


def probe(node: Node, now: float) -> tuple[str, int]:
    """Tick at ``now``; the one ping it sends: (target, seq)."""
    (ping,) = sent(node.tick(now), "ping")
    return name_of(ping.address), ping.entries["seq"]


# ---- config presets ------------------------------------------------------------------------

def test_presets_loopback_is_the_default_and_lan_is_slower():
    assert mb.Config.loopback() == mb.Config()
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.gossip_interval, LAN.sync_interval) == \
        (1.0, 0.5, 0.2, 30.0)
    assert (LAN.suspicion_mult, LAN.suspicion_max_mult) == (4.0, 6.0)
    for cfg in (mb.Config.loopback(), LAN):
        assert 0 < cfg.probe_timeout < cfg.probe_interval


# ---- SWIM §3.1 failure detector ------------------------------------------------------------

def test_each_protocol_period_pings_one_member():
    a = Node(peers=["b"])
    out = a.tick(0.0)
    assert sent(out, "ping") == [SendGossip(addr("b"), {
        "kind": "ping", "seq": 1, "meta": {}, "address": addr("a"), "inc": 1,
        "updates": [entry("b")]})]
    assert sent(a.tick(0.5), "ping") == []  # one probe per period
    assert [p.entries["seq"] for p in sent(a.tick(1.0), "ping")] == [2]


def test_a_ping_is_answered_with_an_ack_of_the_same_seq():
    b = Node("b", peers=["a"])
    (ack,) = b.hear("a", "ping", seq=41)
    assert (ack.address, ack.entries["kind"], ack.entries["seq"]) == (addr("a"), "ack", 41)


def test_ack_within_the_timeout_keeps_the_member_alive():
    a = Node(peers=["b", "c"])
    target, seq = probe(a, 0.0)
    assert a.hear(target, "ack", seq=seq, now=0.25) == []
    assert sent(a.tick(0.5), "ping_req") == []
    assert changed(a.tick(1.0)) == []
    assert a.state(target) == ALIVE


def test_an_acked_probe_counts_its_round_trip_for_metrics():
    a = Node(peers=["b", "c"])
    target, seq = probe(a, 0.0)
    a.hear(target, "ack", seq=seq, now=0.04)
    a.hear(target, "ack", seq=seq, now=0.09)  # a duplicate ack counts once
    m = a.m
    assert m.rtt_count == 1 and abs(m.rtt_sum - 0.04) < 1e-9
    assert m.rtt_buckets[RTT_BUCKETS.index(0.05)] == 1 and sum(m.rtt_buckets) == 1


def test_no_ack_within_the_timeout_asks_k_members_to_ping_the_target():
    a = Node(peers=["b", "c", "d", "e", "f"])
    target, seq = probe(a, 0.0)
    assert sent(a.tick(0.25), "ping_req") == []
    reqs = sent(a.tick(0.5), "ping_req")
    helpers = {name_of(r.address) for r in reqs}
    assert len(reqs) == LAN.indirect_k == len(helpers)
    assert helpers <= {"b", "c", "d", "e", "f"} - {target}
    for req in reqs:
        assert (req.entries["seq"], req.entries["target"], req.entries["target_address"]) == \
            (seq, target, addr(target))
    assert sent(a.tick(0.75), "ping_req") == []  # asked once per probe


def test_indirect_probe_uses_fewer_helpers_when_fewer_exist():
    a = Node(peers=["b", "c"])
    target, _ = probe(a, 0.0)
    (req,) = sent(a.tick(0.5), "ping_req")
    assert name_of(req.address) == ({"b", "c"} - {target}).pop()


def test_ping_req_is_forwarded_and_the_ack_relayed_back_with_the_askers_seq():
    c = Node("c", peers=["a", "b"])
    (ping,) = c.hear("a", "ping_req", seq=7, target="b", target_address=addr("b"), now=0.5)
    assert (ping.address, ping.entries["kind"]) == (addr("b"), "ping")
    own_seq = ping.entries["seq"]
    assert own_seq != 7  # the relay's own sequence number, not the asker's
    (relayed,) = c.hear("b", "ack", seq=own_seq, now=0.6)
    assert (relayed.address, relayed.entries["kind"], relayed.entries["seq"]) == \
        (addr("a"), "ack", 7)


def test_a_relayed_ack_completes_the_probe():
    a = Node(peers=["b", "c"])
    target, seq = probe(a, 0.0)
    (req,) = sent(a.tick(0.5), "ping_req")
    a.hear(name_of(req.address), "ack", seq=seq, now=0.75)
    assert changed(a.tick(1.0)) == []
    assert a.state(target) == ALIVE


def test_a_late_direct_ack_during_the_indirect_phase_still_counts():
    a = Node(peers=["b", "c"])
    target, seq = probe(a, 0.0)
    a.tick(0.5)
    a.hear(target, "ack", seq=seq, now=0.9)
    assert changed(a.tick(1.0)) == []


def test_no_ack_by_the_end_of_the_period_makes_the_target_suspect():
    a = Node(peers=["b", "c"])
    target, seq = probe(a, 0.0)
    a.tick(0.5)
    out = a.tick(1.0)
    assert changed(out) == [(target, ALIVE, SUSPECT)]
    (ping,) = sent(out, "ping")  # the next period's probe carries the news, originated by us
    assert entry(target, SUSPECT, by="a") in ping.entries["updates"]
    a.hear(target, "ack", seq=seq, now=1.1)  # too late: the probe is over
    assert a.state(target) == SUSPECT


# ---- SWIM §4.2 suspicion -------------------------------------------------------------------

def test_suspect_becomes_dead_when_the_suspicion_timeout_expires():
    # suspected by our own probe at t=1.0, no confirmations from others: the maximum timeout
    a = Node(peers=["b"])
    probe(a, 0.0)
    assert changed(a.tick(1.0)) == [("b", ALIVE, SUSPECT)]
    assert changed(a.tick(1.0 + HIGH - 0.25)) == []
    out = a.tick(1.0 + HIGH)
    assert changed(out) == [("b", SUSPECT, DEAD)]
    (reply,) = sent(a.hear("c", "ping", seq=1), "ack")
    assert entry("b", DEAD) in reply.entries["updates"]


def test_suspicion_about_ourselves_is_refuted_with_a_higher_incarnation():
    a = Node(peers=["c"])
    assert changed(a.hear("c", updates=[entry("a", SUSPECT, inc=1, by="c")])) == []
    assert a.m.me.incarnation == 2 and a.m.me.state == ALIVE
    (ack,) = a.hear("c", "ping", seq=5)
    assert ack.entries["inc"] == 2
    assert ack.entries["updates"][0] == entry("a", ALIVE, inc=2)  # our own entry goes first


def test_dead_about_ourselves_is_refuted_too():
    a = Node(inc=3, peers=["c"])
    a.hear("c", updates=[entry("a", DEAD, inc=3)])
    assert a.m.me.incarnation == 4 and a.m.me.state == ALIVE


def test_stale_suspicion_about_ourselves_is_ignored():
    a = Node(inc=3, peers=["c"])
    a.hear("c", updates=[entry("a", SUSPECT, inc=2, by="c")])
    assert a.m.me.incarnation == 3 and a.m.awareness == 0


def _held(a: Node, state: str, inc: int) -> None:
    a.hear("b", inc=inc)
    if state != ALIVE:
        a.hear("c", updates=[entry("b", state, inc=inc)])
    assert (a.state("b"), a.inc("b")) == (state, inc)


@pytest.mark.parametrize("held, incoming, result", [
    ((ALIVE, 1), (ALIVE, 2), (ALIVE, 2)),
    ((ALIVE, 2), (ALIVE, 1), (ALIVE, 2)),
    ((ALIVE, 1), (SUSPECT, 1), (SUSPECT, 1)),
    ((ALIVE, 2), (SUSPECT, 1), (ALIVE, 2)),
    ((SUSPECT, 1), (ALIVE, 1), (SUSPECT, 1)),   # only a higher incarnation refutes
    ((SUSPECT, 1), (ALIVE, 2), (ALIVE, 2)),
    ((SUSPECT, 1), (SUSPECT, 2), (SUSPECT, 2)),
    ((SUSPECT, 1), (DEAD, 1), (DEAD, 1)),
    ((ALIVE, 2), (DEAD, 1), (ALIVE, 2)),
    ((ALIVE, 1), (LEFT, 1), (LEFT, 1)),
    ((DEAD, 1), (ALIVE, 1), (DEAD, 1)),
    ((DEAD, 1), (SUSPECT, 2), (DEAD, 1)),
    ((DEAD, 1), (ALIVE, 2), (ALIVE, 2)),         # a restart raises the incarnation
    ((DEAD, 1), (LEFT, 1), (DEAD, 1)),
    ((LEFT, 1), (DEAD, 1), (LEFT, 1)),           # left is never dead
    ((LEFT, 1), (SUSPECT, 5), (LEFT, 1)),
    ((LEFT, 1), (ALIVE, 1), (LEFT, 1)),
    ((LEFT, 1), (ALIVE, 2), (ALIVE, 2)),
])
def test_update_precedence(held, incoming, result):
    a = Node(peers=["c"])
    _held(a, *held)
    state, inc = incoming
    a.hear("c", updates=[entry("b", state, inc=inc, by="c")])
    assert (a.state("b"), a.inc("b")) == result


def test_alive_with_a_higher_incarnation_cancels_the_suspicion():
    a = Node(peers=["b", "c"])
    a.hear("c", updates=[entry("b", SUSPECT, by="c")])
    assert changed(a.hear("b", inc=2, now=1.0)) == [("b", SUSPECT, ALIVE)]
    assert not any(new == DEAD for _, _, new in changed(a.run(HIGH + 1, answer={"b", "c"})))


def test_a_new_suspicion_after_a_refutation_gets_a_fresh_timer():
    # Bug fixed: the refuted suspicion's timer lingered until the next Tick, and a new
    # suspicion heard before that Tick reused it, so b was dead at once at t=14.
    a = Node(peers=["b", "c"])
    a.hear("c", updates=[entry("b", SUSPECT, by="c")])          # timeout 14 s (one confirmation)
    a.hear("b", inc=2, now=13.5)                                  # refuted ...
    a.hear("d", updates=[entry("b", SUSPECT, inc=2, by="d")])    # ... and suspected again
    assert not died(a.tick(14.0), "b")
    assert not died(a.tick(27.25), "b") and a.state("b") == SUSPECT
    assert died(a.tick(27.5), "b")


def test_a_member_first_heard_of_as_suspect_times_out_too():
    # Bug fixed: a member learned as suspect (a joiner's sync table, a rumour) got no timer,
    # so we only timed it out after our own probe of it failed, a whole round later.
    a = Node(peers=["c"])
    assert changed(a.hear("c", updates=[entry("x", SUSPECT, by="c")])) == [("x", None, SUSPECT)]
    assert changed(a.tick(13.75)) == []
    assert ("x", SUSPECT, DEAD) in changed(a.tick(14.0))


def test_dead_and_left_members_are_reaped_after_reap_after():
    a = Node(peers=["b", "c"])
    a.hear("c", updates=[entry("b", DEAD)], now=1.0)
    a.tick(1.0 + LAN.reap_after)
    assert a.state("b") == DEAD
    a.tick(1.0 + LAN.reap_after + 0.25)
    assert a.state("b") is None
    a.hear("c", updates=[entry("b", DEAD)])  # news of a member gone that we never knew: ignored
    assert a.state("b") is None


# ---- SWIM §4.1 infection-style dissemination ------------------------------------------------

def test_updates_are_piggybacked_on_protocol_messages():
    a = Node(peers=["b"])
    a.hear("b", updates=[entry("c")])
    (ack,) = a.hear("b", "ping", seq=3)
    assert entry("c") in ack.entries["updates"]


@pytest.mark.parametrize("others, limit", [(1, 4), (8, 8)])
def test_an_update_is_sent_retransmit_mult_times_log_n_then_dropped(others, limit):
    # N = a, b and `others` members; limit = retransmit_mult * ceil(log10(N + 1))
    names = [f"m{i}" for i in range(others)]
    a = Node(peers=["b"])
    a.hear("b", updates=[entry(n) for n in names])
    assert limit == LAN.retransmit_mult * math.ceil(math.log10(len(a.m.members) + 1))
    carried = [entry("m0") in a.hear("b", "ping", seq=i)[0].entries["updates"]
               for i in range(limit + 2)]
    assert carried == [True] * limit + [False, False]


def test_at_most_max_piggyback_updates_per_message_fewest_sent_first():
    a = Node(peers=["b"])
    a.hear("b", updates=[entry(f"m{i}") for i in range(20)])  # 21 pending with b
    first = {u[0] for u in a.hear("b", "ping", seq=1)[0].entries["updates"]}
    second = {u[0] for u in a.hear("b", "ping", seq=2)[0].entries["updates"]}
    assert len(first) == len(second) == LAN.max_piggyback
    assert second >= set(a.m.members) - {"a"} - first  # the five left out go first next time


def test_own_entry_first_then_departures_then_alive_then_suspicions():
    a = Node(peers=["b"])
    a.hear("b", updates=[entry("c"), entry("d"), entry("e")])
    a.hear("b", updates=[entry("d", DEAD), entry("e", SUSPECT, by="b"),
                         entry("a", SUSPECT, by="b")])
    (ack,) = a.hear("c", "ping", seq=1)
    updates = ack.entries["updates"]
    assert updates[0] == entry("a", ALIVE, inc=2)
    assert [u[3] for u in updates] == [ALIVE, DEAD, ALIVE, ALIVE, SUSPECT]


def test_gossip_goes_to_fanout_random_members_every_gossip_interval():
    a = Node(peers=["b", "c", "d", "e", "f"])
    gossip = sent(a.tick(0.0), "gossip")
    assert len({g.address for g in gossip}) == len(gossip) == LAN.gossip_fanout
    assert sent(a.tick(0.125), "gossip") == []
    a.hear("b", updates=[entry("g")], now=0.2)  # tick 0 used up the first news: new news
    assert len(sent(a.tick(0.25), "gossip")) == LAN.gossip_fanout


def test_no_gossip_when_nothing_is_pending():
    a = Node(peers=["b"])
    for seq in range(4):  # b's own entry: four sends with N = 2
        a.hear("b", "ping", seq=seq)
    assert sent(a.tick(0.0), "gossip") == []


def test_every_message_is_first_hand_news_of_its_sender():
    a = Node()
    out = a.hear("z", "ping", seq=1, meta={"slots": 4})
    assert changed(out) == [("z", None, ALIVE)]
    assert a.m.members["z"].meta == {"slots": 4}
    assert [s.address for s in sent(out, "ack")] == [addr("z")]
    assert a(GossipIn("y", {"kind": "ping", "seq": 1})) == []  # no address: nowhere to answer


# ---- SWIM §4.3 round-robin probe target selection ------------------------------------------

def probe_round(a: Node, start: float, n: int) -> list[str]:
    targets = []
    for k in range(n):
        target, seq = probe(a, start + k)
        a.hear(target, "ack", seq=seq, now=start + k + 0.25)
        targets.append(target)
    return targets


PEERS = ["b", "c", "d", "e", "f"]


def test_every_member_is_probed_once_per_round():
    a = Node(peers=PEERS)
    first, second = probe_round(a, 0.0, 5), probe_round(a, 5.0, 5)
    assert sorted(first) == sorted(second) == PEERS


def test_the_round_order_is_shuffled_by_the_injected_rng():
    orders = {tuple(probe_round(Node(peers=PEERS, seed=seed), 0.0, 5)) for seed in range(6)}
    assert len(orders) > 1
    again = probe_round(Node(peers=PEERS, seed=3), 0.0, 5)
    assert again == probe_round(Node(peers=PEERS, seed=3), 0.0, 5)  # a seed replays exactly


def test_a_member_joining_mid_round_is_probed_in_the_next_round():
    # Deviation from SWIM §4.3: a newcomer is not inserted at a random position of the current
    # round; it enters the next round's shuffle (still probed within 2N - 1 periods).
    a = Node(peers=["b", "c", "d", "e"])
    started = probe_round(a, 0.0, 2)
    a.hear("b", updates=[entry("f")], now=1.5)
    rest = probe_round(a, 2.0, 2)
    assert sorted(started + rest) == ["b", "c", "d", "e"]
    assert sorted(probe_round(a, 4.0, 5)) == ["b", "c", "d", "e", "f"]


def test_dead_members_are_skipped_in_the_round():
    a = Node(peers=["b", "c", "d", "e"])
    (first,) = probe_round(a, 0.0, 1)
    gone = sorted({"b", "c", "d", "e"} - {first})[0]
    a.hear("b" if gone != "b" else "c", updates=[entry(gone, DEAD)], now=0.5)
    rest = probe_round(a, 1.0, 2)
    assert sorted([first] + rest) == sorted({"b", "c", "d", "e"} - {gone})
    assert gone not in probe_round(a, 3.0, 3)


# ---- join through a seed, push-pull sync ---------------------------------------------------

def test_a_joiner_sends_its_table_to_its_seeds():
    j = Node("j", seeds=[addr("s")])
    assert j.tick(0.0) == [SendGossip(addr("s"), {
        "kind": "sync", "meta": {}, "address": addr("j"), "inc": 1, "updates": [],
        "table": [entry("j")]})]


def test_a_joiner_retries_its_seeds_until_it_hears_from_a_peer():
    j = Node("j", seeds=[addr("s")])
    j.tick(0.0)
    assert sent(j.tick(4.75)) == []
    assert [s.address for s in sent(j.tick(5.0 * LAN.probe_interval), "sync")] == [addr("s")]


def test_own_address_is_not_a_seed():
    s = Node("s", seeds=[addr("s")])
    assert s.tick(0.0) == []


def test_the_seed_merges_the_joiner_and_replies_with_its_table():
    s = Node("s", peers=["x"])
    out = s.hear("j", "sync", table=[entry("j")])
    assert changed(out) == [("j", None, ALIVE)]
    (reply,) = sent(out)
    assert (reply.address, reply.entries["kind"]) == (addr("j"), "sync_reply")
    assert sorted(reply.entries["table"]) == sorted([entry("s"), entry("x"), entry("j")])


def test_the_joiner_learns_the_cluster_from_the_reply_then_syncs_rarely():
    j = Node("j", seeds=[addr("s")])
    j.tick(0.0)
    out = j.hear("s", "sync_reply", table=[entry("s"), entry("x"), entry("j")], now=0.1)
    assert sorted(changed(out)) == [("s", None, ALIVE), ("x", None, ALIVE)]
    assert len(sent(j.tick(5.0), "sync")) == 1  # one random peer, the seeds no more
    assert sent(j.tick(5.0 + LAN.sync_interval - 0.25), "sync") == []
    assert len(sent(j.tick(5.0 + LAN.sync_interval), "sync")) == 1


def test_push_pull_merges_the_whole_table_both_ways():
    s = Node("s", peers=["x", "y"])
    out = s.hear("x", "sync", table=[entry("y", DEAD), entry("z")])
    assert sorted(changed(out)) == [("y", ALIVE, DEAD), ("z", None, ALIVE)]
    (reply,) = sent(out, "sync_reply")
    assert entry("y", DEAD) in reply.entries["table"]


# ---- leave ---------------------------------------------------------------------------------

def test_leave_announces_left_with_a_higher_incarnation_to_every_member():
    # Bug fixed: the announcement counted against the retransmit limit (4 with N = 6), so the
    # fifth member got no `left` entry, only the raised incarnation, and took it as alive.
    a = Node(peers=PEERS)
    out = a(Leave())
    assert changed(out) == [("a", ALIVE, LEFT)] and a.m.me.incarnation == 2
    assert sorted(s.address for s in sent(out, "gossip")) == [addr(p) for p in PEERS]
    for message in sent(out):
        assert message.entries["updates"][0] == entry("a", LEFT, inc=2)


def test_a_leaving_member_stops_probing_and_does_not_refute():
    a = Node(peers=["b"])
    a(Leave())
    assert a.tick(0.0) == [] and a.tick(10.0) == []
    a.hear("b", updates=[entry("a", DEAD, inc=2)])
    assert a.m.me.state == LEFT and a.m.me.incarnation == 2


def test_a_member_that_left_is_never_dead_and_is_reaped():
    b = Node("b", peers=["a", "c"])
    assert changed(b.hear("a", inc=2, updates=[entry("a", LEFT, inc=2)])) == [("a", ALIVE, LEFT)]
    b.hear("a", "ack", inc=2, seq=99, now=0.5)  # a late message from it does not revive it
    b.hear("c", updates=[entry("a", SUSPECT, inc=2, by="c")], now=0.5)
    out = b.run(LAN.reap_after + 1.0, answer={"c"})
    assert ("a", LEFT, DEAD) not in changed(out)
    assert all(s.address != addr("a") for s in sent(out))  # never probed
    assert b.state("a") is None  # reaped


# ---- Lifeguard: local health (LHA-Probe) ---------------------------------------------------

def test_a_failed_probe_without_nacks_raises_awareness_and_stretches_the_next_probe():
    a = Node(peers=["b", "c"])
    probe(a, 0.0)
    a.tick(0.5)
    out = a.tick(1.0)
    assert a.m.awareness == 1
    (ping,) = sent(out, "ping")  # the next probe: period and timeout scaled by awareness + 1
    assert sent(a.tick(1.5), "ping_req") == []
    assert len(sent(a.tick(2.0), "ping_req")) == 1
    assert sent(a.tick(2.5), "ping") == []
    assert len(sent(a.tick(3.0), "ping")) == 1


def test_a_nack_from_a_helper_keeps_local_health():
    a = Node(peers=["b", "c"])
    target, seq = probe(a, 0.0)
    (req,) = sent(a.tick(0.5), "ping_req")
    a.hear(name_of(req.address), "nack", seq=seq, now=0.75)
    assert changed(a.tick(1.0)) == [(target, ALIVE, SUSPECT)]
    assert a.m.awareness == 0  # someone answered: the target is the problem, not us


def test_a_nack_for_another_probe_does_not_count():
    a = Node(peers=["b", "c"])
    _, seq = probe(a, 0.0)
    (req,) = sent(a.tick(0.5), "ping_req")
    a.hear(name_of(req.address), "nack", seq=seq + 100, now=0.75)
    a.tick(1.0)
    assert a.m.awareness == 1


def test_a_failed_probe_with_nobody_to_ask_keeps_local_health():
    # Deviation from memberlist, which adds 1 when no peer could send a nack; here only a probe
    # whose helpers were all silent counts against us.
    a = Node(peers=["b"])
    probe(a, 0.0)
    assert sent(a.tick(0.5), "ping_req") == []
    assert changed(a.tick(1.0)) == [("b", ALIVE, SUSPECT)] and a.m.awareness == 0


def test_a_helper_sends_a_nack_when_the_target_stays_silent():
    c = Node("c", peers=["a", "b"])
    (ping,) = c.hear("a", "ping_req", seq=7, target="b", target_address=addr("b"), now=0.5)
    assert sent(c.tick(0.75), "nack") == []
    (nack,) = sent(c.tick(0.5 + LAN.probe_timeout), "nack")
    assert (nack.address, nack.entries["seq"]) == (addr("a"), 7)
    assert sent(c.hear("b", "ack", seq=ping.entries["seq"], now=1.25), "ack") == []
    # Observation: the relay waits probe_timeout from receipt, as memberlist does, so its nack
    # reaches the asker at about the asker's own deadline; the loop's turn order decides.


def test_the_relay_timeout_is_scaled_by_the_helpers_own_awareness():
    c = Node("c", peers=["a", "b"])
    c.hear("a", updates=[entry("c", SUSPECT, by="a")])  # refuting raises awareness to 1
    assert c.m.awareness == 1
    c.hear("a", "ping_req", seq=7, target="b", target_address=addr("b"), now=0.0)
    assert sent(c.tick(0.75), "nack") == []
    assert len(sent(c.tick(1.0), "nack")) == 1


def test_a_successful_probe_lowers_awareness_down_to_zero():
    a = Node(peers=["b"])
    for _ in range(2):
        a.hear("b", updates=[entry("a", SUSPECT, inc=a.m.me.incarnation, by="b")])
    assert a.m.awareness == 2
    target, seq = probe(a, 0.0)
    a.hear(target, "ack", seq=seq, now=0.25)
    assert a.m.awareness == 1
    a.hear(target, "ack", seq=seq, now=0.25)  # a duplicate ack counts once
    assert a.m.awareness == 1


def test_awareness_is_capped_at_awareness_max():
    a = Node(peers=["b"])
    for _ in range(LAN.awareness_max + 3):
        a.hear("b", updates=[entry("a", SUSPECT, inc=a.m.me.incarnation, by="b")])
    assert a.m.awareness == LAN.awareness_max


# ---- Lifeguard: dynamic suspicion timeout (LHA-Suspicion) ----------------------------------

@pytest.mark.parametrize("originators, timeout", [
    (["c"], HIGH - (HIGH - LOW) * math.log(2) / math.log(4)),        # 14.0
    (["c", "d"], HIGH - (HIGH - LOW) * math.log(3) / math.log(4)),   # 8.15
    (["c", "d", "e"], LOW),                                          # K = indirect_k = 3
    (["c", "d", "e", "f", "g"], LOW),                                # never below min
])
def test_independent_confirmations_shrink_the_suspicion_timeout(originators, timeout):
    # Deviation from memberlist: K (confirmations expected) is indirect_k, not clamped to N - 2,
    # so in a 3-member cluster (one possible confirmer) the timer never shrinks to the minimum.
    a = Node(peers=["b", "c"])
    for by in originators:
        a.hear("c", updates=[entry("b", SUSPECT, by=by)])
    assert changed(a.tick(timeout - 0.01)) == []
    assert ("b", SUSPECT, DEAD) in changed(a.tick(timeout + 0.01))


def test_the_suspicion_timeout_grows_with_log_n():
    a = Node(peers=["b", "c"])
    a.hear("c", updates=[entry(f"m{i}") for i in range(96)])  # N = 99: min = 4 * log10(100)
    a.hear("c", updates=[entry("b", SUSPECT, by="c")])
    low, high = 8.0, 48.0
    timeout = high - (high - low) * 0.5
    assert changed(a.tick(timeout - 0.01)) == []
    assert ("b", SUSPECT, DEAD) in changed(a.tick(timeout + 0.01))


def test_the_loopback_preset_times_out_in_seconds():
    # loopback: min = 5 * 0.2 s = 1 s, max = 4 s; one confirmation: 2.5 s
    a = Node(peers=["b", "c"], config=mb.Config.loopback())
    a.hear("c", updates=[entry("b", SUSPECT, by="c")])
    assert changed(a.tick(2.49)) == []
    assert ("b", SUSPECT, DEAD) in changed(a.tick(2.51))


def test_confirmations_count_originators_not_relayers():
    a = Node(peers=["b", "c", "d"])
    a.hear("c", updates=[entry("b", SUSPECT, by="x")])
    a.hear("d", updates=[entry("b", SUSPECT, by="x")])  # the same suspicion, relayed again
    assert changed(a.tick(13.9)) == []
    assert ("b", SUSPECT, DEAD) in changed(a.tick(14.1))


def test_an_entry_without_an_originator_counts_its_sender():
    a = Node(peers=["b", "c", "d"])
    a.hear("c", updates=[entry("b", SUSPECT)])
    a.hear("d", updates=[entry("b", SUSPECT)])
    assert not died(a.tick(8.1), "b")
    assert died(a.tick(8.2), "b")  # two confirmations: 8.15 s


def test_our_own_confirmation_is_gossiped_but_does_not_shorten_our_timer():
    a = Node(peers=["b", "c"])
    a.hear("c", updates=[entry("b", SUSPECT, by="c")])  # 14 s
    out = a.run(13.75, answer={"c"})
    assert any(entry("b", SUSPECT, by="a") in s.entries["updates"] for s in sent(out)
               if s.address != addr("b"))  # our probe of b failed: others may count us
    assert a.state("b") == SUSPECT
    assert ("b", SUSPECT, DEAD) in changed(a.run(14.0, answer={"c"}))


# ---- Lifeguard: buddy system ---------------------------------------------------------------

def test_a_message_to_a_suspect_tells_it_so_and_it_refutes():
    a = Node(peers=["b", "c"])
    a.hear("c", updates=[entry("b", SUSPECT, by="c")])
    (ack,) = a.hear("b", "ping", seq=1)  # b does not know yet: same incarnation
    assert ack.address == addr("b")
    assert ack.entries["updates"][0] == entry("b", SUSPECT, by="a")
    b = Node("b", peers=["a", "c"])
    b(GossipIn("a", ack.entries))
    assert b.m.me.incarnation == 2
    (reply,) = b.hear("a", "ping", seq=2)
    assert changed(a(GossipIn("b", reply.entries))) == [("b", SUSPECT, ALIVE)]
    assert a.inc("b") == 2


# ---- metadata ------------------------------------------------------------------------------

def test_set_meta_merges_into_our_meta_and_rides_on_every_message():
    a = Node(peers=["b"], meta={"slots": 2})
    assert a(SetMeta({"load": 0.5})) == []
    assert a.m.me.meta == {"slots": 2, "load": 0.5} and a.m.me.incarnation == 1
    (ack,) = a.hear("b", "ping", seq=1)
    assert ack.entries["meta"] == {"slots": 2, "load": 0.5}


def test_the_constructor_copies_the_meta_it_is_given():
    meta = {"slots": 1}
    a = Node(meta=meta)
    meta["slots"] = 9
    assert a.m.me.meta == {"slots": 1}


def test_a_senders_meta_is_taken_first_hand_at_any_incarnation_unless_it_is_gone():
    a = Node(peers=["b", "c"])
    a.hear("b", meta={"slots": 3})
    assert a.m.members["b"].meta == {"slots": 3}
    a.hear("c", updates=[entry("b", SUSPECT, by="c")])
    a.hear("b", meta={"slots": 4})
    assert a.m.members["b"].meta == {"slots": 4}
    a.hear("c", updates=[entry("b", DEAD)])
    a.hear("b", meta={"slots": 5})
    assert a.m.members["b"].meta == {"slots": 4}


def test_relayed_meta_counts_only_with_a_higher_incarnation():
    a = Node(peers=["c"])
    a.hear("c", updates=[entry("b", meta={"slots": 1})])
    a.hear("c", updates=[entry("b", meta={"slots": 2})])           # same incarnation
    assert a.m.members["b"].meta == {"slots": 1}
    a.hear("c", updates=[entry("b", inc=2, meta={"slots": 3})])
    assert a.m.members["b"].meta == {"slots": 3}
    a.hear("c", updates=[entry("b", inc=3)])                        # empty meta keeps the old
    assert a.m.members["b"].meta == {"slots": 3} and a.inc("b") == 3


# ---- malformed input -----------------------------------------------------------------------

BAD_BODIES = [
    "not a map", None, [1, 2],
    {"kind": ["ping"], "seq": 1},
    {"kind": {"ping": 1}},
    {"kind": "gossip", "updates": 5},
    {"kind": "gossip", "updates": True},
    {"kind": "gossip", "updates": [5, "abc", None, {}, ["b", "tcp://b"],
                                   ["b", "tcp://b", "2", DEAD, {}, ""],
                                   ["b", "tcp://b", 2, "zombie", {}, ""],
                                   ["b", "tcp://b", 2, DEAD, [], ""],
                                   ["b", 7, 2, DEAD, {}, ""],
                                   ["b", "tcp://b", 2, DEAD, {}, None],
                                   [["b"], "tcp://b", 2, DEAD, {}, ""]]},
    {"kind": "gossip", "address": 5, "inc": "1", "meta": "x"},
    {"kind": "ping"},
    {"kind": "ack", "seq": [1]},
    {"kind": "nack"},
    {"kind": "ping_req", "seq": 1, "target": "x"},
    {"kind": "ping_req", "seq": 1, "target": "x", "target_address": 5},
    {"kind": "ping_req", "seq": 1, "target": "x", "target_address": ["tcp://x"]},
    {"kind": "sync", "table": 5},
    {"kind": "sync_reply", "table": [[1, 2, 3], "x"]},
    {"kind": "who knows"},
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_malformed_gossip_from_a_peer_is_dropped(body):
    # Bug fixed: an unhashable "kind" or a non-list "updates" raised out of step(), and a
    # ping_req whose target_address was not a string produced a send to it (and a later nack).
    a = Node(peers=["b"])
    before = {n: (m.state, m.incarnation, m.address, dict(m.meta))
              for n, m in a.m.members.items()}
    out = a(GossipIn("b", body))
    assert changed(out) == [] and sent(out) == []
    assert {n: (m.state, m.incarnation, m.address, m.meta)
            for n, m in a.m.members.items()} == before
    assert sent(a.tick(5.0), "nack") == []


def test_an_unknown_event_is_our_bug_and_raises():
    with pytest.raises(TypeError, match="no handler"):
        Node()(object())


def test_a_malformed_message_is_a_dropped_fact_naming_its_sender():
    member = mb.Membership("a", "127.0.0.1:1", 1, rng=random.Random(1))
    out = member.step(0.0, mb.GossipIn("z", {"kind": "ping", "address": "127.0.0.1:9"}))
    assert [type(a) for a in out if isinstance(a, mb.Dropped)] == [mb.Dropped]
    (dropped,) = [a for a in out if isinstance(a, mb.Dropped)]
    assert dropped.sender == "z" and dropped.kind == "ping" and "seq" in dropped.why
    out = member.step(0.1, mb.GossipIn("z", {"kind": "bogus"}))
    assert [a for a in out if isinstance(a, mb.Dropped)] == [mb.Dropped("z", "bogus",
                                                                         "unknown message kind")]


def test_a_member_left_alone_keeps_asking_its_seeds_and_the_members_it_knew():
    a = mb.Membership("a", "127.0.0.1:1", 1, seeds=("127.0.0.1:9",), rng=random.Random(1),
                      config=mb.Config.lan())
    a.step(0.0, mb.GossipIn("b", {"kind": "gossip", "address": "127.0.0.1:2", "inc": 1,
                                  "updates": []}))
    assert a.heard_from_peer and [x.name for x in a.peers()] == ["b"]
    a.step(0.1, mb.GossipIn("b", {"kind": "gossip", "address": "127.0.0.1:2", "inc": 2,
                                  "updates": [["b", "127.0.0.1:2", 2, "left", {}, ""]]}))
    assert a.peers() == []
    syncs = set()
    for i in range(1, 40):
        syncs |= {x.address for x in a.step(0.1 + i * 0.5, mb.Tick())
                  if isinstance(x, SendGossip) and x.entries.get("kind") == "sync"}
    assert syncs == {"127.0.0.1:9", "127.0.0.1:2"}


def test_a_member_held_dead_is_still_synced_with_now_and_then():
    """After a partition heals, a member we hold dead hears of it and refutes."""
    a = mb.Membership("a", "127.0.0.1:1", 1, rng=random.Random(3), config=mb.Config.lan())
    for t, state in ((0.0, "alive"), (0.1, "dead")):
        a.step(t, mb.GossipIn("b", {"kind": "gossip", "address": "127.0.0.1:2", "inc": 1,
                                    "updates": [["c", "127.0.0.1:3", 1, state, {}, ""]]}))
    assert a.members["c"].state == DEAD and [x.name for x in a.peers()] == ["b"]
    syncs = set()
    for i in range(1, 130):  # b stays alive (it is heard from at a new incarnation each time)
        a.step(i * 0.5, mb.GossipIn("b", {"kind": "gossip", "address": "127.0.0.1:2",
                                          "inc": i + 1, "updates": []}))
        syncs |= {x.address for x in a.step(i * 0.5, mb.Tick())
                  if isinstance(x, SendGossip) and x.entries.get("kind") == "sync"}
        assert [x.name for x in a.peers()] == ["b"]
    assert "127.0.0.1:3" in syncs

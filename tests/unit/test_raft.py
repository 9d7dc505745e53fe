"""The Raft core (mesh/raft.py): scripted events in, exact actions out, by the paper's sections.

Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm" (2014): 5.1 terms,
5.2 election, 5.3 log replication, 5.4.1 election restriction, 5.4.2 committing entries of
earlier terms, 6 membership, 7 log compaction; Raft thesis 9.6 pre-vote; and the leader lease.
Every step also runs ``check_invariants``. Node ``a`` is the one under test; ``b`` and ``c``
are its peers, played by the test.
"""
from __future__ import annotations

import random

import pytest

from mesh.raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    Apply,
    Dropped,
    Compact,
    Config,
    Message,
    Persist,
    Propose,
    Raft,
    Restore,
    RoleChanged,
    Send,
    Snapshot,
    State,
    Tick,
)

ABC = ("a", "b", "c")
VOTERS = {"type": "voters", "voters": list(ABC)}
NOOP = {"type": "noop"}


def job(n) -> dict:
    return {"type": "job", "n": n}


def node(name: str = "a", log: list | None = None, term: int = 0, voted_for: str | None = None,
         snapshot: Snapshot | None = None, founder: bool = False, voters: bool = True) -> Raft:
    """A node whose log opens with the voters entry a, b, c (unless ``voters`` is false)."""
    entries = ([(0, VOTERS)] if voters and snapshot is None else []) + list(log or [])
    return Raft(name, State(term, voted_for, entries, snapshot), random.Random(7), Config(),
                founder)


def step(r: Raft, now: float, event) -> list:
    actions = r.step(now, event)
    r.check_invariants()
    return actions


def msg(kind: str, sender: str, **body) -> Message:
    return Message(kind, sender, body)


def sends(actions: list, kind: str | None = None) -> list:
    return [a for a in actions if isinstance(a, Send) and kind in (None, a.kind)]


def elect(r: Raft, now: float = 5.0) -> list:
    """Take ``r`` through pre-vote and vote with ``b``'s help; the actions of the winning step."""
    step(r, 0.0, Tick())
    step(r, now, Tick())
    step(r, now, msg("pre_vote_reply", "b", term=r.term + 1, granted=True))
    return step(r, now, msg("vote_reply", "b", term=r.term, granted=True))


def follower_of(leader: str = "b", term: int = 1, log: list | None = None, **kw) -> Raft:
    """Node ``a`` following ``leader`` in ``term`` (it has heard one empty append)."""
    r = node(log=log, term=term, **kw)
    step(r, 0.0, msg("append", leader, term=term, prev_index=0, prev_term=0, entries=[],
                     commit=0))
    return r


class TestTerms_5_1:
    def test_a_higher_term_in_a_reply_makes_the_leader_a_follower(self):
        r = node()
        elect(r)
        actions = step(r, 5.1, msg("append_reply", "c", term=3, success=False, match=0))
        assert actions == [Persist(3, None, None, ()), RoleChanged(FOLLOWER, 3, None)]
        assert (r.role, r.term, r.leader) == (FOLLOWER, 3, None)

    def test_an_append_of_an_older_term_is_refused_with_our_term(self):
        r = node(term=3)
        actions = step(r, 0.0, msg("append", "b", term=2, prev_index=0, prev_term=0,
                                   entries=[[2, job(1)]], commit=0))
        assert actions == [Send("b", "append_reply", {"term": 3, "success": False, "match": 0})]
        assert r.last_index() == 1 and r.leader is None
        assert not r.accepts(2) and r.accepts(3)

    def test_a_vote_request_of_an_older_term_is_refused(self):
        r = node(term=3)
        actions = step(r, 0.0, msg("vote", "b", term=2, last_index=9, last_term=2))
        assert actions == [Send("b", "vote_reply", {"term": 3, "granted": False})]

    def test_a_malformed_term_is_ignored(self):
        r = node(term=1)
        assert step(r, 0.0, msg("append", "b", term="9", prev_index=0)) == [
            Dropped("b", "append", "term is not an integer")]
        assert r.term == 1


class TestElection_5_2:
    def test_a_follower_that_hears_nothing_pre_votes_once_its_timeout_passes(self):
        r = node()
        assert step(r, 0.0, Tick()) == []
        assert step(r, 0.9, Tick()) == []  # below election_min_s
        actions = step(r, 2.1, Tick())   # past election_max_s
        body = {"term": 1, "last_index": 1, "last_term": 0}
        assert actions == [Send("b", "pre_vote", body), Send("c", "pre_vote", body)]
        assert r.term == 0 and r.role == FOLLOWER

    def test_a_majority_of_pre_votes_starts_an_election_in_the_next_term(self):
        r = node()
        step(r, 0.0, Tick())
        step(r, 2.1, Tick())
        actions = step(r, 2.2, msg("pre_vote_reply", "b", term=1, granted=True))
        body = {"term": 1, "last_index": 1, "last_term": 0}
        assert actions == [Persist(1, "a", None, ()), RoleChanged(CANDIDATE, 1, None),
                           Send("b", "vote", body), Send("c", "vote", body)]

    def test_votes_from_a_majority_make_a_leader_that_appends_a_noop(self):
        r = node()
        actions = elect(r)
        append = {"term": 1, "prev_index": 1, "prev_term": 0, "entries": [[1, NOOP]], "commit": 0}
        assert actions == [RoleChanged(LEADER, 1, "a"), Persist(1, "a", None, ((1, NOOP),)),
                           Send("b", "append", append), Send("c", "append", append)]
        assert r.is_leader and r.leader == "a"

    def test_a_refused_or_old_vote_does_not_count(self):
        r = node(term=4)
        step(r, 0.0, Tick())
        step(r, 2.1, Tick())
        step(r, 2.1, msg("pre_vote_reply", "b", term=5, granted=True))
        assert r.role == CANDIDATE and r.term == 5
        assert step(r, 2.2, msg("vote_reply", "b", term=5, granted=False)) == []
        assert step(r, 2.2, msg("vote_reply", "c", term=4, granted=True)) == []
        assert r.role == CANDIDATE

    def test_one_vote_per_term_first_come(self):
        r = node()
        actions = step(r, 0.0, msg("vote", "b", term=1, last_index=1, last_term=0))
        assert actions == [Persist(1, None, None, ()), RoleChanged(FOLLOWER, 1, None),
                           Persist(1, "b", None, ()),
                           Send("b", "vote_reply", {"term": 1, "granted": True})]
        actions = step(r, 0.1, msg("vote", "c", term=1, last_index=1, last_term=0))
        assert actions == [Send("c", "vote_reply", {"term": 1, "granted": False})]
        actions = step(r, 0.2, msg("vote", "b", term=1, last_index=1, last_term=0))
        assert actions == [Persist(1, "b", None, ()),
                           Send("b", "vote_reply", {"term": 1, "granted": True})]

    def test_a_restarted_node_remembers_its_vote(self):
        r = node(term=1, voted_for="b")
        actions = step(r, 0.0, msg("vote", "c", term=1, last_index=1, last_term=0))
        assert actions == [Send("c", "vote_reply", {"term": 1, "granted": False})]

    def test_stickiness_a_follower_with_a_live_leader_ignores_vote_requests(self):
        r = follower_of("b", term=1)
        assert step(r, 0.5, msg("vote", "c", term=2, last_index=1, last_term=0)) == []
        assert r.term == 1 and r.leader == "b"
        actions = step(r, 0.5, msg("pre_vote", "c", term=2, last_index=1, last_term=0))
        assert actions == [Send("c", "pre_vote_reply", {"term": 2, "granted": False})]

    def test_once_the_leader_is_silent_a_vote_request_is_heard_again(self):
        r = follower_of("b", term=1)
        actions = step(r, 1.5, msg("vote", "c", term=2, last_index=1, last_term=0))
        assert actions[-1] == Send("c", "vote_reply", {"term": 2, "granted": True})
        assert r.voted_for == "c"

    def test_the_only_voter_elects_itself_and_commits_at_once(self):
        r = Raft("a", State(), random.Random(7), Config(), founder=True)
        assert r.voters == ("a",)
        actions = step(r, 0.0, Tick())
        assert actions == [Persist(1, "a", None, ()), RoleChanged(CANDIDATE, 1, None),
                           RoleChanged(LEADER, 1, "a"), Persist(1, "a", None, ((1, NOOP),)),
                           Apply(1, NOOP)]


class TestLogReplication_5_3:
    def test_a_follower_stores_entries_acknowledges_and_applies_what_is_committed(self):
        r = follower_of("b", term=1)
        actions = step(r, 0.1, msg("append", "b", term=1, prev_index=1, prev_term=0,
                                   entries=[[1, job(1)], [1, job(2)]], commit=2))
        assert actions == [Persist(1, None, None, ((1, job(1)), (1, job(2)))),
                           Send("b", "append_reply", {"term": 1, "success": True, "match": 3}),
                           Apply(1, VOTERS), Apply(2, job(1))]
        assert (r.commit, r.applied) == (2, 2)

    def test_an_append_without_our_previous_entry_is_refused_with_our_last_index(self):
        r = follower_of("b", term=1)
        actions = step(r, 0.1, msg("append", "b", term=1, prev_index=5, prev_term=1,
                                   entries=[[1, job(6)]], commit=0))
        assert actions == [Send("b", "append_reply", {"term": 1, "success": False, "match": 1})]

    def test_an_append_whose_previous_term_differs_is_refused(self):
        r = follower_of("b", term=2, log=[(1, job(1))])
        actions = step(r, 0.1, msg("append", "b", term=2, prev_index=2, prev_term=2,
                                   entries=[], commit=0))
        assert actions == [Send("b", "append_reply", {"term": 2, "success": False, "match": 1})]

    def test_a_conflicting_suffix_is_truncated_and_replaced(self):
        r = follower_of("b", term=2, log=[(1, job(1)), (1, job(2)), (1, job(3))])
        actions = step(r, 0.1, msg("append", "b", term=2, prev_index=1, prev_term=0,
                                   entries=[[1, job(1)], [2, job("x")]], commit=0))
        assert actions == [Persist(2, None, 3, ((2, job("x")),)),
                           Send("b", "append_reply", {"term": 2, "success": True, "match": 3})]
        assert r.log == [(0, VOTERS), (1, job(1)), (2, job("x"))]

    def test_a_delayed_shorter_append_keeps_later_entries_and_the_commit_index(self):
        r = follower_of("b", term=1)
        step(r, 0.1, msg("append", "b", term=1, prev_index=1, prev_term=0,
                         entries=[[1, job(1)], [1, job(2)]], commit=3))
        actions = step(r, 0.2, msg("append", "b", term=1, prev_index=1, prev_term=0,
                                   entries=[[1, job(1)]], commit=3))
        assert actions == [Send("b", "append_reply", {"term": 1, "success": True, "match": 2})]
        assert (r.last_index(), r.commit) == (3, 3)

    def test_the_leader_backs_off_next_index_until_the_logs_match(self):
        r = node(log=[(1, job(1))], term=1)
        elect(r)  # term 2, noop at 3; next index of b and c: 3
        actions = step(r, 5.01, msg("append_reply", "b", term=2, success=False, match=0))
        assert actions == [Send("b", "append", {
            "term": 2, "prev_index": 0, "prev_term": 0, "commit": 0,
            "entries": [[0, VOTERS], [1, job(1)], [2, NOOP]]})]

    def test_an_acknowledgement_from_a_majority_commits_and_the_next_heartbeat_says_so(self):
        r = node()
        elect(r)
        actions = step(r, 5.01, msg("append_reply", "b", term=1, success=True, match=2))
        assert actions == [Apply(1, VOTERS), Apply(2, NOOP)]
        assert step(r, 5.05, Tick()) == []  # heartbeat not due yet
        actions = step(r, 5.11, Tick())
        assert sends(actions) == [
            Send("b", "append", {"term": 1, "prev_index": 2, "prev_term": 1, "entries": [],
                                 "commit": 2}),
            Send("c", "append", {"term": 1, "prev_index": 1, "prev_term": 0,
                                 "entries": [[1, NOOP]], "commit": 2})]

    def test_proposals_only_go_to_the_leader(self):
        r = node()
        assert step(r, 0.0, Propose((job(1),))) == []
        elect(r)
        actions = step(r, 5.01, Propose((job(1),)))
        body = {"term": 1, "prev_index": 1, "prev_term": 0, "entries": [[1, NOOP], [1, job(1)]],
                "commit": 0}
        assert actions == [Persist(1, "a", None, ((1, job(1)),)), Send("b", "append", body),
                           Send("c", "append", body)]

    def test_big_job_packs_travel_a_few_per_message(self):
        r = Raft("a", State(0, None, [(0, VOTERS)]), random.Random(7),
                 Config(max_batch_bytes=3000))
        elect(r)
        pack = {"type": "submit", "jobpack": b"x" * 1000}
        step(r, 5.01, Propose((pack, pack, pack, pack)))
        actions = step(r, 5.02, msg("append_reply", "b", term=1, success=False, match=1))
        assert [len(s.body["entries"]) for s in sends(actions)] == [3]  # noop + 2 packs


class TestElectionRestriction_5_4_1:
    @pytest.mark.parametrize("last_index, last_term, granted", [
        (2, 1, True),    # same log
        (5, 1, True),    # longer, same last term
        (1, 0, False),   # shorter
        (9, 0, False),   # longer but older last term
        (1, 2, True),    # shorter but newer last term
    ])
    def test_votes_go_only_to_candidates_at_least_as_up_to_date(self, last_index, last_term,
                                                                  granted):
        r = node(log=[(1, job(1))], term=2)
        actions = step(r, 0.0, msg("vote", "b", term=3, last_index=last_index,
                                   last_term=last_term))
        assert actions[-1] == Send("b", "vote_reply", {"term": 3, "granted": granted})
        actions = step(r, 0.0, msg("pre_vote", "c", term=4, last_index=last_index,
                                   last_term=last_term))
        assert actions == [Send("c", "pre_vote_reply", {"term": 4, "granted": granted})]


class TestCommitCurrentTerm_5_4_2:
    def test_entries_of_an_earlier_term_commit_only_with_one_of_the_current_term(self):
        r = node(log=[(1, job(1))], term=1)
        elect(r)  # term 2: noop at index 3
        actions = step(r, 5.01, msg("append_reply", "b", term=2, success=True, match=2))
        assert actions == [Send("b", "append", {"term": 2, "prev_index": 2, "prev_term": 1,
                                                "entries": [[2, NOOP]], "commit": 0})]
        assert r.commit == 0  # index 2 is on a majority, but of term 1
        actions = step(r, 5.02, msg("append_reply", "b", term=2, success=True, match=3))
        assert actions == [Apply(1, VOTERS), Apply(2, job(1)), Apply(3, NOOP)]

    def test_a_reply_of_another_term_does_not_count(self):
        r = node(term=1)
        elect(r)
        assert step(r, 5.01, msg("append_reply", "b", term=1, success=True, match=2)) == []
        assert r.commit == 0


class TestMembership_6:
    def test_a_node_that_is_not_a_voter_never_stands(self):
        r = node("d")
        assert step(r, 0.0, Tick()) == []
        assert step(r, 10.0, Tick()) == []
        assert r.term == 0

    def test_requests_from_non_voters_are_refused(self):
        r = node()
        actions = step(r, 0.0, msg("pre_vote", "d", term=1, last_index=1, last_term=0))
        assert actions == [Send("d", "pre_vote_reply", {"term": 1, "granted": False})]
        actions = step(r, 0.0, msg("vote", "d", term=1, last_index=1, last_term=0))
        assert actions[-1] == Send("d", "vote_reply", {"term": 1, "granted": False})

    def test_learners_get_appends_but_their_acks_do_not_commit(self):
        r = node()
        elect(r)
        r.learners = {"d"}
        actions = step(r, 5.11, Tick())
        assert [s.to for s in sends(actions, "append")] == ["b", "c", "d"]
        assert step(r, 5.12, msg("append_reply", "d", term=1, success=True, match=2)) == []
        assert r.commit == 0

    def test_a_voters_entry_takes_effect_when_appended_and_one_is_pending_until_committed(self):
        r = node()
        elect(r)
        assert r.config_pending() and r.config_journaled()  # the voters entry at 1: not committed
        step(r, 5.005, msg("append_reply", "b", term=1, success=True, match=2))
        assert not r.config_pending()
        step(r, 5.01, Propose(({"type": "voters", "voters": ["a", "b", "c", "d"]},)))
        assert r.voters == ("a", "b", "c", "d") and r.config_pending()
        step(r, 5.02, msg("append_reply", "b", term=1, success=True, match=3))
        assert r.commit == 2  # now three of four are needed
        step(r, 5.03, msg("append_reply", "c", term=1, success=True, match=3))
        assert r.commit == 3 and not r.config_pending()

    def test_a_follower_that_drops_a_voters_entry_falls_back_to_the_previous_one(self):
        grown = {"type": "voters", "voters": ["a", "b", "c", "d"]}
        r = follower_of("b", term=2, log=[(1, grown)])
        assert r.voters == ("a", "b", "c", "d")
        step(r, 0.1, msg("append", "b", term=2, prev_index=1, prev_term=0,
                         entries=[[2, job(1)]], commit=0))
        assert r.voters == ABC

    def test_without_a_journaled_list_a_joiner_has_no_voters_and_a_founder_only_itself(self):
        joiner = Raft("a", State(), random.Random(7))
        assert joiner.voters == () and not joiner.config_journaled()
        founder = Raft("a", State(), random.Random(7), founder=True)
        assert founder.voters == ("a",) and not founder.config_journaled()


def leader_with_snapshot() -> Raft:
    """Leader ``a`` of term 1 that committed entries 1..4 with ``b`` and compacted 1..3."""
    r = node()
    elect(r)  # noop at 2
    step(r, 5.01, Propose((job(3), job(4))))
    step(r, 5.02, msg("append_reply", "b", term=1, success=True, match=4))
    assert step(r, 5.03, Compact(3, b"image-3")) == [
        Persist(1, "a", None, (), Snapshot(3, 1, ABC, b"image-3"))]
    return r


SNAP = {"term": 1, "index": 3, "last_term": 1, "voters": list(ABC), "data": b"image-3"}


class TestCompaction_7:
    def test_compact_drops_the_covered_entries_and_asks_for_a_durable_snapshot(self):
        r = leader_with_snapshot()
        assert r.snapshot == Snapshot(3, 1, ABC, b"image-3")
        assert r.log == [(1, job(4))] and r.entries_since_snapshot() == 1
        assert (r.snapshot_index, r.last_index(), r.commit, r.applied) == (3, 4, 4, 4)
        assert r.config_journaled() and not r.config_pending()

    def test_compact_beyond_applied_is_refused_and_an_old_one_is_a_no_op(self):
        r = leader_with_snapshot()
        with pytest.raises(ValueError, match="beyond applied"):
            r.step(5.04, Compact(5, b"x"))
        assert step(r, 5.04, Compact(2, b"x")) == []
        with pytest.raises(ValueError):
            Compact(0, b"x")
        with pytest.raises(ValueError):
            Compact(1, "not bytes")

    def test_a_follower_behind_the_snapshot_is_sent_it_once_until_acknowledged(self):
        r = leader_with_snapshot()
        actions = step(r, 5.04, msg("append_reply", "c", term=1, success=False, match=0))
        assert actions == [Send("c", "install_snapshot", SNAP)]
        heartbeat = step(r, 5.2, Tick())
        assert [s.to for s in sends(heartbeat)] == ["b"]  # c: the snapshot is on its way
        assert step(r, 5.3, msg("append_reply", "c", term=1, success=False, match=0)) == []
        later = step(r, 5.04 + Config().snapshot_retry_s + 0.01, Tick())
        assert Send("c", "install_snapshot", SNAP) in later  # lost? sent again
        actions = step(r, 6.1, msg("append_reply", "c", term=1, success=True, match=3))
        assert actions == [Send("c", "append", {"term": 1, "prev_index": 3, "prev_term": 1,
                                                "entries": [[1, job(4)]], "commit": 4})]

    def test_a_follower_installs_a_newer_snapshot_restores_and_applies_what_follows(self):
        r = follower_of("b", term=1)
        actions = step(r, 0.1, msg("install_snapshot", "b", **SNAP))
        snap = Snapshot(3, 1, ABC, b"image-3")
        assert actions == [Persist(1, None, None, (), snap), Restore(snap),
                           Send("b", "append_reply", {"term": 1, "success": True, "match": 3})]
        assert (r.snapshot, r.log, r.commit, r.applied) == (snap, [], 3, 3)
        actions = step(r, 0.2, msg("append", "b", term=1, prev_index=3, prev_term=1,
                                   entries=[[1, job(4)]], commit=4))
        assert actions == [Persist(1, None, None, ((1, job(4)),)),
                           Send("b", "append_reply", {"term": 1, "success": True, "match": 4}),
                           Apply(4, job(4))]

    def test_a_follower_keeps_the_log_after_the_snapshot_when_it_holds_its_last_entry(self):
        r = follower_of("b", term=1, log=[(1, NOOP), (1, job(3)), (1, job(4))])
        actions = step(r, 0.1, msg("install_snapshot", "b", **SNAP))
        assert actions[0] == Persist(1, None, None, (), Snapshot(3, 1, ABC, b"image-3"))
        assert r.log == [(1, job(4))] and r.last_index() == 4

    def test_a_follower_drops_a_log_that_conflicts_with_the_snapshot(self):
        r = follower_of("b", term=1, log=[(0, NOOP), (0, job(3)), (0, job(4))])
        actions = step(r, 0.1, msg("install_snapshot", "b", **SNAP))
        assert actions[0] == Persist(1, None, 4, (), Snapshot(3, 1, ABC, b"image-3"))
        assert r.log == [] and r.last_index() == 3

    def test_a_stale_snapshot_is_acknowledged_without_effect(self):
        r = follower_of("b", term=1)
        step(r, 0.1, msg("append", "b", term=1, prev_index=1, prev_term=0,
                         entries=[[1, NOOP], [1, job(3)], [1, job(4)]], commit=4))
        actions = step(r, 0.2, msg("install_snapshot", "b", **SNAP))
        assert actions == [Send("b", "append_reply", {"term": 1, "success": True, "match": 4})]
        assert r.snapshot is None and r.last_index() == 4

    def test_a_snapshot_of_an_older_term_or_malformed_is_refused(self):
        r = follower_of("b", term=2)
        actions = step(r, 0.1, msg("install_snapshot", "c", **SNAP))
        assert actions == [Send("c", "append_reply", {"term": 2, "success": False, "match": 0})]
        bad = dict(SNAP, term=2, data="not bytes")
        assert step(r, 0.2, msg("install_snapshot", "b", **bad)) == [
            Dropped("b", "install_snapshot", "ValueError: bad snapshot (index 3, term 1)")]
        assert r.snapshot is None

    def test_an_append_reaching_into_the_snapshot_is_trimmed_to_what_follows_it(self):
        r = follower_of("b", term=1)
        step(r, 0.1, msg("install_snapshot", "b", **SNAP))
        actions = step(r, 0.2, msg("append", "b", term=1, prev_index=1, prev_term=0,
                                   entries=[[1, NOOP], [1, job(3)], [1, job(4)]], commit=4))
        assert actions == [Persist(1, None, None, ((1, job(4)),)),
                           Send("b", "append_reply", {"term": 1, "success": True, "match": 4}),
                           Apply(4, job(4))]

    def test_a_restart_from_a_snapshot_and_log_suffix(self):
        snap = Snapshot(3, 1, ABC, b"image-3")
        r = node(term=2, snapshot=snap, log=[(2, job(4))])
        assert (r.commit, r.applied, r.last_index(), r.voters) == (3, 3, 4, ABC)
        step(r, 0.0, Tick())
        actions = step(r, 2.1, Tick())
        assert sends(actions)[0] == Send("b", "pre_vote", {"term": 3, "last_index": 4,
                                                           "last_term": 2})
        actions = step(r, 2.2, msg("append", "b", term=2, prev_index=4, prev_term=2,
                                   entries=[], commit=4))
        assert actions[-1] == Apply(4, job(4))

    def test_a_voters_entry_after_the_snapshot_wins_over_the_snapshots_list(self):
        snap = Snapshot(3, 1, ABC, b"")
        grown = {"type": "voters", "voters": ["a", "b", "c", "d"]}
        assert node(snapshot=snap, log=[(1, grown)]).voters == ("a", "b", "c", "d")
        assert node(snapshot=snap).voters == ABC

    def test_the_snapshot_keeps_the_voters_in_force_at_its_index(self):
        r = node()
        elect(r)
        grown = {"type": "voters", "voters": ["a", "b", "c", "d"]}
        step(r, 5.01, Propose((job(3), grown)))
        step(r, 5.02, msg("append_reply", "b", term=1, success=True, match=4))
        step(r, 5.03, msg("append_reply", "c", term=1, success=True, match=4))
        assert step(r, 5.04, Compact(3, b"")) == [Persist(1, "a", None, (), Snapshot(3, 1, ABC,
                                                                                       b""))]
        assert r.voters == ("a", "b", "c", "d")


class TestPreVote_9_6:
    def test_a_node_cut_off_from_the_cluster_does_not_raise_its_term(self):
        r = node()
        step(r, 0.0, Tick())
        for now in (2.1, 4.2, 6.3, 8.4):
            actions = step(r, now, Tick())
            assert [s.kind for s in sends(actions)] in (["pre_vote", "pre_vote"], [])
        assert r.term == 0 and r.role == FOLLOWER

    def test_a_pre_vote_request_changes_neither_term_nor_vote(self):
        r = node(term=1)
        actions = step(r, 0.0, msg("pre_vote", "b", term=2, last_index=1, last_term=0))
        assert actions == [Send("b", "pre_vote_reply", {"term": 2, "granted": True})]
        assert (r.term, r.voted_for) == (1, None)

    def test_a_refused_or_stale_pre_vote_does_not_start_an_election(self):
        r = node()
        step(r, 0.0, Tick())
        step(r, 2.1, Tick())
        assert step(r, 2.2, msg("pre_vote_reply", "b", term=1, granted=False)) == []
        assert step(r, 2.2, msg("pre_vote_reply", "c", term=7, granted=True)) == []
        assert r.role == FOLLOWER and r.term == 0


class TestLeaderLease:
    def test_a_leader_without_a_majority_of_acks_within_the_lease_steps_down(self):
        r = node()
        elect(r, now=5.0)
        assert [type(a) for a in step(r, 5.7, Tick())] == [Send, Send]  # heartbeat, in lease
        assert step(r, 5.81, Tick()) == [RoleChanged(FOLLOWER, 1, None)]
        assert r.term == 1 and not r.is_leader

    def test_a_leader_acknowledged_by_a_majority_keeps_leading(self):
        r = node()
        elect(r, now=5.0)
        for now in (5.3, 5.6, 5.9, 6.2):
            step(r, now, msg("append_reply", "b", term=1, success=True, match=2))
            step(r, now + 0.01, Tick())
        assert r.is_leader

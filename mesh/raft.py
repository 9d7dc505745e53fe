"""Quorum election and the replicated job journal: Raft, as a pure state machine (SPEC §9).

Theory of operation (Ongaro & Ousterhout, "In Search of an Understandable Consensus
Algorithm", 2014; sections in brackets)
-------------------------------------------------------------------------------------------
Roles: follower, candidate, leader (the master). Terms only grow; every message carries its
sender's term; a higher term seen anywhere makes us a follower of that term [5.1].

    follower --no leader heard for election_timeout--> candidate (term+1, votes for itself)
    candidate --votes from a majority of voters--> leader
    candidate/leader --message with a higher term--> follower
    leader --no majority acknowledged within lease_s--> follower (steps down)

Voters are the cluster's persisted member list, itself kept in the journal (``voters``
entries), so a minority partition can never elect [5.2, 6 single-server changes]. A node that
is not (yet) a voter never stands. A follower that heard from a leader within the election
timeout ignores vote requests (leader stickiness), so a rejoining node cannot depose a healthy
leader.

The log [5.3]: the leader appends entries (``propose``), sends them with ``Append`` carrying the
previous entry's index and term; a follower accepts only if it holds that entry, truncating any
conflicting suffix. An entry is committed once stored on a majority *and* from the leader's
current term [5.4.2]; committed entries are handed out in order (``Apply``) exactly once per
process. Votes go only to candidates whose log is at least as up to date as ours [5.4.1].

A follower first runs a *pre-vote* (Raft thesis 9.6): it raises its term and stands only if a
majority would vote for it, so a node cut off from the cluster does not inflate its term and
disrupt the leader when it comes back.

Events in: ``Tick``, ``Propose``, and ``Message``s of kind pre_vote, pre_vote_reply, vote,
vote_reply, append, append_reply (dicts, as decoded from the wire). Actions out: ``Send(to, kind, body)``,
``Persist(term, voted_for, truncate_from, entries)`` (to be fsynced *before* the sends that
follow it in the same batch go out), ``Apply(index, entry)``, ``RoleChanged``.

Invariants (``check_invariants``): at most one leader per term (checked across nodes by the
simulator); commit index never exceeds the log; terms of log entries never decrease.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatchmethod

FOLLOWER, CANDIDATE, LEADER = "follower", "candidate", "leader"


@dataclass(frozen=True)
class Config:
    heartbeat_s: float = 0.1
    election_min_s: float = 1.0
    election_max_s: float = 2.0
    lease_s: float = 0.8  # below election_min_s: a deposed leader stops before a new one starts
    max_batch: int = 256
    max_batch_bytes: int = 8 << 20


# ---- events ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Propose:
    entries: tuple  # plain data (dicts)


@dataclass(frozen=True)
class Message:
    kind: str   # vote, vote_reply, append, append_reply
    sender: str
    body: dict


# ---- actions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    to: str
    kind: str
    body: dict


@dataclass(frozen=True)
class Persist:
    term: int
    voted_for: str | None
    truncate_from: int | None  # drop log entries with index >= this first (1-based)
    entries: tuple             # [(term, entry)] appended after the truncation


@dataclass(frozen=True)
class Apply:
    index: int
    entry: dict


@dataclass(frozen=True)
class RoleChanged:
    role: str
    term: int
    leader: str | None


@dataclass
class State:
    """What survives a restart: handed back to ``Raft`` by the daemon's journal."""
    term: int = 0
    voted_for: str | None = None
    log: list = field(default_factory=list)  # [(term, entry)], index = position + 1


class Raft:
    def __init__(self, name: str, state: State, rng, config: Config | None = None,
                 founder: bool = False):
        self.name, self.rng, self.cfg = name, rng, config or Config()
        self.term, self.voted_for, self.log = state.term, state.voted_for, list(state.log)
        self.role, self.leader = FOLLOWER, None
        self.commit = 0
        self.applied = 0
        self.voters: tuple = self._voters_in_log() or ((name,) if founder else ())
        self.learners: set = set()  # non-voting members that still get the log (set by the loop)
        self._votes: set = set()
        self._pre_votes: set = set()
        self._match: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._acked: dict[str, float] = {}
        self._heard = 0.0
        self._became = 0.0
        self._deadline = None
        self._next_beat = 0.0
        self._now = 0.0
        self._out: list = []

    # -- the one entry point --

    def step(self, now: float, event) -> list:
        self._now, self._out = now, []
        if self._deadline is None:
            self._reset_timer()
            if self.voters == (self.name,):
                self._deadline = now  # the only voter: no one to wait for
        self._on(event)
        self._apply_committed()
        return self._out

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    def accepts(self, term: int) -> bool:
        return term >= self.term

    # -- handlers --

    @singledispatchmethod
    def _on(self, event):
        raise TypeError(f"raft has no handler for {type(event).__name__}")

    @_on.register
    def _(self, ev: Tick):
        if self.role == LEADER:
            self._lead_tick()
        elif self._now >= self._deadline and self.name in self.voters:
            self._pre_stand()

    @_on.register
    def _(self, ev: Propose):
        if self.role != LEADER:
            return
        new = [(self.term, entry) for entry in ev.entries]
        self.log.extend(new)
        self._persist(None, new)
        self._match[self.name] = len(self.log)
        for entry in ev.entries:
            if entry.get("type") == "voters":
                self.voters = tuple(entry["voters"])
        self._broadcast_append()
        self._advance_commit()

    @_on.register
    def _(self, ev: Message):
        body = ev.body
        term = body.get("term", 0)
        if not isinstance(term, int):
            return
        if term > self.term and ev.kind not in ("pre_vote", "pre_vote_reply"):
            if ev.kind == "vote" and self._leader_recently_heard():
                return  # stickiness: a healthy leader is not deposed by a rejoining node
            self._become_follower(term, None)
        handler = {"pre_vote": self._on_pre_vote, "pre_vote_reply": self._on_pre_vote_reply,
                   "vote": self._on_vote, "vote_reply": self._on_vote_reply,
                   "append": self._on_append, "append_reply": self._on_append_reply}.get(ev.kind)
        if handler is not None:
            try:
                handler(ev.sender, body)
            except (KeyError, TypeError, ValueError):
                pass  # a malformed body from a peer: ignore it

    # -- elections [5.2] --

    def _pre_stand(self) -> None:
        """Pre-vote (Raft thesis 9.6): ask before raising our term, so that a node cut off
        from the cluster cannot inflate its term and disrupt the leader when it returns."""
        self._reset_timer()
        self._pre_votes = {self.name}
        last_index, last_term = self._last()
        for voter in self.voters:
            if voter != self.name:
                self._out.append(Send(voter, "pre_vote", {
                    "term": self.term + 1, "last_index": last_index, "last_term": last_term}))
        self._check_pre_votes()

    def _on_pre_vote(self, sender: str, body: dict) -> None:
        last_index, last_term = self._last()
        up_to_date = (body["last_term"], body["last_index"]) >= (last_term, last_index)
        grant = (body["term"] > self.term and up_to_date and sender in self.voters
                 and not self._leader_recently_heard())
        self._out.append(Send(sender, "pre_vote_reply", {"term": body["term"], "granted": grant}))

    def _on_pre_vote_reply(self, sender: str, body: dict) -> None:
        if self.role != LEADER and body["term"] == self.term + 1 and body["granted"]:
            self._pre_votes.add(sender)
            self._check_pre_votes()

    def _check_pre_votes(self) -> None:
        if self._majority(self._pre_votes):
            self._pre_votes = set()
            self._stand()

    def _stand(self) -> None:
        self.term += 1
        self.role, self.leader, self.voted_for = CANDIDATE, None, self.name
        self._votes = {self.name}
        self._persist(None, [])
        self._reset_timer()
        self._out.append(RoleChanged(CANDIDATE, self.term, None))
        last_index, last_term = self._last()
        for voter in self.voters:
            if voter != self.name:
                self._send(voter, "vote", last_index=last_index, last_term=last_term)
        self._check_votes()

    def _on_vote(self, sender: str, body: dict) -> None:
        last_index, last_term = self._last()
        up_to_date = (body["last_term"], body["last_index"]) >= (last_term, last_index)
        grant = (body["term"] == self.term and self.voted_for in (None, sender)
                 and up_to_date and sender in self.voters)
        if grant:
            self.voted_for = sender
            self._persist(None, [])
            self._reset_timer()
        self._send(sender, "vote_reply", granted=grant)

    def _on_vote_reply(self, sender: str, body: dict) -> None:
        if self.role == CANDIDATE and body["term"] == self.term and body["granted"]:
            self._votes.add(sender)
            self._check_votes()

    def _check_votes(self) -> None:
        if self.role == CANDIDATE and self._majority(self._votes):
            self.role, self.leader, self._became = LEADER, self.name, self._now
            self._next = {v: len(self.log) + 1 for v in self.voters}
            self._match = {self.name: len(self.log)}
            self._acked = {self.name: self._now}
            self._out.append(RoleChanged(LEADER, self.term, self.name))
            self.log.append((self.term, {"type": "noop"}))  # commits earlier terms' entries [8]
            self._persist(None, [self.log[-1]])
            self._match[self.name] = len(self.log)
            self._broadcast_append()
            self._advance_commit()

    # -- replication [5.3] --

    def _lead_tick(self) -> None:
        recent = {v for v, t in self._acked.items() if self._now - t <= self.cfg.lease_s}
        if not self._majority(recent | {self.name}) and self._now - self._became > self.cfg.lease_s:
            self._become_follower(self.term, None)  # lost the lease: step down
            return
        if self._now >= self._next_beat:
            self._broadcast_append()

    def _broadcast_append(self) -> None:
        self._next_beat = self._now + self.cfg.heartbeat_s
        for member in sorted(set(self.voters) | self.learners):
            if member != self.name:
                self._append_to(member)

    def _append_to(self, voter: str) -> None:
        nxt = self._next.setdefault(voter, len(self.log) + 1)
        prev = nxt - 1
        entries, size = [], 0
        for term, entry in self.log[prev:prev + self.cfg.max_batch]:
            size += 256 + len(entry.get("jobpack") or b"")
            if entries and size > self.cfg.max_batch_bytes:
                break  # big job packs travel a few per message
            entries.append((term, entry))
        self._send(voter, "append", prev_index=prev, prev_term=self._term_at(prev),
                   entries=[[t, e] for t, e in entries], commit=self.commit)

    def _on_append(self, sender: str, body: dict) -> None:
        if body["term"] < self.term:
            self._send(sender, "append_reply", success=False, match=0)
            return
        if self.role != FOLLOWER or self.leader != sender:
            self.role, self.leader = FOLLOWER, sender
            self._out.append(RoleChanged(FOLLOWER, self.term, sender))
        self._heard = self._now
        self._reset_timer()
        prev, prev_term = body["prev_index"], body["prev_term"]
        if prev > len(self.log) or self._term_at(prev) != prev_term:
            self._send(sender, "append_reply", success=False, match=min(prev - 1, len(self.log)))
            return
        entries = [(int(t), e) for t, e in body["entries"]]
        index, truncate, new = prev, None, []
        for term, entry in entries:
            index += 1
            if index <= len(self.log) and self._term_at(index) == term:
                continue
            if index <= len(self.log):
                truncate = index if truncate is None else truncate
                del self.log[index - 1:]
            self.log.append((term, entry))
            new.append((term, entry))
        if new or truncate:
            self._persist(truncate, new)
            self._refresh_voters()
        match = prev + len(entries)
        if body["commit"] > self.commit:
            self.commit = min(body["commit"], match)
        self._send(sender, "append_reply", success=True, match=match)

    def _on_append_reply(self, sender: str, body: dict) -> None:
        if self.role != LEADER or body["term"] != self.term:
            return
        self._acked[sender] = self._now
        if body["success"]:
            self._match[sender] = max(self._match.get(sender, 0), body["match"])
            self._next[sender] = self._match[sender] + 1
            self._advance_commit()
            if self._next[sender] <= len(self.log):
                self._append_to(sender)
        else:
            self._next[sender] = max(1, min(self._next.get(sender, 1) - 1, body["match"] + 1))
            self._append_to(sender)

    def _advance_commit(self) -> None:
        for index in range(len(self.log), self.commit, -1):
            if self._term_at(index) != self.term:
                break  # only entries of our own term are committed by counting [5.4.2]
            if self._majority({v for v, m in self._match.items() if m >= index}):
                self.commit = index
                break

    def _apply_committed(self) -> None:
        while self.applied < self.commit:
            self.applied += 1
            self._out.append(Apply(self.applied, self.log[self.applied - 1][1]))

    # -- helpers --

    def _become_follower(self, term: int, leader: str | None) -> None:
        changed = self.role != FOLLOWER or term != self.term
        if term != self.term:
            self.term, self.voted_for = term, None
            self._persist(None, [])
        self.role, self.leader = FOLLOWER, leader
        if changed:
            self._out.append(RoleChanged(FOLLOWER, self.term, leader))
        self._reset_timer()

    def _leader_recently_heard(self) -> bool:
        return self.role == LEADER or (self.leader is not None
                                       and self._now - self._heard < self.cfg.election_min_s)

    def _majority(self, names: set) -> bool:
        return bool(self.voters) and len(names & set(self.voters)) * 2 > len(self.voters)

    def _reset_timer(self) -> None:
        span = self.cfg.election_max_s - self.cfg.election_min_s
        self._deadline = self._now + self.cfg.election_min_s + self.rng.random() * span

    def _last(self) -> tuple[int, int]:
        return len(self.log), self._term_at(len(self.log))

    def _term_at(self, index: int) -> int:
        return self.log[index - 1][0] if 0 < index <= len(self.log) else 0

    def _voters_in_log(self) -> tuple:
        for _, entry in reversed(self.log):
            if entry.get("type") == "voters":
                return tuple(entry["voters"])
        return ()

    def _refresh_voters(self) -> None:
        voters = self._voters_in_log()
        if voters:
            self.voters = voters

    def _persist(self, truncate_from, entries) -> None:
        self._out.append(Persist(self.term, self.voted_for, truncate_from, tuple(entries)))

    def _send(self, to: str, kind: str, **body) -> None:
        self._out.append(Send(to, kind, {"term": self.term, **body}))

    def check_invariants(self) -> None:
        assert self.applied <= self.commit <= len(self.log)
        terms = [t for t, _ in self.log]
        assert terms == sorted(terms), "log terms decrease"
        assert self.role != LEADER or self.leader == self.name

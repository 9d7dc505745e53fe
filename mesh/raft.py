"""Quorum election and the replicated job journal: Raft, as a pure state machine.

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

Compaction [7]: the application hands in ``Compact(index, data)``, its state machine after
entries 1..index (index <= applied). Raft keeps that as a ``Snapshot`` (index, the term of entry
index, the voters in force there, data), drops the entries it covers and asks for a durable
write (``Persist`` with ``snapshot``). Indexes stay absolute and 1-based everywhere (messages,
``Apply``, ``truncate_from``); ``log`` holds only the entries after ``snapshot_index``. A
follower whose next index the leader no longer holds (``next <= snapshot_index``) gets the
snapshot in one ``install_snapshot`` message (not resent for ``snapshot_retry_s`` unless
acknowledged). A follower adopts a snapshot newer than its commit index: it keeps its log after
the snapshot only if that log holds the snapshot's last entry (same index and term), else drops
it all; it persists the snapshot, sets commit and applied to its index and emits ``Restore``
(before any later ``Apply``) so the application replaces its state machine. An older snapshot
is acknowledged and ignored. An append whose previous index lies inside our snapshot is trimmed
to the entries after it: those before are committed, so they match the leader's.

Events in: ``Tick``, ``Propose``, ``Compact``, and ``Message``s of kind pre_vote,
pre_vote_reply, vote, vote_reply, append, append_reply, install_snapshot (dicts, as decoded from
the wire). Actions out: ``Send(to, kind, body)``, ``Persist(term, voted_for, truncate_from,
entries, snapshot)`` (to be fsynced *before* the sends that follow it in the same batch go out),
``Restore(snapshot)``, ``Apply(index, entry)``, ``RoleChanged``, and the fact ``Dropped(sender,
kind, why)`` for a malformed message that was ignored.

Invariants (``check_invariants``): at most one leader per term (checked across nodes by the
simulator); snapshot index <= applied <= commit <= last index; terms of the snapshot and the log
entries never decrease.
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
    snapshot_retry_s: float = 1.0  # an unacknowledged install_snapshot goes again after this


@dataclass(frozen=True)
class Snapshot:
    """The application's state machine after entries 1..``index`` (``data``, opaque here), with
    the term of entry ``index`` and the voters in force at that point [7]."""
    index: int
    term: int
    voters: tuple
    data: bytes

    def __post_init__(self):
        if not (isinstance(self.index, int) and self.index >= 1 and isinstance(self.term, int)
                and self.term >= 0 and isinstance(self.data, bytes)
                and isinstance(self.voters, tuple)
                and all(isinstance(v, str) for v in self.voters)):
            raise ValueError(f"bad snapshot (index {self.index!r}, term {self.term!r})")


# ---- events ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Propose:
    entries: tuple  # plain data (dicts)


@dataclass(frozen=True)
class Compact:
    """The application's state machine after applying entries 1..``index`` is ``data``."""
    index: int
    data: bytes

    def __post_init__(self):
        if not (isinstance(self.index, int) and self.index >= 1 and isinstance(self.data, bytes)):
            raise ValueError(f"bad compaction (index {self.index!r})")


@dataclass(frozen=True)
class Message:
    kind: str   # pre_vote(_reply), vote(_reply), append(_reply), install_snapshot
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
    """One durable write, in this order: with ``snapshot``, store it (atomically) and drop the
    log entries it covers (index <= snapshot.index); then drop the entries with index >=
    ``truncate_from``; then append ``entries``. Indexes are absolute (1-based)."""
    term: int
    voted_for: str | None
    truncate_from: int | None  # drop log entries with index >= this (absolute, 1-based)
    entries: tuple             # [(term, entry)] appended after the truncation
    snapshot: Snapshot | None = None


@dataclass(frozen=True)
class Restore:
    """Replace the state machine with ``snapshot.data`` (a leader's snapshot was installed)."""
    snapshot: Snapshot


@dataclass(frozen=True)
class Apply:
    index: int
    entry: dict


@dataclass(frozen=True)
class Dropped:
    """A fact: a malformed message from ``sender`` was ignored (the loop logs and counts it)."""
    sender: str
    kind: str
    why: str


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
    log: list = field(default_factory=list)  # [(term, entry)] after the snapshot
    snapshot: Snapshot | None = None         # entry log[k] has index snapshot_index + k + 1


class Raft:
    def __init__(self, name: str, state: State, rng, config: Config | None = None,
                 founder: bool = False):
        self.name, self.rng, self.cfg = name, rng, config or Config()
        self.term, self.voted_for, self.log = state.term, state.voted_for, list(state.log)
        self.snapshot: Snapshot | None = state.snapshot
        self.role, self.leader = FOLLOWER, None
        self.commit = self.applied = self.snapshot_index
        self._founders = (name,) if founder else ()
        self.voters: tuple = self._voters_upto(self.last_index(), self._founders)
        self.learners: set = set()  # non-voting members that still get the log (set by the loop)
        self._votes: set = set()
        self._pre_votes: set = set()
        self._match: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._acked: dict[str, float] = {}
        self._snap_sent: dict[str, float] = {}  # member -> when install_snapshot last went
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

    # -- read-only views for the loop --

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    def accepts(self, term: int) -> bool:
        return term >= self.term

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    def last_index(self) -> int:
        return self.snapshot_index + len(self.log)

    def entries_since_snapshot(self) -> int:
        return len(self.log)

    def config_pending(self) -> bool:
        """A voters change is in the log but not yet committed (one change at a time [6])."""
        return any(e.get("type") == "voters" for _, e in self.log[self.commit - self.snapshot_index:])

    def config_journaled(self) -> bool:
        """Some voters list is durable: in a log entry or in the snapshot."""
        return bool(self.snapshot and self.snapshot.voters) or any(
            e.get("type") == "voters" for _, e in self.log)

    def caught_up(self, member: str) -> bool:
        """On the leader: ``member`` has acknowledged the log up to the commit index, so it may
        become a voter without stalling commits (Raft thesis 4.2.1, catching up new servers)."""
        return self.role == LEADER and self._match.get(member, 0) >= self.commit

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
        self._match[self.name] = self.last_index()
        for entry in ev.entries:
            if entry.get("type") == "voters":
                self.voters = tuple(entry["voters"])
        self._broadcast_append()
        self._advance_commit()

    @_on.register
    def _(self, ev: Compact):
        if ev.index > self.applied:
            raise ValueError(f"compaction to {ev.index} is beyond applied index {self.applied}")
        if ev.index <= self.snapshot_index:
            return  # already covered by our snapshot
        snap = Snapshot(ev.index, self._term_at(ev.index),
                        self._voters_upto(ev.index, self._founders), ev.data)
        del self.log[:ev.index - self.snapshot_index]
        self.snapshot = snap
        self._out.append(Persist(self.term, self.voted_for, None, (), snap))

    _KINDS = {"pre_vote": "_on_pre_vote", "pre_vote_reply": "_on_pre_vote_reply",
              "vote": "_on_vote", "vote_reply": "_on_vote_reply", "append": "_on_append",
              "append_reply": "_on_append_reply", "install_snapshot": "_on_install_snapshot"}

    @_on.register
    def _(self, ev: Message):
        body = ev.body
        term = body.get("term", 0)
        if not isinstance(term, int):
            self._out.append(Dropped(ev.sender, ev.kind, "term is not an integer"))
            return
        if term > self.term and ev.kind not in ("pre_vote", "pre_vote_reply"):
            if ev.kind == "vote" and self._leader_recently_heard():
                return  # stickiness: a healthy leader is not deposed by a rejoining node
            self._become_follower(term, None)
        handler = self._KINDS.get(ev.kind)
        if handler is None:
            self._out.append(Dropped(ev.sender, ev.kind, "unknown message kind"))
            return
        try:
            getattr(self, handler)(ev.sender, body)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed body from a peer
            self._out.append(Dropped(ev.sender, ev.kind, f"{type(exc).__name__}: {exc}"))

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
            self._next = {v: self.last_index() + 1 for v in self.voters}
            self._match = {self.name: self.last_index()}
            self._acked = {self.name: self._now}
            self._snap_sent = {}
            self._out.append(RoleChanged(LEADER, self.term, self.name))
            self.log.append((self.term, {"type": "noop"}))  # commits earlier terms' entries [8]
            self._persist(None, [self.log[-1]])
            self._match[self.name] = self.last_index()
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

    def _append_to(self, member: str) -> None:
        nxt = self._next.setdefault(member, self.last_index() + 1)
        if nxt <= self.snapshot_index:
            self._send_snapshot(member)  # the entries it needs are compacted away [7]
            return
        prev = nxt - 1
        start = prev - self.snapshot_index
        entries, size = [], 0
        for term, entry in self.log[start:start + self.cfg.max_batch]:
            size += 256 + len(entry.get("jobpack") or b"")
            if entries and size > self.cfg.max_batch_bytes:
                break  # big job packs travel a few per message
            entries.append((term, entry))
        self._send(member, "append", prev_index=prev, prev_term=self._term_at(prev),
                   entries=[[t, e] for t, e in entries], commit=self.commit)

    def _send_snapshot(self, member: str) -> None:
        sent = self._snap_sent.get(member)
        if sent is not None and self._now - sent < self.cfg.snapshot_retry_s:
            return  # one is on its way: wait for the acknowledgement
        self._snap_sent[member] = self._now
        snap = self.snapshot
        self._send(member, "install_snapshot", index=snap.index, last_term=snap.term,
                   voters=list(snap.voters), data=snap.data)

    def _on_append(self, sender: str, body: dict) -> None:
        if body["term"] < self.term:
            self._send(sender, "append_reply", success=False, match=0)
            return
        self._follow(sender)
        prev, prev_term = body["prev_index"], body["prev_term"]
        entries = [(int(t), e) for t, e in body["entries"]]
        base = self.snapshot_index
        if prev < base:  # entries up to our snapshot are committed: they match the leader's [7]
            entries, prev, prev_term = entries[base - prev:], base, self._term_at(base)
        if prev > self.last_index() or self._term_at(prev) != prev_term:
            self._send(sender, "append_reply", success=False,
                       match=min(prev - 1, self.last_index()))
            return
        truncate, new = self._merge(prev, entries)
        if new or truncate:
            self._persist(truncate, new)
            self._refresh_voters()
        match = prev + len(entries)
        self.commit = max(self.commit, min(body["commit"], match))
        self._send(sender, "append_reply", success=True, match=match)

    def _merge(self, prev: int, entries: list) -> tuple:
        """Store ``entries`` after index ``prev``, first dropping the suffix from the first
        conflicting entry [5.3]; returns (the index truncated from or None, entries added)."""
        index, truncate, new = prev, None, []
        for term, entry in entries:
            index += 1
            if index <= self.last_index():
                if self._term_at(index) == term:
                    continue
                truncate = index if truncate is None else truncate
                del self.log[index - self.snapshot_index - 1:]
            self.log.append((term, entry))
            new.append((term, entry))
        return truncate, new

    def _on_install_snapshot(self, sender: str, body: dict) -> None:
        if body["term"] < self.term:
            self._send(sender, "append_reply", success=False, match=0)
            return
        snap = Snapshot(body["index"], body["last_term"], tuple(body["voters"]), body["data"])
        self._follow(sender)
        if snap.index > self.commit:
            self._install(snap)
        self._send(sender, "append_reply", success=True, match=self.commit)

    def _install(self, snap: Snapshot) -> None:
        """Adopt a leader's snapshot [7]: keep our log after it only if the log holds the
        snapshot's last entry (same index and term); otherwise that suffix can never commit."""
        kept = snap.index <= self.last_index() and self._term_at(snap.index) == snap.term
        truncate = None if kept or snap.index >= self.last_index() else snap.index + 1
        self.log = self.log[snap.index - self.snapshot_index:] if kept else []
        self.snapshot = snap
        self.commit = self.applied = snap.index
        self._out.append(Persist(self.term, self.voted_for, truncate, (), snap))
        self._out.append(Restore(snap))
        self._refresh_voters()

    def _on_append_reply(self, sender: str, body: dict) -> None:
        if self.role != LEADER or body["term"] != self.term:
            return
        self._acked[sender] = self._now
        if body["success"]:
            self._snap_sent.pop(sender, None)
            self._match[sender] = max(self._match.get(sender, 0), body["match"])
            self._next[sender] = self._match[sender] + 1
            self._advance_commit()
            if self._next[sender] <= self.last_index():
                self._append_to(sender)
        else:
            self._next[sender] = max(1, min(self._next.get(sender, 1) - 1, body["match"] + 1))
            self._append_to(sender)

    def _advance_commit(self) -> None:
        for index in range(self.last_index(), self.commit, -1):
            if self._term_at(index) != self.term:
                break  # only entries of our own term are committed by counting [5.4.2]
            if self._majority({v for v, m in self._match.items() if m >= index}):
                self.commit = index
                break

    def _apply_committed(self) -> None:
        while self.applied < self.commit:
            self.applied += 1
            self._out.append(Apply(self.applied, self.log[self.applied - self.snapshot_index - 1][1]))

    # -- helpers --

    def _follow(self, leader: str) -> None:
        if self.role != FOLLOWER or self.leader != leader:
            self.role, self.leader = FOLLOWER, leader
            self._out.append(RoleChanged(FOLLOWER, self.term, leader))
        self._heard = self._now
        self._reset_timer()

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
        return self.last_index(), self._term_at(self.last_index())

    def _term_at(self, index: int) -> int:
        """The term of entry ``index`` (absolute); 0 for none, or one compacted away."""
        base = self.snapshot_index
        if index == base:
            return self.snapshot.term if self.snapshot else 0
        return self.log[index - base - 1][0] if base < index <= self.last_index() else 0

    def _voters_upto(self, index: int, default: tuple = ()) -> tuple:
        """The voters in force after entry ``index``: the last voters entry up to it, else the
        snapshot's, else ``default``."""
        for _, entry in reversed(self.log[:max(0, index - self.snapshot_index)]):
            if entry.get("type") == "voters":
                return tuple(entry["voters"])
        return self.snapshot.voters if self.snapshot and self.snapshot.voters else default

    def _refresh_voters(self) -> None:
        voters = self._voters_upto(self.last_index())
        if voters:
            self.voters = voters

    def _persist(self, truncate_from, entries) -> None:
        self._out.append(Persist(self.term, self.voted_for, truncate_from, tuple(entries)))

    def _send(self, to: str, kind: str, **body) -> None:
        self._out.append(Send(to, kind, {"term": self.term, **body}))

    def check_invariants(self) -> None:
        assert self.snapshot_index <= self.applied <= self.commit <= self.last_index()
        terms = [self.snapshot.term] if self.snapshot else []
        terms += [t for t, _ in self.log]
        assert terms == sorted(terms), "log terms decrease"
        assert self.role != LEADER or self.leader == self.name

"""Cluster membership by gossip heartbeats, as a pure state machine (SPEC §2, §9).

Theory of operation
-------------------
Every member keeps a table of members. Each entry carries the member's own ``incarnation``
(raised every time it restarts, persisted by the daemon) and a ``heartbeat`` counter that only
the member itself increments, once per gossip period. Every period a member bumps its heartbeat
and sends its whole table to ``fanout`` random peers (and to its seeds until it has heard from
anyone): push gossip, piggybacking every update on the heartbeat.

Merging a received entry: a higher ``(incarnation, heartbeat)`` than the one we hold is news,
and news about a member is proof that it was alive recently, so its ``last_progress`` is reset.
A member's state is then derived locally from how long ago it made progress:

    alive --no progress for suspect_after--> suspect --no progress for dead_after--> dead
      ^                                         |
      +---------------progress------------------+
    any --member says it is leaving (its own entry, flag left)--> left
    dead/left --entry with a higher incarnation (restart)--> alive

A member that is leaving sends its entry with ``left=True`` (and a bumped heartbeat) so every
survivor marks it ``left``, never ``dead``. Entries about members we consider dead are sent with
``dead=True`` so a newcomer does not take a stale heartbeat for a live one. Dead and left
members are reaped after ``reap_after``.

Events in: ``Tick``, ``GossipIn``, ``SetMeta`` (our slots, disk...), ``Leave``. Actions out:
``SendGossip(address, payload)`` and facts ``MemberChanged(name, old, new)``. No sockets, no
clock (``now`` is passed in), randomness from an injected ``random.Random``.

Invariants: our own entry is always alive (or left once leaving); states are one of the four;
an entry's incarnation never decreases.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatchmethod

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
STATES = (ALIVE, SUSPECT, DEAD, LEFT)


@dataclass(frozen=True)
class Config:
    gossip_interval: float = 0.2
    fanout: int = 3
    suspect_after: float = 1.5
    dead_after: float = 3.5
    reap_after: float = 300.0

    @classmethod
    def loopback(cls) -> "Config":
        return cls()

    @classmethod
    def lan(cls) -> "Config":
        return cls(gossip_interval=0.5, suspect_after=3.0, dead_after=8.0)


@dataclass
class Member:
    name: str
    address: str
    incarnation: int = 0
    heartbeat: int = 0
    state: str = ALIVE
    meta: dict = field(default_factory=dict)  # slots, busy, disk, python, version...
    last_progress: float = 0.0
    changed: float = 0.0

    def entry(self) -> list:
        return [self.name, self.address, self.incarnation, self.heartbeat, self.state, self.meta]


# ---- events and actions ----------------------------------------------------------------------

@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class GossipIn:
    sender: str
    entries: list  # [[name, address, incarnation, heartbeat, state, meta], ...]


@dataclass(frozen=True)
class SetMeta:
    meta: dict


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class SendGossip:
    address: str
    entries: list


@dataclass(frozen=True)
class MemberChanged:
    name: str
    old: str | None
    new: str


class Membership:
    """One member's view of the cluster."""

    def __init__(self, name: str, address: str, incarnation: int, seeds=(), rng=None,
                 config: Config | None = None, meta=None):
        """``rng`` is a ``random.Random`` (seeded in tests); without one, peers go in order."""
        self.name, self.config = name, config or Config()
        self.rng = rng
        self.seeds = [s for s in seeds if s != address]
        self.members = {name: Member(name, address, incarnation, meta=dict(meta or {}))}
        self.heard_from_peer = False
        self.leaving = False
        self._next_gossip = 0.0
        self._out: list = []

    @property
    def me(self) -> Member:
        return self.members[self.name]

    def step(self, now: float, event) -> list:
        self._out = []
        self._on(event, now)
        return self._out

    # -- handlers --

    @singledispatchmethod
    def _on(self, event, now):
        raise TypeError(f"membership has no handler for {type(event).__name__}")

    @_on.register
    def _(self, ev: Tick, now):
        self._age(now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval
            self.me.heartbeat += 1
            self._gossip(self._targets())

    @_on.register
    def _(self, ev: GossipIn, now):
        for entry in ev.entries:
            self._merge(entry, now)
        if ev.sender != self.name:
            self.heard_from_peer = True

    @_on.register
    def _(self, ev: SetMeta, now):
        self.me.meta.update(ev.meta)

    @_on.register
    def _(self, ev: Leave, now):
        self.leaving = True
        self.me.heartbeat += 1
        self._set(self.me, LEFT, now)
        self._gossip([m.address for m in self.peers()])

    # -- merging --

    def _merge(self, entry, now: float) -> None:
        try:
            name, address, inc, hb, state, meta = entry
            assert isinstance(name, str) and isinstance(address, str) and state in STATES
            assert isinstance(inc, int) and isinstance(hb, int) and isinstance(meta, dict)
        except (ValueError, TypeError, AssertionError):
            return  # a malformed entry from a peer: ignore it, keep the rest
        if name == self.name:
            self._about_me(inc, state)
            return
        member = self.members.get(name)
        if member is None:
            if state == DEAD or (state == LEFT and inc == 0):
                return  # never heard of it and it is gone: nothing to learn
            member = self.members[name] = Member(name, address, inc, hb, state=None, meta=meta)
            self._set(member, LEFT if state == LEFT else ALIVE, now)
            member.last_progress = now
            return
        if (inc, hb) <= (member.incarnation, member.heartbeat):
            return
        restarted = inc > member.incarnation
        member.address, member.incarnation, member.heartbeat = address, inc, hb
        member.meta = meta
        if state == LEFT:
            self._set(member, LEFT, now)
        elif state == DEAD and not restarted:
            return  # a third party's stale opinion is not progress
        elif member.state != LEFT or restarted:
            member.last_progress = now
            self._set(member, ALIVE, now)

    def _about_me(self, inc: int, state: str) -> None:
        """Someone gossips an old or pessimistic view of us: outbid it (refutation)."""
        me = self.me
        stale = inc > me.incarnation or (inc == me.incarnation and state in (DEAD, SUSPECT))
        if stale and not self.leaving:
            me.incarnation = inc + 1

    # -- ageing --

    def _age(self, now: float) -> None:
        cfg = self.config
        for member in list(self.members.values()):
            if member.name == self.name:
                continue
            quiet = now - member.last_progress
            if member.state in (DEAD, LEFT):
                if now - member.changed > cfg.reap_after:
                    del self.members[member.name]
            elif quiet > cfg.dead_after:
                self._set(member, DEAD, now)
            elif quiet > cfg.suspect_after and member.state == ALIVE:
                self._set(member, SUSPECT, now)

    def _set(self, member: Member, state: str, now: float) -> None:
        if member.state != state:
            self._out.append(MemberChanged(member.name, member.state, state))
            member.state, member.changed = state, now

    # -- sending --

    def peers(self) -> list[Member]:
        return [m for m in self.members.values() if m.name != self.name and m.state in (ALIVE, SUSPECT)]

    def _targets(self) -> list[str]:
        peers = [m.address for m in self.peers()]
        k = min(self.config.fanout, len(peers))
        chosen = self.rng.sample(peers, k) if self.rng else peers[:k]
        if not self.heard_from_peer:
            chosen += [s for s in self.seeds if s not in chosen]
        return chosen

    def _gossip(self, addresses: list[str]) -> None:
        if not addresses:
            return
        entries = [m.entry() for m in self.members.values()]
        for address in addresses:
            self._out.append(SendGossip(address, entries))

    # -- queries --

    def alive(self) -> list[Member]:
        return sorted((m for m in self.members.values() if m.state in (ALIVE, SUSPECT)),
                      key=lambda m: m.name)

    def check_invariants(self) -> None:
        assert self.me.state == (LEFT if self.leaving else ALIVE)
        for member in self.members.values():
            assert member.state in STATES, member

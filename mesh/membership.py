"""Cluster membership and failure detection: SWIM with Lifeguard, as a pure state machine.

Theory of operation (Das, Gupta, Motivala, "SWIM", DSN 2002; Dadgar, Phillips, Currey,
"Lifeguard: Local Health Awareness for More Accurate Failure Detection", 2017)
------------------------------------------------------------------------------------------
Failure detection. Every probe period a member pings the next member of a shuffled round-robin
list. No ack within the probe timeout: it asks ``indirect_k`` other members to ping the target
for it (``ping_req``); they relay the ack, or a ``nack`` if the target did not answer them
either. No ack by the end of the period: the target becomes *suspect*.

Suspicion (Lifeguard). A suspect member has a timeout that starts at ``max = suspicion_max_mult
* min`` and shrinks towards ``min = suspicion_mult * log10(N+1) * probe_interval`` as independent
members confirm the suspicion: ``max - (max - min) * log(C+1) / log(K+1)`` after C of K expected
confirmations. When it expires, the member is *dead*. A member that hears it is suspected
*refutes*: it raises its incarnation and announces itself alive, which overrides the suspicion.

Local health (Lifeguard). A member keeps an awareness score (0..``awareness_max``): up after a
probe that failed without any nack (a sign that *we* are slow, not the target), or when we must
refute a suspicion of ourselves; down after each successful probe. Probe period and timeout are
scaled by ``awareness + 1``, so a starved member slows down instead of accusing healthy ones.

Dissemination. State changes are queued as updates ``[name, address, incarnation, state,
meta, originator]`` and piggybacked on every message, each sent at most ``retransmit_mult * ceil(log10(N+1))``
times, fewest-sent first. Every ``gossip_interval`` a member also sends its pending updates to
``gossip_fanout`` random members, and every ``sync_interval`` exchanges its full table with one
member (push-pull), which is also how a new member joins through its seeds. Each message also
carries the sender's own ``meta`` (slots, load), which is how load spreads.

Precedence of updates about a member at incarnation i over what we hold (state, j):
alive i beats alive/suspect j when i > j; suspect i beats alive j when i >= j and suspect j when
i > j; dead/left beat alive/suspect at i >= j; a member that is dead or left comes back only with
alive at i > j (a restart: the daemon persists and raises its incarnation on every start). A
member that leaves announces ``left`` and is never marked dead. Dead and left members are reaped
after ``reap_after``.

Events in: ``Tick``, ``GossipIn(sender, entries)`` (one decoded message: a dict body),
``SetMeta``, ``Leave``. Actions out: ``SendGossip(address, entries)`` (a message body to
send) and facts ``MemberChanged(name, old, new)`` and ``Dropped(sender, kind, why)`` (a
malformed message ignored: the loop logs and counts it). No sockets, no clock, injected randomness.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import singledispatchmethod

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf"))
STATES = (ALIVE, SUSPECT, DEAD, LEFT)


@dataclass(frozen=True)
class Config:
    probe_interval: float = 0.2
    probe_timeout: float = 0.1
    indirect_k: int = 3
    suspicion_mult: float = 5.0
    suspicion_max_mult: float = 4.0
    retransmit_mult: int = 4
    awareness_max: int = 8
    gossip_interval: float = 0.1
    gossip_fanout: int = 3
    sync_interval: float = 5.0
    max_piggyback: int = 16
    reap_after: float = 300.0

    @classmethod
    def loopback(cls) -> "Config":
        return cls()

    @classmethod
    def lan(cls) -> "Config":
        return cls(probe_interval=1.0, probe_timeout=0.5, gossip_interval=0.2,
                   sync_interval=30.0, suspicion_mult=4.0, suspicion_max_mult=6.0)


@dataclass
class Member:
    name: str
    address: str
    incarnation: int = 0
    state: str = ALIVE
    meta: dict = field(default_factory=dict)
    changed: float = 0.0

    def entry(self, by: str = "") -> list:
        """The update about this member; ``by`` names who originated a suspicion."""
        return [self.name, self.address, self.incarnation, self.state, self.meta, by]


# ---- events and actions ------------------------------------------------------------------

@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class GossipIn:
    sender: str
    entries: dict  # one message body: {"kind", "seq", "target", "meta", "updates", ...}


@dataclass(frozen=True)
class SetMeta:
    meta: dict


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class SendGossip:
    address: str
    entries: dict  # the message body


@dataclass(frozen=True)
class Dropped:
    """A fact: a malformed message from ``sender`` was ignored (the loop logs and counts it)."""
    sender: str
    kind: str
    why: str


@dataclass(frozen=True)
class MemberChanged:
    name: str
    old: str | None
    new: str


@dataclass
class _Probe:
    target: str
    seq: int
    sent: float
    deadline: float        # end of the probe period
    indirect_at: float     # when to ask others
    acked: bool = False
    nacks: int = 0
    asked: int = 0


@dataclass
class _Suspicion:
    start: float
    confirmations: set


class Membership:
    """One member's view of the cluster."""

    def __init__(self, name: str, address: str, incarnation: int, seeds=(), rng=None,
                 config: Config | None = None, meta=None):
        self.name, self.cfg, self.rng = name, config or Config(), rng
        self.seeds = [s for s in seeds if s != address]
        self.members = {name: Member(name, address, incarnation, meta=dict(meta or {}))}
        self._by_address = {address: name}
        self.heard_from_peer = False
        self.leaving = False
        self.awareness = 0
        self._seq = 0
        self._probe: _Probe | None = None
        self.rtt_buckets = [0] * len(RTT_BUCKETS)  # acked probes' round trips, by bucket
        self.rtt_sum, self.rtt_count = 0.0, 0
        self._order: list[str] = []
        self._next_probe = 0.0
        self._next_gossip = 0.0
        self._next_sync = 0.0
        self._suspicions: dict[str, _Suspicion] = {}
        self._relays: dict[int, tuple] = {}  # our seq -> (requester address, their seq, deadline)
        self._updates: dict[str, list] = {}  # name -> [entry, times sent]
        self._out: list = []
        self._now = 0.0

    @property
    def me(self) -> Member:
        return self.members[self.name]

    def step(self, now: float, event) -> list:
        self._now, self._out = now, []
        self._on(event)
        return self._out

    # -- handlers --

    @singledispatchmethod
    def _on(self, event):
        raise TypeError(f"membership has no handler for {type(event).__name__}")

    @_on.register
    def _(self, ev: Tick):
        if self.leaving:
            return
        self._expire_suspicions()
        self._reap()
        self._check_probe()
        self._check_relays()
        if self._now >= self._next_probe:
            self._start_probe()
        if self._now >= self._next_gossip:
            self._next_gossip = self._now + self.cfg.gossip_interval
            self._gossip()
        if self._now >= self._next_sync:
            lonely = not self.heard_from_peer or not self.peers()
            self._next_sync = self._now + (self.cfg.probe_interval * 5 if lonely
                                           else self.cfg.sync_interval)
            self._sync()

    @_on.register
    def _(self, ev: SetMeta):
        self.me.meta.update(ev.meta)

    @_on.register
    def _(self, ev: Leave):
        self.leaving = True
        self.me.incarnation += 1
        self._set(self.me, LEFT)
        self._queue(self.me)
        for member in self.peers():
            self._queue(self.me)  # every peer hears it, whatever the retransmit limit
            self._send(member.address, "gossip")

    @_on.register
    def _(self, ev: GossipIn):
        body = ev.entries
        if not isinstance(body, dict):
            return
        if ev.sender != self.name:
            self.heard_from_peer = True
        updates = body.get("updates")
        for entry in updates if isinstance(updates, list) else ():
            self._merge(entry, ev.sender)
        if ev.sender != self.name and isinstance(body.get("address"), str):
            # every message is first-hand news of its sender: alive at its incarnation
            self._merge([ev.sender, body["address"], body.get("inc"), ALIVE,
                         body.get("meta") or {}, ""], ev.sender)
        sender = self.members.get(ev.sender)
        if sender is not None and isinstance(body.get("meta"), dict) and \
                sender.state in (ALIVE, SUSPECT):
            sender.meta = body["meta"]
        kind = body.get("kind")
        handler = {"ping": self._on_ping, "ack": self._on_ack, "nack": self._on_nack,
                   "ping_req": self._on_ping_req, "sync": self._on_sync,
                   "sync_reply": self._on_sync_reply}.get(kind) if isinstance(kind, str) else None
        if handler is None:
            if kind != "gossip":  # gossip only carries the updates merged above
                self._out.append(Dropped(str(ev.sender), str(kind)[:40], "unknown message kind"))
        else:
            try:
                handler(ev.sender, body)
            except (KeyError, TypeError, ValueError) as exc:  # malformed from a peer
                self._out.append(Dropped(str(ev.sender), kind, f"{type(exc).__name__}: {exc}"))

    # -- probing [SWIM 3.1] --

    def _start_probe(self) -> None:
        scale = self.awareness + 1
        self._next_probe = self._now + self.cfg.probe_interval * scale
        if self._probe is not None:
            return
        target = self._next_target()
        if target is None:
            return
        self._seq += 1
        timeout = self.cfg.probe_timeout * scale
        self._probe = _Probe(target.name, self._seq, self._now,
                             deadline=self._now + self.cfg.probe_interval * scale,
                             indirect_at=self._now + timeout)
        self._send(target.address, "ping", seq=self._seq)

    def _next_target(self) -> Member | None:
        while self._order:
            member = self.members.get(self._order.pop())
            if member is not None and member.state in (ALIVE, SUSPECT) and member.name != self.name:
                return member
        candidates = [m.name for m in self.peers()]
        if not candidates:
            return None
        if self.rng is not None:
            self.rng.shuffle(candidates)
        self._order = candidates
        return self.members[self._order.pop()]

    def _check_probe(self) -> None:
        probe = self._probe
        if probe is None:
            return
        if probe.acked:
            self._probe = None
            return
        target = self.members.get(probe.target)
        if target is None or target.state in (DEAD, LEFT):
            self._probe = None
            return
        if not probe.asked and self._now >= probe.indirect_at:
            helpers = [m for m in self.peers() if m.name != probe.target]
            k = min(self.cfg.indirect_k, len(helpers))
            chosen = self.rng.sample(helpers, k) if self.rng else helpers[:k]
            probe.asked = len(chosen) or -1
            for helper in chosen:
                self._send(helper.address, "ping_req", seq=probe.seq, target=target.name,
                           target_address=target.address)
        if self._now >= probe.deadline:
            self._probe = None
            if probe.nacks == 0 and probe.asked > 0:
                self._health(+1)  # nobody answered at all: maybe it is us who are slow
            self._suspect(target, self.name)

    def _on_ping(self, sender: str, body: dict) -> None:
        self._reply(sender, body, "ack", seq=body["seq"])

    def _on_ack(self, sender: str, body: dict) -> None:
        seq = body["seq"]
        relay = self._relays.pop(seq, None)
        if relay is not None:  # an ack for a ping we sent on someone's behalf
            requester, their_seq, _ = relay
            self._send(requester, "ack", seq=their_seq)
            return
        probe = self._probe
        if probe is not None and probe.seq == seq and not probe.acked:
            probe.acked = True
            self._health(-1)
            self._rtt(self._now - probe.sent)

    def _rtt(self, seconds: float) -> None:
        """Counted for /metrics: an acked probe's round trip (direct or relayed)."""
        self.rtt_count += 1
        self.rtt_sum += seconds
        for i, bound in enumerate(RTT_BUCKETS):
            if seconds <= bound:
                self.rtt_buckets[i] += 1
                break

    def _on_nack(self, sender: str, body: dict) -> None:
        if self._probe is not None and self._probe.seq == body["seq"]:
            self._probe.nacks += 1

    def _on_ping_req(self, sender: str, body: dict) -> None:
        requester = self._address_of(sender, body)
        if requester is None or not isinstance(body["target_address"], str):
            return
        self._seq += 1
        timeout = self.cfg.probe_timeout * (self.awareness + 1)
        self._relays[self._seq] = (requester, body["seq"], self._now + timeout)
        self._send(body["target_address"], "ping", seq=self._seq)

    def _check_relays(self) -> None:
        for seq, (requester, their_seq, deadline) in list(self._relays.items()):
            if self._now >= deadline:
                del self._relays[seq]
                self._send(requester, "nack", seq=their_seq)

    # -- suspicion [Lifeguard 4.2] --

    def _suspect(self, member: Member, by: str) -> None:
        if member.state == ALIVE:
            self._set(member, SUSPECT)
            self._suspicions[member.name] = _Suspicion(self._now, {by})
            self._queue(member, by)
        elif member.state == SUSPECT:
            suspicion = self._suspicions.setdefault(member.name, _Suspicion(self._now, set()))
            if by == self.name and by not in suspicion.confirmations:
                self._queue(member, by)  # our own, independent suspicion: others count it
            suspicion.confirmations.add(by)

    def _suspicion_timeout(self, confirmations: int) -> float:
        n = max(1, len(self.members))
        low = self.cfg.suspicion_mult * max(1.0, math.log10(n + 1)) * self.cfg.probe_interval
        high = self.cfg.suspicion_max_mult * low
        k = max(1, self.cfg.indirect_k)
        frac = math.log(min(confirmations, k) + 1) / math.log(k + 1)
        return max(low, high - (high - low) * frac)

    def _expire_suspicions(self) -> None:
        for name, suspicion in list(self._suspicions.items()):
            member = self.members.get(name)
            if member is None or member.state != SUSPECT:
                del self._suspicions[name]
                continue
            others = len(suspicion.confirmations - {self.name})
            if self._now - suspicion.start >= self._suspicion_timeout(others):
                del self._suspicions[name]
                self._set(member, DEAD)
                self._queue(member)

    def _health(self, delta: int) -> None:
        self.awareness = min(self.cfg.awareness_max, max(0, self.awareness + delta))

    # -- merging updates [SWIM 4.2] --

    def _merge(self, entry, sender: str) -> None:
        try:
            name, address, inc, state, meta, by = entry
            assert isinstance(name, str) and isinstance(address, str) and state in STATES
            assert isinstance(inc, int) and isinstance(meta, dict) and isinstance(by, str)
        except (ValueError, TypeError, AssertionError):
            return
        by = by or sender  # confirmations count originators, not the members relaying them
        if name == self.name:
            self._about_me(inc, state)
            return
        member = self.members.get(name)
        if member is None:
            if state in (DEAD, LEFT):
                return  # never knew it, and it is gone
            member = self.members[name] = Member(name, address, inc, state=None, meta=meta)
            self._by_address[address] = name
            self._set(member, state)
            if state == SUSPECT:
                self._suspicions[name] = _Suspicion(self._now, {by})
            self._queue(member)
            return
        if not self._overrides(state, inc, member):
            if state == SUSPECT and member.state == SUSPECT and inc == member.incarnation:
                self._suspect(member, by)  # an independent confirmation [Lifeguard]
            return
        member.address, member.incarnation = address, inc
        self._by_address[address] = name
        if meta:
            member.meta = meta
        if state == SUSPECT:
            if member.state != SUSPECT:  # a refuted suspicion's timer may linger until a Tick
                self._suspicions.pop(name, None)
            self._set(member, SUSPECT)
            self._suspicions.setdefault(name, _Suspicion(self._now, {by}))
        else:
            self._set(member, state)
        self._queue(member, by if state == SUSPECT else "")

    @staticmethod
    def _overrides(state: str, inc: int, member: Member) -> bool:
        held, j = member.state, member.incarnation
        if held in (DEAD, LEFT):
            return state == ALIVE and inc > j
        if state == ALIVE:
            return inc > j
        if state == SUSPECT:
            return inc > j or (inc == j and held == ALIVE)
        return inc >= j  # dead or left

    def _about_me(self, inc: int, state: str) -> None:
        """Someone says we are suspect or dead: refute it with a higher incarnation."""
        if self.leaving or state == ALIVE or inc < self.me.incarnation:
            return
        self.me.incarnation = inc + 1
        self._health(+1)
        self._queue(self.me)

    # -- dissemination [SWIM 4.1] --

    def _queue(self, member: Member, by: str = "") -> None:
        self._updates[member.name] = [member.entry(by), 0]

    def _piggyback(self) -> list:
        """Our own entry first (a refutation, a leave), then news of members gone, then the
        rest; fewest-sent first within each."""
        limit = self.cfg.retransmit_mult * max(1, math.ceil(math.log10(len(self.members) + 1)))
        rank = {LEFT: 1, DEAD: 1, ALIVE: 2, SUSPECT: 3}
        chosen = sorted(self._updates.items(), key=lambda kv: (
            0 if kv[0] == self.name else rank[kv[1][0][3]], kv[1][1]))[:self.cfg.max_piggyback]
        out = []
        for name, item in chosen:
            item[1] += 1
            out.append(item[0])
            if item[1] >= limit:
                del self._updates[name]
        return out

    def _gossip(self) -> None:
        if not self._updates:
            return
        peers = [m.address for m in self.peers()]
        k = min(self.cfg.gossip_fanout, len(peers))
        for address in (self.rng.sample(peers, k) if self.rng else peers[:k]):
            self._send(address, "gossip")

    def _sync(self) -> None:
        peers = [m.address for m in self.peers()]
        targets = list(self.seeds) if not self.heard_from_peer or not peers else []
        if peers:
            targets.append(self.rng.choice(peers) if self.rng else peers[0])
        else:  # alone: members that left or died may be back (a restart raises incarnation)
            gone = sorted(m.address for m in self.members.values() if m.name != self.name)
            if gone:
                targets.append(self.rng.choice(gone) if self.rng else gone[0])
        # a partition may have healed, members may have restarted behind one: now and then
        # ask one that is not seen alive (a seed, a dead member); a live one refutes its death
        gone = sorted((set(self.seeds) | {m.address for m in self.members.values()
                                          if m.state == DEAD}) - set(peers))
        if peers and gone:
            targets.append(self.rng.choice(gone) if self.rng else gone[0])
        for address in dict.fromkeys(targets):
            self._send(address, "sync", table=self._table())

    def _on_sync(self, sender: str, body: dict) -> None:
        for entry in body.get("table") or ():
            self._merge(entry, sender)
        self._reply(sender, body, "sync_reply", table=self._table())

    def _on_sync_reply(self, sender: str, body: dict) -> None:
        for entry in body.get("table") or ():
            self._merge(entry, sender)

    def _table(self) -> list:
        return [m.entry() for m in self.members.values()]

    # -- sending --

    def _send(self, address: str, kind: str, **fields) -> None:
        updates = self._piggyback()
        target = self.members.get(self._by_address.get(address, ""))
        if target is not None and target.state == SUSPECT:
            updates.insert(0, target.entry(self.name))  # tell it, so that it can refute
        body = {"kind": kind, "meta": self.me.meta, "address": self.me.address,
                "inc": self.me.incarnation, "updates": updates, **fields}
        self._out.append(SendGossip(address, body))

    def _reply(self, sender: str, body: dict, kind: str, **fields) -> None:
        address = self._address_of(sender, body)
        if address is not None:
            self._send(address, kind, **fields)

    def _address_of(self, name: str, body: dict) -> str | None:
        member = self.members.get(name)
        if member is not None:
            return member.address
        address = body.get("address")
        return address if isinstance(address, str) else None

    def _set(self, member: Member, state: str) -> None:
        if member.state != state:
            self._out.append(MemberChanged(member.name, member.state, state))
            member.state, member.changed = state, self._now

    def _reap(self) -> None:
        for member in list(self.members.values()):
            if member.state in (DEAD, LEFT) and self._now - member.changed > self.cfg.reap_after:
                del self.members[member.name]
                self._updates.pop(member.name, None)

    # -- queries --

    def peers(self) -> list[Member]:
        return [m for m in self.members.values()
                if m.name != self.name and m.state in (ALIVE, SUSPECT)]

    def alive(self) -> list[Member]:
        return sorted((m for m in self.members.values() if m.state in (ALIVE, SUSPECT)),
                      key=lambda m: m.name)

    def check_invariants(self) -> None:
        assert self.me.state == (LEFT if self.leaving else ALIVE)
        assert 0 <= self.awareness <= self.cfg.awareness_max
        for member in self.members.values():
            assert member.state in STATES, member

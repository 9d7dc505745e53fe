"""Where blob copies are and what to do about it: the master's repair and collection planner.

Theory of operation
-------------------
Every node reports the blobs its volumes hold (``report``: a full inventory when the master
changes and every ``full_every_s``, deltas in between). The master keeps them in ``BlobMap``
(soft state: a new master rebuilds it from the next reports) and, once a second, ``plan``
compares three things for every blob it knows:

- *live copies*: copies on members that are alive (a dead, left or restarted-but-unreported
  member's copies do not count);
- *the ring's choice*: ``ring.replicas(blob, k)`` over alive, non-blacklisted members, where a
  blob's ``k`` is the configured one or, if fewer alive members can hold it (the writable ones
  and those already holding it: a blacklisted member's copy counts), that many (``k_of``);
- *the tags' view*: which URLs the committed tags name for the blob (``referenced``).

and returns actions, most urgent first:

1. ``Copy(target, blob, sources)`` for a blob with fewer than ``k`` live copies (unless it is
   garbage: untagged and older than the delay; or younger than ``fresh_s``: a push just
   stored it and the other copies' reports may not be in yet), fewest first
   (a blob with one copy left is copied before one with two), to the ring's next nodes that lack
   it; at most ``per_node`` copies in flight per target and ``max_inflight`` in all, so repair
   takes bounded bandwidth and running jobs keep going (the copier also limits its rate);
2. ``Retag(blob, urls)``: once a blob has ``k`` live copies (or the tags name only copies that
   are gone), tags that name other URLs for it are rewritten to its live copies, ring order
   first;
3. when nothing is under-replicated, *rebalancing*: a tagged blob with ``k`` live copies of which
   some are not where the ring says (a member joined) gets a ``Copy`` to a ring node that lacks
   it; the retag then moves the tags, and the copy the ring no longer wants becomes unreferenced;
4. ``Drop(node, blob)``, collection, only when every alive member's full inventory is in and
   the master has held office for ``settle_s``: a copy is dropped when no tag names it, it is
   older than ``gc_delay_s`` (so a blob pushed but not yet tagged, or a repair copy whose retag
   is not committed yet, is safe) and the blob is not named by a tag write still in flight; an
   untagged blob goes whole, once all its live copies are that old and none is being copied
   (repair copies a blob that has a young copy: the two never take turns on it); a
   referenced blob keeps at least the copies tags name, and loses an unnamed copy only once
   ``k`` named ones are live (tags naming fewer, e.g. retagged under a smaller view, are
   rewritten first). A copy ordered dropped counts no more (as live, as a source, for a retag)
   until its node reports it gone, or back with a new mtime, or a full report that came more
   than ``copy_timeout_s`` after the order still holds it (the order was lost): a drop whose
   report is late or lost never lets a second copy go.

The planner never deletes a copy some committed tag names, and never one younger than the delay.
It has no clock: ``now`` is passed in, and copy ages come as wall times with the reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from storage.ring import Ring
from storage.tags import blob_of, blob_replicas


@dataclass(frozen=True)
class Copy:
    target: str        # node address
    blob: str
    sources: tuple     # URLs of live copies, the nearest first
    size: int
    checksum: str


@dataclass(frozen=True)
class Retag:
    blob: str
    urls: tuple


@dataclass(frozen=True)
class Drop:
    node: str
    blob: str
    why: str


@dataclass
class BlobCopy:
    size: int
    checksum: str
    path: str          # relative to the node's data dir: vol0/blob/hh/NAME
    mtime: float       # wall seconds


@dataclass
class Config:
    k: int = 3                    # replicas every blob is kept at (fewer if fewer members)
    per_node: int = 2             # copies in flight per target
    max_inflight: int = 16
    copy_timeout_s: float = 300.0
    gc_delay_s: float = 3600.0
    settle_s: float = 10.0
    full_every_s: float = 30.0
    fresh_s: float = 3.0          # a blob this young may have copies not reported yet


def blob_url(address: str, path: str) -> str:
    return f"disco://{address}/{path}"


@dataclass
class BlobMap:
    """Blob name -> node address -> the copy that node reported."""
    copies: dict = field(default_factory=dict)
    nodes: dict = field(default_factory=dict)   # address -> set of blob names
    full: set = field(default_factory=set)      # addresses whose full inventory came in
    fulls: dict = field(default_factory=dict)   # address -> how many full reports came in

    def report(self, node: str, full: bool, added, removed) -> None:
        if full:
            self.fulls[node] = self.fulls.get(node, 0) + 1
            for name in self.nodes.pop(node, set()):
                self._forget(name, node)
            self.full.add(node)
        held = self.nodes.setdefault(node, set())
        for name, size, checksum, path, mtime in added:
            self.copies.setdefault(name, {})[node] = BlobCopy(size, checksum, path, mtime)
            held.add(name)
        for name in removed:
            held.discard(name)
            self._forget(name, node)

    def node_gone(self, node: str) -> None:
        """A member restarted or was forgotten: its copies count again only once reported."""
        for name in self.nodes.pop(node, set()):
            self._forget(name, node)
        self.full.discard(node)

    def _forget(self, name: str, node: str) -> None:
        holders = self.copies.get(name)
        if holders is not None:
            holders.pop(node, None)
            if not holders:
                del self.copies[name]

    def live(self, name: str, alive: set) -> dict:
        return {n: c for n, c in self.copies.get(name, {}).items() if n in alive}

    def check_invariants(self) -> None:
        for name, holders in self.copies.items():
            assert holders, name
            for node in holders:
                assert name in self.nodes.get(node, ()), (name, node)


class Planner:
    def __init__(self, config: Config | None = None):
        self.cfg = config or Config()
        self.map = BlobMap()
        self.inflight: dict[tuple[str, str], float] = {}  # (target, blob) -> started
        self.dropping: dict[tuple[str, str], list] = {}  # (node, blob) -> [ordered, mtime, mark]
        self.retagging: set[str] = set()                  # blobs with a retag proposed
        self._ring: tuple[tuple, Ring] = ((), Ring(()))

    def ring(self, writable) -> Ring:
        """The ring over ``writable``, built once per distinct set of members."""
        key = tuple(sorted(writable))
        if key != self._ring[0]:
            self._ring = (key, Ring(key))
        return self._ring[1]

    # -- events --

    def copied(self, target: str, blob: str) -> None:
        self.inflight.pop((target, blob), None)

    def copy_failed(self, target: str, blob: str) -> None:
        self.inflight.pop((target, blob), None)

    def retagged(self, blob: str) -> None:
        self.retagging.discard(blob)

    # -- the plan --

    def plan(self, now: float, wall: float, alive: set, writable: list, referenced: dict,
             pending: set, held_since: float) -> list:
        """Actions for this moment; see the module docstring.

        ``alive``: member addresses that count; ``writable``: those that may get new copies
        (alive and not blacklisted); ``referenced``: blob -> URLs committed tags name;
        ``pending``: blobs named by tag writes not yet committed; ``held_since``: when this
        master took office (``now`` scale)."""
        cfg = self.cfg
        for key, started in list(self.inflight.items()):
            if now - started > cfg.copy_timeout_s or key[0] not in alive:
                del self.inflight[key]
        self._forget_drops(now)
        ring = self.ring(writable)
        out: list = []
        if not len(ring):
            return out
        urgent, rebalance = [], []
        for name, holders in self.map.copies.items():
            live = self._live(name, holders, alive)
            if not live:
                continue  # nothing to copy from; the tags keep naming what was
            refs = referenced.get(name)
            if not refs and name not in pending and all(
                    wall - c.mtime >= cfg.gc_delay_s for c in live.values()):
                continue  # garbage: collected below, not worth copying
            copying = sum(1 for n in writable if (n, name) in self.inflight)
            k = self.k_of(name, live, ring)
            want = ring.replicas(name, k)
            if len(live) + copying < k:
                if all(wall - c.mtime < cfg.fresh_s for c in live.values()):
                    continue  # just pushed: its other copies' reports may be on their way
                urgent.append((len(live), name, live, want, k))
            elif len(live) >= k and name not in self.retagging:
                self._retag(name, live, want, refs, k, out)
                if refs and copying == 0 and len(live) <= k and any(n not in live for n in want):
                    rebalance.append((name, live, want))
        busy = {}
        for target, _ in self.inflight:
            busy[target] = busy.get(target, 0) + 1
        urgent.sort(key=lambda x: (x[0], x[1]))
        for _, name, live, want, k in urgent:
            copying = {n for n in writable if (n, name) in self.inflight}
            needed = k - len(live) - len(copying)
            order = want + [n for n in ring.replicas(name, len(ring)) if n not in want]
            busy_want = [w for w in want if w not in live and w not in copying
                         and (w, name) not in self.dropping and busy.get(w, 0) >= cfg.per_node]
            if busy_want and len(live) > 1:
                # the ring's node is only busy: wait for it rather than copy elsewhere now and
                # move the copy to it later (twice the bytes); the last copy does not wait
                order = want
            for target in order:
                if needed <= 0 or len(self.inflight) >= cfg.max_inflight:
                    break
                if target in live or target in copying or busy.get(target, 0) >= cfg.per_node \
                        or (target, name) in self.dropping:
                    continue
                out.append(self._copy(now, target, name, live, want))
                busy[target] = busy.get(target, 0) + 1
                needed -= 1
            # a blob with fewer than k copies but all its tags' URLs dead: point tags at what lives
            refs = referenced.get(name)
            if refs and name not in self.retagging and not any(
                    _node_of(u) in live for u in refs):
                self._retag(name, live, want, refs, len(live), out)
        if not urgent:
            for name, live, want in sorted(rebalance, key=lambda x: x[0]):
                if len(self.inflight) >= cfg.max_inflight:
                    break
                target = next((n for n in want if n not in live
                               and busy.get(n, 0) < cfg.per_node), None)
                if target is not None:
                    out.append(self._copy(now, target, name, live, want))
                    busy[target] = busy.get(target, 0) + 1
        if now - held_since >= cfg.settle_s and alive <= self.map.full:
            out.extend(self._collect(now, wall, alive, referenced, pending, ring))
        return out

    def _forget_drops(self, now: float) -> None:
        """A dropped copy counts again once reported gone (or back with a new mtime), or once
        a full report that came after ``copy_timeout_s`` still holds it: then the order was
        lost. Time alone proves nothing: the node's report of the drop may be what was lost."""
        for key, entry in list(self.dropping.items()):
            ordered, mtime, mark = entry
            copy = self.map.copies.get(key[1], {}).get(key[0])
            fulls = self.map.fulls.get(key[0], 0)
            if copy is None or copy.mtime != mtime or (mark is not None and fulls > mark):
                del self.dropping[key]
            elif mark is None and now - ordered > self.cfg.copy_timeout_s:
                entry[2] = fulls  # from now on, the next full report decides

    def _live(self, name: str, holders: dict, alive: set) -> dict:
        """The copies that count: on alive members, and not ordered dropped (until the node
        reports it gone or the order times out, such a copy is no source, names no tag and
        keeps no other copy from going)."""
        return {n: c for n, c in holders.items()
                if n in alive and (n, name) not in self.dropping}

    def k_of(self, name: str, live, ring: Ring) -> int:
        """How many copies a blob is kept at: the number its push asked for (in its name,
        ``storage.tags.blob_replicas``), else ``k``; fewer if fewer alive nodes can hold it
        (the writable ones, and those that hold it already: a blacklisted node's copy counts,
        the blacklist only says where new copies may not go)."""
        want = blob_replicas(name) or self.cfg.k
        return min(want, len(ring) + sum(1 for n in live if n not in ring))

    def _copy(self, now: float, target: str, name: str, live: dict, want: list) -> Copy:
        self.inflight[(target, name)] = now
        order = sorted(live, key=lambda n: (want.index(n) if n in want else len(want), n))
        first = live[order[0]]
        return Copy(target, name, tuple(blob_url(n, live[n].path) for n in order), first.size,
                    first.checksum)

    def _retag(self, name: str, live: dict, want: list, refs, k: int, out: list) -> None:
        """Point the tags at ``k`` live copies, the ring's first; nothing if they already are."""
        if not refs:
            return
        keep = [n for n in want if n in live] + sorted(n for n in live if n not in want)
        urls = tuple(blob_url(n, live[n].path) for n in keep[:max(k, 1)])
        if set(urls) != set(refs):
            self.retagging.add(name)
            out.append(Retag(name, urls))

    def _collect(self, now: float, wall: float, alive: set, referenced: dict, pending: set,
                 ring: Ring) -> list:
        cfg, out = self.cfg, []
        for name, holders in self.map.copies.items():
            if name in pending or name in self.retagging:
                continue
            refs = referenced.get(name)
            named = {_node_of(u) for u in refs} if refs else set()
            live = self._live(name, holders, alive)
            if not refs and (any(wall - c.mtime < cfg.gc_delay_s for c in live.values())
                             or any(key[1] == name for key in self.inflight)):
                continue  # untagged garbage goes whole: not while repair may copy it back
            k = self.k_of(name, live, ring)
            for node, copy in list(live.items()):
                if node in named or (node, name) in self.inflight:
                    continue
                if wall - copy.mtime < cfg.gc_delay_s:
                    continue
                if refs:  # an extra copy: tags name k others, and they are there
                    if sum(1 for n in named if n in live) < k:
                        continue  # under k, or tags naming fewer: retag (or repair) first
                    out.append(Drop(node, name, "extra copy"))
                else:
                    out.append(Drop(node, name, "unreferenced"))
                self.dropping[(node, name)] = [now, copy.mtime, None]
                del live[node]
        return out

    def under_replicated(self, alive: set, k: int) -> int:
        return sum(1 for holders in self.map.copies.values()
                   if 0 < len([n for n in holders if n in alive]) < k)

    def under_k(self, alive: set, writable) -> int:
        """Blobs with a live copy but fewer than their own ``k_of`` (what ``plan`` repairs)."""
        ring = self.ring(writable)
        out = 0
        for name, holders in self.map.copies.items():
            live = self._live(name, holders, alive)
            out += 0 < len(live) < self.k_of(name, live, ring)
        return out

    def check_invariants(self) -> None:
        self.map.check_invariants()


def _node_of(url: str) -> str | None:
    if not url.startswith("disco://"):
        return None
    return url[len("disco://"):].split("/", 1)[0]


__all__ = ["BlobMap", "BlobCopy", "Config", "Copy", "Drop", "Planner", "Retag", "blob_url",
           "blob_of"]

"""The node core's part of DDFS (a part of ``mesh.node.Node``, pure like it).

On every node: the tag store (``storage.tags``) is applied from the committed journal; the
node keeps the list of blob copies its volumes hold (from the loop's ``Tick``) and reports it to
the master (a full list when the master or its term changes and every ``full_every_s``, deltas
in between); it carries out the master's ``CopyBlob`` (as ``StoreCopy``) and ``DropBlob`` (as
``DeleteBlob``), refusing those of an older term.

On the master: client requests (tag reads and writes, where a new blob goes, status); tag
writes become journal entries and are answered once committed (a retried write with the same
``op`` is answered with its first result); once a second the repair planner
(``storage.repair``) turns the reports, the ring and the tags into copies, retags and drops.
"""
from __future__ import annotations

import itertools

from mesh import message as m
from mesh.event import DeleteBlob, Fail, Reply, Send, StoreCopy
from mesh.request import PARKED, Refusal
from storage import repair as rp
from storage import tags as tg
from storage.ring import Ring

PLAN_EVERY_S = 1.0
REFUSALS_LOGGED_PER_S = 10  # more refused requests than this in a second are only counted
BLOB_PREFIX_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-@:.")


class DdfsCore:
    """Mixed into ``Node``; ``_init_ddfs`` is called from its constructor."""

    def _init_ddfs(self, tags: tg.TagStore) -> None:
        self.tags = tags
        self.blobs: dict[str, list] = {}      # this node's copies: name -> [name, size, sum, path, mtime]
        self._delta: tuple[list, list] = ([], [])
        self._reported: tuple | None = None   # (master address, term) of the last full report
        self._full_at = -1e9
        self.planner: rp.Planner | None = None  # on the leader only
        self.tag_pending: dict[str, tuple] = {}  # op -> (ident, rid, blobs it names)
        self._ops = itertools.count(1)
        self._next_plan = 0.0
        self._held_since = 0.0
        self._refusal_log = (-1e9, 0, 0)  # (window start, lines in it, lines left out)
        self.refused_requests = 0

    # -- every node: its own copies --

    def _ddfs_tick(self, ev) -> None:
        added, removed = self._delta
        for row in ev.blobs_added:
            self.blobs[row[0]] = list(row)
            added.append(list(row))
        for name in ev.blobs_removed:
            self.blobs.pop(name, None)
            removed.append(name)
        self._report_blobs()
        for blob, error in ev.copies_ended:
            done = m.CopyDone(term=self.raft.term, node=self.cfg.address, blob=blob, error=error)
            if self.planner is not None:
                self._copy_done(done, b"")
            elif self.master_address():
                self._out.append(Send(self.master_address(), done))
        if self.planner is not None and self._now >= self._next_plan and self.is_master:
            self._next_plan = self._now + PLAN_EVERY_S
            self._plan()

    def _report_blobs(self) -> None:
        master = self.master_address()
        if master is None:
            return
        key = (master, self.raft.term)
        full = key != self._reported or self._now - self._full_at >= self.cfg.ddfs.full_every_s
        added, removed = self._delta
        if not full and not added and not removed:
            return
        if full:
            self._reported, self._full_at = key, self._now
            msg = m.BlobReport(term=self.raft.term, node=self.cfg.address, full=True,
                               added=list(self.blobs.values()))
        else:
            msg = m.BlobReport(term=self.raft.term, node=self.cfg.address, full=False,
                               added=added, removed=removed)
        self._delta = ([], [])
        if self.planner is not None:
            self._blob_report(msg, b"")
        else:
            self._out.append(Send(master, msg))

    def _copy_blob(self, msg: m.CopyBlob, ident):
        if self._fresh(msg.term, msg.master, "copy_blob"):
            if msg.blob in self.blobs:  # already here: say so at once
                self._out.append(Send(msg.master, m.CopyDone(term=msg.term, node=self.cfg.address,
                                                             blob=msg.blob)))
            else:
                self._out.append(StoreCopy(msg.blob, msg.size, msg.checksum, tuple(msg.sources)))
        return PARKED

    def _drop_blob(self, msg: m.DropBlob, ident):
        if self._fresh(msg.term, msg.master, "drop_blob") and msg.blob in self.blobs:
            self._out.append(DeleteBlob(msg.blob))
        return PARKED

    # -- the leader: reports and the planner --

    def _ddfs_lead(self) -> None:
        self.planner = rp.Planner(self.cfg.ddfs)
        self._held_since = self._now
        self._reported = None  # report our own copies to ourselves in full

    def _ddfs_step_down(self, leader: str) -> None:
        for ident, rid, _ in self.tag_pending.values():
            if ident:
                self._out.append(Fail(ident, rid, "NotMaster", leader))
        self.tag_pending.clear()
        self.planner = None

    def _blob_report(self, msg: m.BlobReport, ident):
        bad = _bad_report(msg)
        if bad:
            raise self._refuse("protocol", f"blob report from {msg.node!r}: {bad}", msg)
        if self.planner is not None:
            self.planner.map.report(msg.node, msg.full, msg.added, msg.removed)
        return PARKED

    def _copy_done(self, msg: m.CopyDone, ident):
        if self.planner is not None:
            if msg.error:
                self.planner.copy_failed(msg.node, msg.blob)
                self._fact("blob_copy_failed", "warning", blob=msg.blob, on=msg.node,
                           error=msg.error)
            else:
                self.planner.copied(msg.node, msg.blob)
                self._fact("blob_copied", blob=msg.blob, on=msg.node)
        return PARKED

    def _writable(self) -> list[str]:
        black = self.table.scheduler.blacklist if self.table is not None else set()
        return sorted(x.address for x in self.members.alive()
                      if x.address not in black and x.name not in black)

    def _plan(self) -> None:
        alive = {x.address for x in self.members.alive()}
        pending = set()
        for _, _, blobs in self.tag_pending.values():
            pending |= blobs
        wall = self._now + self.cfg.wall_offset
        for action in self.planner.plan(self._now, wall, alive, self._writable(),
                                        self.tags.referenced(), pending, self._held_since):
            if isinstance(action, rp.Copy):
                self._fact("blob_repair", blob=action.blob, to=action.target,
                           sources=len(action.sources))
                msg = m.CopyBlob(term=self.raft.term, master=self.cfg.address, blob=action.blob,
                                 size=action.size, checksum=action.checksum,
                                 sources=list(action.sources))
                if action.target == self.cfg.address:
                    self._copy_blob(msg, b"")
                else:
                    self._out.append(Send(action.target, msg))
            elif isinstance(action, rp.Retag):
                self._entries.append({"type": "blob_moved", "blob": action.blob,
                                      "urls": list(action.urls)})
            elif isinstance(action, rp.Drop):
                self._fact("blob_collected", blob=action.blob, on=action.node, why=action.why)
                if action.node == self.cfg.address:
                    self._out.append(DeleteBlob(action.blob))
                else:
                    self._out.append(Send(action.node, m.DropBlob(
                        term=self.raft.term, master=self.cfg.address, blob=action.blob)))

    # -- client requests (the master only) --

    def _ddfs_master(self) -> None:
        if not self.is_master:
            raise Refusal("NotMaster", self.master_address() or "")

    def _refuse(self, code: str, text: str, msg) -> Refusal:
        """The refusal of a bad request, logged as ``ddfs_request_refused`` (at most
        ``REFUSALS_LOGGED_PER_S`` lines a second; the next line says how many were left out)."""
        self.refused_requests += 1
        start, logged, left_out = self._refusal_log
        if self._now - start >= 1.0:
            start, logged = self._now, 0
        if logged < REFUSALS_LOGGED_PER_S:
            self._fact("ddfs_request_refused", "warning", request=msg.TYPE, code=code,
                       error=text[:300], left_out=left_out or None, count=self.refused_requests)
            self._refusal_log = (start, logged + 1, 0)
        else:
            self._refusal_log = (start, logged, left_out + 1)
        return Refusal(code, text)

    def _tag_get(self, msg: m.TagGet, ident):
        self._ddfs_master()
        try:
            tg.check_name(msg.tag)
        except tg.TagError as exc:
            raise self._refuse("UsageError", str(exc), msg) from None
        try:
            tag = self.tags.read(msg.tag, msg.token)
        except tg.TagUnauthorized as exc:
            raise Refusal("Unauthorized", str(exc)) from None
        if tag is None:
            raise Refusal("DataNotFound", f"tag {msg.tag!r} does not exist")
        return tag

    def _tag_list(self, msg: m.TagList, ident):
        self._ddfs_master()
        return self.tags.names(msg.prefix)

    def _tag_write(self, msg: m.TagWrite, ident):
        self._ddfs_master()
        if msg.op and msg.op in self.tags.ops:
            return self.tags.ops[msg.op]  # a retry of a committed write
        if msg.op and msg.op in self.tag_pending:
            _, _, blobs = self.tag_pending[msg.op]
            self.tag_pending[msg.op] = (ident, msg.rid, blobs)
            return PARKED  # a retry while it is being committed
        try:
            entry = self.tags.check_write(msg.kind, msg.tag, msg.urls, msg.attr, msg.value,
                                          msg.token)
        except tg.TagUnauthorized as exc:
            raise Refusal("Unauthorized", str(exc)) from None
        except tg.TagNotFound as exc:
            raise Refusal("DataNotFound", str(exc)) from None
        except tg.TagError as exc:
            raise self._refuse("UsageError", str(exc), msg) from None
        op = msg.op or f"{self.cfg.name}/{self.raft.term}/{next(self._ops)}"
        entry.update(op=op, wall=self._now + self.cfg.wall_offset, update=bool(msg.update))
        blobs = {tg.set_key(s) for s in entry.get("urls", ()) if tg.blob_of(s[0])}
        self.tag_pending[op] = (ident, msg.rid, blobs)
        self._entries.append(entry)
        return PARKED

    def _blob_place(self, msg: m.BlobPlace, ident):
        self._ddfs_master()
        if not msg.prefix or len(msg.prefix) > 200 or set(msg.prefix) - BLOB_PREFIX_CHARS \
                or msg.prefix.startswith("."):
            raise self._refuse("UsageError", f"bad blob name {msg.prefix!r:.250}: 1 to 200 of "
                                             "A-Z a-z 0-9 _ - @ : ., not starting with .", msg)
        if msg.replicas < 0:
            raise self._refuse("UsageError", f"replicas must be 1 or more, not {msg.replicas}",
                               msg)
        exclude = set(msg.exclude)
        members = self._writable()
        writable = [a for a in members if a not in exclude]
        # k counts the members, not those left after the exclusions: a retry that excludes a
        # node that failed still writes k copies, or fails (SPEC §6: k replicas or an error)
        k = msg.replicas or min(self.cfg.ddfs.k, len(members))
        if not writable or k > len(writable):
            # never CommError: a client takes that for a lost master and looks for another
            left = f" ({len(exclude & set(members))} excluded)" if exclude & set(members) else ""
            raise Refusal("UsageError", f"{k or 1} replicas asked for, but {len(writable)} "
                                        f"nodes can take new blobs now{left}")
        wall_us = int((self._now + self.cfg.wall_offset) * 1e6)
        name = tg.blob_name(msg.prefix, wall_us, self.raft.term, next(self._ops), msg.replicas)
        ring = self.planner.ring(writable) if self.planner is not None else Ring(writable)
        return {"name": name, "nodes": ring.replicas(name, k), "replicas": k}

    def _ddfs_status(self, msg: m.DdfsStatus, ident):
        self._ddfs_master()
        p = self.planner
        alive = {x.address for x in self.members.alive()}
        k = min(self.cfg.ddfs.k, len(self._writable()))
        copies = p.map.copies
        return {"tags": len(self.tags.tags), "blobs": len(copies), "k": k,
                "copies": sum(len([n for n in h if n in alive]) for h in copies.values()),
                "bytes": sum(next(iter(h.values())).size for h in copies.values()),
                "under_replicated": p.under_k(alive, self._writable()),
                "repairs_in_flight": len(p.inflight), "retags_in_flight": len(p.retagging),
                "reported": sorted(p.map.full & alive), "alive": sorted(alive)}

    # -- committed entries --

    def _apply_tag_entry(self, wire: dict) -> None:
        result = self.tags.apply(wire)
        if wire.get("type") == "blob_moved" and self.planner is not None:
            self.planner.retagged(wire.get("blob", ""))
        pending = self.tag_pending.pop(wire.get("op") or "", None)
        if pending is not None and pending[0]:
            self._out.append(Reply(pending[0], pending[1], result))


def _bad_report(msg: m.BlobReport) -> str:
    """What is wrong with a ``BlobReport``'s rows, or "" (rows: name, size, checksum, path,
    mtime; removed: names)."""
    for row in msg.added:
        if not (isinstance(row, (list, tuple)) and len(row) == 5 and isinstance(row[0], str)
                and type(row[1]) is int and row[1] >= 0 and isinstance(row[2], str)
                and isinstance(row[3], str) and type(row[4]) in (int, float)):
            return f"bad row {row!r:.100}: expected [name, size, checksum, path, mtime]"
    if not all(isinstance(name, str) for name in msg.removed):
        return "removed must list blob names"
    return ""


DDFS_REQUESTS = {
    m.TagGet: DdfsCore._tag_get, m.TagList: DdfsCore._tag_list,
    m.TagWrite: DdfsCore._tag_write, m.BlobPlace: DdfsCore._blob_place,
    m.DdfsStatus: DdfsCore._ddfs_status, m.BlobReport: DdfsCore._blob_report,
    m.CopyBlob: DdfsCore._copy_blob, m.CopyDone: DdfsCore._copy_done,
    m.DropBlob: DdfsCore._drop_blob,
}

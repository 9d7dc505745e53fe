"""The node core's DDFS part (mesh/ddfs.py), scripted: events in, exact actions out.

A one-node cluster is master after its first ticks; its tag writes commit at the next flush.
"""
from __future__ import annotations

import pytest

from mesh import event as ev
from mesh import message as m
from mesh import raft as rf
from storage import repair as rp
from test_node_core import A, B, Script, kinds

BLOB = "disco://127.0.0.1:9000/vol0/blob/ab/x$1"


def master(**cfg) -> Script:
    s = Script(ddfs=rp.Config(settle_s=0.0, gc_delay_s=100.0, **cfg))
    s.until_master()
    return s


def write(s: Script, rid=1, **fields) -> list:
    fields.setdefault("kind", "add")
    fields.setdefault("tag", "t")
    out = s.step(ev.Request(b"c", m.TagWrite(rid=rid, **fields)))
    return out + s.step(ev.Flush())


def replies(out, rid) -> list:
    return [a.body for a in kinds(out, ev.Reply) if a.rid == rid]


def fails(out, rid) -> list:
    return [(a.code, a.msg) for a in kinds(out, ev.Fail) if a.rid == rid]


def test_a_tag_write_is_answered_only_once_committed_and_read_back():
    s = master()
    out = s.step(ev.Request(b"c", m.TagWrite(rid=1, kind="add", tag="t", urls=[[BLOB]])))
    assert replies(out, 1) == []
    assert [e["type"] for e in s.node._entries] == ["tag_add"]
    out = s.step(ev.Flush())  # one voter: committed and applied at this flush
    assert replies(out, 1) == [{"tag": "t", "version": 1}]
    out = s.step(ev.Request(b"c", m.TagGet(rid=2, tag="t")))
    (tag,) = replies(out, 2)
    assert tag["urls"] == [[BLOB]] and tag["version"] == 1
    assert s.node.tags.get("t").urls == [[BLOB]]


def test_a_retried_write_is_applied_once():
    s = master()
    first = replies(write(s, rid=1, urls=[[BLOB]], op="c/1"), 1)
    again = replies(write(s, rid=2, urls=[[BLOB]], op="c/1"), 2)
    assert first == again == [{"tag": "t", "version": 1}]
    assert s.node.tags.get("t").urls == [[BLOB]]


def test_bad_writes_and_missing_tags_are_refused_with_codes():
    s = master()
    assert fails(write(s, rid=1, tag="bad name"), 1)[0][0] == "UsageError"
    assert fails(write(s, rid=2, kind="delete", tag="none"), 2) == []  # Disco: succeeds
    out = s.step(ev.Request(b"c", m.TagGet(rid=3, tag="none")))
    assert fails(out, 3) == [("DataNotFound", "tag 'none' does not exist")]
    assert s.node._entries == []


def test_tag_requests_reach_only_the_master():
    s = Script(founder=False)
    out = s.step(ev.Request(b"c", m.TagList(rid=1)))
    assert fails(out, 1) == [("NotMaster", "")]


def test_parked_writes_fail_not_master_when_the_master_steps_down():
    s = master()
    s.step(ev.Request(b"c", m.TagWrite(rid=1, kind="add", tag="t")))  # parked, not flushed
    term = s.node.raft.term
    out = s.step(ev.Request(b"b", m.Raft(kind="append", sender="b", body={
        "term": term + 1, "prev_index": 0, "prev_term": 0, "entries": [], "commit": 0})))
    assert not s.node.is_master and s.node.planner is None
    assert [code for code, _ in fails(out, 1)] == ["NotMaster"]
    assert s.node.tag_pending == {}


def test_blob_place_names_k_ring_nodes_and_refuses_too_many():
    s = master(k=3)
    out = s.step(ev.Request(b"c", m.BlobPlace(rid=1, prefix="a.txt")))
    (place,) = replies(out, 1)
    assert place["nodes"] == [A] and place["replicas"] == 1  # one node: k = 1
    assert place["name"].startswith("a.txt$")
    out = s.step(ev.Request(b"c", m.BlobPlace(rid=2, prefix="a.txt", replicas=2)))
    assert fails(out, 2)[0][0] == "UsageError"
    out = s.step(ev.Request(b"c", m.BlobPlace(rid=3, prefix="bad/name")))
    assert fails(out, 3)[0][0] == "UsageError"


def test_own_copies_are_reported_to_the_planner_and_garbage_is_dropped_after_the_delay():
    s = master()
    row = ["x$1", 3, "ab", "vol0/blob/ab/x$1", 0.0]
    s.step(ev.Tick(blobs_added=(row,)), 0.1)
    assert set(s.node.planner.map.copies) == {"x$1"}
    # wall time is now + wall_offset (0): the copy is younger than the 100 s delay
    out = []
    for _ in range(15):
        out += s.step(ev.Tick(), 0.1)
    assert kinds(out, ev.DeleteBlob) == []
    out = s.step(ev.Tick(), 100.0)
    assert kinds(out, ev.DeleteBlob) == [ev.DeleteBlob("x$1")]


def test_a_tagged_copy_is_never_dropped():
    s = master()
    s.step(ev.Tick(blobs_added=(["x$1", 3, "ab", "vol0/blob/ab/x$1", 0.0],)), 0.1)
    write(s, urls=[[BLOB]])
    out = s.step(ev.Tick(), 1000.0) + s.step(ev.Tick(), 1.1)
    assert kinds(out, ev.DeleteBlob) == []


def test_copy_and_drop_orders_of_an_older_term_are_refused():
    s = master()
    term = s.node.raft.term
    out = s.step(ev.Request(b"m", m.CopyBlob(term=term - 1, master=B, blob="y$1", size=1,
                                             checksum="c", sources=["disco://b/vol0/x"])))
    assert kinds(out, ev.StoreCopy) == []
    out = s.step(ev.Request(b"m", m.CopyBlob(term=term, master=B, blob="y$1", size=1,
                                             checksum="c", sources=["disco://b/vol0/x"])))
    assert kinds(out, ev.StoreCopy) == [ev.StoreCopy("y$1", 1, "c", ("disco://b/vol0/x",))]
    out = s.step(ev.Request(b"m", m.DropBlob(term=term - 1, master=B, blob="y$1")))
    assert kinds(out, ev.DeleteBlob) == []


def test_tags_survive_in_the_snapshot_and_a_restart():
    s = Script(compact_every=3)
    s.until_master()
    for i in range(5):
        write(s, rid=i, tag=f"t{i}", urls=[[f"http://x/{i}"]])
    assert any(p.snapshot is not None for p in s.persisted)
    again = Script(state=s.state())
    snap = again.node.raft.snapshot_index
    assert snap > 0 and len(again.node.tags.names()) < 5  # the snapshot's tags, at once
    again.until_master()  # the log after the snapshot is applied again
    assert again.node.tags.names() == [f"t{i}" for i in range(5)]
    assert again.node.tags.get("t4").urls == [["http://x/4"]]


@pytest.mark.parametrize("entry", [{"type": "tag_add", "tag": "t", "urls": [["http://x"]]}])
def test_tag_entries_are_applied_on_followers_too(entry):
    s = Script(founder=False)
    s.node._apply({**entry, "op": "", "wall": 1.0})
    assert s.node.tags.get("t").urls == [["http://x"]]
    assert isinstance(s.node.raft, rf.Raft)


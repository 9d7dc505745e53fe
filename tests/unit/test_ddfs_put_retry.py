"""``DDFS.put_blob``'s retries (disco/ddfs.py): what a failed attempt leaves decides the next.

The master's placement and the data transfer are stood in for here (``_place`` and
``mesh.transfer.push_blob``), so the client's decisions can be scripted; the cluster tests in
tests/cluster/test_ddfs.py run the same path against real nodes."""
from __future__ import annotations

import mesh.transfer
from disco.ddfs import DDFS


class Script:
    def __init__(self, placements, pushes):
        self.placements, self.pushes = list(placements), list(pushes)
        self.pushed: list = []

    def place(self, name, replicas, exclude, wait):
        nodes = [n for n in self.placements.pop(0) if n not in exclude]
        return {"name": f"{name}$stamp-{len(self.pushed) + 1}", "nodes": nodes}

    def push(self, fileobj, name, size, nodes, progress=None, all_or_none=False):
        self.pushed.append((name, list(nodes), fileobj.read()))
        stored, failed = self.pushes.pop(0)
        return stored, failed, ""


def ddfs_with(monkeypatch, script) -> DDFS:
    ddfs = DDFS.__new__(DDFS)  # no master to reach: placement is scripted
    monkeypatch.setattr(ddfs, "_place", script.place)
    monkeypatch.setattr(mesh.transfer, "push_blob", script.push)
    return ddfs


def test_copies_committed_before_a_node_died_are_the_replica_set_when_enough(monkeypatch, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"data")
    script = Script(placements=[["a", "b", "c"], ["a", "b"]], pushes=[
        ({"a": "vol0/blob/x/f$stamp-1", "b": "vol0/blob/y/f$stamp-1"},
         {"c": "connection dropped"})])
    urls = ddfs_with(monkeypatch, script).put_blob(src, name="f")
    assert urls == ["disco://a/vol0/blob/x/f$stamp-1", "disco://b/vol0/blob/y/f$stamp-1"]
    assert len(script.pushed) == 1  # nothing written again


def test_too_few_committed_copies_are_written_again_whole(monkeypatch, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"data")
    script = Script(placements=[["a", "b", "c"], ["a", "d"]], pushes=[
        ({"a": "vol0/blob/x/f$stamp-1"}, {"b": "no answer within 30 s", "c": "refused"}),
        ({"a": "p1", "d": "p2"}, {})])
    urls = ddfs_with(monkeypatch, script).put_blob(src, name="f")
    assert urls == ["disco://a/p1", "disco://d/p2"]
    assert [p[1] for p in script.pushed] == [["a", "b", "c"], ["a", "d"]]
    assert script.pushed[1][2] == b"data"  # the source read again from its start

"""Each task of a worker gets its own copy of the job's initial params (as in Disco)."""
from __future__ import annotations

from disco.worker import task as task_mod
from disco.worker.classic.worker import Params
from shuffle.recordfile import read_file


def test_map_init_changes_never_reach_the_next_task(tmp_path):
    seen = []

    def map_init(entries, params):
        params.calls.append("init")

    def fmap(line, params):
        seen.append(list(params.calls))
        params.calls.append(line)
        yield line, len(params.calls)

    fn = {"map": fmap, "map_init": map_init, "params": Params(calls=[])}
    ctx = task_mod.JobContext("J@1", {"partitions": 1, "has_map": True, "has_reduce": False},
                              fn, "n", "127.0.0.1:1", tmp_path)
    for i in range(3):
        outputs, _ = task_mod.run_task(ctx, {"id": f"J@1:map:{i}", "job": "J@1", "stage": "map",
                                             "index": i, "inputs": [f"raw://line{i}"]})
        path = tmp_path / outputs[0]["url"].split("/", 3)[3]
        assert list(read_file(path)) == [(f"line{i}", 2)]
    assert seen == [["init"], ["init"], ["init"]]  # a fresh copy every time
    assert ctx.initial["params"].calls == []  # the job's own is never handed out

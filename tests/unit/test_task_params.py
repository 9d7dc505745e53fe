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


def test_map_output_must_be_pairs_as_in_disco(tmp_path):
    import pytest

    def run(fmap):
        ctx = task_mod.JobContext("J@2", {"partitions": 1, "has_map": True}, {"map": fmap},
                                  "n", "127.0.0.1:1", tmp_path)
        outputs, _ = task_mod.run_task(ctx, {"id": "J@2:map:0", "job": "J@2", "stage": "map",
                                             "index": 0, "inputs": ["raw://a b"]})
        return list(read_file(tmp_path / outputs[0]["url"].split("/", 3)[3]))

    assert run(lambda line, params: [[w, 1] for w in line.split()]) == [("a", 1), ("b", 1)]
    with pytest.raises(task_mod.MapOutputError, match=r"task J@2:map:0: .*\('a', 1, 2\)") as e:
        run(lambda line, params: [("a", 1, 2)])
    assert e.value.retryable is False
    with pytest.raises(task_mod.MapOutputError, match="yielded 'word'"):
        run(lambda line, params: ["word"])

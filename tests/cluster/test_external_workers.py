"""Workers that are not the classic Python worker, against a real node daemon: a C program
and a Python script speaking Disco's worker protocol (from Disco job packs), and classic
external map/reduce programs (disco.worker.classic.external)."""
from __future__ import annotations

import collections
import importlib.util
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import wait_for
from disco import discopack
from disco.core import Disco, Job, result_iterator
from disco.error import JobError
from disco.worker import task_io
from disco.worker.classic import external

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc or gcc) on this machine")
TEXT = "the quick brown fox\njumps over the lazy dog\nthe end\n"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(
        f"worker_c_{name}", ROOT / "examples" / "worker_c" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_pack(node, pack: discopack.JobPack, timeout: float = 60) -> tuple[Disco, str, list]:
    blob, prefix = discopack.to_internal(pack.dumps())
    disco = Disco(node.address)
    job = disco.submit(blob, prefix)
    return disco, job, disco.wait(job, timeout=timeout)


def lines_of(url: str) -> list:
    return list(result_iterator([url], reader=task_io.default_map_reader))


def python_pack(script: str, inputs, pipeline=(("map", "split"),), prefix="pyworker",
                jobenvs=None) -> discopack.JobPack:
    home = io.BytesIO()
    with zipfile.ZipFile(home, "w") as z:
        z.writestr("worker.py", script)
        z.writestr("data/suffix.txt", "!")
    jobdict = {"pipeline": [list(s) for s in pipeline], "worker": "worker.py",
               "prefix": prefix, "owner": "tests", "inputs": inputs}
    return discopack.JobPack(2, jobdict, jobenvs or {}, home.getvalue(), b"the job data")


# -- the C worker --

@needs_cc
def test_c_worker_counts_words_of_file_raw_and_earlier_outputs(node, tmp_path):
    build, submit = load_example("build"), load_example("submit")
    binary = build.build(tmp_path)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT)
    b.write_text("fox fox dog\n" * 3)
    blob = submit.jobpack(binary, [f"file://{a}", f"file://{b}", "raw://zebra zebra the"])
    disco = Disco(node.address)
    job = submit.submit(node.address, blob)
    results = disco.wait(job, timeout=60)
    assert len(results) == 3 and all(u.startswith(f"disco://{node.address}/vol0/") for u in results)
    got = [dict((w, int(c)) for w, c in (line.split() for line in lines_of(u))) for u in results]
    expect = [collections.Counter(t.split()) for t in (TEXT, "fox fox dog\n" * 3, "zebra zebra the")]
    assert sorted(map(sorted, (g.items() for g in got))) == \
        sorted(map(sorted, (dict(e).items() for e in expect)))
    messages = [e["msg"] for e in disco.event_records(job) if e["type"] == "task_message"]
    assert "counted 9 distinct words in 1 inputs" in messages

    # its outputs are inputs of the next job (a disco:// URL of this node, read from disk)
    again = submit.submit(node.address, submit.jobpack(binary, results[:1]))
    [again_url] = disco.wait(again, timeout=60)
    first = " ".join(lines_of(results[0]))
    assert dict(line.split() for line in lines_of(again_url)) == {
        w: str(c) for w, c in collections.Counter(first.split()).items()}


# -- a Python worker with disco.worker.protocol_worker --

UPPER = '''
import os
from disco.worker.protocol_worker import Worker

def main(w):
    task = w.task()
    w.msg("stage %s task %s of %s" % (task["stage"], task["taskid"], task["jobname"]))
    suffix = open("data/suffix.txt").read()
    jobdata = open(task["jobfile"], "rb").read()[-12:].decode()
    for n, inp in enumerate(w.inputs()):
        path = os.path.join(task["taskdir"], "out-%d.txt" % n)
        with open(path, "w") as f:
            f.write(open(inp.paths()[0]).read().upper() + suffix + " " + jobdata + " "
                    + os.environ.get("GREETING", "-"))
        w.output(inp.label + 1, path)

Worker().serve(main)
'''


def test_python_protocol_worker_runs_end_to_end(node):
    pack = python_pack(UPPER, [[0, 0, ["raw://hello"]], [4, 0, ["raw://second", "raw://copy"]]],
                       jobenvs={"GREETING": "hi"})
    disco, job, results = run_pack(node, pack)
    texts = sorted(lines_of(u)[0] for u in results)
    assert texts == ["HELLO! the job data hi", "SECOND! the job data hi"]
    done = [e for e in disco.event_records(job) if e["type"] == "task_message"]
    assert any(e["msg"].startswith("stage map task 0 of " + job) for e in done)


def failing(body: str) -> str:
    return "import sys, os\nfrom disco.worker.protocol_worker import Worker\n" + body


@pytest.mark.parametrize("script, words, trace", [
    (failing('Worker().serve(lambda w: w.fatal("no way"))\n'),
     "the worker program reported: no way", None),
    (failing('sys.stderr.write("this is not a frame\\n"); sys.stderr.flush(); sys.stdin.read()\n'),
     "broke the protocol: bad frame", None),
    (failing('w = Worker(); w.hello(); w.send("HELLO", "x"); w.recv()\n'),
     "unknown message HELLO", None),
    (failing('w = Worker(); w.send("TASK"); w.recv()\n'), "sent TASK before WORKER", None),
    (failing('w = Worker(); w.send("WORKER", {"version": "0.9", "pid": 1}); w.recv()\n'),
     "protocol version '0.9' is not supported", None),
    (failing('w = Worker(); w.hello(); w.output(0, "/etc/passwd", 1)\n'),
     "not a file in the job home", None),
])
def test_protocol_breaches_fail_the_job_with_a_clear_error(node, script, words, trace):
    pack = python_pack(script, [[0, 0, ["raw://x"]]])
    with pytest.raises(JobError) as err:
        run_pack(node, pack)
    assert words in str(err.value), str(err.value)
    assert node.alive()


def test_program_exiting_without_done_fails_with_its_stray_output(node_factory):
    node = node_factory(DISCO_MAX_FAILURES=2)
    script = failing('w = Worker(); w.hello(); print("stray words on stdout"); '
                     'sys.stdout.flush(); sys.exit(3)\n')
    with pytest.raises(JobError) as err:
        run_pack(node, python_pack(script, [[0, 0, ["raw://x"]]]))
    assert "exited with code 3 before sending DONE" in str(err.value)
    assert "stray words on stdout" in err.value.traceback


def test_error_is_retried_and_a_later_attempt_can_succeed(node, tmp_path):
    marker = tmp_path / "failed-once"
    script = failing(f'''
def main(w):
    if not os.path.exists({str(marker)!r}):
        open({str(marker)!r}, "w").close()
        raise OSError("transient trouble")
    path = os.path.join(w.task()["taskdir"], "ok.txt")
    open(path, "w").write("fine")
    w.output(0, path)
Worker().serve(main)
''')
    disco, job, results = run_pack(node, python_pack(script, [[0, 0, ["raw://x"]]]))
    assert [lines_of(u) for u in results] == [["fine"]]
    failed = [e for e in disco.event_records(job) if e["type"] == "task_failed"]
    assert len(failed) == 1 and "transient trouble" in failed[0]["msg"]


def test_a_classic_job_still_runs_after_protocol_jobs(node):
    with pytest.raises(JobError):
        run_pack(node, python_pack(failing("sys.exit(0)\n"), [[0, 0, ["raw://x"]]]))
    job = Job(master=node.address).run(input=["raw://a b a"], map=lambda e, p: [(w, 1) for w in e.split()])
    assert sorted(result_iterator(job.wait(timeout=60))) == [("a", 1), ("a", 1), ("b", 1)]


# -- classic external map and reduce --

EXT_PARAMS = {"test1": "1,2,3", "one two three": "dim\ndam\n", "dummy": "value"}


@pytest.fixture
def ext_program(tmp_path) -> str:
    if CC is None:
        pytest.skip("no C compiler (cc or gcc) on this machine")
    out = tmp_path / "external_test"
    subprocess.run([CC, "-std=c11", "-O2", "-Wall", "-o", str(out),
                    str(ROOT / "tests" / "external_test.c")], check=True, capture_output=True)
    return str(out)


def red_reduce(iter, params):
    for k, v in iter:
        yield "red_" + k, "red_" + v


def test_external_map_with_a_python_reduce(node, ext_program):
    inputs = ["raw://test_ape", "raw://test_cat", "raw://test_dog"]
    job = Job(master=node.address).run(input=inputs, reduce=red_reduce,
                                       map=external.package([ext_program], EXT_PARAMS))
    results = sorted(result_iterator(job.wait(timeout=60)))
    assert results == sorted([("red_dkey", f"red_test_{x}") for x in ("ape", "cat", "dog")] * 3)
    messages = [e["msg"] for e in job.event_records() if e["type"] == "task_message"]
    assert "All parameters ok!" in messages


def test_external_reduce_with_a_python_map(node, ext_program):
    inputs = ["raw://test_ape", "raw://test_cat", "raw://test_dog"]
    job = Job(master=node.address).run(input=inputs, map=lambda e, params: [("", e)],
                                       reduce=external.package([ext_program], EXT_PARAMS))
    total = str(sum(map(ord, "test_apetest_cattest_dog")))
    assert list(result_iterator(job.wait(timeout=60))) == [(total, total)] * 10


def test_external_error_fails_the_job_with_its_message(node, ext_program):
    job = Job(master=node.address).run(input=["raw://x"], map=external.package(
        [ext_program], {**EXT_PARAMS, "dummy": "other"}))
    with pytest.raises(JobError) as err:
        job.wait(timeout=60)
    assert "parameter has a wrong value: dummy" in str(err.value)



def test_killing_the_job_kills_the_worker_program(node, tmp_path):
    pidfile = tmp_path / "pid"
    script = failing(f"""
w = Worker(); w.hello()
open({str(pidfile)!r} + ".tmp", "w").write(str(os.getpid()))
os.rename({str(pidfile)!r} + ".tmp", {str(pidfile)!r})
import time
time.sleep(600)
""")
    blob, prefix = discopack.to_internal(python_pack(script, [[0, 0, ["raw://x"]]]).dumps())
    disco = Disco(node.address)
    job = disco.submit(blob, prefix)
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 30, "the program"))
    disco.kill(job)

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"
    wait_for(gone, 15, f"worker program {pid} to die with its killed task")

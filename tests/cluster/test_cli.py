"""The ``disco`` job commands and scripts run as users run them (SPEC §3, §5, §11)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, child_env, run_cli
from disco.client import answers

pytestmark = pytest.mark.cluster
EXAMPLES = ROOT / "examples"

JOBMOD = '''
from disco.core import Job
from disco.util import kvgroup
from helpers import split_words   # a module next to the job's module


class WordCount(Job):
    partitions = 2

    @staticmethod
    def map(line, params):
        for word in split_words(line):
            yield word, 1

    @staticmethod
    def reduce(iter, params):
        for word, counts in kvgroup(sorted(iter)):
            yield word, sum(counts)


class Broken(Job):
    @staticmethod
    def map(line, params):
        raise KeyError("no such thing")
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBMOD)
    (tmp_path / "helpers.py").write_text("def split_words(line):\n    return line.split()\n")
    (tmp_path / "in.txt").write_text("a b b c c c\n" + " ".join(f"w{i}" for i in range(50)) + "\n")
    return tmp_path


def test_run_wait_results_events_history_and_purge(node, project):
    env = child_env(DISCO_MASTER=node.address)
    cli = lambda *a, **kw: run_cli(*a, env=env, cwd=project, **kw)  # noqa: E731
    name = cli("run", "jobs.WordCount", "in.txt").stdout.strip()
    assert name.startswith("WordCount@")
    urls = cli("wait", "@").stdout.split()
    assert len(urls) == 2 and all(u.startswith(f"disco://{node.address}/") for u in urls)
    assert cli("results", "@?WordCount").stdout.split() == urls

    events = [json.loads(line) for line in cli("events", name, "--json").stdout.splitlines()]
    assert all({"time", "job", "type", "msg"} <= set(e) for e in events)
    starts = [e for e in events if e["type"] == "task_started"]
    assert len(starts) == 3 and all(e["node"] == node.address for e in starts)
    assert {e["stage"] for e in starts} == {"map", "reduce"}

    listed = cli("jobs").stdout
    assert name in listed and "finished" in listed
    assert json.loads(cli("jobdict", "@").stdout)["partitions"] == 2
    info = json.loads(cli("nodeinfo", "--json").stdout)
    assert info["nodes"][0]["name"] == node.address
    assert node.address in cli("nodeinfo").stdout

    broken = cli("run", "jobs.Broken", "raw://x").stdout.strip()
    assert cli("wait", "@?WordCount").stdout.split() == urls  # @?TEXT skips the newer job
    failed = cli("wait", broken, check=False)
    assert failed.returncode == 2 and "no such thing" in failed.stderr
    assert "Traceback" in failed.stderr  # the user's, to find their bug
    run_failed = cli("run", "--wait", "jobs.Broken", "raw://x", check=False)
    assert run_failed.returncode == 2 and run_failed.stdout.startswith("Broken@")
    assert "no such thing" in run_failed.stderr and "Traceback" in run_failed.stderr

    cli("purge", name)
    gone = cli("results", name, check=False)
    assert gone.returncode == 1
    assert gone.stderr.startswith("disco: error:") and "Traceback" not in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_job_commands_give_one_line_errors(node, tmp_path):
    env = child_env(DISCO_MASTER=node.address)
    for args in (("wait", "NoSuch@1"), ("events", "@?nothing-matches"), ("kill", "x@y"),
                 ("run", "nomodule.Job", "raw://x"), ("blacklist",)):
        proc = run_cli(*args, env=env, cwd=tmp_path, check=False)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, args
    dead = run_cli("jobs", env=child_env(DISCO_MASTER="127.0.0.1:1"), check=False, timeout=90)
    assert dead.returncode == 1 and "no answer" in dead.stderr


def test_blacklist_and_whitelist_commands(node):
    env = child_env(DISCO_MASTER=node.address)
    run_cli("blacklist", node.address, env=env)
    info = json.loads(run_cli("nodeinfo", "--json", env=env).stdout)
    assert info["nodes"][0]["blacklisted"] is True
    run_cli("whitelist", node.address, env=env)
    info = json.loads(run_cli("nodeinfo", "--json", env=env).stdout)
    assert info["nodes"][0]["blacklisted"] is False


SCRIPT = '''
import sys
from disco.core import Job, result_iterator
from helpers import split_words


def map(line, params):
    for word in split_words(line):
        yield word, 1


def reduce(iter, params):
    from disco.util import kvgroup
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)


job = Job().run(input=[sys.argv[1]], map=map, reduce=reduce)
for word, count in sorted(result_iterator(job.wait(show=True))):
    print(word, count)
'''


@pytest.mark.parametrize("master", ["node", "local:2", None])
def test_script_with_main_functions_and_a_module_next_to_it(node, project, master):
    (project / "script.py").write_text(textwrap.dedent(SCRIPT))
    env = child_env()
    if master is not None:
        env["DISCO_MASTER"] = node.address if master == "node" else master
    elif answers("127.0.0.1:8989"):
        pytest.skip("a node already answers on the default address 127.0.0.1:8989")
    proc = subprocess.run([sys.executable, "script.py", "in.txt"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["a 1", "b 2", "c 3"] and "w49 1" in proc.stdout
    assert "reduce 1/1 done" in proc.stderr  # show=True printed progress
    if master is None:
        assert proc.stderr.count("started an embedded cluster") == 1


def test_rough_edges_a_new_user_met(node, tmp_path):
    env = child_env(DISCO_MASTER=node.address)
    # blacklisting a node that does not exist is refused, naming the members
    proc = run_cli("blacklist", "10.9.9.9:1", env=env, check=False)
    assert proc.returncode == 1 and "no member named '10.9.9.9:1'" in proc.stderr
    # `disco status` asks the node DISCO_MASTER names, and says what its disk columns are
    out = run_cli("status", env=env)
    assert node.address in out.stdout and "FS USED" in out.stdout and "DDFS DATA" in out.stdout
    # each `disco events` line says its text once
    run_cli("run", "--wait", "jobmod.WordCount", "raw://a b a", env=env, cwd=_jobdir(tmp_path))
    lines = run_cli("events", "@", env=env).stdout.splitlines()
    started = [x for x in lines if " task_started " in x]
    assert started and all(x.count(":map:0") + x.count(":reduce:") <= 1 for x in started)
    # starting a node on a port another node holds fails, with one clean line
    proc = run_cli("start", "--port", node.port, "--data", tmp_path / "other", "--workers", "1",
                   check=False, timeout=60)
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.count("disco: error:") == 1 and "started" not in proc.stdout


def _jobdir(tmp_path):
    d = tmp_path / "jobs"
    d.mkdir(exist_ok=True)
    (d / "jobmod.py").write_text(JOBMOD)
    (d / "helpers.py").write_text("def split_words(line):\n    return line.split()\n")
    return d


CTRL_C = '''
import sys
import disco.core
from disco.core import Job

def slow(line, params):
    import time
    time.sleep(60)
    yield line, 1


# The name is printed from inside wait(), so the test's Ctrl-C cannot land between run() and
# wait() (where Python's own Ctrl-C handling, exit -2 and a traceback, is right).
long_poll = disco.core.Disco._long_poll


def announced(self, jobname, deadline):
    print(jobname, flush=True)
    return long_poll(self, jobname, deadline)


disco.core.Disco._long_poll = announced
job = Job().run(input=["raw://x"], map=slow, kill_on_exit=sys.argv[1] == "kill")
job.wait()
'''


@pytest.mark.parametrize("mode", ["keep", "kill"])
def test_ctrl_c_in_wait_is_one_line_and_exit_130(node, tmp_path, mode):
    import signal
    from disco.core import Disco
    script = tmp_path / "ctrlc.py"
    script.write_text(CTRL_C)
    # Ctrl-C as on a terminal: a runner started in the background of a shell (`.ci/run &`)
    # passes SIGINT on ignored, and Python then leaves it ignored
    proc = subprocess.Popen([sys.executable, str(script), mode], cwd=tmp_path, text=True,
                            env=child_env(DISCO_MASTER=node.address), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        job = proc.stdout.readline().strip()
        assert "@" in job, proc.stderr.read()
        disco = Disco(node.address)
        from conftest import wait_for
        wait_for(lambda: any(e["type"] == "task_started" for e in disco.event_records(job)),
                 what="the task to start")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # the test failed before the script ended: stop it
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if mode == "keep":
        assert "still running" in err and f"disco kill {job}" in err
        assert disco.status(job)["status"] == "active"
        disco.kill(job)
    else:
        assert "was killed" in err
        wait_for(lambda: disco.status(job)["status"] == "killed", what="the job killed")


def test_what_a_newcomer_met_on_a_node_on_another_port(node, tmp_path):
    """``localhost:PORT`` is that node (not an embedded ``local`` cluster), ``ddfs`` never
    starts a cluster of its own, ``disco logs --port P --job @`` asks node P, and the example
    job class of ``disco run --help`` exists."""
    host_env = child_env(DISCO_MASTER=f"localhost:{node.port}")
    run_cli("run", "--wait", "jobmod.WordCount", "raw://a b a", env=host_env,
            cwd=_jobdir(tmp_path))
    jobs = json.loads(run_cli("jobs", "--json", env=host_env).stdout.splitlines()[0])
    assert jobs["job"].startswith("WordCount")
    run_cli("push", "data:seen", __file__, env=host_env, tool="ddfs")
    assert run_cli("ls", env=child_env(DISCO_MASTER=node.address), tool="ddfs").stdout.split() \
        == ["data:seen"]
    for env in (child_env(DISCO_MASTER="local"),
                child_env(DISCO_MASTER="", DISCO_PORT="1")):
        proc = run_cli("push", "data:lost", __file__, env=env, tool="ddfs", check=False,
                       timeout=90)
        assert proc.returncode == 1 and "embedded" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("ddfs: error:"), proc.stderr
    logs = run_cli("logs", "--port", node.port, "--job", "@", "--json", "-n", "5000",
                   env=child_env(DISCO_MASTER=""))
    assert {json.loads(x)["job"] for x in logs.stdout.splitlines()} == {jobs["job"]}
    example = run_cli("run", "--wait", "wordcount.WordCount", "raw://b a b",
                      env=child_env(DISCO_MASTER=node.address), cwd=EXAMPLES)
    assert example.stdout.strip().splitlines()[1].startswith("disco://")
    missing = run_cli("run", "wordcount.NoSuch", "raw://x", env=host_env, cwd=EXAMPLES,
                      check=False)
    assert "has no 'NoSuch'" in missing.stderr

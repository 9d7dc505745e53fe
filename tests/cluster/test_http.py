"""The HTTP port (P+2) of real daemons: the status page, /api/, /metrics and the token rule."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, child_env, run_cli, wait_for
from disco.core import Job
from mesh import message as m
from mesh.client import Connection
from mesh.httpserver import token_for

pytestmark = pytest.mark.cluster


def slow_map(line, params):
    time.sleep(0.4)
    yield line.strip(), 1


def get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                 headers={"X-Disco-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http_of(node) -> str:
    return f"http://127.0.0.1:{node.port + 2}"




def trio(node_factory, **env):
    first = node_factory(workers=2, **env)
    nodes = [first] + [node_factory(workers=2, args=("--join", first.address), **env)
                       for _ in range(2)]
    names = {n.address for n in nodes}
    wait_for(lambda: {x["name"] for x in Connection(first.address, 5).request(m.GetStatus)[
        "members"] if x["state"] == "alive"} == names, what="all three alive")
    for n in nodes:
        wait_for(lambda n=n: json.loads(get(http_of(n) + "/api/cluster")[1])["ddfs"],
                 what=f"{n.address} to know a master that answers")
    return nodes


def test_pages_api_and_metrics_of_a_three_node_cluster(node_factory):
    nodes = trio(node_factory)
    code, page = get(http_of(nodes[1]) + "/")
    assert code == 200 and "<html" in page
    assert all(n.address in page for n in nodes) and "master" in page
    code, body = get(http_of(nodes[2]) + "/api/cluster")
    data = json.loads(body)
    assert {x["address"] for x in data["status"]["members"]} == {n.address for n in nodes}
    assert data["ddfs"]["k"] == 3
    job = Job(master=nodes[0].address).run(input=[f"raw://w{i}" for i in range(8)],
                                            map=slow_map)
    wait_for(lambda: "running" in get(http_of(nodes[1]) + f"/job/{job.name}")[1]
             or "done" in get(http_of(nodes[1]) + f"/job/{job.name}")[1], what="job page")
    job.wait()
    code, body = get(http_of(nodes[1]) + f"/api/job/{job.name}")
    status = json.loads(body)
    assert code == 200 and status["status"] == "finished"
    assert status["counts"]["map"]["done"] == 8
    code, page = get(http_of(nodes[2]) + f"/job/{job.name}")
    assert "8/8 done" in page and "Timeline" in page
    code, body = get(http_of(nodes[0]) + "/api/jobs")
    assert job.name in [j["job"] for j in json.loads(body)["jobs"]]
    code, page = get(http_of(nodes[0]) + "/node?fragment=1")
    assert code == 200 and "<html" not in page and "Recent log events" in page
    assert get(http_of(nodes[0]) + "/job/nope")[0] == 404
    code, body = get(http_of(nodes[1]) + "/api/logs?offset=-5")
    logs = json.loads(body)
    assert len(logs["events"]) == 5 and logs["offset"] > 0
    out = run_cli("logs", "--node", nodes[2].address, "-n", "3", "--json")
    assert len(out.stdout.splitlines()) == 3
    assert all(json.loads(x)["node"] == nodes[2].address for x in out.stdout.splitlines())
    # /metrics, parsed by prometheus_client's own parser
    code, text = get(http_of(nodes[0]) + "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    members = {s.labels["state"]: s.value for s in families["disco_members"].samples}
    assert members["alive"] == 3
    started = sum(f.samples[0].value for f in [families["disco_tasks_started"]]
                  if f.samples)
    assert started >= 1 or any(
        s.value for n in nodes[1:] for s in {f.name: f for f in text_string_to_metric_families(
            get(http_of(n) + "/metrics")[1])}["disco_tasks_started"].samples)
    assert "disco_job_duration_seconds" in families and "disco_raft_term" in families
    rtt = {s.name: s.value for s in families["disco_probe_rtt_seconds"].samples}
    assert rtt["disco_probe_rtt_seconds_count"] > 0  # three nodes probe each other
    # a reduce reads map outputs of other nodes: shuffle bytes in and out show on /metrics
    def count(line, params):
        yield line.strip(), 1

    def total(iter, params):
        from disco.util import kvgroup
        for k, vs in kvgroup(sorted(iter)):
            yield k, sum(vs)
    shuffled = Job(master=nodes[0].address).run(input=[f"raw://w{i % 3}" for i in range(12)],
                                                 map=count, reduce=total, partitions=3)
    shuffled.wait()

    def metric(node, name):
        fams = {f.name: f for f in text_string_to_metric_families(
            get(http_of(node) + "/metrics")[1])}
        return sum(x.value for x in fams[name].samples)
    assert sum(metric(n, "disco_data_fetched_bytes") for n in nodes) > 0
    assert sum(metric(n, "disco_data_served_bytes") for n in nodes) > 0
    masters = sum({f.name: f for f in text_string_to_metric_families(
        get(http_of(n) + "/metrics")[1])}["disco_is_master"].samples[0].value for n in nodes)
    assert masters == 1


def test_kill_through_the_api(node_factory):
    node = node_factory(workers=1)
    job = Job(master=node.address).run(input=[f"raw://w{i}" for i in range(40)], map=slow_map)
    code, body = get(http_of(node) + f"/api/job/{job.name}/kill", method="POST")
    assert code == 200, body
    wait_for(lambda: job.status() == "killed", what="the job to be killed")
    code, body = get(http_of(node) + "/api/job/nope/purge", method="POST")
    assert code == 404 and "nope" in body


def test_with_a_secret_everything_needs_the_token(node_factory, tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(40))
    monkeypatch.setenv("DISCO_SECRET_FILE", str(secret))  # the node and this client
    node = node_factory(workers=1)
    token = token_for(secret.read_bytes())
    base = http_of(node)
    for path in ("/", "/jobs", "/metrics", "/api/cluster", "/node"):
        assert get(base + path)[0] == 401, path
        assert get(base + path + "?token=wrong")[0] == 401, path
        assert get(base + path + f"?token={token}")[0] == 200, path
        assert get(base + path, token=token)[0] == 200, path
    # a POST takes the token from a header only
    assert get(base + f"/api/job/x/kill?token={token}", method="POST")[0] == 401
    assert get(base + "/api/job/x/kill", token=token, method="POST")[0] == 404  # no such job


def test_disco_start_prints_the_page_url_with_its_token_and_http_port_0_turns_it_off(
        tmp_path, monkeypatch):
    from disco.embedded import free_port_pair
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(40))
    port = free_port_pair()
    data = tmp_path / "n"
    env = child_env(DISCO_SECRET_FILE=str(secret))
    monkeypatch.setenv("DISCO_SECRET_FILE", str(secret))
    try:
        out = run_cli("start", "--port", port, "--data", data, "--workers", "1", env=env)
        line = next(x for x in out.stdout.splitlines() if x.startswith("status page: "))
        url = line.split(": ", 1)[1]
        assert url == f"http://127.0.0.1:{port + 2}/?token={token_for(secret.read_bytes())}"
        assert get(url)[0] == 200
        join = next(x for x in out.stdout.splitlines() if x.startswith("join another"))
        assert join.endswith(f"--secret-file {secret}")  # the command to join it works as is
    finally:
        run_cli("stop", "--data", data, env=env, check=False)
    monkeypatch.delenv("DISCO_SECRET_FILE")
    port = free_port_pair()
    data = tmp_path / "m"
    try:
        out = run_cli("start", "--port", port, "--data", data, "--workers", "1",
                      "--http-port", "0")
        assert "status page" not in out.stdout and "--secret-file" not in out.stdout
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port + 2}/", timeout=2)
    finally:
        run_cli("stop", "--data", data, check=False)


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True,
                       timeout=600)
        found = shutil.which("chromium")
    return found


def test_the_page_in_a_real_browser(node_factory):
    """Headless Chromium renders the cluster page and a running job's page (its script keeps
    it live); screenshots go to build/ for a person to look at."""
    browser = _chromium()
    if browser is None:
        pytest.skip("needs chromium (Debian's chromium package) and could not install it")
    nodes = trio(node_factory)
    out_dir = ROOT / "build"
    out_dir.mkdir(exist_ok=True)

    def render(url: str, shot: Path, wait_ms: int = 0) -> str:
        args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--window-size=1280,900"]
        if wait_ms:
            args.append(f"--virtual-time-budget={wait_ms}")
        subprocess.run(args + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
        dom = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True,
                             timeout=120)
        return dom.stdout

    dom = render(http_of(nodes[0]) + "/", out_dir / "status-cluster.png")
    assert all(n.address in dom for n in nodes) and "alive" in dom
    job = Job(master=nodes[0].address).run(input=[f"raw://w{i}" for i in range(30)],
                                            map=slow_map)
    wait_for(lambda: job.event_records() and any(e["type"] == "task_done" for e in job.event_records()),
             what="a task to finish")
    dom = render(http_of(nodes[1]) + f"/job/{job.name}", out_dir / "status-job.png")
    assert job.name in dom and "running" in dom and "Timeline" in dom
    job.wait()
    dom = render(http_of(nodes[2]) + f"/job/{job.name}", out_dir / "status-job-done.png")
    assert "30/30 done" in dom
    assert (out_dir / "status-job.png").stat().st_size > 10_000

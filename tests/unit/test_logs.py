"""Log files that rotate by size, also with several writers, and reading them back for
`disco logs` (mesh/log.py, mesh/httpserver.NodeView.logs)."""
from __future__ import annotations

import json
import os
import multiprocessing

from click.testing import CliRunner

from disco.cli import cli
from mesh.httpserver import NodeView
from mesh.log import RotatingFile, rotate


def test_rotate_keeps_a_bounded_number_of_files(tmp_path):
    path = tmp_path / "node.jsonl"
    for i in range(6):
        path.write_text(f"gen {i}\n")
        rotate(path, keep=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["node.jsonl.1", "node.jsonl.2"]
    assert (tmp_path / "node.jsonl.1").read_text() == "gen 5\n"
    assert (tmp_path / "node.jsonl.2").read_text() == "gen 4\n"


def test_a_rotating_file_rolls_over_past_its_size(tmp_path):
    path = tmp_path / "node.jsonl"
    f = RotatingFile(path, max_bytes=1000, keep=3)
    for i in range(100):
        f.write(json.dumps({"i": i, "pad": "x" * 40}) + "\n")
    f.close()
    files = sorted(tmp_path.glob("node.jsonl*"))
    assert [p.name for p in files if not p.name.endswith(".lock")] == [
        "node.jsonl", "node.jsonl.1", "node.jsonl.2"]
    assert all(p.stat().st_size <= 1000 + 60 for p in files)
    last = [json.loads(x)["i"] for x in path.read_text().splitlines()]
    assert last[-1] == 99  # the newest lines are in the current file, none torn
    for p in files:
        if not p.name.endswith(".lock"):
            [json.loads(x) for x in p.read_text().splitlines()]


def _writer(path, n, tag):
    f = RotatingFile(path, max_bytes=4000, keep=50)
    for i in range(n):
        f.write(json.dumps({"w": tag, "i": i}) + "\n")
    f.close()


def test_several_processes_share_one_rotating_file_without_losing_lines(tmp_path, monkeypatch):
    # each writer looks at the others' growth at every line here (CHECK_S apart otherwise)
    monkeypatch.setattr(RotatingFile, "CHECK_S", 0.0)
    path = tmp_path / "workers.jsonl"
    procs = [multiprocessing.Process(target=_writer, args=(path, 300, t)) for t in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seen = set()
    for p in tmp_path.glob("workers.jsonl*"):
        if p.name.endswith(".lock"):
            continue
        for line in p.read_text().splitlines():
            e = json.loads(line)
            seen.add((e["w"], e["i"]))
    assert seen == {(t, i) for t in range(3) for i in range(300)}
    assert len([p for p in tmp_path.glob("workers.jsonl*") if not p.name.endswith(".lock")]) > 3


def test_reading_logs_by_offset_goes_on_where_it_stopped(tmp_path):
    path = tmp_path / "node.jsonl"
    path.write_text("".join(json.dumps({"event": f"e{i}", "level": "info"}) + "\n"
                            for i in range(10)) + '{"event": "part')
    view = NodeView("", dict, path)
    first = view.logs(-3)
    assert [e["event"] for e in first["events"]] == ["e7", "e8", "e9"]
    with open(path, "a") as f:
        f.write('ial", "level": "warning"}\n' + json.dumps({"event": "e11"}) + "\n")
    more = view.logs(first["offset"])
    assert [e["event"] for e in more["events"]] == ["partial", "e11"]
    assert view.logs(more["offset"])["events"] == []
    assert view.logs(10 ** 9)["events"][0]["event"] == "e0"  # rotated: from the start


def test_disco_logs_reads_a_data_dir_and_filters(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "node.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
        {"event": "a", "level": "info", "job": "J@1", "timestamp": "2026-01-01T00:00:00Z"},
        {"event": "b", "level": "warning", "job": "J@2", "timestamp": "2026-01-01T00:00:01Z"},
        {"event": "c", "level": "error", "timestamp": "2026-01-01T00:00:02Z", "why": "x"}]))
    run = CliRunner().invoke
    out = run(cli, ["logs", "--data", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert [line.split()[3] for line in out.output.splitlines()] == ["a", "b", "c"]
    assert "why=x" in out.output
    out = run(cli, ["logs", "--data", str(tmp_path), "--level", "warning", "--json"])
    assert [json.loads(x)["event"] for x in out.output.splitlines()] == ["b", "c"]
    out = run(cli, ["logs", "--data", str(tmp_path), "--job", "J@1"])
    assert [line.split()[3] for line in out.output.splitlines()] == ["a"]


def test_the_log_module_does_not_load_rich_but_leaves_it_importable():
    """structlog.dev imports rich when it can, only for console tracebacks: 35 ms of a node's
    start. mesh.log keeps it out; disco.progress can still import rich afterwards."""
    import subprocess
    import sys
    code = ("import sys, mesh.log, structlog.dev\n"
            "print('rich' in sys.modules, structlog.dev.rich)\n"
            "import rich.progress\n"
            "print(rich.progress.Progress.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "None", "Progress"]

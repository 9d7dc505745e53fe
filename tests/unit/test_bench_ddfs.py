"""bench/ddfs.py keeps working: its --quick mode at the tiniest sizes runs to the end, prints
every figure and its table, and leaves no process or data dir behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.cluster

FIGURES = ("push k=1", "push k=3", "pusher peak RSS", "read remote", "read local path",
           "repair started", "repair done", "repair bytes copied / bytes lost")


def test_the_ddfs_bench_runs_every_figure(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCO_", "DDFS_"))}
    env["TMPDIR"] = str(tmp_path)  # its data dirs, so what it leaves is seen here
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ddfs.py"), "--quick",
                           "--mb", "4", "--repair-mb", "4", "--blob-mb", "1"],
                          capture_output=True, text=True, timeout=90, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    for line in ("plain copy + fsync, best of", "push k = 1, best of", "push k = 3, best of",
                 "pusher memory:", "read, best of", "repair after kill -9",
                 "where the time went:", "DDFS_REPAIR_MBPS = 64"):
        assert line in out, (line, out)
    table = out[out.index("\nfigure "):]
    for figure in FIGURES:
        row = next((r for r in table.splitlines() if r.startswith(figure)), None)
        assert row is not None, (figure, table)
        assert row.split()[-1] in ("ok", "MISS", "[DISTURBED]"), row
    assert not any(p.name.startswith("bench-ddfs-") for p in tmp_path.iterdir())
    assert not _processes_under(tmp_path)


def _processes_under(path: Path) -> list[int]:
    """Pids of live processes whose command line names ``path`` (the bench's daemons)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes():
                stat = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z":
                    found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found

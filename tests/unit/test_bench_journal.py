"""bench/journal.py keeps working (its figures are the journal's promises): a small run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_journal_bench_runs_compacts_and_restarts():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "journal.py"), "--jobs", "40",
                           "--compact-every", "25"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "40 jobs submitted and purged" in proc.stdout
    assert "0 jobs in the new master's table" in proc.stdout and "restart:" in proc.stdout

"""What a node daemon imports before it serves: its start-up time is mostly imports, so
modules it needs only later (prometheus_client at the first /metrics scrape, rich for
progress bars in the CLI) stay out of it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.timeout(60)
def test_the_daemon_imports_neither_prometheus_client_nor_rich():
    code = ("import sys, mesh.daemon\n"
            "print(sorted(m for m in ('prometheus_client', 'rich') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

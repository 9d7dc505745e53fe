"""Compile the C word-count worker with the system C compiler (what ``make`` does, from Python).

``build(out_dir) -> Path`` returns the binary's path; ``CompilerMissing`` when no ``cc`` (or
``$CC``) is installed. ``python examples/worker_c/build.py [OUT_DIR]`` builds it from a shell.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "wordcount.c"
FLAGS = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2", "-Wall", "-Wextra"]


class CompilerMissing(RuntimeError):
    """No C compiler: install one (e.g. ``apt-get install gcc``) or set $CC."""


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


def build(out_dir: Path | str = HERE, source: Path = SOURCE, name: str = "wordcount") -> Path:
    cc = compiler()
    if cc is None:
        raise CompilerMissing("no C compiler found (looked for $CC, cc and gcc)")
    out = Path(out_dir) / name
    proc = subprocess.run([cc, *FLAGS, "-o", str(out), str(source)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cc} failed on {source}:\n{proc.stderr}")
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else HERE))

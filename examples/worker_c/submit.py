"""Run the C word-count worker as a Disco job: ``python examples/worker_c/submit.py FILE...``.

Builds the worker (build.py), puts the binary in a job home ZIP, makes a Disco job pack
(version 2, one ``split`` stage: one task per input) and submits it to the master
(``$DISCO_MASTER`` or ``--master HOST:PORT``), then prints each task's word counts.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # noqa: E402  (next to this file)

from disco import core, discopack  # noqa: E402
from disco.worker import task_io  # noqa: E402


def jobhome(binary: Path, name: str = "wordcount") -> bytes:
    """A ZIP holding the binary as ``name``, executable."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name)
        info.external_attr = 0o100755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, binary.read_bytes())
    return out.getvalue()


def jobpack(binary: Path, inputs: list[str], prefix: str = "wordcount_c") -> bytes:
    """The Disco job pack: each input is [label, size_hint, [urls]]."""
    jobdict = {"pipeline": [["map", "split"]], "worker": "wordcount", "prefix": prefix,
               "owner": "examples", "save_results": False,
               "inputs": [[0, 0, [url]] for url in inputs]}
    return discopack.JobPack(2, jobdict, {}, jobhome(binary), b"").dumps()


def submit(master: str | None, blob: bytes, prefix: str = "wordcount_c") -> str:
    """Submit a Disco job pack; converted here when ``Disco.submit`` does not do it itself."""
    if not hasattr(core, "discopack"):
        blob, prefix = discopack.to_internal(blob)
    return core.Disco(master).submit(blob, prefix)


def as_url(arg: str) -> str:
    return arg if "://" in arg else "file://" + str(Path(arg).resolve())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="files or URLs (file://, raw://, http://)")
    parser.add_argument("--master", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        binary = build.build(tmp)
        blob = jobpack(binary, [as_url(i) for i in args.inputs])
    disco = core.Disco(args.master)
    job = submit(args.master, blob)
    for result in disco.wait(job):
        for line in core.result_iterator([result], reader=task_io.default_map_reader):
            print(line.rstrip("\n") if isinstance(line, str) else line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

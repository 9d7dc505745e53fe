"""Three daemons on one machine beside one embedded node with the same task slots.

Usage: .venv/bin/python bench/cluster.py [--mb 256] [--files 8] [--repeat 2] [--form a]

Starts three node daemons on loopback: one with no task slots (it schedules and keeps the
journal, as a dedicated master would) and two with one slot each, so the cluster has the same
2 slots as the embedded ``local:2`` node it is compared with. Runs the word count of
``bench/wordcount.py`` (``--form a``: SPEC map/reduce with ``sum_combiner``, ``partitions=2``;
``f`` the batch form; ``e`` the seed's example) on both, interleaved ``--repeat`` times, and
prints the best undisturbed time of each and ``ratio = three daemons / local:2`` (target at
most 1.10: map output crossing from one daemon to the other goes through the data port, and
every task's start and end through the master's messages and journal). Both give the same
counts as the plain baseline, or the bench fails. Every daemon started is stopped at the end,
also on failure or Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disco.core import Job  # noqa: E402


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wc = _bench("wordcount")
spec_bench = _bench("speculation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=256, help="text size in MiB (default 256)")
    parser.add_argument("--files", type=int, default=8, help="input files = map tasks (default 8)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, interleaved (default 2)")
    parser.add_argument("--form", choices=sorted(wc.FORMS), default="a",
                        help="word count form of bench/wordcount.py (default a)")
    args = parser.parse_args()
    if args.repeat < 1 or args.files < 1:
        parser.error("--repeat and --files must be 1 or more")
    files = wc.inputs(args.mb, args.files)
    _, expected = wc.baseline(files)
    local = "local:2"
    Job(master=local).disco.cluster_status()
    walls: dict[str, list] = {"local:2": [], "3 daemons": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
            nodes = spec_bench.start_cluster(Path(tmp), 3, {}, slots=[0, 1, 1])
            three = nodes[0][1]
            print(f"# 3 daemons up: {', '.join(a for _, a in nodes)} (slots 0, 1, 1)", file=sys.stderr)
            wargs = argparse.Namespace(master=local)
            for _ in range(args.repeat):
                for name, master in (("local:2", local), ("3 daemons", three)):
                    wargs.master = master
                    foreign = wc.Foreign()
                    wall = wc.wordcount_job(wargs, files, expected, args.form)
                    walls[name].append((wall, wc.warn_if_disturbed(name, foreign, wall)))
                    print(f"# {name}: {wall:.2f} s", file=sys.stderr)
    finally:
        spec_bench.stop_all()
    (one, one_text), (many, many_text) = wc._best(walls["local:2"]), wc._best(walls["3 daemons"])
    print(f"(cluster) wordcount {args.mb:g} MiB, form {args.form}, 2 slots: local:2 {one_text}, "
          f"3 daemons {many_text}, ratio = {many / one:.2f} (target 1.10)")


if __name__ == "__main__":
    main()

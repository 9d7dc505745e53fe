"""Word count and task-overhead benchmarks of the framework on an embedded 2-slot cluster.

Usage: .venv/bin/python bench/wordcount.py [--mb 256] [--files 8] [--skip a,b,c,d]
                                           [--master local:2] [--jobs 20] [--raw-tasks 2000]

One process, one embedded cluster (``local:2``: a real node daemon with 2 task slots, started
once and shared by every part). Prints one line per figure:

(a) Word count on a generated Zipf text (``examples/gentext.generate``, ``--mb`` MiB, cached in
    ``bench/data/``, split on line boundaries into ``--files`` input files: one file = one map
    task) with the SPEC section 4 ``map`` and ``reduce`` plus ``combiner=sum_combiner`` and
    ``partitions=2``. Timed from ``Job().run()`` until every result pair has been read with
    ``result_iterator``. The baseline runs the same user ``map``/``reduce`` in a plain
    single-process loop over the same files (map every line, add counts up in a dict, then
    ``reduce``, which sorts and ``kvgroup``s). ``ratio = framework_wall / (baseline_wall / 2)``:
    1.0 means the 2 slots give a perfect 2x speed-up over plain Python; above 1.0 is overhead.
    The framework's counts must equal the baseline's, or the bench exits with status 1.
(b) The same without a combiner (SPEC section 4 verbatim: every (word, 1) pair is shuffled),
    with its ratio against the same baseline.
(c) ``--raw-tasks`` ``raw://`` inputs as as many map tasks with a trivial map (map-only job):
    tasks per second and wall time from ``run()`` to all results in hand.
(d) Latency of a trivial one-input map-only job on a warm node: a few warm-up jobs, then
    ``--jobs`` jobs one after another; median and p90 from ``run()`` to results in hand.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))

from disco.core import Job, result_iterator  # noqa: E402
from disco.util import kvgroup  # noqa: E402
from disco.worker.classic.func import sum_combiner  # noqa: E402

# -- the user's job functions (SPEC section 4) ------------------------------------------------


def map(line, params):
    for word in line.split():
        yield word, 1


def reduce(iter, params):
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)


def trivial_map(entry, params):
    yield entry, 1


# -- input data -------------------------------------------------------------------------------


def _gentext():
    spec = importlib.util.spec_from_file_location("gentext", ROOT / "examples" / "gentext.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inputs(mb: float, nfiles: int) -> list[Path]:
    """The Zipf text of ``mb`` MiB split into ``nfiles`` files on line boundaries (cached)."""
    size = int(mb * (1 << 20))
    tag = f"zipf-{mb:g}mb"
    text = DATA / f"{tag}.txt"
    if not text.exists() or abs(text.stat().st_size - size) >= (1 << 20):
        t0 = time.perf_counter()
        _gentext().generate(text, size)
        print(f"# generated {text} ({text.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    parts = [DATA / f"{tag}.{i}-of-{nfiles}.txt" for i in range(nfiles)]
    stamp = DATA / f"{tag}.{nfiles}.done"
    if stamp.exists() and all(p.exists() for p in parts) \
            and stamp.read_text() == str(text.stat().st_size):
        return parts
    total = text.stat().st_size
    with open(text, "rb") as src:
        for i, part in enumerate(parts):
            end = total * (i + 1) // nfiles
            tmp = part.with_name(part.name + ".tmp")
            with open(tmp, "wb") as dst:
                while src.tell() < end:
                    dst.write(src.read(min(1 << 22, end - src.tell())))
                if i < nfiles - 1:
                    dst.write(src.readline())  # finish the line
            tmp.replace(part)
    stamp.write_text(str(total))
    return parts


# -- the plain single-process baseline --------------------------------------------------------


def baseline(files: list[Path]) -> tuple[float, dict]:
    """Same map and reduce, no framework: map every line, sum in a dict, reduce."""
    t0 = time.perf_counter()
    counts: dict = {}
    get = counts.get
    for path in files:
        with open(path, encoding="utf-8", newline="\n") as f:
            for line in f:
                for word, one in map(line, None):
                    counts[word] = get(word, 0) + one
    result = dict(reduce(counts.items(), None))
    return time.perf_counter() - t0, result


# -- the framework runs -----------------------------------------------------------------------


def run_job(master: str, **jobargs) -> tuple[float, list]:
    """Wall seconds from Job().run() until every result pair is read, and the pairs."""
    t0 = time.perf_counter()
    job = Job(master=master).run(**jobargs)
    pairs = list(result_iterator(job.wait()))
    wall = time.perf_counter() - t0
    job.purge()
    return wall, pairs


def check_counts(label: str, pairs: list, expected: dict) -> None:
    got = dict(pairs)
    if len(got) != len(pairs):
        sys.exit(f"FAIL ({label}): {len(pairs) - len(got)} words appear in more than one result")
    if got != expected:
        missing = set(expected) - set(got)
        extra = set(got) - set(expected)
        wrong = [w for w in set(got) & set(expected) if got[w] != expected[w]][:5]
        sys.exit(f"FAIL ({label}): counts differ from the baseline: {len(missing)} missing, "
                 f"{len(extra)} extra, e.g. wrong {[(w, got[w], expected[w]) for w in wrong]}")


def part_wordcount(args, files, base_wall, expected, combiner, label) -> None:
    extra = {"combiner": sum_combiner} if combiner else {}
    wall, pairs = run_job(args.master, input=[str(f) for f in files], map=map, reduce=reduce,
                          partitions=2, name=f"bench_wc_{label}", **extra)
    check_counts(label, pairs, expected)
    words = sum(expected.values())
    what = "combiner=sum_combiner" if combiner else "no combiner"
    print(f"({label}) wordcount {args.mb:g} MiB, {len(files)} files, {what}, partitions=2: "
          f"framework {wall:.2f} s ({words / wall / 1e6:.2f} M words/s), "
          f"baseline {base_wall:.2f} s, ratio = {wall / (base_wall / 2):.2f}")


def part_raw_tasks(args) -> None:
    n = args.raw_tasks
    urls = [f"raw://x{i}" for i in range(n)]
    wall, pairs = run_job(args.master, input=urls, map=trivial_map, name="bench_raw")
    if sorted(k for k, _ in pairs) != sorted(f"x{i}" for i in range(n)):
        sys.exit(f"FAIL (c): expected {n} pairs x0..x{n - 1}, got {len(pairs)}")
    print(f"(c) {n} raw:// map tasks, map-only: {n / wall:.1f} tasks/s, "
          f"wall {wall:.2f} s run() to results in hand")


def part_latency(args) -> None:
    def one(i: int) -> float:
        wall, pairs = run_job(args.master, input=[f"raw://ping{i}"], map=trivial_map,
                              name="bench_ping")
        if pairs != [(f"ping{i}", 1)]:
            sys.exit(f"FAIL (d): got {pairs!r}")
        return wall

    for i in range(args.warmup):
        one(-1 - i)
    lat = sorted(one(i) for i in range(args.jobs))
    p90 = lat[min(len(lat) - 1, int(round(0.9 * (len(lat) - 1))))]
    print(f"(d) one-input map-only job on a warm node, {len(lat)} jobs: "
          f"median {statistics.median(lat) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, "
          f"min {lat[0] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=256, help="text size in MiB (default 256)")
    parser.add_argument("--files", type=int, default=8, help="input files = map tasks (default 8)")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. --skip b,c")
    parser.add_argument("--master", default=os.environ.get("DISCO_BENCH_MASTER", "local:2"),
                        help="cluster to use (default local:2, an embedded 2-slot node)")
    parser.add_argument("--raw-tasks", type=int, default=2000, help="tasks in (c) (default 2000)")
    parser.add_argument("--jobs", type=int, default=20, help="timed jobs in (d) (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up jobs in (d) (default 3)")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.replace(",", " ").split()}
    unknown = skip - set("abcd")
    if unknown:
        parser.error(f"--skip takes parts a, b, c, d; not {sorted(unknown)}")

    t0 = time.perf_counter()
    Job(master=args.master).disco.cluster_status()  # start (or reach) the cluster up front
    print(f"# cluster {args.master} ready in {time.perf_counter() - t0:.2f} s", file=sys.stderr)

    if not {"a", "b"} <= skip:
        files = inputs(args.mb, args.files)
        base_wall, expected = baseline(files)
        print(f"# baseline {args.mb:g} MiB: {base_wall:.2f} s, {len(expected)} distinct words, "
              f"{sum(expected.values())} words", file=sys.stderr)
        if "a" not in skip:
            part_wordcount(args, files, base_wall, expected, True, "a")
        if "b" not in skip:
            part_wordcount(args, files, base_wall, expected, False, "b")
    if "c" not in skip:
        part_raw_tasks(args)
    if "d" not in skip:
        part_latency(args)


if __name__ == "__main__":
    main()

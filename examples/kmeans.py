"""k-means as a pipeline job: ``python examples/kmeans.py POINTS_FILE... [-k 3] [--iterations 5]``.

Each iteration is one job of two stages (Disco's pipeline model):

- ``assign`` (``split``: one task per input): each task finds every point's nearest centre and
  keeps, per centre, the sum of its points and their count; at the end it writes one
  ``(centre, (sum, count))`` pair per centre;
- ``update`` (``group_all``: one task): adds the partial sums up and writes the new centres.

The centres travel in ``params``. A points file has one point per line, coordinates separated
by spaces; ``--generate N`` writes N points around k random centres first (to FILE).
Uses the cluster named by ``DISCO_MASTER`` (``local`` starts an embedded one).
"""
import argparse
import random

from disco.core import Job, Params, result_iterator
from disco.worker.pipeline.worker import Stage


def nearest(point, centres):
    return min(range(len(centres)),
               key=lambda i: sum((p - c) ** 2 for p, c in zip(point, centres[i])))


def assign_init(interface, params):
    return {"centres": params.centres, "sums": {}}  # params reach init only, as in Disco


def assign(interface, state, label, inp):
    centres, sums = state["centres"], state["sums"]
    for line in inp:
        if not line.strip():
            continue
        point = [float(x) for x in line.split()]
        i = nearest(point, centres)
        total, n = sums.get(i, ([0.0] * len(point), 0))
        sums[i] = ([t + p for t, p in zip(total, point)], n + 1)


def assign_done(interface, state):
    out = interface.output(0)
    for i, partial in sorted(state["sums"].items()):
        out.add(i, partial)


def update_init(interface, params):
    return {}


def update(interface, state, label, inp):
    for i, (total, n) in inp:
        old, m = state.get(i, ([0.0] * len(total), 0))
        state[i] = ([a + b for a, b in zip(old, total)], m + n)


def update_done(interface, state):
    out = interface.output(0)
    for i, (total, n) in sorted(state.items()):
        out.add(i, [t / n for t in total])


class KMeans(Job):
    pipeline = [("split", Stage("assign", init=assign_init, process=assign, done=assign_done)),
                ("group_all", Stage("update", init=update_init, process=update,
                                    done=update_done))]


def kmeans(inputs, centres, iterations, master=None):
    """The centres after ``iterations`` rounds, starting from ``centres``."""
    for _ in range(iterations):
        job = KMeans(master=master).run(input=inputs, params=Params(centres=centres))
        moved = dict(result_iterator(job.wait()))
        centres = [moved.get(i, c) for i, c in enumerate(centres)]
        job.purge()
    return centres


def generate(path, n, k, seed=1):
    rng = random.Random(seed)
    truth = [(rng.uniform(-10, 10), rng.uniform(-10, 10)) for _ in range(k)]
    with open(path, "w") as f:
        for _ in range(n):
            cx, cy = rng.choice(truth)
            f.write(f"{rng.gauss(cx, 0.5):.4f} {rng.gauss(cy, 0.5):.4f}\n")
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="points files (or URLs)")
    parser.add_argument("-k", type=int, default=3, help="how many clusters")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--generate", type=int, metavar="N",
                        help="first write N points around k centres to the (first) file")
    args = parser.parse_args()
    if args.generate:
        generate(args.inputs[0], args.generate, args.k)
    rng = random.Random(0)
    with open(args.inputs[0]) as f:
        points = [[float(x) for x in line.split()] for line in f if line.strip()]
    start = rng.sample(points, args.k)
    for centre in kmeans(args.inputs, start, args.iterations):
        print(" ".join(f"{c:.3f}" for c in centre))


if __name__ == "__main__":
    main()

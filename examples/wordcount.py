"""Word count: ``python examples/wordcount.py FILE... [--top N]``.

Counts words with a map, a ``sum_combiner`` and a reduce over 2 partitions, then prints the
most frequent words as ``WORD COUNT`` lines. A file bigger than ``--split-mb`` is read by
several map tasks at once, each a line-aligned piece of it, so one file keeps every slot busy.
Uses the cluster named by ``DISCO_MASTER``
(``local`` starts an embedded one for the life of this script).

The same job as a ``Job`` subclass, for ``disco run`` from this directory:
``disco run wordcount.WordCount data.txt --wait``.
"""
import argparse
import heapq

from disco.core import Job, result_iterator
from disco.util import kvgroup
from disco.worker.classic.func import sum_combiner


def map(line, params):
    for word in line.split():
        yield word, 1


def reduce(iter, params):
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)


class WordCount(Job):
    """The job ``main`` runs, as class attributes."""
    map = staticmethod(map)
    reduce = staticmethod(reduce)
    combiner = staticmethod(sum_combiner)
    partitions = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="text files or URLs")
    parser.add_argument("--top", type=int, default=20, help="how many words to print")
    parser.add_argument("--show", action="store_true", help="print progress while waiting")
    parser.add_argument("--split-mb", type=float, default=4.0,
                        help="MiB of input per map task (default 4; 0 reads each input whole)")
    args = parser.parse_args()
    job = Job().run(input=args.inputs, map=map, reduce=reduce, combiner=sum_combiner,
                    partitions=2, split_size=int(args.split_mb * (1 << 20)) or None)
    counts = result_iterator(job.wait(show=args.show))
    for word, count in heapq.nlargest(args.top, counts, key=lambda wc: (wc[1], wc[0])):
        print(word, count)


if __name__ == "__main__":
    main()

"""Compression codecs for record frames: throughput and ratio on realistic shuffle data.

Usage: .venv/bin/python bench/compression.py [--mb N] [--frame-kib K] [--seed S]

Builds two data sets of about N MB of pickled frames each: word-count pairs (str word, int count)
from a Zipf-like vocabulary, and (line number, line of text) pairs. Pickles them in frames of
about K KiB (as RecordWriter does, memo-less), then times compress and decompress of those
frame payloads per codec. Throughput is MB/s of raw pickled bytes; ratio is raw / compressed.
The "(pickle)" line times pickling and unpickling alone, the cost every codec adds to; the
last line times a whole RecordWriter.add_many + iter_records round trip on 1M (str, int) pairs.
"""
from __future__ import annotations

import argparse
import io
import pickle
import random
import sys
import time
import zlib
from itertools import accumulate
from pathlib import Path

import lz4.block
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shuffle.record import RecordWriter, _pickle, iter_records  # noqa: E402

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "is", "or", "um"]


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words, key=len)


_CUM_WEIGHTS: dict[int, list[float]] = {}


def zipf_words(rng: random.Random, vocab: list[str], n: int) -> list[str]:
    cum = _CUM_WEIGHTS.get(len(vocab))
    if cum is None:
        cum = _CUM_WEIGHTS[len(vocab)] = list(accumulate(1.0 / r for r in range(1, len(vocab) + 1)))
    # copy each string so pairs hold distinct objects, as str.split() output does
    return [(w + " ")[:-1] for w in rng.choices(vocab, cum_weights=cum, k=n)]


def word_count_pairs(rng, vocab, n):
    return [(w, rng.randint(1, 50)) for w in zipf_words(rng, vocab, n)]


def line_pairs(rng, vocab, n):
    return [(i, " ".join(zipf_words(rng, vocab, rng.randint(4, 16)))) for i in range(n)]


def frames(pairs: list, frame_bytes: int) -> list[list]:
    per_pair = max(1, len(_pickle(pairs[:1000])) // min(1000, len(pairs)))
    step = max(1, frame_bytes // per_pair)
    return [pairs[i:i + step] for i in range(0, len(pairs), step)]


def build(kind: str, mb: float, frame_bytes: int, seed: int) -> list[list]:
    rng = random.Random(seed)
    vocab = vocabulary(rng, 20_000)
    make = word_count_pairs if kind == "wordcount" else line_pairs
    per_pair = 10 if kind == "wordcount" else 75
    return frames(make(rng, vocab, int(mb * 1e6 / per_pair)), frame_bytes)


def codecs() -> dict:
    z1c, z1d = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    z3c = zstandard.ZstdCompressor(level=3)
    return {
        "none": (lambda b: b, lambda c, n: c),
        "lz4-block": (lambda b: lz4.block.compress(b, store_size=False),
                      lambda c, n: lz4.block.decompress(c, uncompressed_size=n)),
        **{f"lz4-fast-{a}": (lambda b, a=a: lz4.block.compress(b, store_size=False, mode="fast",
                                                               acceleration=a),
                             lambda c, n: lz4.block.decompress(c, uncompressed_size=n))
           for a in (2, 4)},
        "zstd-1": (z1c.compress, lambda c, n: z1d.decompress(c, max_output_size=n)),
        "zstd-3": (z3c.compress, lambda c, n: z1d.decompress(c, max_output_size=n)),
        "zlib-1": (lambda b: zlib.compress(b, 1), lambda c, n: zlib.decompress(c)),
    }


def best_of(reps: int, fn) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(name, compress, decompress, data: list[bytes], reps: int) -> str:
    raw = sum(map(len, data))
    if name == "none":
        return f"  {name:<10} encode        - MB/s  decode        - MB/s  ratio  1.00"
    packed = [compress(b) for b in data]
    assert all(decompress(c, len(b)) == b for c, b in zip(packed, data))
    enc = best_of(reps, lambda: [compress(b) for b in data])
    dec = best_of(reps, lambda: [decompress(c, len(b)) for c, b in zip(packed, data)])
    ratio = raw / sum(map(len, packed))
    return (f"  {name:<10} encode {raw / enc / 1e6:8.0f} MB/s  decode {raw / dec / 1e6:8.0f} MB/s"
            f"  ratio {ratio:5.2f}")


def measure_pickle(pairs_frames: list[list], data: list[bytes], reps: int) -> str:
    raw = sum(map(len, data))
    enc = best_of(reps, lambda: [_pickle(f) for f in pairs_frames])
    dec = best_of(reps, lambda: [pickle.loads(b) for b in data])
    return (f"  {'(pickle)':<10} encode {raw / enc / 1e6:8.0f} MB/s  decode {raw / dec / 1e6:8.0f} "
            f"MB/s  (the cost every codec adds to)")


def round_trip(n: int, seed: int) -> str:
    rng = random.Random(seed)
    pairs = word_count_pairs(rng, vocabulary(rng, 20_000), n)
    out = io.BytesIO()
    start = time.perf_counter()
    writer = RecordWriter(out)
    writer.add_many(pairs)
    writer.close()
    wrote = time.perf_counter() - start
    out.seek(0)
    start = time.perf_counter()
    count = sum(1 for _ in iter_records(out))
    read = time.perf_counter() - start
    assert count == n
    return (f"record round trip, {n} (str, int) pairs: add_many {wrote:.3f} s "
            f"({n / wrote / 1e6:.1f} M pairs/s), iter_records {read:.3f} s "
            f"({n / read / 1e6:.1f} M pairs/s), file {writer.bytes_written / 1e6:.2f} MB, "
            f"{writer.frames} frames")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=32, help="raw MB per data set (default 32)")
    ap.add_argument("--frame-kib", type=int, default=256, help="raw frame size (default 256)")
    ap.add_argument("--reps", type=int, default=3, help="best of this many runs (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    for kind in ("wordcount", "lines"):
        pairs_frames = build(kind, args.mb, args.frame_kib << 10, args.seed)
        data = [_pickle(f) for f in pairs_frames]
        raw = sum(map(len, data))
        print(f"{kind}: {raw / 1e6:.1f} MB pickled in {len(data)} frames")
        print(measure_pickle(pairs_frames, data, args.reps))
        for name, (compress, decompress) in codecs().items():
            print(measure(name, compress, decompress, data, args.reps))
    print(round_trip(1_000_000, args.seed))


if __name__ == "__main__":
    main()

"""Generate a deterministic Zipf-distributed English-like text: ``gentext.py OUT --mb 20``.

Used by ``make demo`` and ``bench/``. The same ``--seed`` and size always give the same bytes,
so word counts can be checked across runs.
"""
from __future__ import annotations

import argparse
import itertools
import random
from pathlib import Path

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "an", "el", "or", "ut", "be",
             "da", "fi", "go", "hu", "je", "vo", "zy", "th", "qu", "ex", "ar"]
COMMON = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with",
          "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which"]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words, seen = list(COMMON), set(COMMON)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def generate(out: Path, size_bytes: int, seed: int = 42, vocab: int = 50_000,
             words_per_line: int = 12) -> Path:
    """Write about ``size_bytes`` of text to ``out`` (atomically) and return it."""
    rng = random.Random(seed)
    words = vocabulary(vocab, rng)
    cum = list(itertools.accumulate(1.0 / rank for rank in range(1, vocab + 1)))
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(tmp, "w", encoding="utf-8") as f:
        while written < size_bytes:
            batch = rng.choices(words, cum_weights=cum, k=words_per_line * 4096)
            lines = [" ".join(batch[i:i + words_per_line])
                     for i in range(0, len(batch), words_per_line)]
            text = "\n".join(lines) + "\n"
            f.write(text)
            written += len(text)
    tmp.replace(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--mb", type=float, default=20, help="size in MiB (default 20)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    size = int(args.mb * (1 << 20))
    if args.out.exists() and abs(args.out.stat().st_size - size) < (1 << 20):
        return  # already generated with this size
    generate(args.out, size, args.seed)


if __name__ == "__main__":
    main()

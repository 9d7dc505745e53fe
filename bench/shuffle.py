"""Shuffle throughput between two processes on loopback, beside raw pyzmq (issue 3).

    .venv/bin/python bench/shuffle.py [--mb 256]

Starts a real node daemon, writes a map-output-like record file of about ``--mb`` MiB into its
volume, and measures, in this process:

- shuffle: ``RemoteFile`` over the node's data port (credit window, 1 MiB chunks) with every
  frame decoded to records, as a reduce task reads a remote partition: MB/s of file bytes;
- fetch only: the same transfer without decoding;
- raw zmq: a separate process PUSHes the same bytes in 1 MiB messages to a PULL socket here,
  once with the same record decoding on arrival, once bytes only.

Prints one line per figure and two ratios: records delivered (both sides decode; the issue's
figure, target >= 0.5) and bytes only (the transport alone).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402

from disco.client import answers  # noqa: E402
from disco.embedded import free_port_pair  # noqa: E402
from shuffle import record  # noqa: E402
from mesh.transfer import RemoteFile  # noqa: E402

PUSHER = """
import sys, zmq
path, endpoint = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
ctx = zmq.Context()
sock = ctx.socket(zmq.PUSH)
sock.connect(endpoint)
mv = memoryview(data)
for i in range(0, len(data), 1 << 20):
    sock.send(mv[i:i + (1 << 20)], copy=False)
sock.send(b"")
sock.close(linger=-1)
ctx.term()
"""


def make_records(path: Path, mb: float) -> int:
    """Word-count-like pairs (str key, int value) until the file has about ``mb`` MiB."""
    target = int(mb * (1 << 20))
    with open(path, "wb") as f, record.RecordWriter(f) as writer:
        i = 0
        while f.tell() < target:
            writer.add_many([(f"word{(i + j) * 7919 % 500000}", j) for j in range(20000)])
            writer.flush()
            i += 20000
    return path.stat().st_size


def shuffle_read(address: str, rel: str, decode: bool) -> tuple[float, int]:
    start = time.perf_counter()
    records = 0
    with RemoteFile(address, rel) as raw:
        if decode:
            import io
            for frame in record.iter_frames(io.BufferedReader(raw, 1 << 20)):
                records += len(frame)
        else:
            while raw.read(1 << 20):
                pass
    return time.perf_counter() - start, records


def raw_push(path: Path, decode: bool) -> float:
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    decoder = record.FrameDecoder()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", PUSHER, str(path), f"tcp://127.0.0.1:{port}"])
    while True:
        msg = pull.recv(copy=False)
        if not len(msg):
            break
        if decode:
            decoder.feed(msg.buffer)
    elapsed = time.perf_counter() - start
    proc.wait()
    pull.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=256, help="record file size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="disco-bench-") as tmp:
        data = Path(tmp) / "node"
        out = data / "vol0" / "bench"
        out.mkdir(parents=True)
        path = out / "part.drec"
        size = make_records(path, args.mb)
        port = free_port_pair()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        node = subprocess.Popen([sys.executable, "-m", "disco.cli", "nodaemon", "--no-console",
                                 "--port", str(port), "--data", str(data), "--workers", "1"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            address = f"127.0.0.1:{port}"
            while not answers(address, 0.3):
                if node.poll() is not None:
                    sys.exit("bench: the node did not start")
            rel = "vol0/bench/part.drec"
            fetch = min(shuffle_read(address, rel, False)[0] for _ in range(args.rounds))
            runs = [shuffle_read(address, rel, True) for _ in range(args.rounds)]
            shuffled, records = min(runs)
            raw = min(raw_push(path, False) for _ in range(args.rounds))
            raw_decoded = min(raw_push(path, True) for _ in range(args.rounds))
        finally:
            node.terminate()
            node.wait(10)
    mb = size / (1 << 20)
    print(f"file: {mb:.0f} MiB, {records:,} records")
    print(f"shuffle, records delivered: {mb / shuffled:7.1f} MB/s  {records / shuffled:,.0f} records/s")
    print(f"raw zmq push + same decode:  {mb / raw_decoded:7.1f} MB/s")
    print(f"shuffle fetch, bytes only:   {mb / fetch:7.1f} MB/s")
    print(f"raw zmq push, bytes only:    {mb / raw:7.1f} MB/s")
    print(f"ratio records = shuffle / raw push, both decoding = {raw_decoded / shuffled:.2f}")
    print(f"ratio bytes   = shuffle fetch / raw push          = {raw / fetch:.2f}")


if __name__ == "__main__":
    main()

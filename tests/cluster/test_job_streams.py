"""Disco's classic stream keywords against a real node daemon: ``map_input_stream``,
``map_output_stream``, ``reduce_input_stream`` and ``reduce_output_stream`` (chains of
``f(stream, size_or_partition, url, params)``), each changing what the job reads or writes."""
from __future__ import annotations

import collections
import gzip
import json

import pytest

from disco.core import Job, result_iterator, stream_chain
from disco.error import UsageError
from disco.func import (chain_reader, disco_output_stream, gzip_stream, task_input_stream,
                        task_output_stream)

pytestmark = pytest.mark.cluster

TEXTS = ["b a c a", "c b a d", "a e"]
COUNTS = collections.Counter(w for t in TEXTS for w in t.split())


def words(line, params):
    return [(word, 1) for word in line.split()]


def total(iter, params):
    counts = collections.Counter()
    for word, n in iter:
        counts[word] += n
    return sorted(counts.items())


class TabLines:
    """An output stream writing ``key<TAB>value`` lines: ``add`` is all Disco asks of it."""

    def __init__(self, fd):
        self.fd = fd

    def add(self, key, value):
        self.fd.write(f"{key}\t{value}\n".encode())


def tab_lines(fd, partition, url, params):
    return TabLines(fd)


class JsonLines(TabLines):
    def add(self, key, value):
        self.fd.write(json.dumps([key, value]).encode() + b"\n")

    def close(self):  # called once when the task ends
        self.fd.write(b"END\n")


def json_lines(fd, partition, url, params):
    return JsonLines(fd)


def json_pairs(fd, size, url, params):
    """A reduce input stream: the pairs ``JsonLines`` wrote, checking its end marker."""
    lines = fd.read().splitlines()
    assert lines[-1] == b"END", lines[-1:]
    return (tuple(json.loads(line)) for line in lines[:-1])


def whole_file(fd, size, url):
    return [fd.read()]


def test_reduce_output_stream_writes_the_users_format(node):
    job = Job(master=node.address).run(input=[f"raw://{t}" for t in TEXTS], map=words,
                                       reduce=total,
                                       reduce_output_stream=(task_output_stream, tab_lines))
    results = job.wait(timeout=120)
    text = b"".join(result_iterator(results, reader=whole_file)).decode()
    assert text == "".join(f"{w}\t{n}\n" for w, n in sorted(COUNTS.items()))


def test_map_output_stream_is_read_back_by_the_reduce_input_stream(node):
    job = Job(master=node.address).run(input=[f"raw://{t}" for t in TEXTS], map=words,
                                       reduce=total, partitions=2,
                                       map_output_stream=[task_output_stream, json_lines],
                                       reduce_input_stream=[task_input_stream, json_pairs])
    results = job.wait(timeout=120)
    assert sorted(result_iterator(results)) == sorted(COUNTS.items())
    # the maps' outputs are the users' lines, not record files
    maps = job.stageresults("map")
    first = b"".join(result_iterator([maps[0]], reader=whole_file))
    assert first.endswith(b"END\n") and first.startswith(b"[")


def test_map_input_stream_opens_each_input(node, tmp_path):
    path = tmp_path / "words.gz"
    path.write_bytes(gzip.compress("\n".join(TEXTS).encode() + b"\n"))
    job = Job(master=node.address).run(input=[f"file://{path}"], map=words, reduce=total,
                                       map_input_stream=gzip_stream)
    assert dict(result_iterator(job.wait(timeout=120))) == COUNTS


def test_a_chain_to_records_feeds_the_map_pairs(node):
    first = Job(master=node.address).run(input=[f"raw://{t}" for t in TEXTS], map=words)
    second = Job(master=node.address).run(input=first.wait(timeout=120),
                                          map=lambda pair, params: [pair], reduce=total,
                                          map_input_stream=(task_input_stream, chain_reader))
    assert dict(result_iterator(second.wait(timeout=120))) == COUNTS


def test_stream_chain_keeps_only_what_changes_the_default():
    assert stream_chain("map_output_stream", None) == ()
    assert stream_chain("map_output_stream", (task_output_stream, disco_output_stream)) == ()
    assert stream_chain("map_input_stream", [task_input_stream]) == ()
    assert stream_chain("reduce_output_stream", tab_lines) == (tab_lines,)
    assert stream_chain("map_input_stream", gzip_stream) == gzip_stream
    with pytest.raises(UsageError, match="reduce_output_stream: each item"):
        stream_chain("reduce_output_stream", (task_output_stream, "lines"))

"""disco.util: the names Disco had beyond kvgroup (DISCO-REFERENCE 1.3)."""
from __future__ import annotations

import gzip
import io
import os
import random

import pytest

from disco import util
from disco.error import DataNotFound, UsageError
from shuffle.recordfile import write_file


def test_iterable_helpers():
    assert util.chainify([[1, 2], (3,), []]) == [1, 2, 3]
    assert util.listify(5) == [5] and util.listify("ab") == ["ab"] and util.listify((1, 2)) == [1, 2]
    assert util.ilen(x for x in range(7)) == 7 and util.ilen([]) == 0
    assert util.iskv((1, 2)) and not util.iskv([1, 2]) and not util.iskv((1, 2, 3))
    assert util.kvify((1, 2)) == (1, 2) and util.kvify("line") == ("line", None)
    assert util.partition(range(6), lambda x: x % 2) == ([1, 3, 5], [0, 2, 4])
    items = list(range(50))
    random.seed(3)
    mixed = util.shuffled(items)
    assert sorted(mixed) == items and mixed != items and items == list(range(50))


def test_reify():
    assert util.reify("os.path.join") is os.path.join
    assert util.reify("len") is len
    assert util.reify("collections.OrderedDict.fromkeys") == \
        __import__("collections").OrderedDict.fromkeys
    assert util.reify("mine", {"mine": 42}) == 42
    with pytest.raises(UsageError, match="no attribute"):
        util.reify("os.no_such_thing")
    with pytest.raises(UsageError):
        util.reify("")


def test_hexhash_and_format_size():
    assert util.hexhash("abc") == util.hexhash(b"abc") == "90"
    assert util.format_size(0) == "0.0 bytes"
    assert util.format_size(1536) == "1.5KB"
    assert util.format_size(5 * 2 ** 30) == "5.0GB"
    assert util.format_size(2 ** 50) == "1024.0TB"


def test_argcount():
    import functools
    assert util.argcount(lambda a, b, c, d: 0) == 4
    assert util.argcount(lambda a, b, c: 0) == 3
    assert util.argcount(functools.partial(lambda a, b, c, d: 0, 1)) == 3
    assert util.argcount(lambda a, b, c, d=None, *, e=1: 0) == 4
    assert util.argcount(lambda *args: 0) > 4


def test_netloc_is_a_string_that_unpacks():
    loc = util.netloc.parse("user:tok@host:8989")
    assert loc == "host:8989" and loc.host == "host" and loc.port == "8989"
    host, port = loc
    assert (host, port) == ("host", "8989")
    assert tuple(util.netloc.parse("h")) == ("h", "") and not util.netloc("")


def test_urlsplit_tags_and_localhost(tmp_path):
    assert util.urlsplit("tag://data:logs") == ("tag", "", "data:logs")
    assert util.urlsplit("tag://n1:1/data") == ("tag", "n1:1", "data")
    scheme, loc, path = util.urlsplit("disco://n1:4000/vol0/jobs/J/x", localhost="n1:4000",
                                      disco_data=str(tmp_path))
    assert (scheme, loc, path) == ("file", "", os.path.join(str(tmp_path), "vol0/jobs/J/x"))
    assert util.urlsplit("disco://n2:4000/a", localhost="n1:4000")[0] == "disco"
    assert util.urlsplit("dir://n1:4000/a", localhost=True, disco_data="/d")[2] == "/d/a"


@pytest.mark.parametrize("url", ["http://h:80/a/b", "file:///tmp/x", "raw://some data",
                                 "disco://n1:4000/vol0/x", "tag://name"])
def test_urljoin_inverts_urlsplit(url):
    assert util.urljoin(util.urlsplit(url)) == url


def test_urltoken():
    assert util.urltoken("tag://u:secret@host:1/name") == "secret"
    assert util.urltoken("http://tok@h/x") == "tok"
    assert util.urltoken("tag://disco:results:Job@5a1") is None
    assert util.urltoken("http://h/x") is None


def test_localize():
    assert util.localize("vol0/jobs/J/x", disco_data="/data") == "/data/vol0/jobs/J/x"
    assert util.localize("vol0/blob/3f/b", ddfs_data="/ddfs", disco_data="/data") == \
        "/ddfs/vol0/blob/3f/b"
    with pytest.raises(UsageError, match="disco_data"):
        util.localize("x")


def test_proxy_url():
    url = "disco://n1:4000/vol0/x"
    assert util.proxy_url(url, proxy="") == url
    assert util.proxy_url(url, proxy="http://p:8999") == "http://p:8999/vol0/x"
    assert util.proxy_url(url, proxy="http://p:8999/", meth="PUT", to_master=False) == \
        "http://p:8999/proxy/n1/PUT/vol0/x"
    assert util.proxy_url("tag://t", proxy="http://p") == "tag://t"


def test_proxy_url_reads_disco_proxy(monkeypatch):
    monkeypatch.setenv("DISCO_PROXY", "http://px:1")
    assert util.proxy_url("http://h:2/a") == "http://px:1/a"


def test_urlresolve():
    assert util.urlresolve("dir://n1:4000/vol0/x-0.drec") == "disco://n1:4000/vol0/x-0.drec"
    assert util.urlresolve("tag://n1:4000/data") == "tag://data"
    assert util.urlresolve("http://h/x") == "http://h/x"


def test_read_index_and_parse_dir_of_an_index_file(tmp_path):
    index = tmp_path / "index.gz"
    with gzip.open(index, "wb") as f:
        f.write(b"1 disco://n1:1/b\n0 disco://n1:1/a\n\n1 disco://n2:1/c\n")
    url = f"file://{index}"
    assert sorted(util.read_index(url)) == [(0, "disco://n1:1/a"), (1, "disco://n1:1/b"),
                                            (1, "disco://n2:1/c")]
    assert util.parse_dir(url) == ["disco://n1:1/a", "disco://n1:1/b", "disco://n2:1/c"]
    assert util.parse_dir(url, label=1) == ["disco://n1:1/b", "disco://n2:1/c"]
    bad = tmp_path / "bad"
    bad.write_bytes(b"x y z\n")
    with pytest.raises(UsageError, match="line 1"):
        list(util.read_index(f"file://{bad}"))


def test_read_index_of_a_task_output_gives_its_label(tmp_path):
    out = tmp_path / "map-3-2.drec"
    write_file(out, [("k", 1)])
    assert list(util.read_index(f"file://{out}")) == [(2, f"file://{out}")]


class FakeDDFS:
    def __init__(self, tags):
        self.tags = tags

    def findtags(self, names):
        for name in names:
            yield name, [], self.tags[name.split("://")[-1]]


def test_inputlist_expands_tags_lists_and_dirs(tmp_path):
    ddfs = FakeDDFS({"t": [["disco://a/1", "disco://b/1"], ["disco://a/2"]]})
    index = tmp_path / "i"
    index.write_bytes(b"0 disco://n/x0\n1 disco://n/x1\n")
    got = util.inputlist(["tag://t", "raw://r", ["http://h/1", "http://g/1"], ""],
                         ddfs=ddfs)
    assert got == [["disco://a/1", "disco://b/1"], ["disco://a/2"], "raw://r",
                   ["http://h/1", "http://g/1"]]
    assert util.inputexpand("raw://x", label=0) == ["raw://x"]
    assert list(util.deref(["dir://n1:1/a"], resolve=True, label=False)) == \
        [["disco://n1:1/a"]]


def test_inputexpand_of_replicated_dir_urls(monkeypatch):
    table = {"dir://a:1/x": [(0, "disco://a:1/x0"), (1, "disco://a:1/x1")],
             "dir://b:1/x": [(0, "disco://b:1/x0"), (1, "disco://b:1/x1")]}
    monkeypatch.setattr(util, "read_index", lambda d: iter(table[d]))
    assert util.inputexpand(["dir://a:1/x", "dir://b:1/x"]) == \
        [["disco://a:1/x0", "disco://b:1/x0"], ["disco://a:1/x1", "disco://b:1/x1"]]
    assert util.inputexpand("dir://a:1/x", label=1) == [["disco://a:1/x1"]]


def test_dsorted_spills_and_merges(tmp_path):
    items = [random.Random(5).randrange(1000) for _ in range(2500)]
    got = list(util.dsorted(iter(items), buffer_size=300, tempdir=tmp_path))
    assert got == sorted(items)
    assert list(util.dsorted([3, 1, 2])) == [1, 2, 3]
    assert list(util.dsorted([])) == []
    with pytest.raises(UsageError):
        list(util.dsorted([1], buffer_size=0))


def test_disk_sort_is_stable_and_cleans_up(tmp_path):
    rng = random.Random(9)
    pairs = [(rng.choice([b"a", b"b", b"c"]), i) for i in range(3000)]
    target = tmp_path / "sorted"
    got = list(util.disk_sort(None, pairs, str(target), sort_buffer_size="4K"))
    assert got == sorted(pairs, key=lambda kv: kv[0])
    assert os.listdir(tmp_path) == []
    with pytest.raises(UsageError, match="pairs"):
        list(util.disk_sort(None, ["x"], str(target)))


def test_memory_bytes():
    assert util.memory_bytes("512M") == 512 << 20
    assert util.memory_bytes("2G") == 2 << 30
    assert util.memory_bytes(10) == 10 << 10
    assert 0 < util.memory_bytes("1%") < util.memory_bytes("10%")
    for bad in ("lots", "0", "-1K"):
        with pytest.raises(UsageError):
            util.memory_bytes(bad)


class OobDDFS:
    """An in-memory DDFS: push adds a blob URL (newest first), blobs lists them."""

    store: dict = {}
    tags: dict = {}

    def __init__(self, master=None):
        pass

    def push(self, tag, files, replicas=None):
        for fileobj, name in files:
            url = f"disco://n:1/vol0/blob/00/{name}${len(self.store):x}-1-1"
            self.store[url] = fileobj.read()
            self.tags.setdefault(tag, []).insert(0, [url])

    def blobs(self, tag, ignore_missing=True):
        if tag not in self.tags:
            raise DataNotFound(tag)
        return self.tags[tag]


def test_save_and_load_oob_latest_version_wins(monkeypatch):
    import disco.ddfs
    OobDDFS.store, OobDDFS.tags = {}, {}
    monkeypatch.setattr(disco.ddfs, "DDFS", OobDDFS)
    monkeypatch.setattr(disco.ddfs, "open_blob",
                        lambda reps: (io.BytesIO(OobDDFS.store[reps[0]]), None, reps[0]))
    util.save_oob("m", "Job@1", "count", b"1")
    util.save_oob("m", "Job@1", "other:key", "text")
    util.save_oob("m", "Job@1", "count", b"2")
    assert list(OobDDFS.tags) == ["disco:job:oob:Job@1"]
    assert util.load_oob("m", "Job@1", "count") == b"2"
    assert util.load_oob("m", "Job@1", "other:key") == b"text"
    with pytest.raises(DataNotFound, match="no out-of-band value 'nope'"):
        util.load_oob("m", "Job@1", "nope")
    with pytest.raises(DataNotFound):
        util.load_oob("m", "Job@2", "count")
    with pytest.raises(UsageError, match="out-of-band key"):
        util.save_oob("m", "Job@1", "bad key/", b"x")


def test_oob_key_of():
    assert util.oob_key_of("disco://n:1/vol0/blob/3f/mykey$17a-1-2") == "mykey"

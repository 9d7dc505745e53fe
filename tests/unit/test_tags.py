"""The tag store (storage/tags.py): scripted entries in, exact tags out."""
from __future__ import annotations

import random

import pytest

from storage import tags as tg

B = "disco://h{n}:8989/vol0/blob/ab/{name}"


def blob(name: str, *nodes: int) -> list:
    return [B.format(n=n, name=name) for n in nodes]


def store_with(*entries) -> tg.TagStore:
    store = tg.TagStore()
    for e in entries:
        store.apply(e)
    store.check_invariants()
    return store


def add(tag, urls, update=False, op="", wall=1.0):
    return {"type": "tag_add", "tag": tag, "urls": urls, "update": update, "op": op,
            "wall": wall}


def test_add_creates_and_prepends_new_sets():
    s = store_with(add("t", [blob("a", 1, 2)]), add("t", [blob("b", 2, 3)], wall=2.0))
    t = s.get("t")
    assert t.urls == [blob("b", 2, 3), blob("a", 1, 2)]
    assert (t.version, t.created, t.modified) == (2, 1.0, 2.0)
    assert s.by_blob == {"a": {"t"}, "b": {"t"}}


def test_empty_add_creates_an_empty_tag_once():
    s = store_with(add("t", []))
    assert s.get("t").version == 1 and s.get("t").urls == []
    assert s.apply(add("t", [])) == {"tag": "t", "version": 1}  # no new version


def test_update_skips_blobs_already_held_or_repeated():
    s = store_with(add("t", [blob("a", 1)]))
    result = s.apply(add("t", [blob("a", 2), blob("b", 1), blob("b", 3)], update=True))
    assert s.get("t").urls == [blob("b", 1), blob("a", 1)]
    assert result == {"tag": "t", "version": 2}
    assert s.apply(add("t", [blob("a", 5)], update=True)) == {"tag": "t", "version": 2}


def test_put_replaces_and_reindexes():
    s = store_with(add("t", [blob("a", 1)]),
                   {"type": "tag_put", "tag": "t", "urls": [blob("b", 1)], "wall": 3.0})
    assert s.get("t").urls == [blob("b", 1)] and s.by_blob == {"b": {"t"}}


def test_delete_removes_tag_and_index_and_stays_deleted():
    s = store_with(add("t", [blob("a", 1)]), {"type": "tag_delete", "tag": "t"})
    assert s.get("t") is None and s.by_blob == {} and s.names() == []
    assert s.apply({"type": "tag_delete", "tag": "t"}) == {"tag": "t", "deleted": False}
    s.apply(add("t", []))  # only a new write brings a tag of that name back, empty
    assert s.get("t").urls == [] and s.get("t").version == 1


def test_attributes_set_change_delete():
    s = store_with({"type": "tag_attr", "tag": "t", "attr": "owner", "value": "ops"})
    assert s.get("t").attrs == {"owner": "ops"} and s.get("t").version == 1
    assert s.apply({"type": "tag_attr", "tag": "t", "attr": "owner", "value": "ops"})[
        "version"] == 1  # the same value is no change
    s.apply({"type": "tag_attr", "tag": "t", "attr": "owner", "value": None})
    assert s.get("t").attrs == {} and s.get("t").version == 2


def test_public_hides_tokens():
    s = store_with({"type": "tag_attr", "tag": "t", "attr": "ddfs:read-token", "value": "x"},
                   {"type": "tag_attr", "tag": "t", "attr": "a", "value": "1"})
    assert s.get("t").public()["user-data"] == {"a": "1"}


def test_blob_moved_rewrites_every_tag_holding_the_blob():
    s = store_with(add("t1", [blob("a", 1, 2, 3), blob("b", 1)]), add("t2", [blob("a", 1, 2, 3)]),
                   add("t3", [blob("b", 9)]))
    result = s.apply({"type": "blob_moved", "blob": "a", "urls": blob("a", 2, 3, 4)})
    assert result == {"blob": "a", "tags": 2}
    assert s.get("t1").urls == [blob("a", 2, 3, 4), blob("b", 1)]
    assert s.get("t2").urls == [blob("a", 2, 3, 4)]
    assert s.get("t3").urls == [blob("b", 9)]
    assert s.apply({"type": "blob_moved", "blob": "a", "urls": blob("a", 2, 3, 4)}) == {
        "blob": "a", "tags": 0}  # idempotent
    assert s.referenced()["a"] == set(blob("a", 2, 3, 4))
    s.check_invariants()


def test_a_retried_op_is_applied_once():
    s = tg.TagStore()
    first = s.apply(add("t", [blob("a", 1)], op="c/1"))
    again = s.apply(add("t", [blob("a", 1)], op="c/1"))
    assert first == again and len(s.get("t").urls) == 1


def test_the_op_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(tg, "MAX_OPS", 5)
    s = tg.TagStore()
    for i in range(8):
        s.apply(add("t", [], op=f"c/{i}"))
    assert list(s.ops) == [f"c/{i}" for i in range(3, 8)]


def test_snapshot_round_trip_keeps_everything():
    s = store_with(add("t1", [blob("a", 1), ["tag://t2"]], op="x"), add("t2", [blob("b", 2)]),
                   {"type": "tag_attr", "tag": "t1", "attr": "k", "value": "v"})
    back = tg.TagStore.from_snapshot(s.snapshot())
    assert {n: vars(t) for n, t in back.tags.items()} == {n: vars(t) for n, t in s.tags.items()}
    assert back.by_blob == s.by_blob and dict(back.ops) == dict(s.ops)
    back.check_invariants()


def test_concurrent_writers_lose_nothing_in_any_interleaving():
    """8 writers x 200 adds of one tag, interleaved at random: every URL is there at the end."""
    rng = random.Random(7)
    entries = [add("t", [[f"http://w{w}/{i}"]], op=f"w{w}/{i}") for w in range(8)
               for i in range(200)]
    rng.shuffle(entries)
    s = store_with(*entries)
    assert {u[0] for u in s.get("t").urls} == {f"http://w{w}/{i}" for w in range(8)
                                                for i in range(200)}
    assert s.get("t").version == 1600


@pytest.mark.parametrize("kind,kw,why", [
    ("add", {"tag": "bad name"}, "bad tag name"),
    ("add", {"tag": "x" * 512}, "bad tag name"),
    ("add", {"tag": "t", "urls": [[7]]}, "bad replica set"),
    ("add", {"tag": "t", "urls": [[]]}, "bad replica set"),
    ("add", {"tag": "t", "urls": "disco://x"}, "must be a list"),
    ("add", {"tag": "t", "urls": [["tag://bad name"]]}, "bad tag link"),
    ("setattr", {"tag": "t", "attr": "ddfs:other", "value": "v"}, "reserved"),
    ("setattr", {"tag": "t", "attr": "a", "value": "v" * 4097}, "at most"),
    ("setattr", {"tag": "t", "attr": "", "value": "v"}, "bad attribute"),
    ("frob", {"tag": "t"}, "unknown tag write"),
])
def test_check_write_refuses_bad_writes(kind, kw, why):
    with pytest.raises(tg.TagError, match=why):
        tg.TagStore().check_write(kind, **kw)


def test_check_write_of_a_missing_tag_says_not_found():
    # Disco: deleting a tag that does not exist succeeds, and changes nothing
    s = tg.TagStore()
    assert s.check_write("delete", "t") == {"type": "tag_delete", "tag": "t"}
    assert s.apply({"type": "tag_delete", "tag": "t"}) == {"tag": "t", "deleted": False}
    with pytest.raises(tg.TagNotFound):
        tg.TagStore().check_write("delattr", "t", attr="a")


def test_check_write_builds_the_entry():
    s = store_with(add("t", []))
    assert s.check_write("add", "t", urls=["http://x/1", ["disco://h:1/vol0/blob/ab/n"]]) == {
        "type": "tag_add", "tag": "t", "urls": [["http://x/1"], ["disco://h:1/vol0/blob/ab/n"]]}
    assert s.check_write("delete", "t") == {"type": "tag_delete", "tag": "t"}
    assert s.check_write("delattr", "t", attr="a") == {"type": "tag_attr", "tag": "t",
                                                        "attr": "a", "value": None}


def test_blob_of_and_links():
    assert tg.blob_of("disco://h:1/vol0/blob/ab/name$1") == "name$1"
    assert tg.blob_of("disco://h:1/vol0/job/x") is None
    assert tg.blob_of("http://h/vol0/blob/ab/x") is None
    assert tg.tag_link("tag://data:x") == "data:x"
    assert tg.tag_link("http://x") is None


def test_a_blob_name_keeps_the_copies_its_push_asked_for():
    plain = tg.blob_name("data.txt", 0x1234, 2, 7)
    assert plain == "data.txt$1234-2-7" and tg.blob_replicas(plain) is None
    one = tg.blob_name("data.txt", 0x1234, 2, 7, replicas=1)
    assert one == "data.txt$1234-2-7-k1" and tg.blob_replicas(one) == 1
    assert tg.blob_replicas(tg.blob_name("a-k3", 1, 1, 1)) is None  # a prefix that looks alike
    assert tg.blob_replicas(tg.blob_name("x", 1, 1, 1, replicas=12)) == 12
    for name in ("x$1-2-3-k0", "x$1-2-3-k3.gz", "x-k3", "x$1-2-k3"):
        assert tg.blob_replicas(name) is None, name


def test_replica_entries_may_be_any_string_as_in_disco():
    # Disco's own tests tag [['urls']]
    assert tg.TagStore().check_write("add", "t", urls=[["urls"]])["urls"] == [["urls"]]


def write(s, kind, tag, token=None, **kw):
    """check_write then apply, as the master and every node do."""
    return s.apply(s.check_write(kind, tag, token=token, **kw))


def test_write_token_guards_writes_not_reads():
    s = store_with(add("t", []))
    write(s, "setattr", "t", attr="a", value="v")
    write(s, "setattr", "t", attr=tg.WRITE_TOKEN, value="w")
    for token in (None, "", "rand"):
        with pytest.raises(tg.TagUnauthorized):
            s.check_write("setattr", "t", attr="a2", value="v2", token=token)
        assert s.read("t", token)["user-data"] == {"a": "v"}
        assert "write-token" not in s.read("t", token)  # tokens only to writers
    write(s, "setattr", "t", attr="a2", value="v2", token="w")
    assert s.read("t", "w")["write-token"] == "w"
    write(s, "setattr", "t", attr=tg.READ_TOKEN, value="r", token="w")
    for token in (None, "rand"):
        with pytest.raises(tg.TagUnauthorized):
            s.read("t", token)
    assert s.read("t", "r")["user-data"] == {"a": "v", "a2": "v2"}
    assert s.read("t", "w")["read-token"] == "r"  # the write token also grants reading
    with pytest.raises(tg.TagUnauthorized):
        s.check_write("delete", "t")
    write(s, "delete", "t", token="w")
    assert s.get("t") is None


def test_read_token_alone_leaves_writes_open_and_empty_token_is_none():
    s = store_with(add("t", []))
    write(s, "setattr", "t", attr=tg.READ_TOKEN, value="r")
    write(s, "setattr", "t", attr="a", value="v")           # no write token: anyone writes
    write(s, "delattr", "t", attr="a", token="rand")
    with pytest.raises(tg.TagUnauthorized):
        s.read("t")
    write(s, "setattr", "t", attr=tg.READ_TOKEN, value="")  # '' clears it
    assert tg.READ_TOKEN not in s.get("t").attrs and s.read("t", "")["id"] == "t"


def test_creating_with_a_token_sets_both_tokens():
    s = tg.TagStore()
    write(s, "add", "t", urls=[["raw://x"]], token="sec")
    assert s.get("t").attrs == {tg.READ_TOKEN: "sec", tg.WRITE_TOKEN: "sec"}
    with pytest.raises(tg.TagUnauthorized):
        s.read("t")
    write(s, "put", "n", urls=[])
    assert s.read("n")["write-token"] is None


def test_apply_refuses_an_entry_whose_token_a_prior_entry_revoked():
    s = store_with(add("t", []))
    first = s.check_write("setattr", "t", attr=tg.WRITE_TOKEN, value="w")
    second = s.check_write("setattr", "t", attr="a", value="v")  # checked before first applied
    s.apply(first)
    assert s.apply(second) == {"tag": "t", "error": "unauthorized"}
    assert "a" not in s.get("t").attrs
    s.check_invariants()


def test_update_compares_blob_names_without_their_stamps():
    # Disco's test_ddfs.test_update: pushing "dup" again with update=True adds nothing
    s = store_with(add("t", [blob("dup$5f-1-1", 1)]))
    s.apply(add("t", [blob("dup$60-1-2", 2), blob("dup$60-1-3", 2), blob("new$61-1-4", 1)],
                update=True))
    assert [tg.update_key(u) for u in s.get("t").urls] == ["new", "dup"]
    s.check_invariants()

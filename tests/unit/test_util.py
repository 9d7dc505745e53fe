"""disco.util: Disco's small helpers."""
from __future__ import annotations


import disco.util as util
from disco.util import flatten, iterify, jobname, kvgroup, schemesplit, urllist, urlsplit


def test_exports():
    assert set(util.__all__) >= {"kvgroup", "flatten", "iterify", "urlsplit", "urllist",
                                 "schemesplit", "jobname"}


def test_kvgroup_groups_consecutive_keys():
    pairs = sorted([("b", 2), ("a", 1), ("b", 3), ("a", 4), ("c", 5)])
    got = [(k, list(vs)) for k, vs in kvgroup(pairs)]
    assert got == [("a", [1, 4]), ("b", [2, 3]), ("c", [5])]


def test_kvgroup_values_are_a_lazy_iterator_and_input_is_lazy():
    source = iter([(1, "x"), (1, "y"), (2, "z"), (3, "w")])
    groups = kvgroup(source)
    key, values = next(groups)
    assert key == 1 and iter(values) is values and not isinstance(values, (list, tuple))
    assert list(values) == ["x", "y"]
    assert next(groups)[0] == 2 and next(source) == (3, "w")  # nothing read past group 2


def test_kvgroup_empty_and_word_count_idiom():
    assert list(kvgroup([])) == []
    words = [(w, 1) for w in "a b a c a".split()]
    assert [(w, sum(c)) for w, c in kvgroup(sorted(words))] == [("a", 3), ("b", 1), ("c", 1)]


def test_iterify_and_flatten():
    assert iterify("abc") == ["abc"]
    assert iterify(5) == [5]
    lst = [1, 2]
    assert iterify(lst) is lst
    assert list(flatten([1, [2, (3, [4])], "ab", [b"cd"]])) == [1, 2, 3, 4, "ab", b"cd"]


def test_schemesplit():
    assert schemesplit("http://h/p") == ("http", "h/p")
    assert schemesplit("/tmp/x") == ("file", "/tmp/x")
    assert schemesplit("raw://a://b") == ("raw", "a://b")


def test_urlsplit():
    assert urlsplit("http://host:80/a/b") == ("http", "host:80", "a/b")
    assert urlsplit("disco://n1:4000/vol0/jobs/J@1/x") == ("disco", "n1:4000", "vol0/jobs/J@1/x")
    assert urlsplit("/tmp/data.txt") == ("file", "", "/tmp/data.txt")
    assert urlsplit("file:///tmp/data.txt") == ("file", "", "/tmp/data.txt")
    assert urlsplit("raw://hello/world") == ("raw", "", "hello/world")


def test_urllist():
    assert urllist("raw://a") == ["raw://a"]
    assert urllist(["http://a/x", "http://b/x"]) == ["http://a/x", "http://b/x"]
    assert urllist(("u1", "u2")) == ["u1", "u2"]


def test_jobname():
    assert jobname("disco://n1:4000/vol0/jobs/WordCount@5a1/map-0-0.drec") == "WordCount@5a1"
    assert jobname("http://h/some/Job@x/part") == "Job@x"
    assert jobname("raw://data") == ""
    assert jobname("file") == ""

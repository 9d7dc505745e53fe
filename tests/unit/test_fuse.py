"""A map generator fused with ``sum_combiner`` (``disco.worker.fuse``): the same sums, in the same
order, the same errors, as iterating the generator; anything that could differ is not fused."""
from __future__ import annotations

import contextlib
import functools
import importlib
import linecache
import math
import pickle
import sys
import traceback
import types

import pytest

from disco import jobpack
from disco.worker import fuse
from disco.worker.task import _map_summing

LINES = ["the cat sat on the mat", "", "a a a", "the end\n", "  spaced   out  "]


def by_generator(mapf, entries, params=None) -> dict:
    """What sum_combiner makes of the generator's pairs (the unfused loop)."""
    buffer: dict = {}
    for entry in entries:
        for key, value in mapf(entry, params):
            buffer[key] = buffer.get(key, 0) + value
    return buffer


def by_fusion(mapf, entries, params=None) -> dict:
    make = fuse.summing(mapf)
    assert make is not None, f"{mapf.__name__} was not fused"
    buffer: dict = {}
    fuse.call(make(buffer), entries, params)
    return buffer


# -- maps that are fused ----------------------------------------------------------------------

def spec_map(line, params):
    for word in line.split():
        yield word, 1


def computed_pairs(line, params, weight=2, *, floor=0.5):
    """A docstring, defaults, computed keys and values of several types, early exits."""
    if not line.strip():
        return
    words = line.split()
    for i, word in enumerate(words):
        if i % weight:
            yield word.upper(), i * floor
        elif len(word) > 2:
            yield (word, len(word)), True
        else:
            yield word, math.floor(i / weight)
    n = 0
    while n < len(words):
        n += 1
        if n > 3:
            break
    else:
        yield "short line", 1
    yield "lines", 1


def with_helpers(line, params):
    seen = set()

    def first_time(word):  # a nested function using the map's own local
        new = word not in seen
        seen.add(word)
        return new

    lengths = [len(w) for w in line.split()]
    for word in line.split():
        match word:
            case "the" | "a":
                yield "stopword", 1
            case _ if first_time(word):
                yield word, max(lengths)
    yield from_params(params), sum(lengths)


def from_params(params):
    return "total" if params is None else params


ORDER: list = []


def logged(tag, value):
    ORDER.append(tag)
    return value


def side_effects(line, params):
    for word in line.split():
        yield logged(("key", word), word), logged(("value", word), 1)


FUSED = [spec_map, computed_pairs, with_helpers, side_effects]


@pytest.mark.parametrize("mapf", FUSED, ids=lambda f: f.__name__)
def test_a_fused_map_adds_up_exactly_what_its_generator_gives(mapf):
    want = by_generator(mapf, LINES)
    got = by_fusion(mapf, LINES)
    assert got == want and list(got) == list(want)  # same keys, values and order
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


def test_keys_and_values_are_evaluated_in_the_generators_order():
    ORDER.clear()
    by_generator(side_effects, LINES)
    want = list(ORDER)
    ORDER.clear()
    by_fusion(side_effects, LINES)
    assert ORDER == want and want[:2] == [("key", "the"), ("value", "the")]


class Amount:
    """A value that adds with ``+`` only (``+=`` would change the user's object in place)."""

    def __init__(self, n):
        self.n = n

    def __add__(self, other):
        return Amount(self.n + (other.n if isinstance(other, Amount) else other))

    __radd__ = __add__

    def __iadd__(self, other):
        raise AssertionError("+= used")

    def __eq__(self, other):
        return isinstance(other, Amount) and other.n == self.n


SHARED = Amount(5)


def amounts(line, params):
    for word in line.split():
        yield word, SHARED


def test_values_are_added_with_plus_leaving_the_users_objects_alone():
    got = by_fusion(amounts, ["a b a"])
    assert got == by_generator(amounts, ["a b a"]) == {"a": Amount(10), "b": Amount(5)}
    assert SHARED.n == 5
    with pytest.raises(TypeError):  # 0 + None fails as in the generator's loop
        by_fusion(tuple_values, ["a"])


def tuple_values(line, params):
    for word in line.split():
        yield word, params


def test_defaults_and_keyword_defaults_are_the_maps_own():
    computed_pairs.__defaults__ = (3,)  # as a user changing them after the def would
    try:
        assert by_fusion(computed_pairs, LINES) == by_generator(computed_pairs, LINES)
    finally:
        computed_pairs.__defaults__ = (2,)
    fuse._cache.pop(computed_pairs, None)


def test_an_error_is_the_same_and_names_the_users_yield_line():
    def unhashable(line, params):
        for word in line.split():
            yield [word], 1

    with pytest.raises(TypeError) as unfused:
        by_generator(unhashable, ["a"])
    with pytest.raises(TypeError) as fused:
        by_fusion(unhashable, ["a"])
    assert str(fused.value) == str(unfused.value)
    last = traceback.extract_tb(fused.value.__traceback__)[-1]
    assert last.name == "unhashable" and last.line == "yield [word], 1"
    assert last.lineno == unhashable.__code__.co_firstlineno + 2


def stops(line, params):
    words = iter(line.split())
    while True:
        yield next(words), 1  # StopIteration inside a generator: an error (PEP 479)


def test_a_stopiteration_out_of_the_map_is_the_generators_runtimeerror():
    with pytest.raises(RuntimeError, match="generator raised StopIteration"):
        by_generator(stops, ["a b", "c"])
    with pytest.raises(RuntimeError, match="generator raised StopIteration"):
        by_fusion(stops, ["a b", "c"])  # not the end of the entries, losing "c"
    plain, fused = [], []
    for out, how in ((plain, None), (fused, fuse.summing(stops))):
        with pytest.raises(RuntimeError):
            _map_summing(stops, ["a b", "c"], None, out.append, how)
    assert plain == fused == []


# -- maps that are not fused -------------------------------------------------------------------

def in_try(line, params):
    try:
        yield line, 1
    except TypeError:
        pass


def in_with(line, params):
    with contextlib.suppress(TypeError):
        yield line, 1


def yield_value(line, params):
    got = yield line, 1
    yield got, 1


def yield_name(line, params):
    pair = (line, 1)
    yield pair


def three(line, params):
    yield line, 1, 2


def starred(line, params):
    yield *(line, 1),


def delegating(line, params):
    yield from spec_map(line, params)


def nested_yield(line, params):
    yield (yield), 1


def in_a_default(line, params):
    def inner(x=(yield line, 1)):  # the yield is the map's own, not inner's
        return x
    yield inner(), 1


def returns_list(line, params):
    return [(line, 1)]


async def agen(line, params):
    yield line, 1


def named_like_ours(line, params):
    for _disco_fused_key in line.split():
        yield _disco_fused_key, 1


@pytest.mark.parametrize("mapf", [
    in_try, in_with, yield_value, yield_name, three, starred, delegating, nested_yield,
    in_a_default, returns_list, agen, named_like_ours, lambda line, params: [(line, 1)], len,
    functools.partial(spec_map, params=None)],
    ids=lambda f: getattr(f, "__name__", type(f).__name__))
def test_a_map_that_could_behave_otherwise_is_not_fused(mapf):
    assert fuse.summing(mapf) is None


def test_a_closure_is_not_fused():
    n = 2

    def closure(line, params):
        yield line, n

    assert fuse.summing(closure) is None


def test_no_source_or_a_source_edited_since_is_not_fused(tmp_path, monkeypatch):
    code = "def m(line, params):\n    yield line, 1\n"
    namespace: dict = {}
    exec(compile(code, str(tmp_path / "gone.py"), "exec"), namespace)  # noqa: S102
    assert fuse.summing(namespace["m"]) is None  # no file, nothing in linecache
    module_file = tmp_path / "fusemod.py"
    module_file.write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("fusemod")
    try:
        module_file.write_text("def m(line, params):\n    yield line, 2\n")  # edited since
        linecache.checkcache(str(module_file))
        assert fuse.summing(module.m) is None
    finally:
        sys.modules.pop("fusemod", None)


def test_turned_off_with_disco_fuse_0(monkeypatch):
    assert fuse.enabled()
    for off in ("0", "False", "no"):  # the user's, or the daemon's from its config
        monkeypatch.setenv("DISCO_FUSE", off)
        assert not fuse.enabled()
    monkeypatch.setenv("DISCO_FUSE", "1")
    assert fuse.enabled()


# -- in a worker -------------------------------------------------------------------------------

def test_a_map_shipped_by_value_is_fused_from_the_job_packs_source(tmp_path, monkeypatch):
    """As a node with no copy of the user's script sees it: the function unpickled from the
    job pack's code, its file's text only in the pack's ``sources``."""
    script = tmp_path / "userjob.py"
    script.write_text("import re\n\n\ndef map(line, params):\n"
                      "    for word in re.findall(r'\\w+', line):\n"
                      "        yield word.lower(), 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("userjob")
    try:
        import cloudpickle
        cloudpickle.register_pickle_by_value(module)
        try:
            code = jobpack.dumps({"map": module.map})
        finally:
            cloudpickle.unregister_pickle_by_value(module)
        sources = {str(script): script.read_text()}
    finally:
        sys.modules.pop("userjob", None)
    script.unlink()
    linecache.clearcache()
    shipped = pickle.loads(code)["map"]
    assert fuse.summing(shipped) is None  # the file is gone: no source
    fuse._cache.pop(shipped, None)
    jobpack.register_sources(sources)
    lines = ["Hello, hello World", "world!"]
    assert by_fusion(shipped, lines) == by_generator(shipped, lines) == {"hello": 2, "world": 2}


def test_the_map_task_sums_the_same_fused_or_not():
    for mapf in FUSED:
        plain, fused = [], []
        _map_summing(mapf, LINES, None, plain.append)
        _map_summing(mapf, LINES, None, fused.append, fuse.summing(mapf))
        assert fused == plain and len(fused) == 1


def registered(f):
    registered.seen = f
    return f


def wrapped(f):
    @functools.wraps(f)
    def wrapper(line, params):
        yield from f(line, params)
    return wrapper


@registered
def decorated(line, params):
    yield line.strip(), 1


@wrapped
def decorated_by_a_wrapper(line, params):
    yield line.strip(), 1


class WordJob:
    weight = 3

    @staticmethod
    def map(line, params):
        for word in line.split():
            yield word, 1

    def weighted(self, line, params):
        for word in line.split():
            yield word, self.weight


class Private:
    __secret = "s"

    def map(self, line, params):  # ``self.__secret`` is ``self._Private__secret`` here
        yield self.__secret, 1


CALLS: list = []


def counted(value):
    CALLS.append(value)
    return value


@registered
def annotated(line: counted(str), params, sep: counted(str) = counted(None), *,
              upper: bool = counted(False)) -> counted(None):
    for word in line.split(sep):
        yield word.upper() if upper else word, 1


def test_methods_and_functions_decorators_hand_back_are_fused():
    for mapf in (decorated, WordJob.map, WordJob().map, WordJob().weighted):
        assert by_fusion(mapf, LINES) == by_generator(mapf, LINES)
    CALLS.clear()
    registered.seen = None
    assert by_fusion(annotated, LINES) == by_generator(annotated, LINES)
    assert CALLS == [] and registered.seen is None  # nothing of the def evaluated again
    annotated.__kwdefaults__ = {"upper": True}
    fuse._cache.pop(annotated, None)
    assert by_fusion(annotated, ["a b"]) == {"A": 1, "B": 1}
    assert by_fusion(WordJob().weighted, ["a a"]) == {"a": 6}
    assert fuse.summing(decorated_by_a_wrapper) is None  # the wrapper is what runs


class MapNamedJob:
    @staticmethod
    def map(line, params):  # ``map`` in here is the builtin, in the copy too
        for word in map(str.lower, line.split()):
            yield word, 1


def walk(tree, params):  # calls itself: the generator, never the copy
    for key, value in tree.items():
        if isinstance(value, dict):
            for inner, count in walk(value, params):
                yield f"{key}.{inner}", count
        else:
            yield key, value


def named_parts(line, params):
    def helper(word):
        return word

    for word in line.split():
        yield (helper.__qualname__, helper(word)), (lambda: 1)()


def test_the_maps_own_name_and_nested_names_mean_what_they_meant():
    assert by_fusion(MapNamedJob.map, ["A b a"]) == {"a": 2, "b": 1}
    tree = {"a": {"b": 2, "c": {"d": 1}}, "e": 5}
    assert by_fusion(walk, [tree]) == by_generator(walk, [tree]) == {"a.b": 2, "a.c.d": 1, "e": 5}
    assert by_fusion(named_parts, ["x y"]) == by_generator(named_parts, ["x y"])
    assert list(by_fusion(named_parts, ["x"])) == [("named_parts.<locals>.helper", "x")]
    make = fuse.summing(spec_map)
    fused = make({})
    assert (fused.__name__, fused.__qualname__) == ("spec_map", "spec_map")
    assert fused.__code__.co_qualname == "spec_map"


def looks_at_locals(line, params):
    for word in line.split():
        yield word, len(locals())


def looks_at_frames(line, params):
    import sys
    yield sys._getframe().f_code.co_name, 1


class Proxy:
    """A wrapper that passes ``isinstance`` for a function (as wrapt's proxies do)."""

    def __init__(self, wrapped):
        self.__wrapped__ = wrapped

    @property
    def __class__(self):
        return types.FunctionType

    def __getattr__(self, name):
        return getattr(self.__wrapped__, name)

    def __call__(self, line, params):
        for key, value in self.__wrapped__(line, params):
            yield key.upper(), value


def test_introspection_and_function_lookalikes_are_not_fused():
    assert fuse.summing(looks_at_locals) is None and fuse.summing(looks_at_frames) is None
    proxy = Proxy(spec_map)
    assert isinstance(proxy, types.FunctionType) and fuse.summing(proxy) is None


def test_a_map_whose_code_was_swapped_is_fused_as_its_new_code():
    def first(line, params):
        yield "first", 1

    def second(line, params):
        yield "second", 1

    assert by_fusion(first, ["x"]) == {"first": 1}
    first.__code__ = second.__code__
    assert by_fusion(first, ["x"]) == {"second": 1}


def test_a_private_name_is_not_fused():
    assert fuse.summing(Private.map) is None and fuse.summing(Private().map) is None


@pytest.mark.parametrize("mapf, reason", [
    (in_try, "yields inside try or with"), (in_with, "yields inside try or with"),
    (yield_value, "is not a statement `yield key, value`"),
    (delegating, "is not a statement `yield key, value`"),
    (looks_at_locals, "looks at its own frame or locals (locals)"),
    (Private.map, "would not mean the same names (_Private__secret, __secret)"),
    (Proxy(spec_map), "not a plain function (a Proxy)"),
    (agen, "an async function")], ids=lambda x: getattr(x, "__name__", None))
def test_why_a_map_is_not_fused_says_what_to_change(mapf, reason):
    assert fuse.summing(mapf) is None
    assert reason in fuse.why_not(mapf)


def test_nothing_to_say_of_a_fused_map_or_one_that_is_no_generator():
    assert fuse.why_not(spec_map) is None and fuse.why_not(WordJob().weighted) is None
    assert fuse.why_not(returns_list) is None and fuse.why_not(len) is None
    def closure_maker():
        n = 1

        def closure(line, params):
            yield line, n
        return closure
    assert fuse.why_not(closure_maker()) == "a closure (it uses n of an enclosing function)"
    namespace: dict = {}
    exec("def typed(line, params):\n    yield line, 1\n", namespace)  # noqa: S102
    assert fuse.why_not(namespace["typed"]) == "its source is not available (<string>)"

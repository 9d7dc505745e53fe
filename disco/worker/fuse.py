"""A map generator fused with ``sum_combiner``: the same sums, without a generator step a pair.

A map task with ``combiner=sum_combiner`` adds every pair the map yields into a dict:
``buffer[key] = buffer.get(key, 0) + value``. When the map is a plain generator function whose
every ``yield`` is a statement ``yield key, value``, the worker can compile a copy of the map in
which each such statement does that addition itself: no generator is resumed, no tuple is built
and unpacked for each pair. The user's own loop then runs as fast as the same loop written with
a dict by hand (a word count's map stage about a fifth faster), with exactly the sums the
generator would have given, in the same order.

The copy is made only when it is certainly the same code: the map's source (from the job pack's
shipped sources, or the installed module) is compiled again unchanged and must give a code object
equal to the map's own (same bytecode, constants, names, line table). Anything else, or anything
whose behaviour could differ, keeps the generator:

- a ``yield`` that is not a statement of a two-item tuple (``x = yield``, ``yield from``,
  ``yield pair``, ``yield *kv,``);
- a ``yield`` inside ``try`` or ``with`` (an error of the addition, an unhashable key, would
  reach the user's handler there, and never did before);
- a closure (free variables), a ``__private`` name (mangled inside a class), ``async``, no
  source (or a file over a MiB), a source that no longer matches the code;
- a map that looks at its own frame or locals (``locals()``, ``vars()``, ``dir()``,
  ``sys._getframe``, ``inspect.currentframe``...), whose copy's would differ;
- anything but a plain function or a bound method of one (a proxy object that passes for a
  function, like wrapt's, runs its own code around the map).

The copy names what the map named, and nothing else: its own name in its body is the global it
was (a recursive map calls itself, not the copy), nested functions and classes are the map's
own code objects (same qualified names), and the copy's ``__name__`` and ``__qualname__`` are
the map's.

A decorator that hands back the function itself (``@staticmethod``, a registry's) is no
obstacle: the code compared is the function's own. A bound method (``def map(self, line,
params)`` of a ``Job`` class) is fused as its function, bound to the same object.

Errors keep their place: the key and the value are evaluated before the addition, as before,
and a failure in the addition now names the user's ``yield`` line. ``why_not(fn)`` says why
a generator map is not fused (the worker logs it as ``map_not_fused``). A ``StopIteration`` that
escapes the copy must be turned into the ``RuntimeError`` a generator gives (PEP 479) by the
caller, as ``call`` does. ``DISCO_FUSE=0`` in a node's
environment turns fusion off.
"""
from __future__ import annotations

import __future__
import ast
import inspect
import linecache
import os
import types
import warnings
import weakref
from typing import Callable

_PREFIX = "_disco_fused_"
BUFFER, GET, KEY, VALUE, INNER = (_PREFIX + x for x in ("buffer", "get", "key", "value",
                                                        "map"))
_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag
_NOT_FUSED = (inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_GUARDED = (ast.Try, ast.With, ast.AsyncWith) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())
_cache: "weakref.WeakKeyDictionary[types.FunctionType, tuple]" = weakref.WeakKeyDictionary()
MAX_SOURCE_BYTES = 1 << 20  # a bigger file is not compiled again (about 2 s a MiB)
# names that let a map see its own frame, its caller's or its locals: the copy's differ
_INTROSPECTION = frozenset({"locals", "vars", "dir", "eval", "exec", "_getframe",
                            "currentframe", "stack", "getouterframes", "extract_stack",
                            "format_stack", "print_stack", "walk_stack", "f_back", "f_locals"})


def enabled() -> bool:
    return os.environ.get("DISCO_FUSE", "1").strip().lower() not in ("0", "no", "false", "off")


def summing(fn) -> Callable[[dict], Callable] | None:
    """A factory ``make(buffer)`` giving a function with ``fn``'s signature that, called as
    ``fn`` would be, adds each pair ``fn`` would yield into ``buffer`` (``+``, from ``0``) and
    returns nothing; None when ``fn`` cannot be fused (then iterate ``fn``'s generator)."""
    return _fused(fn)[0]


def why_not(fn) -> str | None:
    """Why ``summing(fn)`` gives None, in a few words; None when ``fn`` is fused or is not a
    generator function at all (nothing to fuse: a map returning a list, say)."""
    return _fused(fn)[1]


def _fused(fn) -> tuple[Callable | None, str | None]:
    try:
        if type(fn) is types.MethodType:  # a Job's own ``def map(self, line, params)``
            make_func, reason = _fused(fn.__func__)
            bound = fn.__self__
            return (None, reason) if make_func is None else \
                ((lambda buffer: types.MethodType(make_func(buffer), bound)), None)
        if type(fn) is not types.FunctionType:  # exactly: a proxy may pass for a function
            return None, None if inspect.isbuiltin(fn) or not callable(fn) \
                else f"not a plain function (a {type(fn).__name__})"
        known = _cache.get(fn)
        if known is not None and known[0] is fn.__code__:
            return known[1], known[2]
        code = fn.__code__
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the file's warnings were shown at its import
                made, reason = _fuse(fn), None
        except _Refused as refused:
            made, reason = None, refused.args[0]
        except Exception as exc:  # noqa: BLE001 - a source the compiler will not take, say
            made, reason = None, f"fusing it failed ({type(exc).__name__}: {exc})"
        _cache[fn] = (code, made, reason)
        return made, reason
    except Exception as exc:  # noqa: BLE001 - an object that is odd in other ways
        return None, f"fusing it failed ({type(exc).__name__}: {exc})"


class _Refused(Exception):
    """Why a map is not fused (``why_not`` gives its text)."""


def _fuse(fn: types.FunctionType) -> Callable[[dict], Callable] | None:
    code = fn.__code__
    if code.co_flags & _NOT_FUSED:
        raise _Refused("an async function")
    if not code.co_flags & inspect.CO_GENERATOR:
        return None  # nothing to fuse, and no reason to give
    if code.co_freevars:
        raise _Refused(f"a closure (it uses {', '.join(code.co_freevars)} of an enclosing "
                       "function)")
    seen = _INTROSPECTION & _all_names(code)
    if seen:
        raise _Refused(f"it looks at its own frame or locals ({', '.join(sorted(seen))})")
    if any(n.startswith(_PREFIX) for n in code.co_varnames + code.co_names):
        raise _Refused(f"it uses names starting with {_PREFIX}")
    filename = code.co_filename
    linecache.checkcache(filename)  # a file edited since is read again (shipped text stays)
    text = "".join(linecache.getlines(filename, fn.__globals__))
    if not text:
        raise _Refused(f"its source is not available ({filename})")
    if len(text) > MAX_SOURCE_BYTES:
        raise _Refused(f"its file is over {MAX_SOURCE_BYTES >> 20} MiB ({filename})")
    # the whole file, compiled as its module was: the compiler's choices depend on the module
    # (an imported name's attribute calls, ``from __future__``), so the function alone would
    # not give the same code even when it is the same
    tree = ast.parse(text, filename)
    found = _code_named(compile(tree, filename, "exec", dont_inherit=True), code.co_name,
                        code.co_firstlineno)
    fdef = _def_at(tree, code.co_name, code.co_firstlineno)
    if found != code or fdef is None:
        raise _Refused(f"its source in {filename} does not give its code (edited since it was "
                       "loaded?)")
    if any(_private(name) for name in _identifiers(fdef)):
        raise _Refused("it uses a __private name (mangled inside a class, not in a copy)")
    _rewrite(fdef, frozenset(code.co_varnames) - frozenset(code.co_cellvars))
    # the copy is the bare function under a name of ours (its own name in its body still
    # means what it meant): its decorators, annotations and defaults were evaluated once,
    # when ``fn`` was made (``fn``'s own defaults are put on each copy)
    fdef.name, fdef.decorator_list, fdef.returns = INNER, [], None
    arguments = fdef.args
    arguments.defaults, arguments.kw_defaults = [], [None] * len(arguments.kwonlyargs)
    for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                arguments.vararg, arguments.kwarg]:
        if arg is not None:
            arg.annotation = None
    factory = ast.FunctionDef(
        name=_PREFIX + "factory", args=ast.arguments(
            posonlyargs=[], args=[ast.arg(BUFFER)], vararg=None, kwonlyargs=[],
            kw_defaults=[], kwarg=None, defaults=[]),
        body=[ast.Assign(targets=[ast.Name(GET, ast.Store())],
                         value=ast.Attribute(ast.Name(BUFFER, ast.Load()), "get", ast.Load())),
              fdef, ast.Return(ast.Name(INNER, ast.Load()))],
        decorator_list=[], returns=None)
    ast.copy_location(factory, fdef)
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    flags = code.co_flags & _FUTURE_FLAGS
    factory_code = _code_named(compile(module, filename, "exec", flags, dont_inherit=True),
                               factory.name, factory.lineno)
    fused_code = _code_named(factory_code, INNER, fdef.lineno) if factory_code else None
    fused_code = _same_scope(code, fused_code) if fused_code else None
    if fused_code is None:
        raise _Refused("its fused copy would not name what it names")
    factory_code = factory_code.replace(co_consts=tuple(
        fused_code if isinstance(c, types.CodeType) and c.co_name == INNER else c
        for c in factory_code.co_consts))
    make_inner = types.FunctionType(factory_code, fn.__globals__, factory.name)
    fn_ref = weakref.ref(fn)

    def make(buffer: dict) -> Callable:
        fused = make_inner(buffer)
        original = fn_ref()
        fused.__name__, fused.__qualname__ = original.__name__, original.__qualname__
        fused.__defaults__, fused.__kwdefaults__ = original.__defaults__, original.__kwdefaults__
        return fused
    return make


def _same_scope(code: types.CodeType, fused: types.CodeType) -> types.CodeType | None:
    """``fused`` with ``code``'s name and nested code objects (their qualified names), if it
    names exactly what ``code`` names (plus the buffer, its ``get`` and the pair's two
    temporaries) and holds the same nested code; else None."""
    if fused.co_flags & inspect.CO_GENERATOR:
        return None  # a yield the rewrite did not see (in a nested def's defaults)
    if set(fused.co_freevars) - {BUFFER, GET} or set(fused.co_cellvars) != set(code.co_cellvars) \
            or set(fused.co_names) != set(code.co_names) \
            or set(fused.co_varnames) - {KEY, VALUE} != set(code.co_varnames):
        return None
    nested = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    copies = [c for c in fused.co_consts if isinstance(c, types.CodeType)]
    if len(nested) != len(copies) or any(a != b for a, b in zip(nested, copies)):
        return None
    originals = iter(nested)
    consts = tuple(next(originals) if isinstance(c, types.CodeType) else c
                   for c in fused.co_consts)
    return fused.replace(co_consts=consts, co_name=code.co_name, co_qualname=code.co_qualname)


def _all_names(code: types.CodeType) -> frozenset:
    """Every global, attribute and local name of ``code`` and of the code nested in it."""
    names = set(code.co_names) | set(code.co_varnames)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_names(const)
    return frozenset(names)


def call(fused: Callable, entries, params) -> None:
    """``fused(entry, params)`` for every entry, as iterating the generators would: a
    ``StopIteration`` out of the map is an error, not the end of the entries."""
    try:
        for entry in entries:
            fused(entry, params)
    except StopIteration as exc:
        raise RuntimeError("generator raised StopIteration") from exc


def _code_named(module_code: types.CodeType, name: str, line: int) -> types.CodeType | None:
    """The code object of the function ``name`` defined at ``line`` in ``module_code``."""
    for const in module_code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_name == name and const.co_firstlineno == line:
                return const
            found = _code_named(const, name, line)
            if found is not None:
                return found
    return None


def _def_at(tree: ast.Module, name: str, line: int) -> ast.FunctionDef | None:
    """The ``def name`` of ``tree`` whose code starts at ``line`` (its first decorator's)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name and line == min(
                [node.lineno, *(d.lineno for d in node.decorator_list)]):
            return node
    return None


def _identifiers(tree: ast.AST):
    for node in ast.walk(tree):
        for field in ("id", "attr", "arg", "name", "asname", "rest"):
            value = getattr(node, field, None)
            if isinstance(value, str):
                yield value
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            yield from node.names


def _private(name: str) -> bool:
    return name.startswith("__") and not name.endswith("__")


def _own_nodes(node: ast.AST, guarded: bool = False):
    """``(node, inside try/with)`` for every node of the function ``node``'s own scope; of a
    statement ``yield key, value``, the statement and the parts of the pair, not the yield."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _SCOPES):
            continue  # its yields are its own
        yield child, guarded
        pair = _pair_of(child)
        for part in pair or (child,):
            if pair:
                yield part, guarded
            yield from _own_nodes(part, guarded or isinstance(child, _GUARDED))


def _pair_of(node: ast.AST) -> list | None:
    """``[key, value]`` of a statement ``yield key, value``, else None."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Yield) \
            and isinstance(node.value.value, ast.Tuple) and len(node.value.value.elts) == 2 \
            and not any(isinstance(e, ast.Starred) for e in node.value.value.elts):
        return node.value.value.elts
    return None


def _rewrite(fdef: ast.FunctionDef, plain_locals: frozenset) -> None:
    """Turn each ``yield key, value`` statement of ``fdef`` into the buffer's addition; raise
    ``_Refused`` (``fdef`` half-changed, to be thrown away) when some yield cannot be.
    ``plain_locals``: the function's locals no other scope sees (a key read twice there is
    the same object)."""
    pairs = {}
    for node, guarded in _own_nodes(fdef):
        if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            raise _Refused(f"line {node.lineno} has a yield that is not a statement "
                           "`yield key, value`")
        pair = _pair_of(node)
        if pair is not None:
            if guarded:
                raise _Refused(f"line {node.lineno} yields inside try or with")
            pairs[id(node)] = (node, pair)
    for parent in [fdef, *(n for n, _ in _own_nodes(fdef))]:
        for field, value in ast.iter_fields(parent):
            if isinstance(value, list) and any(id(x) in pairs for x in value):
                setattr(parent, field, [y for x in value for y in (
                    _addition(*pairs[id(x)], plain_locals) if id(x) in pairs else [x])])


def _addition(stmt: ast.Expr, pair: list, plain_locals: frozenset) -> list[ast.stmt]:
    """``yield key, value`` as ``buffer[key] = get(key, 0) + value``, key then value first
    evaluated once each, in that order, as the tuple did."""
    key, value = pair
    load = lambda name: ast.Name(name, ast.Load())  # noqa: E731
    if isinstance(key, ast.Name) and key.id in plain_locals and isinstance(value, ast.Constant):
        out = [ast.Assign([ast.Subscript(load(BUFFER), key, ast.Store())], ast.BinOp(
            ast.Call(load(GET), [ast.Name(key.id, ast.Load()), ast.Constant(0)], []),
            ast.Add(), value))]
    else:
        out = [ast.Assign([ast.Name(KEY, ast.Store())], key),
               ast.Assign([ast.Name(VALUE, ast.Store())], value),
               ast.Assign([ast.Subscript(load(BUFFER), load(KEY), ast.Store())], ast.BinOp(
                   ast.Call(load(GET), [load(KEY), ast.Constant(0)], []), ast.Add(),
                   load(VALUE)))]
    for new in out:
        for node in ast.walk(new):
            if "lineno" in node._attributes and not hasattr(node, "lineno"):
                ast.copy_location(node, stmt)  # the parts made here; the user's keep theirs
    return out

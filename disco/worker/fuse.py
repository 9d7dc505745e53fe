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
- a closure (free variables), ``async``, no source (or a file over a MiB), a source that no
  longer matches the code;
- a map that looks at its own frame or locals (``locals()``, ``vars()``, ``dir()``,
  ``sys._getframe``, ``inspect.currentframe``...), whose copy's would differ;
- anything but a plain function or a bound method of one (a proxy object that passes for a
  function, like wrapt's, runs its own code around the map).

The copy names what the map named, and nothing else: its own name in its body is the global it
was (a recursive map calls itself, not the copy), nested functions and classes are the map's
own code objects (same qualified names), and the copy's ``__name__`` and ``__qualname__`` are
the map's. (A ``__private`` name, mangled inside a class and not in a copy compiled alone,
is caught the same way: the copy would name another thing.)

A decorator that hands back the function itself (``@staticmethod``, a registry's) is no
obstacle: the code compared is the function's own. A bound method (``def map(self, line,
params)`` of a ``Job`` class) is fused as its function, bound to the same object.

Errors keep their place: the key and the value are evaluated before the addition, as before,
and a failure in the addition now names the user's ``yield`` line. ``why_not(fn)`` says why
a generator map is not fused (the worker logs it as ``map_not_fused``). A ``StopIteration`` that
escapes the copy must be turned into the ``RuntimeError`` a generator gives (PEP 479) by the
caller, as ``call`` does. ``DISCO_FUSE=0`` in a node's environment turns fusion off.
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

from disco.jobpack import MAX_SOURCE_BYTES  # a bigger file is not shipped, nor compiled again

_PREFIX = "_disco_fused_"
BUFFER, GET, KEY, VALUE, INNER = (_PREFIX + x for x in ("buffer", "get", "key", "value",
                                                        "map"))
_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag
_NOT_FUSED = (inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE)
_cache: "weakref.WeakKeyDictionary[types.FunctionType, tuple]" = weakref.WeakKeyDictionary()
# names that let a map see its own frame, its caller's or its locals: the copy's differ
_INTROSPECTION = frozenset({"locals", "vars", "dir", "eval", "exec", "_getframe",
                            "currentframe", "stack", "getouterframes", "extract_stack",
                            "format_stack", "print_stack", "walk_stack", "f_back", "f_locals"})


def enabled() -> bool:
    """Whether the node's settings let maps be fused (``DISCO_FUSE``, as the daemon passes it
    on: ``True``/``False`` from its config, or the user's ``1``/``0``/``yes``/``no``)."""
    return os.environ.get("DISCO_FUSE", "1").strip().lower() not in ("0", "no", "false")


def fusion(fn) -> tuple[Callable[[dict], Callable] | None, str | None]:
    """``(make, None)`` when ``fn`` can be fused: ``make(buffer)`` gives a function with
    ``fn``'s signature that, called as ``fn`` would be, adds each pair ``fn`` would yield into
    ``buffer`` (``+``, from ``0``) and returns nothing. Else ``(None, why)``: why not, in a few
    words, or None when ``fn`` is no generator function (nothing to fuse: a map returning a
    list, say). Then iterate ``fn``'s generator."""
    try:
        if type(fn) is types.MethodType:  # a Job's own ``def map(self, line, params)``
            make_func, reason = fusion(fn.__func__)
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


def summing(fn) -> Callable[[dict], Callable] | None:
    """``fusion(fn)``'s ``make``, or None."""
    return fusion(fn)[0]


def why_not(fn) -> str | None:
    """``fusion(fn)``'s reason, or None."""
    return fusion(fn)[1]


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
    fdef.body = _Fuser(frozenset(code.co_varnames) - frozenset(code.co_cellvars)).body(fdef)
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
    fused_code = _same_scope(code, _code_named(factory_code, INNER, fdef.lineno))
    factory_code = factory_code.replace(co_consts=tuple(
        fused_code if isinstance(c, types.CodeType) and c.co_name == INNER else c
        for c in factory_code.co_consts))
    make_inner = types.FunctionType(factory_code, fn.__globals__, factory.name)
    fn_ref = weakref.ref(fn)

    def make(buffer: dict) -> Callable:
        fused = make_inner(buffer)  # named as the map: the code's names are its
        original = fn_ref()
        fused.__defaults__, fused.__kwdefaults__ = original.__defaults__, original.__kwdefaults__
        return fused
    return make


def _same_scope(code: types.CodeType, fused: types.CodeType) -> types.CodeType:
    """``fused`` with ``code``'s name and nested code objects (their qualified names), if it
    names exactly what ``code`` names (plus the buffer, its ``get`` and the pair's two
    temporaries) and holds the same nested code; else ``_Refused``."""
    if fused.co_flags & inspect.CO_GENERATOR:
        raise _Refused("it has a yield inside a nested def's defaults or decorators")
    other = (set(fused.co_freevars) - {BUFFER, GET}) \
        | (set(fused.co_cellvars) ^ set(code.co_cellvars)) \
        | (set(fused.co_names) ^ set(code.co_names)) \
        | (set(fused.co_varnames) - {KEY, VALUE}) ^ set(code.co_varnames)
    nested = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    copies = [c for c in fused.co_consts if isinstance(c, types.CodeType)]
    if other or len(nested) != len(copies) or any(a != b for a, b in zip(nested, copies)):
        # a ``__private`` name, mangled in the class the map is defined in, is the usual one
        raise _Refused("a copy compiled alone would not mean the same names"
                       + (f" ({', '.join(sorted(other))})" if other else ""))
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


class _Fuser(ast.NodeTransformer):
    """Rewrites the statements of one function's own scope: each ``yield key, value`` becomes
    the buffer's addition (``_addition``); any other yield, or one inside ``try`` or ``with``,
    is ``_Refused``. Nested functions, lambdas and classes are left as they are (their yields
    are their own). ``plain_locals``: the function's locals no other scope sees (a key read
    twice there is the same object)."""

    def __init__(self, plain_locals: frozenset):
        self.plain_locals, self.guarded = plain_locals, 0

    def body(self, fdef: ast.FunctionDef) -> list[ast.stmt]:
        return [new for stmt in fdef.body for new in _as_list(self.visit(stmt))]

    def _leave(self, node):
        return node  # another scope

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _leave

    def _guard(self, node):
        self.guarded += 1
        try:
            return self.generic_visit(node)
        finally:
            self.guarded -= 1

    visit_Try = visit_TryStar = visit_With = visit_AsyncWith = _guard

    def visit_Expr(self, node: ast.Expr):
        pair = node.value.value if isinstance(node.value, ast.Yield) else None
        if not (isinstance(pair, ast.Tuple) and len(pair.elts) == 2
                and not any(isinstance(e, ast.Starred) for e in pair.elts)):
            return self.generic_visit(node)
        if self.guarded:
            raise _Refused(f"line {node.lineno} yields inside try or with")
        key, value = (self.visit(e) for e in pair.elts)  # a yield inside the pair is refused
        return _addition(node, key, value, self.plain_locals)

    def _refuse(self, node):
        raise _Refused(f"line {node.lineno} has a yield that is not a statement "
                       "`yield key, value`")

    visit_Yield = visit_YieldFrom = visit_Await = _refuse


def _as_list(visited) -> list:
    return visited if isinstance(visited, list) else [visited]


def _addition(stmt: ast.Expr, key, value, plain_locals: frozenset) -> list[ast.stmt]:
    """``yield key, value`` as ``buffer[key] = get(key, 0) + value``, key then value first
    evaluated once each, in that order, as the tuple did."""
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

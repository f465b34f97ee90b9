"""Asset code versions computed from the code itself: a short hash of the source an asset's logic
is made of, so that the version changes exactly when that logic does.

Why: Dagster compares an asset's `code_version` with the one its last materialization recorded
to mark it stale ("code version changed"), and the model assets log it on every MLflow run and
registered version (the `code_version` lineage tag). Hand-written versions ("1") were never
bumped, so neither signal ever fired and every model version claimed the same code.

`source_version` is called at import, when the asset is defined. It hashes the source text of
the given functions, classes and dataclass instances (a ModelSpec) and of every function and
class of this package they reach: module globals, closure variables, `from crypto_assets...
import` inside a function body, methods, base classes and dataclass fields, transitively, plus
the simple constants they read (feature lists, SQL text, numbers). A change in that code gives a
new version; a change elsewhere (another model's trainer, code the asset never calls, comments
between functions) does not. Resources (ConfigurableResource subclasses) are where an asset
runs, not what it computes: they are not followed, or every asset would change with any table's
DDL. Source text, not bytecode or line numbers, is hashed, sets are hashed sorted, and the
pieces are sorted before hashing, so every process and Python build computes the same version.

Finding what a function reaches means importing it. An asset that imports its code only when it
runs (the report: matplotlib costs ~1.5 s, which every run worker would pay at code load) names
that code's modules `unimported`: they are not imported here, each of their source files counts
whole (comments included), and what they import from the rest of the package is followed as
usual.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import linecache
import sys
import types
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "crypto_assets"


def source_version(*roots: object, package: str = PACKAGE, unimported: tuple[str, ...] = ()) -> str:
    """12 hex digits of a SHA-256 over the source `roots` reach inside `package`, with the
    modules (or packages) named in `unimported` read as files, never imported (see the module)."""
    digest = hashlib.sha256()
    for piece in sorted(_pieces(roots, package, unimported)):
        digest.update(piece.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class _Node:
    obj: object  # held, so that its id (the cache key) is not reused
    pieces: frozenset[str]
    refs: tuple[object, ...]


# shared by every asset's walk: most of what they reach is common
_NODES: dict[tuple[int, str, tuple[str, ...]], _Node] = {}


def _pieces(roots: tuple[object, ...], package: str, unimported: tuple[str, ...]) -> set[str]:
    pieces: set[str] = set()
    todo = list(roots)
    for name in unimported:
        texts, refs = _unimported_source(name, package, unimported)
        pieces.update(texts)
        todo.extend(refs)
    seen: set[int] = set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        key = (id(obj), package, unimported)
        node = _NODES.get(key)
        if node is None or node.obj is not obj:
            node = _NODES[key] = _node(obj, package, unimported)
        pieces.update(node.pieces)
        todo.extend(node.refs)
    return pieces


def _unimported_source(name: str, package: str, unimported: tuple[str, ...]) -> tuple[set[str], list[object]]:
    """The text of every source file of module or package `name` (found, not imported) and what
    those files import by name from the rest of `package` (imported: the walk follows it)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(name)
    if spec.submodule_search_locations:  # a package: all its modules, by their path inside it
        root = Path(list(spec.submodule_search_locations)[0])
        files = {f"{name}/{p.relative_to(root).as_posix()}": p for p in sorted(root.rglob("*.py"))}
    else:
        files = {name: Path(spec.origin)}
    texts: set[str] = set()
    refs: list[object] = []
    for label, path in files.items():
        text = path.read_text()
        texts.add(f"{label}\n{text}")
        for stmt in ast.walk(ast.parse(text)):
            if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module is not None \
                    and _in_package(stmt.module, package) and not _in_any(stmt.module, unimported):
                module = importlib.import_module(stmt.module)
                refs.extend(getattr(module, a.name) for a in stmt.names if hasattr(module, a.name))
    return texts, refs


def _in_any(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(_in_package(module, p) for p in prefixes)


def _node(obj: object, package: str, unimported: tuple[str, ...]) -> _Node:
    """What one object contributes (its source or value) and what it reaches."""
    if callable(obj) and hasattr(obj, "__wrapped__"):  # lru_cache, functools.wraps
        return _Node(obj, frozenset(), (inspect.unwrap(obj),))
    refs: list[object] = []
    texts: set[str] = set()
    if inspect.isfunction(obj) and _ours(obj, package) and not _generated(obj):
        refs, texts = _function_refs(obj, package, unimported)
        texts.add(f"{obj.__module__}:{obj.__qualname__}\n{_function_source(obj)}")
    elif inspect.isclass(obj) and _ours(obj, package) and not _resource(obj):
        refs.extend(obj.__mro__[1:])
        texts.add(f"{obj.__module__}:{obj.__qualname__}\n{_class_source(obj)}")
        for method in _methods(obj):  # their text is in the class's: only what they reach
            method_refs, method_texts = _function_refs(method, package, unimported)
            refs.extend(method_refs)
            texts.update(method_texts)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type) and _ours(type(obj), package):
        refs.append(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            text = _constant(value)
            if text is None:
                refs.append(value)
            else:
                texts.add(f"{type(obj).__qualname__}.{f.name} = {text}")
    elif (text := _constant(obj)) is not None:  # a closure variable or a root that is a plain value
        texts.add(f"= {text}")
    return _Node(obj, frozenset(texts), tuple(refs))


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _ours(obj: object, package: str) -> bool:
    """In the package, and not this module (the hashing is no asset's logic)."""
    module = getattr(obj, "__module__", None) or ""
    return _in_package(module, package) and module != __name__


def _resource(cls: type) -> bool:
    """A Dagster resource (not followed, see the module). Without dagster imported there is none."""
    dagster = sys.modules.get("dagster")
    return dagster is not None and issubclass(cls, dagster.ConfigurableResource)


def _generated(fn: types.FunctionType) -> bool:
    """Made by exec (a dataclass's __init__, __eq__): its class's source says what it does."""
    return fn.__code__.co_filename.startswith("<")


def _function_source(fn: types.FunctionType) -> str:
    """The lines from the function's first (decorators included) to the last its code or the
    code nested in it runs: cheaper than inspect.getsource (no tokenizer), and a lambda's own
    lines rather than the whole statement around it."""
    lines = linecache.getlines(fn.__code__.co_filename)
    last = max((line for code in _codes(fn.__code__) for _, _, line in code.co_lines() if line is not None),
               default=fn.__code__.co_firstlineno)
    if not lines:  # no source file (a frozen build): the bytecode still changes with the logic
        return fn.__code__.co_code.hex()
    return "".join(lines[fn.__code__.co_firstlineno - 1:last])


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # no source file
        return cls.__qualname__


def _methods(cls: type) -> Iterator[types.FunctionType]:
    """The functions written in the class's body (not those a dataclass or pydantic adds)."""
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        for f in (value.fget, value.fset) if isinstance(value, property) else (value,):
            if inspect.isfunction(f) and f.__code__.co_filename == file:
                yield f


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _function_refs(fn: types.FunctionType, package: str, unimported: tuple[str, ...]) -> tuple[list[object], set[str]]:
    """What the function's body (and the functions nested in it) can reach: the globals it
    names (plain constants as text), the package modules it names or imports (an import's
    module name is one of the code's names) and their attributes it names, its closure
    variables and defaults."""
    names: set[str] = set()
    for code in _codes(fn.__code__):
        names.update(n for n in code.co_names if not n.startswith("__"))
    modules = [importlib.import_module(n) for n in sorted(names)
               if _in_package(n, package) and n != fn.__module__ and not _in_any(n, unimported)]
    refs: list[object] = []
    constants: set[str] = set()
    for name in sorted(names):
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        text = _constant(value)
        if isinstance(value, types.ModuleType):
            if _in_package(value.__name__, package):
                modules.append(value)
        elif text is not None:
            constants.add(f"{fn.__module__}.{name} = {text}")
        else:
            refs.append(value)
    for module in modules:
        refs.extend(getattr(module, n) for n in sorted(names) if hasattr(module, n))
    for cell in fn.__closure__ or ():
        try:
            refs.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    defaults = [*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()]
    constants.update(f"{fn.__qualname__} default {t}" for t in map(_constant, defaults) if t is not None)
    refs.extend(d for d in defaults if _constant(d) is None)
    return refs, constants


def _constant(value: object) -> str | None:
    """A stable text of a plain value (None for anything else: functions, objects)."""
    if value is None or isinstance(value, (str, bytes, int, float, complex, bool)):
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        parts = [_constant(v) for v in value]
        if any(p is None for p in parts):
            return None
        body = ", ".join(sorted(parts) if isinstance(value, (set, frozenset)) else parts)  # type: ignore[arg-type]
        return f"{type(value).__name__}({body})"
    if isinstance(value, dict):
        items = [(_constant(k), _constant(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in items):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    return None

"""The package's shape, read from the source with ``ast`` (nothing is imported, so this runs in well under a second).

- Layers: imports run one way, ``cli`` -> orchestration (``runner``, ``executors``, ``stages``, ``report``) ->
  stages (``generation``, ``filtering``, ``pretrain``, ``evaluation``) -> core (every other module: config, schema,
  store, entities, models, rasd, llm, masks, ...). A stage package never imports another stage package, and
  ``serving`` (the OpenAI-compatible server, started by ``cli``) imports only the core. ``MAY_IMPORT`` is the whole
  rule. It holds for every import, including the ones inside functions and under ``if TYPE_CHECKING``: a deferred
  import is still a dependency. A new top-level module is core until it is named here.
- No import cycles among the imports that run when a module is loaded: module-level statements (also inside
  module-level ``if``/``try``/``with`` blocks and class bodies), not under ``if TYPE_CHECKING``. Function-local
  imports run only when the function is called, after every module has loaded, so they may point back (a factory
  choosing a backend, as ``generation.writers.base.build_writer`` does); the layer rule above still applies to them.
  ``from pkg import name`` depends on ``pkg.name`` when that is a module, else on ``pkg``; a parent package's
  ``__init__`` is not counted as a dependency of its submodules' importers (Python loads a package before its
  submodules, and a package that imports its own submodules is not a cycle).
- No function (or method, or nested function) longer than ``MAX_FUNCTION_LINES``, from its ``def`` line to its
  last line, except the few in ``LONG_FUNCTIONS``.
- Every public module-level name (function, class, constant) is used outside the tests: read (not imported or
  re-exported) by package or bench code, named in a string there (a registry key, a ``getattr``), or shown in the
  docs (user API). Decorated functions (CLI commands) are used by their decorator.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "synthvlp"
STAGE_PACKAGES = ("generation", "filtering", "pretrain", "evaluation")
ORCHESTRATION = ("runner", "executors", "stages", "report")
MAY_IMPORT = {  # group -> the groups its modules may import (each group may import itself)
    "cli": {"serving", "orchestration", *STAGE_PACKAGES, "core"},
    "serving": {"core"},
    "orchestration": {*STAGE_PACKAGES, "core"},
    **{stage: {"core"} for stage in STAGE_PACKAGES},
    "core": set(),
}

MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS: set[str] = set()
"""Functions allowed past the limit, each with its reason; a test fails while an entry is no longer too long, so
the list cannot go stale. Empty since the training skeleton split the CLIP loop."""


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    at_load: bool
    """Runs when the importer is loaded (module level, not under ``if TYPE_CHECKING``)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _owner(name: str) -> str | None:
    """The longest known module ``name`` starts with (``synthvlp.a.b.Thing`` -> ``synthvlp.a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: list[ast.stmt], at_load: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every statement under ``nodes`` with whether it runs at load time (not in a function, not for type checkers)."""
    for node in nodes:
        yield node, at_load
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(node.body, False)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _walk(node.body, False)
            yield from _walk(node.orelse, at_load)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _walk([c for c in children if isinstance(c, ast.stmt)], at_load)
                    for child in children:  # except handlers and match cases hold statements one level down
                        if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                            yield from _walk(child.body, at_load)


def _targets(module: str, node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: resolved against the importer's package
        parts = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        package = ".".join(parts[: len(parts) - node.level + 1])
        base = f"{package}.{base}" if base else package
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


@cache
def imports() -> list[Import]:
    found = []
    for module, tree in TREES.items():
        for node, at_load in _walk(tree.body, True):
            for target in _targets(module, node):
                owner = _owner(target) if target.split(".")[0] == "synthvlp" else None
                if owner is not None and owner != module:
                    found.append(Import(module, owner, node.lineno, at_load))
    return found


def group(module: str) -> str:
    """The ``MAY_IMPORT`` group of a module: cli, serving, orchestration, its stage package, or core."""
    top = module.split(".")[1] if "." in module else ""
    if top in ("cli", "serving", *STAGE_PACKAGES):
        return top
    return "orchestration" if top in ORCHESTRATION else "core"


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(REPO)}:{line}"


def test_the_scan_sees_the_package():
    """Guards the rules below against passing vacuously (a moved package, a parser that finds nothing)."""
    found = imports()
    assert len(MODULES) > 100 and len(found) > 300
    assert any(i.importer == "synthvlp.runner" and i.target == "synthvlp.executors" and i.at_load for i in found)
    assert any(i.importer == "synthvlp.generation.writers.base" and not i.at_load for i in found), "function-local imports"
    assert {group(m) for m in MODULES} == set(MAY_IMPORT)


def test_imports_run_one_way_and_stages_never_import_each_other():
    wrong = []
    for i in imports():
        source, target = group(i.importer), group(i.target)
        if target != source and target not in MAY_IMPORT[source]:
            wrong.append(f"{_where(i.importer, i.line)} ({source}) imports {i.target} ({target})")
    wrong = sorted(set(wrong))
    assert not wrong, "imports against the layers (cli -> runner -> stages -> core; stages never import each other):\n" + "\n".join(wrong)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_at_load_time():
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for i in imports():
        if i.at_load:
            edges[i.importer].add(i.target)
    cycles = _cycles(edges)
    assert not cycles, f"modules that import each other when loaded (move the shared piece down a layer): {cycles}"


@cache
def function_lengths() -> dict[str, int]:
    """{path:qualified name: lines from def to end} of every function and method in the package."""

    def visit(node: ast.AST, prefix: str, path: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path}:{prefix}{child.name}", child.end_lineno - child.lineno + 1
                yield from visit(child, f"{prefix}{child.name}.", path)
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.", path)
            else:
                yield from visit(child, prefix, path)

    return {name: n for module, tree in TREES.items() for name, n in visit(tree, "", str(MODULES[module].relative_to(REPO)))}


def test_no_function_is_longer_than_the_limit():
    lengths = function_lengths()
    assert lengths, "no functions found"
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named pieces): {too_long}"


@pytest.mark.parametrize("name", sorted(LONG_FUNCTIONS))
def test_allowed_long_functions_are_still_long(name):
    lengths = function_lengths()
    assert name in lengths, f"{name} no longer exists: remove it from LONG_FUNCTIONS"
    assert lengths[name] > MAX_FUNCTION_LINES, f"{name} is {lengths[name]} lines now: remove it from LONG_FUNCTIONS"


def public_names() -> Iterator[tuple[str, str]]:
    """(name, path:line) of every public module-level function, class and constant; decorated functions are skipped."""
    for module, tree in TREES.items():
        where = MODULES[module].relative_to(REPO)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.decorator_list:
                names = [node.name]
            elif isinstance(node, ast.ClassDef):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
            else:
                names = []
            yield from ((name, f"{where}:{node.lineno}") for name in names if not name.startswith("_") and name not in ("log", "app"))


def used_words() -> set[str]:
    """Names read by package and bench code (not imports, not assignment targets), words in its strings, words in the docs."""
    words = set()
    word = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
    bench = [ast.parse(path.read_text()) for path in (REPO / "bench").rglob("*.py")]
    for tree in [*TREES.values(), *bench]:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
                words.add(node.id)
            elif isinstance(node, ast.Attribute):
                words.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.update(word.findall(node.value))
    for path in [REPO / "README.md", REPO / "pyproject.toml", *(REPO / "docs").rglob("*.md")]:
        words.update(word.findall(path.read_text()))
    return words


def test_every_public_name_is_used_outside_the_tests():
    names = list(public_names())
    assert len(names) > 300, "the scan found the package's names"
    used = used_words()
    unused = [f"{where} {name}" for name, where in names if name not in used]
    assert not unused, "public names nothing but the tests uses (delete them, or use them):\n" + "\n".join(unused)


def test_the_tests_mirror_the_package():
    """Each folder under tests/ holds the tests of the synthvlp subpackage of that name (core and cross-stage
    tests, conftest and the shared helpers stay at the top), so a module's tests are found where the module is."""
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    packages = {p.parent.name for p in (REPO / "synthvlp").glob("*/__init__.py")}
    assert folders and folders <= packages, f"tests/ folders without a synthvlp subpackage: {sorted(folders - packages)}"

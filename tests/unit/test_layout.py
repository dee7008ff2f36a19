"""The package's shape: wings that import downwards only, no cycle, small pieces.

Read from the source with ``ast`` (every import counts, those inside
functions and under ``TYPE_CHECKING`` too), so a cycle fails here before it
fails at import time.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "puller"

#: each wing may import the wings below it (and the shared top-level modules)
LAYERS = ["images", "node", "cluster", "control"]
SHARED = {"puller", "puller.constants", "puller.errors", "puller.fsutil", "puller.backoff",
          "puller.faults"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from x import y" may name the module x.y or a name in x
            targets = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_relative_and_late_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from . import constants\n"
                      "def f():\n    from .node.planner import plan\n"
                      "from .cluster import lan\n")
    known = {"puller.constants", "puller.node.planner", "puller.cluster", "puller.cluster.lan"}
    assert imports_of("puller.m", source, known) == {
        "puller.constants", "puller.node.planner", "puller.cluster.lan", "puller.cluster"}


def test_no_import_cycle_in_the_package():
    assert cycles(graph()) == []


def test_the_wings_exist():
    for name in LAYERS:
        assert (PACKAGE / name / "__init__.py").is_file(), name
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "backoff.py", "cli.py", "commands.py",
                    "constants.py", "daemon.py", "errors.py", "faults.py", "fsutil.py"]


def test_wings_import_only_downwards():
    wrong = []
    for module, targets in graph().items():
        here = wing(module)
        for target in targets:
            there = wing(target)
            if target in SHARED or there is None and here is None:
                continue
            if there is None:  # a wing importing cli or daemon
                wrong.append(f"{module} -> {target}")
            elif here is not None and LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name} is over {MAX_MODULE_LINES} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{os.path.relpath(path, PACKAGE)}: split {', '.join(long)}"

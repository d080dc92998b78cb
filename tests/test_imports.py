"""The package's import graph: no cycles (function-level imports included), the CLI on stage APIs only,
and the data stage's imports at the top of its modules.

Every module under src/codefoundry is parsed (not imported), so an import hidden inside a
function or under `if TYPE_CHECKING:` counts as much as one at the top: a cycle through a
lazy import is still a design knot, it only fails later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import codefoundry

PACKAGE = Path(codefoundry.__file__).parent
# What a CLI module may import besides a stage package's __init__ (`codefoundry.data`, …): the shared
# ground, and the demo, a stage that is one module.
SHARED_GROUND = {"codefoundry", "codefoundry.config", "codefoundry.manifest", "codefoundry.atomic",
                 "codefoundry.console", "codefoundry.errors", "codefoundry.demo"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = all_modules()


def imported_names(path: Path, name: str) -> set[str]:
    """Every `codefoundry…` module a module imports anywhere in its body (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            bound = package_bindings(source)
            for alias in node.names:  # `from P import m` with m a submodule only needs P to exist
                sub = f"{source}.{alias.name}"
                out.add(sub if alias.name not in bound and sub in MODULES else source)
    return {n for n in out if n == "codefoundry" or n.startswith("codefoundry.")}


def package_bindings(package: str) -> set[str]:
    """Names a package's `__init__` binds to something other than its submodule of that name.

    `from codefoundry.data import curate` takes the function `curate` the package exports, not the
    module `codefoundry.data.curate`: only an unbound name falls through to the submodule.
    """
    init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
    if not package.startswith("codefoundry") or not init.exists():
        return set()
    bound: set[str] = set()
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and not (node.module == package or (node.level == 1 and not node.module)):
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            bound.update(a.asname for a in node.names if a.asname)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Assign):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return bound


def import_graph() -> dict[str, set[str]]:
    """Module → the codefoundry modules it imports (a name that is an attribute, not a module, is dropped)."""
    return {name: {n for n in imported_names(path, name) if n in MODULES and n != name}
            for name, path in MODULES.items()}


def with_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing `a.b.c` runs `a/__init__` and `a/b/__init__` first: those are edges too."""
    out = {}
    for name, targets in graph.items():
        parents = {".".join(t.split(".")[:i]) for t in targets for i in range(2, t.count(".") + 1)}
        # a module's own enclosing packages are already running when it is imported: no edge to them
        # unless it names one explicitly (then a cycle through that __init__ is real)
        out[name] = targets | {p for p in parents if p != name and not name.startswith(p + ".")}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    assert "codefoundry.data" in graph["codefoundry.cli.data"]  # the CLI imports lazily, inside commands
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    found = cycles(with_parents(import_graph()))
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


@pytest.mark.parametrize("cli_module", sorted(n for n in MODULES if n.startswith("codefoundry.cli.")))
def test_cli_imports_stage_apis_only(cli_module: str) -> None:
    stages = {n for n, p in MODULES.items() if n.count(".") == 1 and p.name == "__init__.py"}
    bad = sorted(n for n in imported_names(MODULES[cli_module], cli_module)
                 if not n.startswith("codefoundry.cli") and n not in stages | SHARED_GROUND)
    assert not bad, f"{cli_module} imports what is not a stage's API: {', '.join(bad)}"


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith("codefoundry.data")))
def test_data_stage_imports_its_modules_at_the_top(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    late = [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            and id(node) not in top and imports_codefoundry(node)]
    assert not late, f"{module}: codefoundry imports below the top at lines {late}"


def imports_codefoundry(node: ast.Import | ast.ImportFrom) -> bool:
    """Whether an import statement imports from codefoundry (relative imports count)."""
    if isinstance(node, ast.Import):
        return any(a.name.startswith("codefoundry") for a in node.names)
    return bool(node.level) or (node.module or "").startswith("codefoundry")

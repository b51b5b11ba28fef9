"""The package's layers, read from the source: no import circles, and the command line on top.

Imports are read with :mod:`ast`, so one inside a function counts as much as one at the top of a
module (it runs as soon as that function does); one under ``if TYPE_CHECKING:`` does not (it
never runs). A circle makes the import order matter and hides which module depends on which; a
library function that lives in ``cli.py`` makes every user of it depend on the command line.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genrewiz"
CLI = "genrewiz.cli"
CLI_ENTRY_POINTS = {"main", "build_parser"}
"""What tests of the command line itself may import from it: its ``main`` and its argument parser."""


def module_name(path: Path) -> str:
    """``genrewiz/batch.py`` -> ``genrewiz.batch``; ``genrewiz/__init__.py`` -> ``genrewiz``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` that can run, i.e. all but the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def imports(path: Path, source: str | None = None) -> Iterator[tuple[str, str | None]]:
    """``(module, name)`` for each import that can run in ``path`` (its text, or ``source``); ``name`` is ``None`` for ``import module``.

    Relative imports are resolved against the file's package; ``from genrewiz import batch`` is an
    import of the module ``genrewiz.batch``.
    """
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, str(path))
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                if _is_module(submodule):
                    yield submodule, None
                else:
                    yield module, alias.name


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def package_graph() -> dict[str, set[str]]:
    """Each ``genrewiz`` module and the ``genrewiz`` modules it imports (a parent package counts as its ``__init__``)."""
    modules = {module_name(path): path for path in PACKAGE.glob("*.py")}
    return {
        name: {module for module, _ in imports(path) if module in modules and module != name}
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_every_kind_of_import():
    """The checker itself: top-level, relative, in a function, in a class; never under TYPE_CHECKING."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import json\n"
        "from . import batch\n"
        "from .results import Row\n"
        "if TYPE_CHECKING:\n"
        "    from .tags import TagResult\n"
        "else:\n"
        "    from .verdict import is_unsure\n"
        "def late():\n"
        "    from genrewiz.cli import main\n"
        "class Lazy:\n"
        "    def load(self):\n"
        "        import genrewiz.hub\n"
    )
    assert set(imports(PACKAGE / "example.py", source)) == {
        ("typing", "TYPE_CHECKING"),
        ("json", None),
        ("genrewiz.batch", None),
        ("genrewiz.results", "Row"),
        ("genrewiz.verdict", "is_unsure"),
        ("genrewiz.cli", "main"),
        ("genrewiz.hub", None),
    }
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_package():
    assert circles(package_graph()) == []


def test_nothing_but_the_command_line_tests_imports_from_the_cli():
    """Library, app, training, benchmarks and examples never import ``genrewiz.cli``; its tests take only main/build_parser.

    ``__main__`` (``python -m genrewiz``) is the command line's own entry point.
    """
    own = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}
    users = [
        *(set(PACKAGE.glob("*.py")) - own),
        *ROOT.glob("*.py"),
        *(ROOT / "train").glob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
        *(ROOT / "examples").glob("*.py"),
    ]
    wrong = [
        f"{path.relative_to(ROOT)}: {module}" + (f".{name}" if name else "")
        for path in users
        for module, name in imports(path)
        if module == CLI
    ]
    wrong += [
        f"{path.relative_to(ROOT)}: {module}" + (f".{name}" if name else "")
        for path in (ROOT / "tests").glob("*.py")
        for module, name in imports(path)
        if module == CLI and name not in CLI_ENTRY_POINTS
    ]
    assert wrong == []


def test_the_readme_lists_every_module_below_what_it_imports():
    """README's module table is the package's layer order: a module imports only modules listed above it."""
    table = re.findall(r"^\| `genrewiz/(\w+)\.py` \|", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.MULTILINE)
    order = {f"genrewiz.{name}": place for place, name in enumerate(table)}
    graph = package_graph()
    listed = {name for name in graph if name not in ("genrewiz", "genrewiz.__main__")}
    assert sorted(listed - order.keys()) == [], "modules missing from README's module table"
    upward = [f"{module} imports {target}" for module in listed for target in graph[module] if order.get(target, -1) >= order[module]]
    assert sorted(upward) == [], "README's table lists these modules above what they import"

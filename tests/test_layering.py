"""Imports go one way: schemas <- pipeline (the stages) <- trainer <- p3d (the application shell).

Every import statement of every module is read from its source (ast), lazy ones inside functions
too: a lower layer that imports a higher one, even late, cannot be used without it. Cycles are
checked among the imports a module runs when it is first imported (module level, outside
`if TYPE_CHECKING:`), the ones that can leave a module half initialised.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("schemas", "pipeline", "trainer", "p3d")  # each may import only those before it


def module_files(root: Path, packages: tuple[str, ...] = LAYERS) -> dict[str, Path]:
    """Dotted module name -> its source file, for every .py file under the packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.Module, module_level: bool) -> list[ast.Import | ast.ImportFrom]:
    if not module_level:
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If) and not _is_type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)

    visit(tree.body)
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path], module_level: bool = False
               ) -> list[tuple[int, str]]:
    """(line, imported module) for each import of a project module: `from a.b import c` names a.b.c
    when that is a module, else a.b."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in _import_nodes(ast.parse(path.read_text(), str(path)), module_level):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name in modules]
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        for alias in node.names:
            target = f"{base}.{alias.name}"
            if target in modules:
                found.append((node.lineno, target))
            elif base in modules:
                found.append((node.lineno, base))
    return sorted(set(found))


def upward_imports(root: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    modules = module_files(root, layers)
    rank = {package: i for i, package in enumerate(layers)}
    wrong = []
    for name, path in modules.items():
        for line, target in imports_of(name, path, modules):
            if rank[target.split(".")[0]] > rank[name.split(".")[0]]:
                wrong.append(f"{path.relative_to(root)}:{line} imports {target}")
    return wrong


def import_cycles(root: Path, layers: tuple[str, ...] = LAYERS) -> list[list[str]]:
    """Each cycle of module-level imports, as the modules along it (one per strongly connected set)."""
    modules = module_files(root, layers)
    graph = {name: sorted({t for _, t in imports_of(name, path, modules, module_level=True)} - {name})
             for name, path in modules.items()}
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:  # depth-first; an import of a module on the path closes a cycle
        path.append(name)
        for target in graph[name]:
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(name)

    for name in graph:
        if name not in done:
            visit(name)
    return cycles


def test_no_layer_imports_a_layer_above_it():
    modules = module_files(ROOT)
    assert {name.split(".")[0] for name in modules} == set(LAYERS)  # every layer was read
    assert upward_imports(ROOT) == []


def test_no_module_level_import_cycle():
    assert import_cycles(ROOT) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_checks_find_an_upward_import_and_a_cycle(tmp_path):
    """The two checks on a made-up tree: a lazy upward import, a relative one, a TYPE_CHECKING-only
    one (an upward import still, but no cycle) and a module-level cycle through a package."""
    _write(tmp_path, {
        "schemas/__init__.py": "",
        "schemas/a.py": "def f():\n    from pipeline.b import g\n",
        "pipeline/__init__.py": "",
        "pipeline/b.py": "from . import c\ng = 1\n",
        "pipeline/c.py": "from pipeline.b import g\n",
        "pipeline/d.py": ("from typing import TYPE_CHECKING\n"
                          "if TYPE_CHECKING:\n    from pipeline.e import x\n"),
        "pipeline/e.py": "from pipeline.d import TYPE_CHECKING\nx = 1\n",
        "trainer/__init__.py": "",
        "p3d/__init__.py": "import trainer\n",
    })
    assert upward_imports(tmp_path) == ["schemas/a.py:2 imports pipeline.b"]
    assert import_cycles(tmp_path) == [["pipeline.b", "pipeline.c", "pipeline.b"]]

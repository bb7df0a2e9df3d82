"""The house split by audience: the core (the package root) never imports the app
(``attnviz.app``) or the training code (``attnviz.training``); the app never imports
the training code."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "attnviz"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function, as an absolute name."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _reaches(imports: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in imports)


def test_the_core_never_imports_the_app_or_the_training_code():
    # The CLI is its own audience: its train/evaluate/profile commands import training lazily.
    core = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("app", "training")
            and p.name not in ("cli.py", "__main__.py")]
    assert len(core) > 10
    for path in core:
        imports = _imports(path)
        assert not _reaches(imports, "attnviz.app") and not _reaches(imports, "attnviz.training"), path
        assert not _reaches(imports, "streamlit"), path
    for path in (PACKAGE / "app").rglob("*.py"):
        assert not _reaches(_imports(path), "attnviz.training"), path


def test_import_attnviz_loads_neither_streamlit_nor_the_training_code():
    code = ("import sys, attnviz, attnviz.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit' "
            "or m.startswith(('attnviz.app', 'attnviz.training'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _own_imports(path: Path, modules: dict) -> set[str]:
    """attnviz's modules that ``path`` imports, at the top or inside functions: ``from . import
    x`` is an edge to the module ``x``, not to the package that holds it."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in modules else module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules}


def test_no_two_modules_import_each_other_directly_or_around_a_loop():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _own_imports(path, modules) - {name} for name, path in modules.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert len(graph) > 40 and cycles == []

"""The package's layers, checked on the source: every `import` of concordkv_mp (at the
top of a module or inside a function) goes to a unit the importer's layer may use, and
the units form no cycle. A unit is a subpackage (`engines`, `server`, ...) or a
top-level module (`database`, `errors`, ...); `root` is `concordkv_mp/__init__.py`, the
public index, which only the command line may import.

Run alone: `python -m pytest tests/test_package_layers.py -q`; a failure names the file,
the line and the import that breaks a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "concordkv_mp"

# What each unit may import, besides itself. Engines know nothing of processes,
# sockets or clients; the server's processes know nothing of the clients.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "options": {"errors"},
    "arguments": {"errors"},
    "io": {"errors", "options"},
    "engines": {"errors", "options", "arguments", "io"},
    "database": {"errors", "options", "arguments", "io", "engines"},
    "workers": {"errors", "options", "io", "engines"},
    "ipc": {"errors", "arguments"},
    "config": {"errors", "options", "ipc"},
    "client": {"errors", "arguments", "ipc"},
    "aio": {"client"},
    "server": {"errors", "options", "io", "engines", "database", "workers", "ipc", "config", "version"},
    "cli": {"root", "errors", "options", "config", "ipc", "client", "server", "database", "version"},
    "root": {"aio", "client", "database", "errors", "io", "options", "version", "workers"},
}


def unit_of(module: str) -> str:
    """`concordkv_mp.engines.lsm.engine` -> `engines`; `concordkv_mp` -> `root`."""
    parts = module.split(".")
    assert parts[0] == "concordkv_mp", module
    return parts[1] if len(parts) > 1 else "root"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path):
    """(line, imported module) for every import of the package in `path`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "concordkv_mp":
            # `from concordkv_mp import aio` imports a submodule; `import __version__`, the root.
            names = [f"concordkv_mp.{a.name}" if _is_submodule(a.name) else "concordkv_mp" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "concordkv_mp" or name.startswith("concordkv_mp."):
                yield node.lineno, name


def _is_submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def unit_graph() -> tuple[dict[str, set[str]], list[str]]:
    graph: dict[str, set[str]] = {}
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = unit_of(module_name(path))
        assert importer in ALLOWED, f"{path}: unit {importer!r} has no entry in ALLOWED"
        for line, imported in imports_of(path):
            target = unit_of(imported)
            if target == importer:
                continue
            graph.setdefault(importer, set()).add(target)
            if target not in ALLOWED[importer]:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} imports {imported}")
    return graph, broken


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the list of its units (first = last), or None."""
    done: set[str] = set()

    def visit(path: list[str]) -> list[str] | None:
        for target in sorted(graph.get(path[-1], ())):
            if target in path:
                return path[path.index(target) :] + [target]
            if target not in done:
                cycle = visit(path + [target])
                if cycle:
                    return cycle
        done.add(path[-1])
        return None

    for unit in sorted(graph):
        cycle = None if unit in done else visit([unit])
        if cycle:
            return cycle
    return None


def test_every_import_respects_the_layers():
    _, broken = unit_graph()
    assert not broken, "imports across the layers:\n" + "\n".join(broken)


def test_no_cycle_between_units():
    graph, _ = unit_graph()
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_rules_themselves_have_no_cycle():
    assert find_cycle(ALLOWED) is None


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from concordkv_mp.server.partition import PartitionCore\n")
    assert list(imports_of(source)) == [(2, "concordkv_mp.server.partition")]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None

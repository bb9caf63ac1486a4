"""The floors of the house, read from the source: every ``import`` of src/meltr (deferred ones inside functions
included, those under ``if TYPE_CHECKING:`` left out), parsed with :mod:`ast`, never executed.

- the library never imports the recipes wing or the command line;
- no import cycle between modules, nor between the rooms (``meltr.models``, ``meltr.combine``, ...);
- ``models`` stands on nothing of meltr but the shared ``_registry`` / ``_yaml`` / ``config`` / ``contract``
  helpers, and ``config`` (the one config system) on nothing but ``_yaml``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import meltr

SOURCE = Path(meltr.__file__).resolve().parent
ABOVE_THE_LIBRARY = ("meltr.recipes", "meltr.cli")
MODELS_MAY_IMPORT = ("meltr.models", "meltr._registry", "meltr._yaml", "meltr.config", "meltr.contract")


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run
    time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(path: Path) -> set[str]:
    """The meltr modules ``path`` imports (``from meltr.x import y`` counts as ``meltr.x.y`` when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(path) for path in SOURCE.rglob("*.py")}
GRAPH = {module_name(path): imports_of(path) for path in SOURCE.rglob("*.py")}


def room(module: str) -> str:
    """``meltr.models.univl`` -> ``meltr.models``; top-level modules (``meltr.learner``) are rooms of their own."""
    return ".".join(module.split(".")[:2])


def is_within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_parser_sees_imports_at_every_depth():
    # a sanity check of the reader itself: cli.main imports meltr.cli, deferred imports inside functions count
    assert "meltr.cli" in GRAPH["meltr.cli.main"]
    assert "meltr.recipes.finetune" in GRAPH["meltr.cli.finetune"]  # imported inside run()
    assert "meltr.models.base" in GRAPH["meltr.models.univl"]


def test_the_library_never_imports_the_recipes_or_the_cli():
    offenders = {
        module: sorted(t for t in targets if is_within(t, ABOVE_THE_LIBRARY))
        for module, targets in GRAPH.items()
        if not is_within(module, ABOVE_THE_LIBRARY)
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_import_cycle_between_rooms():
    rooms: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        if module == "meltr":
            continue  # the package's __init__ re-exports the public API; every import passes through it anyway
        above = {room(t) for t in targets if t != "meltr"} - {room(module)}
        rooms.setdefault(room(module), set()).update(above)
    assert find_cycle(rooms) is None


def test_models_import_nothing_above_them():
    offenders = {
        module: sorted(t for t in targets if not is_within(t, MODELS_MAY_IMPORT))
        for module, targets in GRAPH.items()
        if is_within(module, ("meltr.models",))
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_import_cycle_between_modules():
    assert find_cycle(GRAPH) is None


def test_the_config_system_stands_on_yaml_only():
    assert {t for t in GRAPH["meltr.config"] if t != "meltr.config"} <= {"meltr._yaml"}

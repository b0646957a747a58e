"""The architecture holds: packages import only from lower layers, no module imports itself in a
circle (type-only and deferred imports count), and no module grows past 500 lines. README "Development"
shows the same layers."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segbench"

# Low to high; a package may import from its own layer's earlier entries and from every lower layer.
LAYERS = [
    ["segbench", "errors", "files", "cache_dir", "env", "sweep", "results", "plugins"],
    ["data", "models"],
    ["metrics"],
    ["export"],
    ["backends"],
    ["config"],
    ["bench", "reports"],
    ["ab"],
    ["cli", "__main__"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# (importer, imported) pairs allowed to point upward, each with the reason the README gives. None now.
UPWARD_ALLOWED: set[tuple[str, str]] = set()


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def unit(module: str) -> str:
    """The layer unit of a module: its top-level package or module under segbench."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path, top_level_only: bool) -> set[str]:
    """segbench modules imported by ``path`` (only those run at import time with ``top_level_only``);
    ``from package import submodule`` counts as importing the submodule."""
    known = modules()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segbench"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("segbench"))
    return found


def test_every_package_is_in_a_layer():
    assert {unit(name) for name in modules()} <= set(RANK)


def test_imports_point_down_the_layers():
    upward = set()
    for name, path in modules().items():
        for imported in imports(path, top_level_only=False):
            source, target = unit(name), unit(imported)
            if source != target and RANK[target] > RANK[source]:
                upward.add((source, target, str(path.relative_to(PACKAGE.parent))))
    assert {(s, t) for s, t, _ in upward} <= UPWARD_ALLOWED, sorted(upward)
    assert len(UPWARD_ALLOWED) <= 1


def test_no_import_circle_at_all():
    """Not at import time, not through an import inside a function, not through a type-only import
    (``if TYPE_CHECKING:``): a circle broken by deferring one of its imports is still a circle."""
    known = modules()
    graph = {
        name: {target for target in imports(path, top_level_only=False) if target in known and target != name}
        for name, path in known.items()
    }
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail, name, target]))
            if target not in state:
                visit(target, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_modules_stay_under_500_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}  # fmt: skip
    assert long == {}

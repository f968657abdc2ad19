"""The library is laid out by layer and its imports flow one way.

Every module of ``actgeo_assets/lib`` is parsed (``ast``, nothing is imported), and every import it
makes is collected: module level, inside functions and under ``if TYPE_CHECKING:`` alike, since a
type-only import still ties the two modules together. The tests assert:

- layer order ``config < store < graph < capture < analysis < outputs < stages``: a module imports
  library modules of its own layer or lower ones only;
- no import cycle among library modules (any import kind counts as an edge);
- the library never imports ``dagster`` nor the Dagster side of the package (``actgeo_assets.defs``,
  ``actgeo_assets.runner``, ``actgeo_assets.cli``, ...): only ``actgeo_assets.lib``;
- names shared between library modules are public (no ``from ... import _name``);
- no module of ``actgeo_assets/`` is over 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "actgeo_assets"
LIB = PACKAGE / "lib"
LAYERS = ("config", "store", "graph", "capture", "analysis", "outputs", "stages")
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _lib_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _imports(path: Path, name: str) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _lib_target(imported: str, modules: dict[str, Path]) -> str | None:
    """The library module an imported name resolves to (the longest module prefix), if any."""
    parts = imported.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 3 or parts[2] not in LAYERS:
        return None
    return LAYERS.index(parts[2])


def _graph() -> dict[str, dict[str, int]]:
    """Library module -> {library module it imports: first line}, package ``__init__`` edges included."""
    modules = _lib_modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        out: dict[str, int] = {}
        for imported, line in _imports(path, name):
            target = _lib_target(imported, modules)
            if target is not None and target != name and target != "actgeo_assets.lib":
                out.setdefault(target, line)
        edges[name] = out
    return edges


def test_every_lib_module_is_in_a_layer() -> None:
    stray = [m for m in _lib_modules() if m != "actgeo_assets.lib" and _layer(m) is None]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_imports_follow_the_layer_order() -> None:
    modules = _lib_modules()
    bad = []
    for name, targets in _graph().items():
        here = _layer(name)
        for target, line in targets.items():
            there = _layer(target)
            if here is not None and there is not None and there > here:
                bad.append(f"{modules[name].relative_to(REPO)}:{line} ({LAYERS[here]}) imports {target} ({LAYERS[there]})")
    assert not bad, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    edges = _graph()
    # A module importing ``pkg.sub`` runs ``pkg/__init__`` first: count that edge too, unless the module
    # is inside ``pkg`` (its own package's __init__ has already run or is running by then).
    for name in list(edges):
        for target in list(edges[name]):
            parts = target.split(".")
            for n in range(3, len(parts)):
                parent = ".".join(parts[:n])
                if parent in edges and parent != name and not name.startswith(parent + "."):
                    edges[name].setdefault(parent, edges[name][target])
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles among library modules:\n" + "\n".join(cycles)


@pytest.mark.parametrize("forbidden", ["dagster", "dagster_k8s", "dagster_webserver", "actgeo_assets"])
def test_lib_never_imports_the_dagster_side(forbidden: str) -> None:
    bad = []
    for name, path in _lib_modules().items():
        for imported, line in _imports(path, name):
            if forbidden == "actgeo_assets":
                # ``from actgeo_assets import x`` also records ``actgeo_assets.x``, which is what is checked
                hit = imported.startswith("actgeo_assets.") and not (
                    imported == "actgeo_assets.lib" or imported.startswith("actgeo_assets.lib.")
                )
            else:
                hit = imported.split(".")[0] == forbidden
            if hit:
                bad.append(f"{path.relative_to(REPO)}:{line}: {imported}")
    assert not bad, f"the library imports {forbidden} outside actgeo_assets.lib:\n" + "\n".join(bad)


def test_names_shared_between_modules_are_public() -> None:
    bad = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("actgeo_assets")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.module} {private}")
    assert not bad, "private names imported across library modules:\n" + "\n".join(bad)


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"

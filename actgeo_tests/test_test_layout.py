"""The tests are laid out like the code.

- ``actgeo_tests/lib/`` tests the library without Dagster: no file there imports ``dagster`` or the Dagster
  side of the package (``actgeo_assets.defs``, ``actgeo_assets.definitions``, ``actgeo_assets.runner``),
  neither itself nor through the test helpers it imports (``actgeo_tests.*``, followed transitively) nor
  through the conftest files pytest loads for it. Every import counts (module level or inside a function),
  found with ``ast``: nothing is imported here.
- Its folders mirror the library's packages: ``actgeo_tests/lib/<package>/`` for a package
  ``actgeo_assets/lib/<package>/``, each a package (``__init__.py``), so that test modules of the same
  name in two folders stay importable.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "actgeo_tests"
LIB_TESTS = TESTS / "lib"
LIBRARY = REPO / "actgeo_assets" / "lib"
#: Modules a library test must not reach (a module or any of its submodules).
DAGSTER_SIDE = ("dagster", "actgeo_assets.defs", "actgeo_assets.definitions", "actgeo_assets.runner")


def _imports(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _file_of(module: str) -> Path | None:
    """The source file of a module of ``actgeo_tests`` (None for other modules or names that are no module)."""
    if not module.startswith("actgeo_tests."):
        return None
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _forbidden(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in DAGSTER_SIDE)


def _reached(path: Path) -> dict[str, list[str]]:
    """Forbidden module -> the chain of files through which ``path`` imports it."""
    found: dict[str, list[str]] = {}
    seen: set[Path] = set()
    todo: list[tuple[Path, list[str]]] = [(path, [str(path.relative_to(REPO))])]
    while todo:
        current, chain = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in sorted(_imports(current)):
            if _forbidden(module):
                found.setdefault(module, chain)
            elif (helper := _file_of(module)) is not None:
                todo.append((helper, [*chain, str(helper.relative_to(REPO))]))
    return found


def _conftests_of(path: Path) -> list[Path]:
    """The conftest files pytest loads for a test file: in its folder and every folder above it in the tests."""
    folders = [path.parent, *[p for p in path.parent.parents if p == TESTS or TESTS in p.parents]]
    return [f / "conftest.py" for f in folders if (f / "conftest.py").is_file()]


def test_library_tests_never_import_dagster() -> None:
    files = sorted(LIB_TESTS.rglob("*.py"))
    assert files
    bad = []
    for path in files:
        for source in (path, *_conftests_of(path)):
            for module, chain in _reached(source).items():
                bad.append(f"{' -> '.join(chain)} imports {module}")
    assert not bad, ("library tests import the Dagster side (move the test to actgeo_tests/defs or "
                     "actgeo_tests/e2e):\n" + "\n".join(sorted(set(bad))))


def test_library_test_folders_mirror_the_library() -> None:
    packages = {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in LIB_TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= packages, f"test folders without a library package: {sorted(folders - packages)}"
    missing_init = sorted(str(f.relative_to(REPO)) for f in [LIB_TESTS, *(LIB_TESTS / n for n in folders)]
                          if not (f / "__init__.py").is_file())
    assert not missing_init, f"test folders that are no package: {missing_init}"
    loose = sorted(p.name for p in LIB_TESTS.glob("test_*.py"))
    assert not loose, f"library tests outside a package's folder: {loose}"
    assert folders == packages, f"library packages without a test folder: {sorted(packages - folders)}"

"""The repository is self-contained: nothing it ships cites a file outside it, and every file named in the
docs exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|\bDESIGN\.md\b|\bFACTS\.md\b")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / f for f in out.splitlines() if (REPO / f).is_file()]


def test_no_reference_outside_the_repository() -> None:
    me = Path(__file__).resolve()
    hits = []
    for path in _tracked():
        if path == me or path.suffix in (".png", ".npy", ".npz", ".parquet"):
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not hits, "files outside the repository are cited:\n" + "\n".join(hits)


def _ignored(path: str) -> bool:
    """Whether git ignores ``path`` (e.g. deploy/.env, which the deploy guide has the user create)."""
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def test_docs_name_files_that_exist() -> None:
    """Every repository path written in backticks in the README and docs/ exists (or is one the docs have the
    user create, which git ignores)."""
    docs = [REPO / "README.md", REPO / "deploy" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    missing = []
    for doc in docs:
        for ref in re.findall(r"`((?:actgeo_assets|actgeo_tests|benchmarks|deploy|docs)/[\w./-]+)`", doc.read_text()):
            if not (REPO / ref.rstrip("/")).exists() and not _ignored(ref):  # a file the user creates
                missing.append(f"{doc.relative_to(REPO)}: {ref}")
    assert not missing, "docs name files that do not exist:\n" + "\n".join(missing)


def test_faiss_builds_are_exclusive_extras() -> None:
    """faiss-cpu and faiss-gpu both install the `faiss` module: never both, the CPU one where make installs."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("faiss")]
    extras = project["optional-dependencies"]
    assert extras["cpu"] == ["faiss-cpu==1.15.1"] and extras["gpu"][0].startswith("faiss-gpu-cu12==")
    assert "'.[cpu]'" in (REPO / "Makefile").read_text() and "'.[cpu,dev]'" in (REPO / "Makefile").read_text()
    assert "pip install '.[cpu]'" in (REPO / "deploy" / "Dockerfile").read_text()
    cuda = (REPO / "deploy" / "Dockerfile.cuda").read_text()
    assert "pip install '.[gpu]'" in cuda and "faiss-cpu" not in cuda.replace("instead of faiss-cpu", "")

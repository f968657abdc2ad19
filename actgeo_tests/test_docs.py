"""The docs describe the code as it is: docs/ARCHITECTURE.md's pipeline diagram is the asset graph of the
Definitions (every asset, every declared upstream edge, nothing else) and names every job; the README stays a
short front page that shows the two commands and links every page of docs/.

The diagram is the first ```mermaid block of docs/ARCHITECTURE.md, one edge per line: ``upstream --> asset``.
Names come from the Definitions (``build_defs``), so a renamed asset or job fails here until the doc follows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actgeo_assets.definitions import DEPLOYMENTS, build_defs

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
ARCHITECTURE = DOCS / "ARCHITECTURE.md"
README_MAX_LINES = 200
EDGE = re.compile(r"^\s*(\w+)\s*-->\s*(\w+)\s*$")


def _diagram() -> tuple[set[str], set[tuple[str, str]]]:
    """(node names, (upstream, downstream) edges) of the first mermaid block of docs/ARCHITECTURE.md."""
    found = re.search(r"```mermaid\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert found, "docs/ARCHITECTURE.md has no ```mermaid diagram of the pipeline"
    nodes: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for line in found.group(1).splitlines():
        if (edge := EDGE.match(line)) is not None:
            edges.add((edge.group(1), edge.group(2)))
            nodes.update(edge.groups())
        elif re.fullmatch(r"\s*\w+\s*", line):  # a node with no edge, on a line of its own
            nodes.add(line.strip())
    return nodes, edges


def _asset_graph() -> dict[str, set[str]]:
    """Asset name -> the names of the assets it declares upstream, from the local Definitions."""
    graph = build_defs("local").resolve_asset_graph()
    return {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
            for key in graph.get_all_asset_keys()}


def test_diagram_names_every_asset() -> None:
    nodes, _ = _diagram()
    missing = sorted(set(_asset_graph()) - nodes)
    assert not missing, f"assets missing from the diagram of docs/ARCHITECTURE.md: {missing}"
    unknown = sorted(nodes - set(_asset_graph()))
    assert not unknown, f"the diagram of docs/ARCHITECTURE.md names assets the Definitions lack: {unknown}"


def test_diagram_edges_are_the_declared_lineage() -> None:
    _, edges = _diagram()
    declared = {(up, asset) for asset, ups in _asset_graph().items() for up in ups}
    missing = sorted(declared - edges)
    extra = sorted(edges - declared)
    assert not missing, "upstream edges missing from docs/ARCHITECTURE.md: " + ", ".join(
        f"{a} --> {b}" for a, b in missing)
    assert not extra, "docs/ARCHITECTURE.md draws edges no asset declares: " + ", ".join(
        f"{a} --> {b}" for a, b in extra)


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_architecture_names_every_job(deployment: str) -> None:
    """Every job of the Definitions, as `name` in docs/ARCHITECTURE.md (Dagster's implicit __ jobs aside)."""
    text = ARCHITECTURE.read_text()
    jobs = sorted(j.name for j in build_defs(deployment).resolve_all_job_defs() if not j.name.startswith("__"))
    assert jobs
    missing = [name for name in jobs if f"`{name}`" not in text]
    assert not missing, f"jobs of the {deployment} Definitions not named in docs/ARCHITECTURE.md: {missing}"


def test_readme_is_a_short_front_page() -> None:
    text = README.read_text()
    n = len(text.splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"
    block = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    for command in ("make demo", "make test"):
        assert re.search(rf"^{command}\b", block, re.M), f"README.md shows no `{command}` command"


def test_readme_links_every_docs_page() -> None:
    links = set(re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[\w-]*)?\)", README.read_text()))
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    assert not pages - links, f"docs pages not linked from README.md: {sorted(pages - links)}"
    assert not links - pages, f"README.md links docs pages that do not exist: {sorted(links - pages)}"


def test_docs_links_resolve() -> None:
    """Every relative Markdown link of README.md and docs/*.md names a file that exists, and every
    #anchor a heading of that file."""
    problems = []
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text()):
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                problems.append(f"{doc.relative_to(REPO)}: {target} does not exist")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                problems.append(f"{doc.relative_to(REPO)}: {target}#{anchor} names no heading")
    assert not problems, "\n".join(problems)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_stage_table_is_the_declaration() -> None:
    """docs/ARCHITECTURE.md's table of the `STAGES` rows says what defs/pipeline.py declares."""
    from actgeo_assets.defs.pipeline import STAGES

    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    header = "| asset | `job` | `runs_on` | `in_run` | `sensor` | `eager` | `one_run_backfill` |"
    assert header in text
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]]
    shown = {r[0].strip("`"): (r[1].strip("`"), r[2].strip("`"), *(c == "yes" for c in r[3:7])) for r in rows}
    declared = {s.name: (s.job, s.runs_on, s.in_run, s.sensor, s.eager, s.one_run_backfill) for s in STAGES}
    assert shown == declared

"""Stage of the asset ``lookup`` (job ``lookup``) and of ``actgeo lookup``: a faiss index of the run's
normalized rows, and which component each token of a new text joins at the run's threshold.

The index (``lookup/neighbours.faiss``, a ``faiss.IndexFlatIP`` of the N unit rows in global row order) has
a sidecar (``lookup/neighbours.json``, :class:`LookupRecord`) naming the run, the labels and the normalized
shards it was built from, by sha256; :func:`index_problem` says why an index is not the current run's
(missing, other run, shards or labels changed, file damaged), and nothing reads such an index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.lookup import Found, NeighbourIndex, build_flat_index, write_index
from actgeo_assets.lib.analysis.tokens import CONTEXT_CHARS, token_context
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.stages.activations import NORMALIZE
from actgeo_assets.lib.stages.common import load_kept, load_run_model, normalized_rows, read_raw
from actgeo_assets.lib.stages.graph import RunComponents, load_components
from actgeo_assets.lib.stages.plan import recorded_outputs
from actgeo_assets.lib.stages.record import Inputs, StageSpec, expected_inputs, input_field
from actgeo_assets.lib.store.layout import (
    RunLayout,
    load_json,
    save_json,
    sha256_file,
    verify_file,
)
from actgeo_assets.lib.store.lock import holds_writer_lock

INDEX_TYPE = "IndexFlatIP"
#: How to build the index when it is missing or stale (named in errors).
BUILD_HINT = ("`actgeo lookup --build-index ...` (or materialize the `lookup` asset: "
              "`dagster asset materialize -m actgeo_assets.definitions --select lookup`)")


@dataclass(frozen=True)
class LookupIndexBuild:
    """What :func:`build_lookup_index` wrote: ``rows`` x ``dim`` float32 unit rows in ``path``
    (``bytes`` on disk, sha256 ``sha256``), built in ``seconds``, for run ``run_id``."""

    path: Path
    rows: int
    dim: int
    index_type: str
    bytes: int
    seconds: float
    sha256: str
    run_id: str


@dataclass(frozen=True)
class TokenAnswer:
    """One token of the text: ``position`` (0 = ``<bos>``), its exact character span ``text`` (the
    tokenizer's token string for an empty span), ``token`` (the tokenizer's string), and ``found`` (None:
    the row was excluded by normalization, not finite or zero) with ``contexts``: one dict per
    ``found.nearest`` neighbour (row, rank, label_id, cosine, doc_id, source, position, left, token,
    right: the corpus context as the cards render it)."""

    position: int
    text: str
    token: str
    found: Found | None
    contexts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class LookupResult:
    """Every token of one text, answered against run ``run_id`` at ``threshold``.

    ``queries``: float32 [m, d] the text's unit rows (row i belongs to ``tokens[kept[i]]``); ``sizes``:
    int64 [C] component sizes by canonical label; ``truncated``: the text was longer than the run's
    ``context_len`` tokens and only its start was captured; ``built``: the index built on the way (None:
    it was current); ``timings``: seconds per phase of :data:`PHASES` (the load phases only when this
    answer loaded the run)."""

    text: str
    run_id: str
    description: str
    threshold: float
    tokens: list[TokenAnswer]
    queries: np.ndarray
    kept: np.ndarray
    sizes: np.ndarray
    index_path: Path
    index_rows: int
    device: str
    truncated: bool
    built: LookupIndexBuild | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _normalized_record(settings: RunSettings, layout: RunLayout) -> dict[str, dict[str, Any]]:
    """Each shard's normalized sidecar (sha256, max_norm_error, mean_sha256); ValueError when one is missing."""
    out = {}
    for shard in settings.shard_keys:
        path = layout.normalized_meta(shard)
        if not path.exists():
            raise ValueError(f"normalized shard {shard} is missing ({path}): run `actgeo run` first")
        out[shard] = load_json(path)
    return out


@dataclass(frozen=True)
class LookupRecord:
    """``lookup/neighbours.json``: the run, labels and normalized shards the index was built from (sha256),
    and the index's own size and hash."""

    run_key: dict[str, Any] = input_field(lambda i: i.settings.run_key())
    labels_sha256: str | None = input_field(lambda i: i.upstream["components"].get(None))
    normalized_sha256: dict[str, str | None] = input_field(lambda i: dict(i.upstream["normalized"]))
    sha256: str = ""


LOOKUP = StageSpec(
    name="lookup", partitions=None, upstream=("normalized", "components"), record=LookupRecord,
    version="flat-ip-1",
    sidecar=lambda layout, _: layout.lookup_meta,
    files=lambda layout, _, meta: [(layout.lookup_index, meta.get("sha256"))],
)


def _lookup_inputs(settings: RunSettings, layout: RunLayout, comps: RunComponents) -> Inputs:
    """The index's inputs as the run's sidecars record them (their files are verified when read)."""
    return Inputs(settings, layout, None, {"normalized": recorded_outputs(NORMALIZE, settings, layout),
                                           "components": {None: comps.record.labels_sha256}})


def index_problem(settings: RunSettings, layout: RunLayout, comps: RunComponents | None = None) -> str | None:
    """Why ``lookup/neighbours.faiss`` cannot answer for the current run (None: it can): missing, built for
    other settings, labels or normalized shards changed since, or the file damaged (sha256)."""
    comps = comps or load_components(settings, layout)  # ValueError: no finished run of these settings
    fresh = LOOKUP.freshness(_lookup_inputs(settings, layout, comps))
    return None if fresh.current else fresh.why


@holds_writer_lock
def build_lookup_index(settings: RunSettings, layout: RunLayout) -> LookupIndexBuild:
    """Index the run's normalized rows (every shard, global row order, as ``labels.npy``) in a
    ``faiss.IndexFlatIP``; writes ``lookup/neighbours.faiss`` and its sidecar. ValueError when the run's
    components or normalized shards are missing or of other settings."""
    t0 = time.perf_counter()
    comps = load_components(settings, layout)
    norm = _normalized_record(settings, layout)
    blocks = [normalized_rows(settings, layout, s) for s in sorted(settings.shard_keys, key=comps.offsets.get)]
    for shard, block in zip(sorted(settings.shard_keys, key=comps.offsets.get), blocks, strict=True):
        if block.shape[0] != comps.sizes[shard]:
            raise ValueError(f"normalized shard {shard} has {block.shape[0]} rows, the components "
                             f"{comps.sizes[shard]}: rerun `actgeo run`")
    dim = int(blocks[0].shape[1])
    index = build_flat_index(blocks, dim)
    if index.ntotal != len(comps.labels):
        raise ValueError(f"the index has {index.ntotal} rows but labels.npy {len(comps.labels)}: rerun `actgeo run`")
    path = write_index(index, layout.lookup_index)
    sha = sha256_file(path)
    seconds = time.perf_counter() - t0
    max_norm = 1.0 + max(float(m.get("max_norm_error", 0.0)) for m in norm.values())
    save_json(layout.lookup_meta, {
        **expected_inputs(LookupRecord, _lookup_inputs(settings, layout, comps)),
        "run_id": settings.run_id(), "rows": int(index.ntotal),
        "dim": dim, "index_type": INDEX_TYPE, "max_norm": max_norm, "sha256": sha, "seconds": round(seconds, 3),
    })
    return LookupIndexBuild(path=path, rows=int(index.ntotal), dim=dim, index_type=INDEX_TYPE,
                               bytes=path.stat().st_size, seconds=seconds, sha256=sha, run_id=settings.run_id())


def load_lookup_index(settings: RunSettings, layout: RunLayout, comps: RunComponents | None = None,
                         gpu: bool | None = None) -> NeighbourIndex:
    """The current run's index with its labels and threshold; ValueError naming the problem and
    :data:`BUILD_HINT` when it is missing or stale."""
    comps = comps or load_components(settings, layout)
    problem = index_problem(settings, layout, comps)
    if problem:
        raise ValueError(f"no current lookup index: {problem}; build it with {BUILD_HINT}")
    meta = load_json(layout.lookup_meta)
    return NeighbourIndex.load(layout.lookup_index, comps.labels, settings.threshold,
                               max_norm=float(meta.get("max_norm", 1.0)), gpu=gpu)


def _normalization_stats(settings: RunSettings, layout: RunLayout) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mean, norm weight) a query is normalized with, as the run's rows were: the stored mean for
    ``center_l2`` (checked to be the one the normalized shards were centred with), the next norm's weight for
    ``rmsnorm``, else None."""
    from actgeo_assets.lib.store.shards import read_next_norm

    mean = norm = None
    if settings.normalization == "center_l2":
        recorded = load_json(layout.mean_meta).get("sha256") if layout.mean_meta.exists() else None
        used = {m.get("mean_sha256") for m in _normalized_record(settings, layout).values()}
        if used != {recorded}:
            raise ValueError(f"{layout.mean} is not the mean the normalized shards were centred with: "
                             "rerun `actgeo run`")
        mean = np.load(verify_file(layout.mean, recorded))
    elif settings.normalization == "rmsnorm":
        norm = read_next_norm(layout)
    return mean, norm


def _capture_text(settings: RunSettings, loaded: Any, text: str, mean: np.ndarray | None,
                  norm: np.ndarray | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, bool]:
    """The text's token table, its unit rows (float32 [m, d], the run's model ``loaded``, layer and
    normalization with the run's stored ``mean`` or ``norm`` weight), the kept mask (bool [n]) and whether
    it was truncated."""
    from actgeo_assets.lib.capture.documents import Document
    from actgeo_assets.lib.capture.normalize import normalize_rows
    from actgeo_assets.lib.capture.residual import capture_activations

    # budget: the whole text up to context_len tokens (capture's "fewer tokens than the budget" warning is
    # expected here, so it is not logged)
    capture_log = logging.getLogger(capture_activations.__module__)
    level = capture_log.level
    capture_log.setLevel(logging.ERROR)
    try:
        cap = capture_activations(loaded, [Document(doc_id=0, text=text, source="query")], layer=settings.layer,
                                  context_len=settings.context_len, budget=settings.context_len, batch_size=1,
                                  exclude_bos=settings.exclude_bos, progress=False)
    finally:
        capture_log.setLevel(level)
    res = normalize_rows(cap.acts, settings.normalization, mean=mean, norm_weight=norm)
    return cap.tokens, res.unit, res.kept, bool(cap.stats["n_docs_truncated"])


class _CorpusContexts:
    """Token contexts of global rows, read shard by shard (token tables and documents checked against the
    raw sidecars' sha256; the raw activations are not read)."""

    def __init__(self, settings: RunSettings, layout: RunLayout, comps: RunComponents) -> None:
        self.settings, self.layout = settings, layout
        self.shards = sorted(comps.offsets, key=comps.offsets.get)
        self.starts = np.array([comps.offsets[s] for s in self.shards], dtype=np.int64)
        self.cache: dict[str, tuple[pd.DataFrame, dict[Any, str]]] = {}

    def _shard(self, shard: str) -> tuple[pd.DataFrame, dict[Any, str]]:
        if shard not in self.cache:
            meta = load_json(self.layout.raw_meta(shard)) if self.layout.raw_meta(shard).exists() else {}
            recorded = meta.get("files_sha256") or {}
            verify_file(self.layout.tokens(shard), recorded.get("tokens"))
            verify_file(self.layout.docs(shard), recorded.get("docs"))
            raw = read_raw(self.settings, self.layout, shard, verify=False)
            tokens = raw.tokens.loc[load_kept(self.layout, shard)].reset_index(drop=True)
            self.cache[shard] = (tokens, dict(zip(raw.docs["doc_id"], raw.docs["text"], strict=True)))
        return self.cache[shard]

    def context(self, row: int, cosine: float, label: int, chars: int) -> dict[str, Any]:
        i = int(np.searchsorted(self.starts, row, side="right") - 1)
        shard = self.shards[i]
        tokens, texts = self._shard(shard)
        tok = {**tokens.iloc[row - int(self.starts[i])].to_dict(), "row": row}
        c = token_context(texts.get(tok["doc_id"]), tok, cosine, chars)
        return {"row": row, "rank": label + 1, "label_id": label, "cosine": round(cosine, 6), "doc_id": c.doc_id,
                "source": c.source, "position": c.position, "left": c.left, "token": c.token, "right": c.right}


class _Clock:
    """Seconds spent per named phase (``with clock("model"): ...``), summed when a phase repeats."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


#: The phases :class:`LookupSession` times, in order, with what each covers (``LookupResult.timings``).
PHASES: dict[str, str] = {
    "components": "the run's components (labels, offsets) read and the index checked current",
    "index": "the lookup index loaded (or built, when missing or stale and asked to)",
    "model": "the model loaded (torch and transformers imported on first use) and the normalization's mean",
    "forward": "the forward pass: the text tokenized, captured at the run's layer and normalized",
    "search": "the index searched (float64 recheck) and the nearest members' contexts read",
}


#: How a phase reads in :func:`format_timings` (a phase not listed reads as its key).
PHASE_WORDS: dict[str, str] = {"model": "model load", "index": "index load", "forward": "forward pass",
                               "components": "components"}


def format_timings(parts: Mapping[str, float | None], total: float) -> str:
    """Where the time went, in one line and in the order given: ``"18.41 s in all: start-up 0.61 s + imports
    3.80 s + ... + search 0.02 s"``. ``parts``: seconds per phase (:data:`PHASES` and the caller's own,
    e.g. ``start-up``; None: not measurable here, said so); ``total``: the wall time they add up to. A part
    under 5 ms whose name is ``other`` is left out."""
    words = []
    for key, seconds in parts.items():
        name = PHASE_WORDS.get(key, key)
        if seconds is None:
            words.append(f"{name} not measured")
        elif key != "other" or abs(seconds) >= 0.005:
            words.append(f"{name} {seconds:.2f} s")
    return f"{total:.2f} s in all: " + " + ".join(words)


def _files_version(layout: RunLayout) -> tuple[tuple[int, int, int] | None, ...]:
    """(inode, size, mtime_ns) of the files whose change makes a loaded lookup stale: the components'
    summary and labels, the index and its sidecar (None: missing). Cheap: no file is read."""
    out = []
    for path in (layout.summary, layout.labels, layout.lookup_index, layout.lookup_meta):
        try:
            st = path.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


#: CPU threads of a text's forward pass and search (torch and faiss): a text of a few dozen tokens gains
#: nothing from more, and beside `make ui`'s steps more threads only contend (measured on 2 shared cores:
#: 0.2 s a sentence with one thread, 1-2 s with two). Every lookup uses the same, so `actgeo lookup` and the
#: report server compute the same float32 query rows on one machine.
LOOKUP_THREADS = 1


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's and faiss' CPU threads set to ``threads`` inside the block, restored after (None: as they are)."""
    if not threads:
        yield
        return
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])


class LookupSession:
    """One run's lookup kept loaded between texts: its components, lookup index, model and normalization
    statistics are loaded once (:attr:`timings`: seconds per phase of :data:`PHASES`), then :meth:`answer`
    places each text (only the forward pass and the search). :func:`lookup_text` is one session answering
    one text, so a kept session gives exactly `actgeo lookup`'s verdicts.

    ``build``: build the index when it is missing or stale (:attr:`built` says so), else ValueError naming
    :data:`BUILD_HINT`. ValueError when the run has no finished components. ``threads``: CPU threads of each
    answer (:data:`LOOKUP_THREADS`; None: as torch and faiss are set). Not thread-safe: a caller
    answering from several threads holds a lock (the report server does). :meth:`stale` says when the run's
    files changed since it was loaded."""

    def __init__(self, settings: RunSettings, layout: RunLayout, *, build: bool = True,
                 gpu: bool | None = None, threads: int | None = LOOKUP_THREADS) -> None:
        clock = _Clock()
        self.settings, self.layout, self.threads = settings, layout, threads
        self.version = _files_version(layout)
        with clock("components"):
            comps = load_components(settings, layout)
            problem = index_problem(settings, layout, comps)
        self.built: LookupIndexBuild | None = None
        with clock("index"):
            if build and problem:
                self.built = build_lookup_index(settings, layout)
                self.version = _files_version(layout)
            self.index = load_lookup_index(settings, layout, comps, gpu=gpu)
        with clock("model"):
            self.mean, self.norm = _normalization_stats(settings, layout)
            self.model = load_run_model(settings, layout)
        self.comps = comps
        self.sizes = np.bincount(comps.labels)
        self.corpus = _CorpusContexts(settings, layout, comps)
        #: seconds per phase of loading: ``components``, ``index``, ``model``
        self.timings: dict[str, float] = clock.seconds

    def stale(self) -> bool:
        """Whether the run's summary, labels or index changed on disk since this session loaded them."""
        return _files_version(self.layout) != self.version

    def answer(self, text: str, k: int = 3, context_chars: int = CONTEXT_CHARS // 2) -> LookupResult:
        """Capture ``text`` and answer, per token, which component it joins at the run's threshold, with its
        ``k`` nearest members' contexts; ``result.timings``: ``forward`` and ``search`` seconds.
        ValueError when the text is empty or ``k`` negative."""
        if not text.strip():
            raise ValueError("the text is empty: give some text to place, e.g. actgeo lookup \"my hon. Friend\"")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        clock = _Clock()
        with _cpu_threads(self.threads), clock("forward"):
            tokens, unit, kept, truncated = _capture_text(self.settings, self.model, text, self.mean, self.norm)
        with _cpu_threads(self.threads), clock("search"):
            found = dict(zip(np.flatnonzero(kept).tolist(), self.index.query(unit, k=k), strict=True))
            answers = []
            for i, tok in enumerate(tokens.to_dict("records")):
                cs, ce = int(tok["char_start"]), int(tok["char_end"])
                f = found.get(i)
                contexts = ([self.corpus.context(n.row, n.cosine, n.label, context_chars) for n in f.nearest]
                            if f else [])
                answers.append(TokenAnswer(position=int(tok["position"]),
                                           text=text[cs:ce] if ce > cs >= 0 else str(tok["token"]),
                                           token=str(tok["token"]), found=f, contexts=contexts))
        return LookupResult(text=text, run_id=self.settings.run_id(), description=self.settings.describe(),
                           threshold=self.settings.threshold, tokens=answers, queries=unit, kept=kept,
                           sizes=self.sizes, index_path=self.layout.lookup_index,
                           index_rows=int(self.index.index.ntotal), device=self.index.device,
                           truncated=truncated, built=self.built, timings=clock.seconds)


def release_models() -> None:
    """Forget the models this process keeps loaded (``stages.common``'s cache of :func:`load_run_model`), so
    that a replaced :class:`LookupSession`'s model is freed once nothing else holds it."""
    from actgeo_assets.lib.stages import common

    common._cached_model.cache_clear()


def lookup_text(settings: RunSettings, layout: RunLayout, text: str, k: int = 3, build: bool = True,
               context_chars: int = CONTEXT_CHARS // 2, gpu: bool | None = None) -> LookupResult:
    """Capture ``text`` with the run's model, layer and normalization and answer, per token, which component
    of the run it joins at the run's threshold, with its ``k`` nearest members' contexts: a
    :class:`LookupSession` answering once (``result.timings``: every phase of :data:`PHASES`). ``build``:
    build the index when it is missing or stale (``result.built`` says so), else ValueError naming
    :data:`BUILD_HINT`. ValueError when the text is empty or the run has no finished components."""
    if not text.strip():
        raise ValueError("the text is empty: give some text to place, e.g. actgeo lookup \"my hon. Friend\"")
    session = LookupSession(settings, layout, build=build, gpu=gpu)  # LOOKUP_THREADS, as the report server
    result = session.answer(text, k=k, context_chars=context_chars)
    return dataclasses.replace(result, timings={**session.timings, **result.timings})


def answer_json(result: LookupResult, answer: TokenAnswer) -> dict[str, Any]:
    """One token as JSON: ``text``, ``position``, ``verdict``, ``rank`` and ``label_id`` as in the SQL table
    ``actgeo_components`` (``rank = label_id + 1``, rank 1 the largest; null for a new singleton or an
    excluded row; for a bridge the largest component linked), ``size``, ``components`` (every component
    linked, largest first), ``n_linked``, ``best_cosine`` and ``nearest`` (contexts)."""
    f = answer.found
    label = f.label if f else None
    return {
        "text": answer.text, "token": answer.token, "position": answer.position,
        "verdict": f.verdict if f else "excluded (not finite or zero after normalization)",
        "rank": None if label is None else label + 1, "label_id": label,
        "size": None if label is None else int(result.sizes[label]),
        "components": [{"rank": int(c) + 1, "label_id": int(c), "size": int(result.sizes[c])}
                       for c in (f.labels if f else [])],
        "n_linked": f.n_linked if f else 0,
        "best_cosine": None if f is None or f.best_cosine is None else round(f.best_cosine, 6),
        "threshold": result.threshold, "run_id": result.run_id, "nearest": answer.contexts,
    }


def _component(result: LookupResult, label: int) -> str:
    size = int(result.sizes[label])
    return f"rank {label + 1} (label_id {label}, {size:,} member{'s' if size != 1 else ''})"


def format_lookup(result: LookupResult, context_chars: int = 32) -> str:
    """The answer as people read it: one line per token (position, token, verdict), then its nearest
    members, each with its cosine, component rank and corpus context (the member token in brackets)."""
    from actgeo_assets.lib.analysis.tokens import quote_token

    t = result.threshold
    lines = [f"run {result.run_id}: {result.description}",
             f"index {result.index_path} ({result.index_rows:,} rows, queries on {result.device})"
             f"{'; built just now' if result.built else ''}",
             f"{len(result.tokens)} tokens; a token joins the component of any row at float64 cosine >= {t}"]
    if result.truncated:
        lines.append("note: the text is longer than the run's context_len; only its start was captured")
    lines.append("")
    for a in result.tokens:
        f = a.found
        head = f"{a.position:>4}  {quote_token(a.text, 16):<18}  "
        if f is None:
            lines.append(head + "excluded: its activation is not finite or zero after normalization")
            continue
        linked = f"{f.n_linked:,} row{'s' if f.n_linked != 1 else ''} at cosine >= {t}, best {f.best_cosine:.4f}"
        if f.verdict == "joins":
            lines.append(head + f"joins {_component(result, int(f.labels[0]))}: {linked}")
        elif f.verdict == "bridges":
            parts = [_component(result, int(c)) for c in f.labels]
            lines.append(head + f"bridges {', '.join(parts[:-1])} and {parts[-1]}: {linked}")
        else:
            near = f" (nearest: cosine {f.best_cosine:.4f})" if f.best_cosine is not None else ""
            lines.append(head + f"a new singleton: no row at cosine >= {t}{near}")
        for c in a.contexts:
            left, right = c["left"][-context_chars:], c["right"][:context_chars]
            lines.append(f"{'':26}{c['cosine']:.4f}  rank {c['rank']:<6} {left}[{c['token']}]{right}  "
                         f"({c['source']}, doc {c['doc_id']})")
    return "\n".join(lines)

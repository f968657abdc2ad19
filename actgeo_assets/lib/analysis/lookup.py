"""Which component is this? A nearest-neighbour index of a run's unit rows and the exact verdict per query.

    index = NeighbourIndex.from_rows(rows, labels, threshold=0.7)   # rows float32 [N, d] unit; labels int64 [N]
    index.save(path); index = NeighbourIndex.load(path, labels, threshold=0.7)
    found = index.query(queries, k=3)                                # queries [M, d] unit rows
    found[i].verdict       # "joins", "new singleton" or "bridges"; found[i].labels: components linked

A query is linked to row j iff their float64 cosine (dot of the unit rows as stored) is >= threshold: the
edge rule of the engine (:mod:`actgeo_assets.lib.graph`). The query *joins* the one component its linked
rows belong to, is *a new singleton* when no row is linked, and *bridges* components when its linked rows
lie in two or more (adding it to the graph would merge them). faiss' float32 range search proposes every
row down to :func:`~actgeo_assets.lib.graph.exactness.matmul_error_bound` below the threshold and each
proposal is rechecked in float64 against the stored float32 row, so the verdict is exact.

The index is a ``faiss.IndexFlatIP`` holding the rows as float32, exactly. It is always stored as that CPU
index (``faiss.write_index`` writes CPU indexes only). Where faiss has GPU support and torch sees a CUDA
device, queries run on a GPU copy (``faiss.index_cpu_to_gpu``): faiss' GPU indexes have no range search,
so it is emulated by ``faiss.contrib.exhaustive_search.range_search_gpu`` (k-NN on the GPU, the CPU index's
range search for the queries with more than ``gpu_k`` proposals), with the tf32 error bound as the
proposal margin whatever the GPU's GEMM mode. The float64 recheck is the same on both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actgeo_assets.lib.graph.exactness import as_matrix, check_threshold, matmul_error_bound, validate_rows
from actgeo_assets.lib.store.layout import atomic_path


def _faiss():  # -> the faiss module
    """faiss from either extra (``actgeo[cpu]``: faiss-cpu, ``actgeo[gpu]``: faiss-gpu-cu12)."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("the component lookup needs faiss: pip install 'actgeo[cpu]' (faiss-cpu) or "
                          "'actgeo[gpu]' (faiss-gpu-cu12 on a CUDA machine)") from exc
    return faiss


#: Rows added to the index per call (float32 copies of a memory-mapped shard, ~64 MB at d = 2304).
ADD_CHUNK_ROWS = 8192
#: What a verdict says (:attr:`Found.verdict`).
JOINS, SINGLETON, BRIDGES = "joins", "new singleton", "bridges"


@dataclass(frozen=True)
class Neighbour:
    """One stored row near a query: global ``row``, its float64 ``cosine`` to the query and its canonical
    ``label`` (0 = the largest component; the SQL table's ``label_id``, ``rank = label + 1``)."""

    row: int
    cosine: float
    label: int


@dataclass(frozen=True)
class Found:
    """The exact answer for one query.

    ``labels``: int64 [c] sorted canonical labels of the components with a row at float64 cosine >=
    threshold (empty: a new singleton); ``n_linked``: how many rows are; ``best_cosine``: the float64
    cosine of the nearest row found (exact when a row is linked; None when k = 0 and none was proposed);
    ``nearest``: up to k neighbours, by float64 cosine descending (ties by row). The nearest are exact
    whenever the query has at least k linked rows, else they are faiss' float32 k nearest reordered in
    float64.
    """

    labels: np.ndarray
    n_linked: int
    best_cosine: float | None
    nearest: tuple[Neighbour, ...]

    @property
    def verdict(self) -> str:
        """:data:`JOINS` (one component), :data:`SINGLETON` (none) or :data:`BRIDGES` (two or more)."""
        return SINGLETON if len(self.labels) == 0 else JOINS if len(self.labels) == 1 else BRIDGES

    @property
    def label(self) -> int | None:
        """The component joined, or for a bridge the largest one linked (lowest label); None: a new
        singleton."""
        return int(self.labels[0]) if len(self.labels) else None


def faiss_gpu_available() -> bool:
    """Whether queries can run on a GPU: faiss was built with GPU support, sees a GPU, and torch sees CUDA
    (torch is imported only when faiss has GPU support)."""
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return False
    import torch

    return bool(torch.cuda.is_available())


def build_flat_index(blocks: Iterable[np.ndarray], d: int) -> Any:
    """A ``faiss.IndexFlatIP`` [n, d] of the rows of ``blocks`` (each float [m, d], e.g. memory-mapped
    shards, in global row order), added :data:`ADD_CHUNK_ROWS` at a time as float32. A flat index needs
    no training: building it is copying the rows, so it is built on the CPU (the GPU copy is made when
    queries run, :class:`NeighbourIndex`)."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(int(d))
    for block in blocks:
        if block.ndim != 2 or block.shape[1] != d:
            raise ValueError(f"rows must be [m, {d}], got shape {tuple(block.shape)}")
        for lo in range(0, block.shape[0], ADD_CHUNK_ROWS):
            index.add(np.ascontiguousarray(block[lo:lo + ADD_CHUNK_ROWS], dtype=np.float32))
    return index


def write_index(index: Any, path: str | os.PathLike[str]) -> Path:
    """``faiss.write_index`` through a temporary name renamed into place (``layout.atomic_path``)."""
    with atomic_path(path, ".faiss") as tmp:
        _faiss().write_index(index, str(tmp))
    return Path(path)


def read_flat_index(path: str | os.PathLike[str]) -> Any:
    """The ``IndexFlatIP`` at ``path``; ValueError naming the file when it is another kind of index."""
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path))  # already of its own class (IndexFlatIP)
    except RuntimeError as exc:
        raise ValueError(f"cannot read the faiss index {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(index, faiss.IndexFlatIP):
        raise ValueError(f"{path} holds a {type(index).__name__}, expected a faiss IndexFlatIP")
    return index


class NeighbourIndex:
    """Exact component verdicts for new unit rows against an ``IndexFlatIP`` of a run's rows.

    ``index``: CPU ``faiss.IndexFlatIP`` of N rows (float32, global row order); ``labels``: int64 [N]
    canonical labels at ``threshold``; ``max_norm``: the largest stored row norm (1 + the run's
    ``max_norm_error``); ``gpu``: None = use a GPU where :func:`faiss_gpu_available`, False = CPU only.
    """

    def __init__(self, index: Any, labels: np.ndarray, threshold: float, max_norm: float = 1.0,
                 gpu: bool | None = None) -> None:
        faiss = _faiss()
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if labels.shape[0] != index.ntotal:
            raise ValueError(f"labels have {labels.shape[0]} entries but the index holds {index.ntotal} rows")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the neighbour index must use the inner product (faiss.IndexFlatIP)")
        self.index = index
        self.labels = labels.astype(np.int64, copy=False)
        self.threshold = check_threshold(threshold)
        self.d = int(index.d)
        use_gpu = faiss_gpu_available() if gpu is None else gpu
        self._gpu_res = faiss.StandardGpuResources() if use_gpu else None
        self.gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index) if use_gpu else None
        self.gpu_k = 1024  # k-NN depth on the GPU; queries with more proposals fall back to the CPU index
        # proposals down to the GEMM's error bound below the threshold (queries are unit within the engine's
        # tolerance, hence the 2% norm margin); tf32's bound on the GPU
        self.slack = matmul_error_bound(self.d, np.float64, "tf32" if use_gpu else "fp32",
                                        max_norm=max(max_norm, 1.0) * 1.02)

    @property
    def device(self) -> str:
        """Where queries run: ``cuda:0`` or ``cpu``."""
        return "cuda:0" if self.gpu_index is not None else "cpu"

    @classmethod
    def from_rows(cls, rows: np.ndarray, labels: np.ndarray, threshold: float, gpu: bool | None = None
                  ) -> NeighbourIndex:
        """An index of ``rows`` (float [N, d] unit rows, validated: finite, unit norm)."""
        rows = as_matrix(rows, "rows")
        max_norm = validate_rows(rows, "rows")
        return cls(build_flat_index([rows], rows.shape[1]), labels, threshold, max_norm=max_norm, gpu=gpu)

    @classmethod
    def load(cls, path: str | os.PathLike[str], labels: np.ndarray, threshold: float, max_norm: float = 1.0,
             gpu: bool | None = None) -> NeighbourIndex:
        """The index written by :meth:`save` (or :func:`write_index`)."""
        return cls(read_flat_index(path), labels, threshold, max_norm=max_norm, gpu=gpu)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the CPU index atomically; returns ``path``."""
        return write_index(self.index, path)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """float32 [m, d] stored rows ``ids`` (exactly the floats added)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.empty((0, self.d), dtype=np.float32)
        return self.index.reconstruct_batch(ids)

    def _cosines(self, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
        """float64 [m] dots of stored rows ``ids`` with the float64 query ``q`` [d], in chunks of
        :data:`ADD_CHUNK_ROWS` rows (a query in a giant component may have many)."""
        out = np.empty(len(ids), dtype=np.float64)
        for lo in range(0, len(ids), ADD_CHUNK_ROWS):
            out[lo:lo + ADD_CHUNK_ROWS] = self.rows(ids[lo:lo + ADD_CHUNK_ROWS]).astype(np.float64) @ q
        return out

    def _proposals(self, q32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """faiss' range search at ``threshold - slack``: ``lims`` int64 [M + 1], ``ids`` int64."""
        radius = self.threshold - self.slack
        if self.gpu_index is not None:
            from faiss.contrib.exhaustive_search import range_search_gpu

            lims, _, ids = range_search_gpu(q32, radius, self.gpu_index, self.index, gpu_k=self.gpu_k)
        else:
            lims, _, ids = self.index.range_search(q32, radius)
        return np.asarray(lims, dtype=np.int64), np.asarray(ids, dtype=np.int64)

    def query(self, queries: np.ndarray, k: int = 3) -> list[Found]:
        """The exact verdict and the ``k`` nearest stored rows of each query (``queries``: float [M, d] unit
        rows, normalized as the run's rows were). ValueError for a wrong shape or non-unit rows."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        q = as_matrix(queries, "queries")
        if q.shape[1] != self.d:
            raise ValueError(f"queries must be [M, {self.d}], got shape {tuple(q.shape)}")
        validate_rows(q, "queries")
        if q.shape[0] == 0:
            return []
        q32 = np.ascontiguousarray(q, dtype=np.float32)
        q64 = np.asarray(q, dtype=np.float64)
        lims, ids = self._proposals(q32)
        kk = min(self.index.ntotal, k + 8)  # a few spare: float32 order can differ from float64 order
        searcher = self.gpu_index if self.gpu_index is not None else self.index
        knn = searcher.search(q32, kk)[1] if kk > 0 else np.empty((q.shape[0], 0), dtype=np.int64)
        out = []
        for i in range(q.shape[0]):
            cand = np.unique(ids[lims[i]:lims[i + 1]])
            exact = self._cosines(cand, q64[i])
            linked = cand[exact >= self.threshold]
            if len(linked) >= k:  # every row at or above the threshold is a candidate: the top k are exact
                pool, cos = cand, exact
            else:
                extra = np.setdiff1d(knn[i][knn[i] >= 0], cand)
                pool = np.concatenate([cand, extra])
                cos = np.concatenate([exact, self._cosines(extra, q64[i])])
            order = np.lexsort((pool, -cos))
            nearest = tuple(Neighbour(row=int(pool[j]), cosine=float(cos[j]), label=int(self.labels[pool[j]]))
                            for j in order[:k])
            out.append(Found(labels=np.unique(self.labels[linked]), n_linked=int(len(linked)),
                             best_cosine=float(cos[order[0]]) if len(order) else None, nearest=nearest))
        return out

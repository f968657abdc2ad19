"""Connected components of the cosine-threshold graph, and the exact single-linkage hierarchy.

The graph: rows ``x[i]`` of a 2-D float16/float32/float64 array (or torch tensor, or ``np.memmap``) of
unit L2 norm (within 1e-2); ``i != j`` are linked at threshold ``t`` iff the float64 dot product of the
rows *as given* is ``>= t``. Nothing here ever holds an N x N matrix or the full edge list: the join is a
tiled GEMM whose sub-tiles are reduced on the spot to a maximum spanning forest (cycle property: an edge
that is not in the maximum spanning forest of a sub-tile is in no maximum spanning forest of a superset
of edges either), and forests merge by Kruskal. Peak memory is the input + O(tile^2) + O(N).

Exactness (why a fast fp32/tf32 GEMM can still give float64-exact components)
-----------------------------------------------------------------------------
Let ``w(i, j)`` be the float64 dot product and ``s(i, j)`` the one the GEMM computes. For unit rows the
rounding error obeys ``|s - w| <= eps`` with the a-priori bound of :func:`matmul_error_bound`
(``gamma_d = d*u/(1-d*u)``, ``u = 2^-24`` for fp32 accumulation, times ``sum_k |x_ik x_jk| <= |x_i||x_j|``,
plus the rounding of the inputs to the GEMM's format when that is lossy: float64 -> fp32, fp32 -> tf32).
Every pair whose ``s`` lies within ``eps`` of a threshold in the *exact set* (``min_threshold``, every
``exact_at`` value, ``prune_at``; for :func:`cosine_components` the threshold) is recomputed in float64
and carries that exact weight; every other pair carries ``s``. Call the carried weight ``w~``. Then for
each ``t`` in the exact set and every pair, ``w~ >= t  <=>  w >= t`` (a pair not rechecked is more than
``eps`` away from ``t`` in ``s``, hence on the same side in ``w``). Any maximum spanning forest ``F`` of
the graph weighted by ``w~`` has the property that the edges of ``F`` with ``w~ >= t`` span exactly the
components of ``{pairs : w~ >= t}`` (Kruskal). Hence cutting ``F`` at an exact ``t`` gives exactly the
float64 components. For any other ``t >= min_threshold`` the cut gives the components of
``{w~ >= t}``, which differs from ``{w >= t}`` only through pairs with ``|w - t| <= eps``: that is the
bound guaranteed for non-exact thresholds (``SingleLinkageForest.error_bound``). Worst case, rows of
norm 1: fp32 on the CPU 3.8e-5 at d=640 and 1.4e-4 at d=2304 (``d * 2^-24``; the typical fp32 error is
~1e-6, so in practice cuts at non-exact thresholds are almost always exact too); tf32 on a GPU about
4.2e-3 at d=2304. So "within 1e-5" is what the typical fp32 error gives, not a guarantee;
put every threshold you will report into ``exact_at`` to make it exact. "float64 dot" means the sum as
numpy's ``einsum`` forms it; another summation order differs by ~d * 1e-16, which only matters for
pairs that close to a threshold.

Dense sub-tiles (most pairs are candidates) are reduced by Prim (CPU) or Boruvka (GPU) directly on the
float32 similarity matrix. There a rechecked pair's key is its float64 weight rounded to float32 and, if
that rounding crossed an exact threshold, moved to the nearest float32 on the exact side; its stored
weight is the float64 one. Keys and stored weights then lie on the same side of every exact threshold,
so the argument above holds unchanged for the exact set, and other cuts move by at most one float32
ulp more.

Pruning
-------
A landmark pass (``n_landmarks`` random rows, deterministic seed) links every row to the landmarks it is
joined to at the pruning level ``p`` (exact rule above), giving *known* components that are subsets of
true ones. Rows are ordered by known component (largest first) and cut into blocks; only pairs in
different known components are computed: sub-tiles inside one known component are skipped, a block
inside one component restricts the other side to rows outside it, other such pairs are masked. Known
components grow as sub-tiles are reduced, and after the sub-tiles touching single-component blocks the
remaining rows are re-ordered by what is known by then (so rows that joined the giant stop costing
work). All edges found join the forest. Components at every ``t <= p`` stay exact (a skipped pair lies
inside a known component, connected by kept edges of weight ``>= p >= t``); the hierarchy above ``p`` is
*not* complete, so a forest pruned at ``prune_at`` refuses ``labels_at(t > prune_at)``.
:func:`cosine_components` prunes at its own threshold, so its result is identical to no pruning.
On activation-like data (75% giant at 0.7) it computes ~45-60% of the pairs, landmark pass included.

Sharded runs prune from each shard's own forest: ``single_linkage_forest(shard, min_threshold, prune_at=p)``
is the shard's diagonal tile and gives its components at ``p``, and ``tile_forest(a, b, prune_at=p,
known_labels=...)`` starts every other tile from its two shards' components, so it computes only pairs
between different known components and, once it has linked the two shards' giants, skips every pair between
them. Merging the tiles with the shard forests is exact for every cut ``<= p``; merging those of the first k
shards only is exact for those rows (what the N-scaling curve needs), since every skipped pair is joined by
edges among the tile's own two shards.

Low-rank prefilter
------------------
On the CPU, :func:`cosine_components` (with pruning, d >= 512) first bounds every pair it visits from above
by a (k+1)-dimensional fp32 GEMM, ``x.y <= xP.yP + |x_R||y_R|`` with ``P`` the top k = 128 principal
directions of a row sample, every rounding bounded a priori; only pairs whose bound reaches the threshold
get the full dot and the recheck above, so the labels are unchanged (argument and error terms in
:mod:`actgeo_assets.lib.graph.lowrank`). It turns itself off where most sample pairs survive the bound
(``rank=0`` turns it off, ``rank=k`` forces it); the forest functions never use it.

Devices
-------
``device="auto"`` runs on CUDA when torch sees one (all sub-tiles on the GPU, tf32 GEMM with the float64
recheck band, sub-tile forests reduced on the GPU by Boruvka, only forest edges come back), else on the
CPU (numpy/OpenBLAS fp32 GEMM, as fast as torch's on a CPU: benchmarks/RESULTS.md; and scipy's
spanning-tree code).
``device="torch-cpu"`` runs the GPU code path on the CPU (for tests). Labels at exact thresholds are the
same on every device.
"""

from actgeo_assets.lib.graph.api import (
    cosine_components,
    single_linkage_forest,
    tile_forest,
)
from actgeo_assets.lib.graph.exactness import NORM_TOLERANCE, matmul_error_bound
from actgeo_assets.lib.graph.forest import ForestEdges
from actgeo_assets.lib.graph.hierarchy import SingleLinkageForest, merge_forests
from actgeo_assets.lib.graph.labels import canonical_labels, component_summary

__all__ = [
    "NORM_TOLERANCE",
    "ForestEdges",
    "SingleLinkageForest",
    "canonical_labels",
    "component_summary",
    "cosine_components",
    "matmul_error_bound",
    "merge_forests",
    "single_linkage_forest",
    "tile_forest",
]

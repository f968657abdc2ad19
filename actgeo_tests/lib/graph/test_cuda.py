"""The CUDA paths against the CPU engine and a float64 brute force (skipped where torch sees no GPU).

These run on a GPU machine (`benchmarks/gpu_device_check.sh`); CI has none, so here they are skipped and
say so. Covered: the graph engine on the device (tf32 and fp32, pruning on and off, the forest and the
single-threshold path, a size past the resident-upload cutoff), the bf16 capture of a Gemma 2 on the
device against the float32 CPU capture, and the `full` profile's shape (14 layers, layer 12, l2) end to
end in the library: capture on the GPU, normalize, components on the GPU == float64 brute force.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from actgeo_assets.lib.graph import cosine_components, single_linkage_forest
from actgeo_tests.support.oracle import brute_force_labels, clustered, unit
from actgeo_tests.support.paths import MINI_CORPUS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")







@pytest.mark.parametrize("precision", ["tf32", "fp32"])
@pytest.mark.parametrize("prune", [True, False])
def test_cuda_components_equal_brute_force(precision: str, prune: bool) -> None:
    x = clustered(3000, 64, seed=6, k=8)
    for t in (0.6, 0.7, 0.8):
        got = cosine_components(x, t, device="cuda", precision=precision, prune=prune)
        assert (got == brute_force_labels(x, t)).all(), (precision, prune, t)


@pytest.mark.parametrize("precision", ["tf32", "fp32"])
def test_cuda_forest_equals_brute_force_at_exact_thresholds(precision: str) -> None:
    """Cuts at ``exact_at`` thresholds are exact; others only within ``error_bound`` (4e-3 under tf32)."""
    x = clustered(2500, 48, seed=3, k=8)
    f = single_linkage_forest(x, 0.5, exact_at=(0.6, 0.7, 0.8, 0.9), device="cuda", precision=precision)
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        assert (f.labels_at(t) == brute_force_labels(x, t)).all(), t


def test_cuda_large_tiles_match_cpu() -> None:
    """Big enough for several device tiles and the resident upload; the CPU engine is the reference."""
    x = clustered(40_000, 128, seed=11, k=40)
    for t in (0.7, 0.8):
        gpu = cosine_components(x, t, device="cuda", precision="tf32")
        cpu = cosine_components(x, t, device="cpu")
        assert (gpu == cpu).all(), t
        assert len(np.unique(gpu)) > 1


def test_cuda_threshold_edge_pairs_stay_exact() -> None:
    """Pairs planted at cosine 0.7 +- 1e-7 must land on the float64 side of the threshold under tf32."""
    rng = np.random.default_rng(0)
    d = 256
    base = unit(rng.standard_normal((400, d)))
    partners = []
    for i, row in enumerate(base):
        ortho = rng.standard_normal(d)
        ortho -= ortho @ row * row
        ortho /= np.linalg.norm(ortho)
        c = 0.7 + (1e-7 if i % 2 else -1e-7)
        partners.append(c * row + np.sqrt(1 - c * c) * ortho)
    x = np.vstack([base, np.asarray(partners)]).astype(np.float32)
    got = cosine_components(x, 0.7, device="cuda", precision="tf32")
    assert (got == brute_force_labels(x, 0.7)).all()


def test_cuda_bf16_capture_matches_cpu_float32(tmp_path) -> None:
    from actgeo_assets.lib.capture.documents import Document
    from actgeo_assets.lib.capture.model import load_model
    from actgeo_assets.lib.capture.residual import capture_activations
    from actgeo_tests.support.tiny_model import tiny_gemma2

    path = tiny_gemma2(tmp_path, n_layers=14, hidden=128)
    texts = [json.loads(line)["text"] for line in MINI_CORPUS.read_text().splitlines()]
    docs = [Document(i, t, "fixture") for i, t in enumerate(texts)]
    kw = dict(layer=12, context_len=128, budget=1_500, batch_size=8, progress=False, out_dtype=np.float32)
    gpu_model = load_model(path, tmp_path / "cache", device="cuda")
    assert gpu_model.dtype == torch.bfloat16
    gpu = capture_activations(gpu_model, docs, **kw)
    cpu = capture_activations(load_model(path, tmp_path / "cache", device="cpu"), docs, **kw)
    assert gpu.acts.shape == cpu.acts.shape == (1_500, 128)
    assert gpu.tokens.equals(cpu.tokens)
    cos = np.sum(unit(gpu.acts.astype(np.float64)) * unit(cpu.acts.astype(np.float64)), axis=1)
    assert cos.min() > 0.99, cos.min()  # bf16 through 13 blocks: direction kept


def test_cuda_full_profile_shape_end_to_end(tmp_path) -> None:
    """Layer 12 of a 14-layer Gemma 2, bf16 capture on the GPU, l2, components on the GPU == brute force."""
    from actgeo_assets.lib.capture.documents import Document
    from actgeo_assets.lib.capture.model import load_model
    from actgeo_assets.lib.capture.residual import capture_activations
    from actgeo_tests.support.tiny_model import tiny_gemma2

    path = tiny_gemma2(tmp_path, n_layers=14, hidden=128)
    texts = [json.loads(line)["text"] for line in MINI_CORPUS.read_text().splitlines()]
    docs = [Document(i, t, "fixture") for i, t in enumerate(texts)]
    res = capture_activations(load_model(path, tmp_path / "cache", device="cuda"), docs, layer=12,
                              context_len=256, budget=3_000, batch_size=8, progress=False)
    x = unit(res.acts.astype(np.float32)).astype(np.float32)
    for t in (0.5, 0.7):
        got = cosine_components(x, t, device="cuda")
        assert (got == brute_force_labels(x, t)).all(), t

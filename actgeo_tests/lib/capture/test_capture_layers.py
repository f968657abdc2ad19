"""capture_layers: several layers from one forward pass, each equal to the single-layer capture, the forward
stopped after the deepest requested block."""

from __future__ import annotations

import numpy as np
import pytest

from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.model import decoder_layers
from actgeo_assets.lib.capture.residual import capture_activations, capture_layers

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "def add(a, b):\n    return a + b\n",
    "To be, or not to be",
    "GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007",
]


@pytest.fixture
def docs() -> list[Document]:
    return [Document(i, t, f"src{i % 2}") for i, t in enumerate(TEXTS)]


def test_each_layer_equals_single_layer_capture_and_later_blocks_never_run(tiny_loaded, docs) -> None:
    calls: list[int] = []
    blocks = decoder_layers(tiny_loaded.model)
    handles = [b.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    handles.append(tiny_loaded.model.lm_head.register_forward_hook(lambda *_a: calls.append(-1)))
    try:
        multi = capture_layers(tiny_loaded, docs, layers=[2, 0], context_len=24, budget=50, batch_size=3,
                               progress=False)
    finally:
        for h in handles:
            h.remove()
    # two batches (4 documents, 3 per batch), each through blocks 0..2 only: block 3 and the head never run
    assert calls == [0, 1, 2, 0, 1, 2]
    assert sorted(multi.acts) == [0, 2] and multi.stats["layers"] == [0, 2]
    for layer in (0, 2):
        single = capture_activations(tiny_loaded, docs, layer=layer, context_len=24, budget=50, batch_size=3,
                                     progress=False)
        assert multi.acts[layer].dtype == single.acts.dtype == np.float32
        assert np.array_equal(multi.acts[layer], single.acts)  # bit for bit
        assert multi.tokens.equals(single.tokens)
        assert multi.stats["n_overflow_rows"][layer] == single.stats["n_overflow_rows"] == 0
        assert multi.stats["max_abs"][layer] == single.stats["max_abs"]
    assert not np.array_equal(multi.acts[0], multi.acts[2])


def test_single_layer_stats_keep_their_shape(tiny_loaded, docs) -> None:
    single = capture_activations(tiny_loaded, docs, layer=1, context_len=16, budget=20, batch_size=2, progress=False)
    assert single.stats["layer"] == 1 and "layers" not in single.stats
    assert isinstance(single.stats["n_overflow_rows"], int) and isinstance(single.stats["max_abs"], float)


def test_bad_layers(tiny_loaded, docs) -> None:
    kw = dict(context_len=8, budget=4, batch_size=1, progress=False)
    with pytest.raises(ValueError, match=r"layer 4 is out of range.*n_layers=4"):
        capture_layers(tiny_loaded, docs, layers=[1, 4], **kw)
    with pytest.raises(ValueError, match="repeat a layer"):
        capture_layers(tiny_loaded, docs, layers=[1, 1], **kw)
    with pytest.raises(ValueError, match="layers is empty"):
        capture_layers(tiny_loaded, docs, layers=[], **kw)

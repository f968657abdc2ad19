"""The named profiles: ``demo`` (offline, 2-core CPU, minutes), ``full`` (the study: Gemma 2 2B, layer 12,
NeelNanda/pile-10k, 1,000,000 activations, threshold 0.7, CUDA GPU) and ``scale`` (the demo model and corpus
at the study's 1,000,000 activations on a CPU machine, tiles pruned at the threshold). A run's settings are
its profile's with the values of its sources laid over them (:func:`~.sources.resolve_settings`)."""

from __future__ import annotations

from actgeo_assets.lib.config.constants import DEMO_PROFILE, FULL_PROFILE, PROFILE_NAMES, SCALE_PROFILE
from actgeo_assets.lib.config.settings import RunSettings

PROFILES: dict[str, RunSettings] = {
    # The demo also shows the giant's sub-components at 0.8 (single linkage nests them inside it).
    DEMO_PROFILE: RunSettings(subcard_threshold=0.8),
    FULL_PROFILE: RunSettings(
        profile=FULL_PROFILE,
        model="google/gemma-2-2b",
        layer=12,
        corpus="NeelNanda/pile-10k",
        corpus_split="train",
        n_shards=10,
        budget=1_000_000,
        context_len=128,
        normalization="l2",
        threshold=0.7,
        min_threshold=0.5,
        batch_size=32,
        device="auto",
        torch_threads=0,
    ),
    # The study's scale on one CPU machine: the demo model and corpus, 1,000,000 activations (the builtin corpus'
    # ~6,000 documents hold ~760,000 tokens in 128-token contexts, so contexts are 256 tokens), 20 shards (210
    # tiles), tiles pruned at the run's threshold (the hierarchy is exact from min_threshold up to 0.7).
    SCALE_PROFILE: RunSettings(
        profile=SCALE_PROFILE,
        n_shards=20,
        budget=1_000_000,
        context_len=256,
        sweep=(0.5, 0.6, 0.7),
        prune_at=0.7,
    ),
}
assert tuple(PROFILES) == PROFILE_NAMES

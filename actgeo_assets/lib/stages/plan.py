"""What is stale: the stages' own freshness, composed in lineage order.

The planner knows no stage: it is given the pipeline's stages (:class:`~.record.StageSpec`, in lineage order:
the declaration in ``actgeo_assets/defs/pipeline.py``), asks each partition of each stage whether its output is
current (:meth:`StageSpec.freshness`), and hands every stage the output hashes of the stages it reads. A
partition whose upstream is stale is stale too (its recorded input hash no longer matches None), so one changed
shard file means its capture, its normalization, the tiles that involve it and the merge; with ``center_l2``
the mean moves with every shard, so then every shard re-normalizes and every tile reruns, as the arithmetic
requires. An output file that no longer matches the sha256 recorded when it was written makes its partition
stale, with a warning naming the file (:attr:`Plan.problems`), so a plain rerun heals it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.stages.record import Inputs, Key, StageSpec
from actgeo_assets.lib.store.layout import RunLayout, load_json

log = logging.getLogger("actgeo")


@dataclass
class Plan:
    """Per stage (lineage order): its stale partitions, why each is stale, and the output hashes of its
    current ones. Later stages are judged against the files as they are now, so plan again after running a
    stage (the runner and the sensor do)."""

    order: tuple[str, ...]
    stale: dict[str, list[Key]] = field(default_factory=dict)
    why: dict[str, dict[Key, str]] = field(default_factory=dict)
    outputs: dict[str, dict[Key, str | None]] = field(default_factory=dict)
    #: Output files found missing, truncated or changed (one line each, naming the file and what reruns).
    problems: list[str] = field(default_factory=list)

    def first_stage(self, among: Collection[str] | None = None) -> tuple[str, list[Key]] | None:
        """(stage name, stale partition keys) of the earliest stage with work (of ``among``, when given), or
        None when all of them are current."""
        for name in self.order:
            if (among is None or name in among) and self.stale.get(name):
                return name, list(self.stale[name])
        return None

    def is_current(self, name: str) -> bool:
        return not self.stale.get(name)

    def reason(self, name: str) -> str:
        """Why stage ``name`` has work: its first stale partition's reason, and how many partitions."""
        keys = self.stale.get(name) or []
        if not keys:
            return "current"
        first = self.why[name][keys[0]]
        return first if len(keys) == 1 else f"{len(keys)} partitions, e.g. {keys[0]}: {first}"


def plan(settings: RunSettings, layout: RunLayout, stages: Sequence[StageSpec], *,
         database_url: str | None = None, memo: Mapping[str, object] | None = None) -> Plan:
    """The stale partitions of ``stages`` (lineage order) for ``settings`` and the files under ``layout``.

    ``memo`` seeds values the stages compute once per plan (e.g. ``{"fingerprints": ...}`` when the caller
    already hashed the shard sources)."""
    out = Plan(order=tuple(s.name for s in stages))
    shared: dict[str, object] = dict(memo or {})
    for spec in stages:
        missing = [u for u in spec.upstream if u not in out.outputs]
        if missing:
            raise ValueError(f"stage {spec.name} reads {missing}, which no stage before it writes "
                             f"(stages in order: {list(out.order)})")
        upstream = {u: out.outputs[u] for u in spec.upstream}
        hashes: dict[Key, str | None] = {}
        stale: list[Key] = []
        why: dict[Key, str] = {}
        enabled = spec.enabled(settings)
        for key in spec.keys(settings):
            if not enabled:
                hashes[key] = None
                continue
            fresh = spec.freshness(Inputs(settings, layout, key, upstream, database_url, shared))
            hashes[key] = fresh.output if fresh.current else None
            if not fresh.current:
                stale.append(key)
                why[key] = fresh.why
                if fresh.damaged:
                    message = f"{fresh.why}: {spec.label(key)} is recomputed"
                    log.warning(message)
                    out.problems.append(message)
        out.outputs[spec.name], out.stale[spec.name], out.why[spec.name] = hashes, stale, why
    return out


def recorded_outputs(spec: StageSpec, settings: RunSettings, layout: RunLayout) -> dict[Key, str | None]:
    """Each partition's output hash as its sidecar records it (None where there is none), without checking
    the stage's inputs or files: for a reader that verifies the files it opens (e.g. the lookup)."""
    out: dict[Key, str | None] = {}
    for key in spec.keys(settings):
        try:
            meta = load_json(spec.sidecar(layout, key))
        except (OSError, ValueError):
            meta = None
        out[key] = spec.output(meta) if isinstance(meta, dict) else None
    return out

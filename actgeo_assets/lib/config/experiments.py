"""Experiments: named configurations that live side by side in one data directory.

An experiment is a settings file ``{data_dir}/experiments/{name}.yaml`` (the keys of any settings file: a
``profile`` and the settings that differ from it) and a run folder ``{data_dir}/{name}/`` laid out as any run's
(``lib/store/layout.py``). Its SQL rows carry its run id. The Dagster Definitions build every experiment's
assets under the asset-key prefix ``{name}`` with its own partitions, jobs and shard sensor
(``defs/pipeline.py``), so experiments never share a file, a partition or a job, and none overwrites another.

Where experiments come from:

- a file dropped into ``{data_dir}/experiments/`` (then "Reload definitions" in the UI);
- `actgeo run --set KEY=VALUE ...` whose settings differ from the profile's in what the run computes:
  :func:`derived_name` names the experiment by those settings (``demo_layer_12``) unless ``--experiment``
  names it, and :func:`write_experiment` records it;
- the launchpad of the UI's ``add_experiment`` job (the resource's settings fields, plus a name).

A name is lowercase letters, digits and ``_`` (Dagster job and asset names allow no ``-``), starts with a
letter, is at most :data:`MAX_NAME` characters, and is neither a profile name (``data/demo`` is the profile's
own folder) nor a folder the data directory already uses (:data:`RESERVED`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actgeo_assets.lib.config.constants import PROFILE_NAMES
from actgeo_assets.lib.config.settings import SETTINGS, RunSettings
from actgeo_assets.lib.config.spec import SettingsError

#: The data directory whose experiments the Dagster Definitions build (default: the settings file's
#: ``data_dir``, else ``data``); `actgeo run --data-dir D` sets it for its own process.
EXPERIMENTS_DATA_DIR_ENV = "ACTGEO_EXPERIMENTS_DATA_DIR"
#: The folder of experiment files in the data directory.
EXPERIMENTS_DIR = "experiments"
#: Folders of the data directory that are not experiments.
RESERVED = frozenset({EXPERIMENTS_DIR, "comparison", "dataset", "lookup", "index"} | set(PROFILE_NAMES))
MAX_NAME = 40
NAME = re.compile(r"[a-z][a-z0-9_]*")
#: Settings that change how a run computes, not what: they neither name an experiment nor make one differ.
OPERATIONAL = frozenset({"device", "torch_threads", "batch_size", "profile"})


@dataclass(frozen=True)
class Experiment:
    """One experiment: its ``name``, its settings ``file`` and the ``values`` the file holds (validated
    settings keys, ``profile`` included)."""

    name: str
    file: Path
    values: dict[str, Any]

    @property
    def source(self) -> str:
        """How a message names it."""
        return f"experiment {self.name} ({self.file})"


def check_name(name: str) -> str:
    """``name`` when it may name an experiment; :class:`SettingsError` saying why not."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise SettingsError(f"experiment name {name!r} must be lowercase letters, digits and '_', start with a "
                            f"letter and have at most {MAX_NAME} characters (Dagster names its jobs after it)",
                            names=("experiment",))
    if name in RESERVED:
        raise SettingsError(f"experiment name {name!r} is taken: {sorted(RESERVED)} are the profiles' own "
                            "folders and folders of the data directory", names=("experiment",))
    return name


def experiments_dir(data_dir: Path) -> Path:
    return Path(data_dir) / EXPERIMENTS_DIR


def experiment_file(data_dir: Path, name: str) -> Path:
    return experiments_dir(data_dir) / f"{check_name(name)}.yaml"


def list_experiments(data_dir: Path) -> list[Experiment]:
    """Every experiment of ``data_dir``, by name. A file whose name or values are bad raises
    :class:`SettingsError` naming the file."""
    folder = experiments_dir(data_dir)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            check_name(path.stem)
        except SettingsError as exc:
            raise exc.at(f"experiment file {path}") from None
        out.append(read_experiment(data_dir, path.stem))
    return out


def read_experiment(data_dir: Path, name: str) -> Experiment:
    """The experiment ``name`` of ``data_dir``; :class:`SettingsError` naming the known ones when absent."""
    from actgeo_assets.lib.config.sources import read_settings_file

    path = experiment_file(data_dir, name)
    if not path.is_file():
        known = sorted(p.stem for p in experiments_dir(data_dir).glob("*.yaml"))
        raise SettingsError(f"no experiment {name!r} in {experiments_dir(data_dir)} (known: {known or 'none'}); "
                            "`actgeo run --experiment NAME --set KEY=VALUE ...` creates one",
                            names=("experiment",))
    values = read_settings_file(path, f"experiment file {path}")
    located = sorted(k for k in values if k not in SETTINGS)
    if located:
        raise SettingsError(f"names {located}: an experiment holds settings only (where its files live is "
                            "the data directory's)", source=f"experiment file {path}")
    return Experiment(name=name, file=path, values=values)


def differences(settings: RunSettings, base: RunSettings) -> dict[str, Any]:
    """The settings of ``settings`` that differ from ``base``'s and change what a run computes (not
    :data:`OPERATIONAL`), as plain values (tuples as lists)."""
    out = {}
    for name in SETTINGS:
        value, other = getattr(settings, name), getattr(base, name)
        if name not in OPERATIONAL and value != other:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def definition(settings: RunSettings) -> dict[str, Any]:
    """What an experiment file records for ``settings``: its profile and its :func:`differences` from it."""
    from actgeo_assets.lib.config.profiles import PROFILES

    return {"profile": settings.profile, **differences(settings, PROFILES[settings.profile])}


def derived_name(settings: RunSettings) -> str:
    """A readable name for the experiment of ``settings``: the profile and each differing setting with its
    value (``demo_layer_12``, ``demo_normalization_l2_threshold_0_6``); when that is longer than
    :data:`MAX_NAME`, the profile and a hash of the differences (``demo_3f9a2b1c``)."""
    diff = definition(settings)
    diff.pop("profile")
    parts = [settings.profile]
    for key in sorted(diff):
        value = diff[key]
        text = "_".join(map(str, value)) if isinstance(value, list) else str(value)
        if "/" in text or len(text) > 16:  # a path or hub id: its last part
            text = Path(text.rstrip("/")).stem[-16:]
        parts.append(f"{key}_{text}")
    name = re.sub(r"[^a-z0-9_]+", "_", "_".join(parts).lower()).strip("_")
    if len(name) > MAX_NAME or not NAME.fullmatch(name):
        digest = hashlib.sha256(json.dumps(diff, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name = f"{settings.profile}_{digest}"
    return name


def write_experiment(data_dir: Path, name: str, settings: RunSettings) -> Experiment:
    """Record ``settings`` as the experiment ``name`` (atomic write). An experiment of that name that
    already exists must hold the same :func:`definition`; otherwise :class:`SettingsError` names the settings
    that differ (an experiment is never redefined in place: its files would no longer be its own)."""
    import os
    import tempfile

    import yaml

    values = definition(settings)
    path = experiment_file(data_dir, name)
    if path.is_file():
        have = read_experiment(data_dir, name)
        check_consistent(have, settings)
        return have
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# actgeo experiment {name}: the profile and the settings that differ from it\n"
            + yaml.safe_dump(values, sort_keys=False))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # written whole, then renamed
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return read_experiment(data_dir, name)


def check_consistent(experiment: Experiment, settings: RunSettings, defined: RunSettings | None = None) -> None:
    """:class:`SettingsError` when ``settings`` (the experiment's, with a caller's values laid over them)
    compute something else than the experiment defines (``defined``: its settings as resolved without the
    caller's values; default: its file over its profile), naming each setting that differs."""
    from actgeo_assets.lib.config.sources import resolve_settings

    own = defined if defined is not None else resolve_settings([(experiment.source, experiment.values)])
    diff = {**differences(settings, own), **({"profile": settings.profile}
                                               if settings.profile != own.profile else {})}
    if diff:
        shown = ", ".join(f"{k}={v!r} (the experiment: {getattr(own, k)!r})" for k, v in diff.items())
        raise SettingsError(f"{shown}: another configuration than experiment {experiment.name!r} "
                            f"({experiment.file}); name another experiment (--experiment NAME), or edit the "
                            "file to redefine it", names=tuple(diff))


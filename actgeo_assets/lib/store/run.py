"""A run resolved from its sources: its settings, where its files live and its database URL.

:func:`resolve_run` reads the sources the Dagster resource reads, in the same order (later wins): the
settings file (``config_file``, else ``$ACTGEO_CONFIG``), then the caller's explicit values, then further
layers (e.g. values read from environment variables as text). Every value is validated
(:mod:`actgeo_assets.lib.config.sources`); a bad one raises ``SettingsError`` naming its source. The CLI,
the report server and the resource all resolve a run here, so they agree on which run the settings name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actgeo_assets.lib.config.experiments import check_consistent, read_experiment
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.config.sources import (
    DATABASE_URL_ENV,
    DEPLOYMENT_ENV,
    Layer,
    check_database_url,
    file_layer,
    pick,
    resolve_settings,
)
from actgeo_assets.lib.config.spec import SettingsError
from actgeo_assets.lib.store.layout import RunLayout, resolve_data_dir

#: The file name of the SQLite database in ``data_dir`` when no database URL is given (not on Kubernetes).
SQLITE_FILE = "actgeo.sqlite"


@dataclass(frozen=True)
class RunContext:
    """One run's settings and files; its database URL is resolved when asked (:attr:`database_url`), so a
    caller that needs only the settings works where no database is configured. ``experiment``: the
    experiment it is (``lib/config/experiments.py``; its folder is ``data_dir / experiment``), or None: the
    profile's own run (``data_dir / profile``).

    ``file``: the settings file's layer; ``own``: the explicit layers after it (later wins);
    ``environ``: the environment read for ``$ACTGEO_DATABASE_URL`` and ``$ACTGEO_DEPLOYMENT``."""

    settings: RunSettings
    layout: RunLayout
    file: Layer
    own: tuple[Layer, ...]
    environ: Mapping[str, str]
    experiment: str | None = None

    @property
    def data_dir(self) -> Path:
        """The absolute root folder of all run files (``layout.root`` is ``data_dir / profile``)."""
        return self.layout.root.parent

    @property
    def database_url(self) -> str:
        """An explicit ``database_url`` (checked to parse), else ``$ACTGEO_DATABASE_URL``, else the settings
        file's, else a SQLite file in ``data_dir``, except with ``$ACTGEO_DEPLOYMENT=k8s``: there a
        ``SettingsError`` says that ``ACTGEO_DATABASE_URL`` is unset in this pod. A message shows a URL
        with its password hidden."""
        own = pick(self.own, "database_url")
        if own:
            return check_database_url(*own)
        env = self.environ.get(DATABASE_URL_ENV)
        if env:
            return check_database_url(env, f"environment ${DATABASE_URL_ENV}")
        from_file = pick([self.file], "database_url")
        if from_file:
            return from_file[0]  # validated when the file was read
        if (self.environ.get(DEPLOYMENT_ENV) or "").strip() == "k8s":
            raise SettingsError(
                f"{DATABASE_URL_ENV} is unset in this pod and the settings file names no database_url; on "
                f"Kubernetes ({DEPLOYMENT_ENV}=k8s) there is no SQLite fallback: set {DATABASE_URL_ENV} "
                "(the actgeo-database Secret) to the run's database", names=("database_url",))
        return f"sqlite:///{self.data_dir / SQLITE_FILE}"


def resolve_run(
    config_file: str | None = None,
    values: Mapping[str, Any] | None = None,
    *,
    source: str = "explicit values",
    layers: Iterable[Layer] = (),
    environ: Mapping[str, str] | None = None,
    experiment: str | None = None,
) -> RunContext:
    """The run named by the settings file (``config_file``, else ``$ACTGEO_CONFIG``; none: no values), the
    explicit ``values`` (settings keys, ``data_dir``, ``database_url``; ``None`` = not set; ``source`` names
    them in messages) and further ``layers`` (``(source, values)``, later wins), laid over the profile they
    name. ``data_dir`` defaults to ``data`` (a relative one is taken from the project root). ``environ``
    defaults to ``os.environ``. Raises ``SettingsError`` naming the source of a bad value.

    ``experiment``: the run is that experiment of the data directory (its file's settings laid over the
    settings file's, its folder ``data_dir / experiment``); the explicit values may add operational settings
    (threads, device) but not another configuration (``SettingsError`` naming what differs)."""
    env = os.environ if environ is None else environ
    file = file_layer(config_file, env)
    own: tuple[Layer, ...] = ((source, {k: v for k, v in (values or {}).items() if v is not None}), *layers)
    data_dir = pick([file, *own], "data_dir")
    root = resolve_data_dir(data_dir[0] if data_dir else "data")
    if experiment is None:
        settings = resolve_settings([file, *own])
        return RunContext(settings=settings, layout=RunLayout(root, settings.profile), file=file, own=own,
                          environ=env)
    exp = read_experiment(root, experiment)
    settings = resolve_settings([file, (exp.source, exp.values), *own])
    check_consistent(exp, settings, resolve_settings([file, (exp.source, exp.values)]))
    return RunContext(settings=settings, layout=RunLayout(root, exp.name), file=file, own=own, environ=env,
                      experiment=exp.name)


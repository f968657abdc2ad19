"""Dagster resources: the run settings (profile + overrides), where files live, and the SQL database.

The settings fields of :class:`ActgeoResource` are derived from ``RunSettings`` (lib/config/settings.py), the one
list of settings: one field per ``RunSettings`` field, of the same type (a tuple as a list), default None
("keep the profile's value"), described in the launchpad by the field's doc. Every value the resource is
given (launchpad, a ``dg.EnvVar``, Python) passes the same validation as ``--set`` and settings files
(``lib.config.settings.validate_settings``), when the resource is built; the settings file and the database URL
are checked when a run's resources are set up, before any asset computes.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field, create_model

from actgeo_assets.lib.config.secrets import mask_url
from actgeo_assets.lib.config.settings import CONFIG_KEYS, LOCATIONS, SETTINGS, RunSettings, validate_settings
from actgeo_assets.lib.config.sources import CONFIG_ENV, DATABASE_URL_ENV, Layer, parse_text
from actgeo_assets.lib.store.layout import RunLayout
from actgeo_assets.lib.store.run import RunContext, resolve_run

__all__ = ["CONFIG_ENV", "DATABASE_URL_ENV", "RESOURCE_SOURCE", "ActgeoResource"]

#: How a message names values given to the resource (launchpad or Python).
RESOURCE_SOURCE = "resource config"


def _is_env_var(value: Any) -> bool:
    """A ``dg.EnvVar`` (or ``dg.EnvVar.int``): Dagster resolves it when a run starts."""
    return hasattr(value, "env_var_name") and hasattr(value, "get_value")


class _LocationFields(dg.ConfigurableResource):
    config_file: str = Field(default="", description=f"YAML/JSON file of settings (default: ${CONFIG_ENV})")
    data_dir: str | None = Field(default=None, description=LOCATIONS["data_dir"].doc)
    database_url: str | None = Field(default=None, description=LOCATIONS["database_url"].doc)


_SettingFields: Any = create_model(  # one Optional field per RunSettings field
    "_SettingFields",
    __base__=_LocationFields,
    __module__=__name__,
    **{name: (spec.config_type | None, Field(default=None, description=f"{spec.doc} (default: the profile's)"))
       for name, spec in SETTINGS.items()},
)


class ActgeoResource(_SettingFields):
    """Which run the assets build. ``profile`` picks ``demo`` or ``full``; any field left unset keeps the
    profile's value. Set fields in the launchpad's resource config, or point ``config_file`` (or, when that
    is empty, the environment variable ``ACTGEO_CONFIG``, read when a run starts, never at import) at a
    YAML/JSON file of the same keys: a deployment's one place for settings. Explicit fields win over the
    file. The database URL comes from ``ACTGEO_DATABASE_URL`` (never put a password in config)."""

    def __init__(self, **data: Any) -> None:
        given = {k: v for k, v in data.items() if k in CONFIG_KEYS and not _is_env_var(v)}
        validate_settings(given, RESOURCE_SOURCE)
        super().__init__(**data)

    def __repr_args__(self) -> Any:  # repr() and str() hide a password in database_url
        for name, value in super().__repr_args__():
            plain = isinstance(value, str) and not _is_env_var(value)
            yield name, (mask_url(value) if name == "database_url" and plain else value)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Check every setting, the database URL, and that the database accepts a connection, when a run's
        resources are set up (before compute): a run that cannot reach its database fails here, naming the
        URL with its password hidden."""
        from actgeo_assets.lib.outputs.sql import check_database

        check_database(self.context().database_url)

    # --- the run, resolved by the library (lib/store/run.py) from the resource's sources

    def _env_layers(self) -> list[Layer]:
        """Layers of the fields given as a ``dg.EnvVar`` that Dagster has not resolved (a resource used
        outside a run), read as text like ``--set``."""
        layers: list[Layer] = []
        for name in CONFIG_KEYS:
            value = getattr(self, name)
            if _is_env_var(value):
                source = f"environment ${value.env_var_name}"
                text = value.get_value()
                if text is not None:
                    layers.append((source, {name: parse_text(name, str(text), source)}))
        return layers

    def context(self, experiment: str | None = None) -> RunContext:
        """The run of the settings file (``config_file``, else ``$ACTGEO_CONFIG``), the resource's plain values
        and its ``dg.EnvVar`` fields, later winning (:func:`~actgeo_assets.lib.store.run.resolve_run`). With
        ``experiment`` (what an experiment's assets pass): that experiment of the data directory, its file's
        settings over the settings file's (the resource may add threads or a device, not another
        configuration)."""
        plain = {name: getattr(self, name) for name in CONFIG_KEYS if not _is_env_var(getattr(self, name))}
        return resolve_run(self.config_file or None, plain, source=RESOURCE_SOURCE, layers=self._env_layers(),
                           experiment=experiment)

    # --- what the assets use

    def settings(self) -> RunSettings:
        return self.context().settings

    def layout(self) -> RunLayout:
        return self.context().layout

    def db_url(self) -> str:
        """The field (definitions.py sets it to ``dg.EnvVar("ACTGEO_DATABASE_URL")`` when that is set), else
        ``$ACTGEO_DATABASE_URL`` (a resource built in Python, or launchpad config, which replaces the
        Definitions' values), else the settings file's, else a SQLite file in ``data_dir`` (not on
        Kubernetes). Checked to parse as a SQLAlchemy URL; a message shows it with the password hidden."""
        return self.context().database_url

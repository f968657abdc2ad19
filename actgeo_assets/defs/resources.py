"""Dagster resources: the run settings (profile + overrides), where files live, and the SQL database.

The settings fields of :class:`ActgeoResource` are derived from ``RunSettings`` (lib/config/settings.py), the one
list of settings: one field per ``RunSettings`` field, of the same type (a tuple as a list), default None
("keep the profile's value"), described in the launchpad by the field's doc. Every value the resource is
given (launchpad, a ``dg.EnvVar``, Python) passes the same validation as ``--set`` and settings files
(``lib.settings.validate_settings``), when the resource is built; the settings file and the database URL
are checked when a run's resources are set up, before any asset computes.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field, create_model

from actgeo_assets.lib.config.settings import (
    CONFIG_KEYS,
    LOCATIONS,
    SETTINGS,
    RunSettings,
    check_database_url,
    mask_url,
    parse_text,
    read_settings_file,
    resolve_settings,
    validate_settings,
)
from actgeo_assets.lib.store.layout import RunLayout, resolve_data_dir

#: Environment variable of the database URL: definitions.py wires ``database_url`` to it with ``dg.EnvVar``,
#: so a password never shows in the launchpad or the resource's config in the UI.
DATABASE_URL_ENV = "ACTGEO_DATABASE_URL"
#: Environment variable of the settings file, read when settings are asked for (never at import).
CONFIG_ENV = "ACTGEO_CONFIG"
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
        """Check every setting and the database URL when a run's resources are set up (before compute)."""
        self.settings()
        self.db_url()

    # --- sources, each validated by lib.settings

    def _file(self) -> tuple[str, dict[str, Any]]:
        """(source label, validated values) of the settings file; parsed once per file version."""
        if self.config_file:
            path, label = self.config_file, f"config file {self.config_file}"
        else:
            path = dg.EnvVar(CONFIG_ENV).get_value() or ""
            label = f"config file {path} (${CONFIG_ENV})"
        return label, (read_settings_file(path, label) if path else {})

    def _own(self) -> list[tuple[str, dict[str, Any]]]:
        """Layers of the resource's own values: plain values, then each field given as a ``dg.EnvVar`` that
        Dagster has not resolved (a resource used outside a run), read as text like ``--set``."""
        plain: dict[str, Any] = {}
        layers: list[tuple[str, dict[str, Any]]] = []
        for name in CONFIG_KEYS:
            value = getattr(self, name)
            if _is_env_var(value):
                source = f"environment ${value.env_var_name}"
                text = value.get_value()
                if text is not None:
                    layers.append((source, {name: parse_text(name, str(text), source)}))
            elif value is not None:
                plain[name] = value
        return [(RESOURCE_SOURCE, plain), *layers]

    def _layers(self) -> list[tuple[str, dict[str, Any]]]:
        return [self._file(), *self._own()]

    # --- what the assets use

    def settings(self) -> RunSettings:
        return resolve_settings(self._layers())

    def layout(self) -> RunLayout:
        data_dir = _pick(self._layers(), "data_dir")
        return RunLayout(data_dir[0] if data_dir else "data", self.settings().profile)

    def db_url(self) -> str:
        """The field (definitions.py sets it to ``dg.EnvVar("ACTGEO_DATABASE_URL")`` when that is set), else
        ``$ACTGEO_DATABASE_URL`` (a resource built in Python, or launchpad config, which replaces the
        Definitions' values), else the settings file's, else a SQLite file in ``data_dir``. Checked to parse
        as a SQLAlchemy URL; a message shows it with the password hidden."""
        own = _pick(self._own(), "database_url")
        if own:
            return check_database_url(*own)
        env = dg.EnvVar(DATABASE_URL_ENV).get_value()
        if env:
            return check_database_url(env, f"environment ${DATABASE_URL_ENV}")
        from_file = _pick([self._file()], "database_url")
        if from_file:
            return from_file[0]  # validated when the file was read
        data_dir = _pick(self._layers(), "data_dir")
        path = resolve_data_dir(data_dir[0] if data_dir else "data") / "actgeo.sqlite"
        return f"sqlite:///{path}"


def _pick(layers: list[tuple[str, dict[str, Any]]], name: str) -> tuple[Any, str] | None:
    """(value, source) of ``name`` in the last layer that sets it."""
    for source, values in reversed(layers):
        if values.get(name) is not None:
            return values[name], source
    return None

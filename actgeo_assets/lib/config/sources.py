"""Where settings come from: ``--set`` text and environment text (:func:`parse_text`,
:func:`parse_assignments`), YAML/JSON settings files (:func:`read_settings_file`, the one named by the caller
or by ``$ACTGEO_CONFIG``: :func:`file_layer`), and the laying of such sources over a profile
(:func:`resolve_settings`). Each ``(source, values)`` layer is validated by
:func:`~.settings.validate_settings`; a message names the source. A whole run (settings, files, database URL)
is resolved by :func:`actgeo_assets.lib.store.run.resolve_run`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from actgeo_assets.lib.config.constants import DEMO_PROFILE
from actgeo_assets.lib.config.profiles import PROFILES
from actgeo_assets.lib.config.secrets import mask_passwords
from actgeo_assets.lib.config.settings import CONFIG_KEYS, LOCATIONS, SETTINGS, RunSettings, validate_settings
from actgeo_assets.lib.config.spec import SettingsError, SettingSpec

#: Environment variable naming the YAML/JSON settings file (the deployment-wide settings source); read when
#: settings are resolved, never at import.
CONFIG_ENV = "ACTGEO_CONFIG"
#: Environment variable of the database URL (it may hold a password: never in a settings file or the UI).
DATABASE_URL_ENV = "ACTGEO_DATABASE_URL"
#: Environment variable naming the deployment: ``local`` (the default) or ``k8s``.
DEPLOYMENT_ENV = "ACTGEO_DEPLOYMENT"

#: One source of values: ``(source label for messages, validated values)``.
Layer = tuple[str, dict[str, Any]]


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


def check_database_url(url: str, source: str) -> str:
    """``url`` when SQLAlchemy can parse it; else :class:`SettingsError` naming ``source`` (password hidden)."""
    return validate_settings({"database_url": url}, source)["database_url"]


def file_layer(config_file: str | None, environ: Mapping[str, str]) -> Layer:
    """The settings file's layer: ``config_file`` when given, else the file named by ``$ACTGEO_CONFIG`` (none:
    no values). Its label names the file (and the variable that named it)."""
    if config_file:
        path, label = config_file, f"config file {config_file}"
    else:
        path = environ.get(CONFIG_ENV) or ""
        label = f"config file {path} (${CONFIG_ENV})"
    return label, (read_settings_file(path, label) if path else {})


def pick(layers: Sequence[Layer], name: str) -> tuple[Any, str] | None:
    """``(value, source)`` of ``name`` in the last layer that sets it; None when no layer does."""
    for source, values in reversed(layers):
        if values.get(name) is not None:
            return values[name], source
    return None

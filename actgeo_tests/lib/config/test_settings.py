"""Run settings: one list (RunSettings), one validation for every source, messages that name the source,
the setting and the value, and no database password in any message."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path

import pytest
import yaml

from actgeo_assets.lib.config import settings as settings_module
from actgeo_assets.lib.config.profiles import PROFILES
from actgeo_assets.lib.config.secrets import mask_url
from actgeo_assets.lib.config.settings import (
    CONFIG_KEYS,
    SETTING_NAMES,
    SETTINGS,
    RunSettings,
    validate_settings,
)
from actgeo_assets.lib.config.sources import (
    check_database_url,
    parse_assignments,
    read_settings_file,
    resolve_settings,
)
from actgeo_assets.lib.config.spec import SettingsError
from actgeo_assets.lib.outputs import sql as sqlstore

# (setting, bad value as Python/YAML gives it, what the message must say)
BAD_VALUES = [
    ("layer", 9.5, "layer must be an integer, got 9.5"),
    ("layer", "nine", "layer must be an integer, got 'nine'"),
    ("layer", True, "layer must be an integer, got True"),
    ("layer", -1, "layer must be >= 0, got -1"),
    ("budget", 0, "budget must be >= 1, got 0"),
    ("context_len", 1, "context_len must be >= 2, got 1"),
    ("threshold", True, "threshold must be a number, got True"),
    ("threshold", "high", "threshold must be a number, got 'high'"),
    ("threshold", 1.5, "threshold must lie in (-1, 1] (a cosine), got 1.5"),
    ("threshold", -1.0, "threshold must lie in (-1, 1] (a cosine), got -1.0"),
    ("threshold", float("nan"), "threshold must be a finite number"),
    ("subcard_threshold", 2, "subcard_threshold must lie in (-1, 1] (a cosine), got 2.0"),
    ("sweep", [2, 3], "sweep values must lie in (-1, 1] (a cosine), got 2.0"),
    ("sweep", [0.6, False], "sweep values must be a number, got False"),
    ("sweep", 0.7, "sweep must be a list of numbers, got 0.7"),
    ("card_ranks", [1], "card_ranks must be two integers [first, last], got [1]"),
    ("card_ranks", [1, 2, 3], "card_ranks must be two integers [first, last], got [1, 2, 3]"),
    ("card_ranks", [5, 2], "card_ranks must be [first, last] with 1 <= first <= last, got [5, 2]"),
    ("card_ranks", [0, 3], "card_ranks must be [first, last] with 1 <= first <= last, got [0, 3]"),
    ("subcard_ranks", "1,10", "subcard_ranks must be two integers [first, last], got '1,10'"),
    ("early_positions", "drop", "early_positions must be one of ('keep', 'flag', 'exclude'), got 'drop'"),
    ("early_position_limit", 0, "early_position_limit must be >= 1, got 0"),
    ("early_position_limit", 2.5, "early_position_limit must be an integer, got 2.5"),
    ("exclude_bos", "yes", "exclude_bos must be true or false, got 'yes'"),
    ("exclude_bos", 1, "exclude_bos must be true or false, got 1"),
    ("model", 123, "model must be a string, got 123"),
    ("model", " ", "model must not be empty"),
    ("normalization", "zscore", "normalization must be one of ('l2', 'center_l2', 'rmsnorm'), got 'zscore'"),
    ("shard_by", "rows", "shard_by must be one of ('split', 'file'), got 'rows'"),
    ("device", "gpu", "device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("profile", "nope", "unknown profile 'nope'; known profiles: ['demo', 'full', 'scale']"),
    ("corpus", "/no/such/corpus.jsonl", "corpus '/no/such/corpus.jsonl': no such file or folder"),
    ("corpus", "./missing-folder", "corpus './missing-folder': no such file or folder"),
    ("corpus", "builtin:nope", "not a builtin corpus; the builtin corpus is 'builtin:pile-like'"),
    ("corpus", "no such dataset!", "nor a hub dataset name"),
]


def test_runsettings_is_the_one_list() -> None:
    names = tuple(f.name for f in dataclasses.fields(RunSettings))
    assert SETTING_NAMES == names
    assert set(CONFIG_KEYS) == set(names) | {"data_dir", "database_url"}
    for f in dataclasses.fields(RunSettings):
        assert f.metadata.get("doc"), f"{f.name} has no doc"
        assert SETTINGS[f.name].doc == f.metadata["doc"]


def test_extra_is_gone() -> None:
    assert "extra" not in SETTING_NAMES
    with pytest.raises(TypeError):
        RunSettings(extra={})  # type: ignore[call-arg]


def test_spec_types_follow_the_annotations() -> None:
    hints = typing.get_type_hints(RunSettings)
    assert (SETTINGS["layer"].kind, SETTINGS["layer"].optional) == (int, False)
    assert (SETTINGS["budget_per_shard"].kind, SETTINGS["budget_per_shard"].optional) == (int, True)
    assert (SETTINGS["sweep"].config_type, SETTINGS["sweep"].length) == (list[float], None)
    assert (SETTINGS["card_ranks"].config_type, SETTINGS["card_ranks"].length) == (list[int], 2)
    for name, spec in SETTINGS.items():
        assert spec.optional == (type(None) in typing.get_args(hints[name])), name


@pytest.mark.parametrize("key, value, message", BAD_VALUES)
def test_bad_value_rejected_from_every_source(tmp_path: Path, key: str, value: object, message: str) -> None:
    # a RunSettings built directly
    with pytest.raises(SettingsError) as direct:
        RunSettings(**{key: value})
    assert message in str(direct.value)
    assert key in direct.value.names
    # any mapping of values (the launchpad, a resource built in Python) names its source
    with pytest.raises(SettingsError) as mapped:
        validate_settings({key: value}, "resource config")
    assert str(mapped.value).startswith("resource config: ") and message in str(mapped.value)
    # a YAML settings file names the file
    if value == value:  # NaN has no YAML spelling that safe_dump writes back the same
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(yaml.safe_dump({key: value}))
        with pytest.raises(SettingsError) as filed:
            read_settings_file(cfg)
        assert str(filed.value).startswith(f"config file {cfg}: ") and message in str(filed.value)


def test_yaml_layer_9_5_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("layer: 9.5\n")
    with pytest.raises(ValueError, match=r"^config file .*x\.yaml: layer must be an integer, got 9\.5$"):
        read_settings_file(cfg)
    cfg.write_text('layer: "nine"\n')
    with pytest.raises(ValueError, match=r"x\.yaml: layer must be an integer, got 'nine'$"):
        read_settings_file(cfg)
    cfg.write_text("threshold: true\n")
    with pytest.raises(ValueError, match=r"x\.yaml: threshold must be a number, got True$"):
        read_settings_file(cfg)


def test_settings_file_shape(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("- layer\n- 3\n")
    with pytest.raises(SettingsError, match=r"s\.yaml: must hold a mapping of settings"):
        read_settings_file(cfg)
    cfg.write_text("layer: [1\n")
    with pytest.raises(SettingsError, match=r"s\.yaml: is not valid YAML"):
        read_settings_file(cfg)
    with pytest.raises(SettingsError, match=r"missing\.yaml: cannot be read"):
        read_settings_file(tmp_path / "missing.yaml")
    cfg.write_text("")
    assert read_settings_file(cfg) == {}
    cfg.write_text("layer: 3\nsweep: [0.6, 0.7]\ncard_ranks: [2, 5]\ndata_dir: /d\nsubcard_threshold: null\n")
    assert read_settings_file(cfg) == {"layer": 3, "sweep": (0.6, 0.7), "card_ranks": (2, 5), "data_dir": "/d"}


def test_settings_file_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda text: calls.append(text) or real(text))
    cfg = tmp_path / "once.yaml"
    cfg.write_text("layer: 3\n")
    for _ in range(5):
        assert read_settings_file(cfg) == {"layer": 3}
    assert len(calls) == 1
    cfg.write_text("layer: 11\n")  # a new version of the file is read again
    assert read_settings_file(cfg) == {"layer": 11}
    assert len(calls) == 2


def test_unknown_keys_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        validate_settings({"budgett": 5, "layer": 3}, "resource config")
    text = str(exc.value)
    assert text.startswith("resource config: unknown key 'budgett'; known keys: ")
    assert all(name in text for name in CONFIG_KEYS)
    cfg = tmp_path / "u.yaml"
    cfg.write_text("budgett: 5\n")
    with pytest.raises(SettingsError, match=r"u\.yaml: unknown key 'budgett'; known keys: batch_size, budget,"):
        read_settings_file(cfg)
    with pytest.raises(SettingsError, match=r"^bad --set 'bogus=1': unknown key 'bogus'; known keys: "):
        parse_assignments(["bogus=1"])


def test_set_values_are_typed_by_their_setting() -> None:
    got = parse_assignments(["layer=3", "threshold=0.75", "sweep=0.6,0.7", "card_ranks=[2, 4]",
                             "exclude_bos=false", "model=123", "budget=1e5", "subcard_threshold=null",
                             "layer=4"])
    assert got == {"layer": 4, "threshold": 0.75, "sweep": (0.6, 0.7), "card_ranks": (2, 4),
                   "exclude_bos": False, "model": "123", "budget": 100_000}
    assert type(got["threshold"]) is float and type(got["budget"]) is int


@pytest.mark.parametrize("item, message", [
    ("threshold=true", "bad --set 'threshold=true': threshold must be a number, got True"),
    ("layer=9.5", "bad --set 'layer=9.5': layer must be an integer, got 9.5"),
    ("layer=nine", "bad --set 'layer=nine': layer must be an integer, got 'nine'"),
    ("layer=", "bad --set 'layer=': layer needs a value (an integer)"),
    ("sweep=2,3", "bad --set 'sweep=2,3': sweep values must lie in (-1, 1] (a cosine), got 2.0"),
    ("card_ranks=[1]", "bad --set 'card_ranks=[1]': card_ranks must be two integers [first, last], got [1]"),
    ("card_ranks=[1", "bad --set 'card_ranks=[1': card_ranks must be two integers [first, last], got '[1'"),
    ("normalization=zscore", "normalization must be one of"),
    ("layer", "bad --set 'layer': use KEY=VALUE"),
])
def test_bad_set_items(item: str, message: str) -> None:
    with pytest.raises(SettingsError) as exc:
        parse_assignments([item])
    assert message in str(exc.value)


def test_rules_between_settings_name_the_source() -> None:
    with pytest.raises(SettingsError, match=r"^--set: budget 3 is below n_shards 4: each shard needs"):
        resolve_settings([("--set", {"budget": 3})])
    with pytest.raises(SettingsError, match=r"^config file a\.yaml: min_threshold 0\.5 is above threshold 0\.4"):
        resolve_settings([("config file a.yaml", {"threshold": 0.4}), ("--set", {"layer": 3})])
    with pytest.raises(SettingsError, match=r"^--set: sweep values \[0\.5\] are below min_threshold 0\.6"):
        resolve_settings([("config file a.yaml", {"layer": 3}), ("--set", {"min_threshold": 0.6})])
    with pytest.raises(SettingsError, match=r"^--set: shard_by='file' needs budget_per_shard"):
        resolve_settings([("--set", {"shard_by": "file"})])
    # consistent values pass, and later sources win
    s = resolve_settings([("f", {"profile": "full", "budget": 10}), ("--set", {"budget": 5000, "sweep": [0.6]})])
    assert (s.profile, s.model, s.budget, s.sweep) == ("full", "google/gemma-2-2b", 5000, (0.6,))
    assert resolve_settings([]) == PROFILES["demo"]


def test_profile_rule_errors_come_from_construction() -> None:
    # the error is raised when settings are built (before any compute): RunSettings itself checks
    with pytest.raises(SettingsError, match=r"^budget 3 is below n_shards 4"):
        RunSettings(budget=3)
    with pytest.raises(SettingsError, match=r"^sweep values \[0\.5\] are below min_threshold 0\.55"):
        PROFILES["demo"].replace(min_threshold=0.55)
    assert isinstance(SettingsError("x"), ValueError)


def test_values_are_normalized() -> None:
    s = RunSettings(sweep=[0.5, 1], card_ranks=[2, 4.0], threshold=1, layer=3.0)  # type: ignore[arg-type]
    assert s.sweep == (0.5, 1.0) and s.card_ranks == (2, 4) and s.threshold == 1.0 and s.layer == 3
    assert type(s.threshold) is float and type(s.layer) is int
    hash(s)  # frozen and hashable: sequences are tuples


def test_corpus_accepts_existing_paths_hub_names_and_builtin(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "hi"}\n')
    for ok in (str(f), str(tmp_path), "NeelNanda/pile-10k", "wikitext", "builtin:pile-like"):
        assert RunSettings(corpus=ok).corpus == ok


SECRET_URL = "postgresql://user:s3cr3tPW@db.example:5432/actgeo"


def test_database_urls_never_show_the_password() -> None:
    assert mask_url(SECRET_URL) == "postgresql://user:***@db.example:5432/actgeo"
    unparsable = "postgresql://user:s3cr3tPW@db.example:notaport/actgeo"
    assert "s3cr3tPW" not in mask_url(unparsable) and "user:***@" in mask_url(unparsable)
    assert check_database_url(SECRET_URL, "env") == SECRET_URL
    with pytest.raises(SettingsError) as exc:
        check_database_url(unparsable, "environment $ACTGEO_DATABASE_URL")
    assert str(exc.value).startswith("environment $ACTGEO_DATABASE_URL: database_url is not a SQLAlchemy URL")
    assert "s3cr3tPW" not in str(exc.value)
    with pytest.raises(SettingsError) as exc:
        parse_assignments([f"database_url={unparsable}"])
    assert "s3cr3tPW" not in str(exc.value) and "database_url" in str(exc.value)
    with pytest.raises(ValueError) as exc:
        sqlstore.make_engine(unparsable)
    assert "s3cr3tPW" not in str(exc.value) and exc.value.__cause__ is None
    with pytest.raises(ValueError) as exc:
        sqlstore.make_engine("nosuchdialect://user:s3cr3tPW@h/db")
    assert "s3cr3tPW" not in str(exc.value)


def test_lib_reads_no_environment_for_settings() -> None:
    for module in (settings_module, sqlstore):
        source = inspect.getsource(module)
        assert "os.environ" not in source and "getenv" not in source, module.__name__


def test_early_positions_enter_the_run_key_only_when_excluded() -> None:
    base = RunSettings()
    assert (base.early_positions, base.early_position_limit) == ("flag", 4)
    assert base.early_excluded_below() is None
    # keep and flag change no graph result: the run key and id are what they were before the setting existed
    for mode, limit in (("keep", 4), ("flag", 9), ("keep", 2)):
        other = base.replace(early_positions=mode, early_position_limit=limit)
        assert other.run_key() == base.run_key() and other.run_id() == base.run_id()
        assert other.early_excluded_below() is None
    assert "early_positions" not in base.run_key() and "early_position_limit" not in base.run_key()
    ex = base.replace(early_positions="exclude")
    assert ex.run_key() == {**base.run_key(), "early_positions": "exclude", "early_position_limit": 4}
    assert ex.run_id() != base.run_id() and ex.early_excluded_below() == 4
    ex6 = ex.replace(early_position_limit=6)
    assert ex6.run_id() != ex.run_id() and ex6.early_excluded_below() == 6
    assert validate_settings({"early_positions": "exclude", "early_position_limit": 3}, "test") == {
        "early_positions": "exclude", "early_position_limit": 3}

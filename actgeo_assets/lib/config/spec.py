"""One setting's spec (its type, doc and rules: :class:`SettingSpec`), the check of one value against it
(:func:`check_value`) and the error every bad value raises (:class:`SettingsError`)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


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


def spec_of_field(f: dataclasses.Field[Any], hint: Any) -> SettingSpec:
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

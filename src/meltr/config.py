"""The one config system: dataclasses with help text, YAML recipes, ``key=value`` overrides, one error style.

Every run of meltr is configured by a dataclass whose fields carry their default and their help
(:func:`help_field`). A recipe is a YAML file that sets some of the fields; ``key=value`` overrides (``key.sub=value``
for a field of a mapping) change them further; :func:`load_config` reads both, checks every value and builds the
dataclass. Every failure is a :class:`ConfigError`, one line naming the file (or ``override``), the field, the value
and the fix; the command line turns it into exit code 2.

What is refused, before any work: a directory or a missing file; an empty recipe; a recipe without its final newline
(a file cut while being written or copied); duplicate keys; unknown fields and unknown keys of ``*_options`` (with
the closest known name); values of the wrong type; non-finite floats; out-of-range values (each config's
``validate``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from meltr._yaml import load as yaml_load

C = TypeVar("C")


class ConfigError(ValueError):
    """A bad recipe, override or config value; the message is one line naming the source, the field and the fix."""


# -- fields --------------------------------------------------------------------------------------------------------
def help_field(text: str, default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with help text (``dataclasses.fields(cfg)[i].metadata["help"]``); ``factory`` for mutable
    defaults."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


def config_help(config_class: type) -> dict[str, str]:
    """The help text of every field of a config dataclass, by field name."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_class)}


def preset_config(
    config_class: type[C], presets: Mapping[str, Mapping[str, Any]], size: str, overrides: Mapping[str, Any]
) -> C:
    """Build ``config_class`` from the preset ``size`` updated with ``overrides``.

    Raises:
        KeyError: unknown size.
        TypeError: an override names no field of the config (the message lists them and the closest one).
    """
    if size not in presets:
        raise KeyError(f"unknown size {size!r} for {config_class.__name__}; choose one of: {', '.join(presets)}")
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(
            f"{config_class.__name__} has no field(s) {unknown}{did_you_mean(unknown[0], names)}; "
            f"the fields are: {', '.join(sorted(names))}"
        )
    return config_class(**{**presets[size], **overrides})


def check_positive(config: object, *names: str) -> None:
    """Each named field is an int >= 1."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive int, got {value!r}")


def check_probability(config: object, *names: str) -> None:
    """Each named field is a number in [0, 1]."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1], got {value!r}")


def check_flag(config: object, *names: str) -> None:
    """Each named field is true or false."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise ValueError(f"{type(config).__name__}.{name} must be true or false, got {value!r}")


def check_fields(source: str, checks: Iterable[tuple[str, Any, bool, str]]) -> None:
    """Raise a :class:`ConfigError` for the first ``(field, value, ok, expected)`` that is not ``ok``."""
    for name, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{source}: field {name!r} must be {expected}, got {value!r}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- reading -------------------------------------------------------------------------------------------------------
def read_recipe(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML recipe file, refusing what would silently run something else.

    Raises:
        ConfigError: missing file, a directory, empty, no final newline (truncated), not YAML, duplicate keys,
            or not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a YAML recipe file (see configs/)")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe; give a YAML file (see configs/)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    if text.strip() and not text.endswith("\n"):
        raise ConfigError(f"{path}: does not end with a newline, so it may be cut short; complete the file")
    try:
        values = yaml_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(error)})") from None
    if values is None:
        raise ConfigError(f"{path}: is empty; a recipe sets its fields (copy one from configs/)")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of field: value, got {type(values).__name__}")
    return values


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` / ``key.sub=value`` strings (values read as YAML scalars) to ``values`` in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            value = yaml_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: not a YAML value ({_one_line(error)})") from None
        target = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        target[parts[-1]] = value
    return values


def parse_assignments(pairs: Iterable[str], option: str, command: str) -> dict[str, Any]:
    """``["dim=64", "lr=1e-3"]`` -> ``{"dim": 64, "lr": 0.001}`` (values read as YAML) for ``--set``-style options.

    Raises:
        ConfigError: a pair is not ``KEY=VALUE`` (naming the command and the option).
    """
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"meltr {command}: {option} expects KEY=VALUE, got {pair!r}")
        try:
            parsed[key.strip()] = yaml_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"meltr {command}: {option} {pair!r}: not a YAML value ({_one_line(error)})") from None
    return parsed


# -- checking ------------------------------------------------------------------------------------------------------
def coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` checked against the field's type hint (an int is taken for a float; floats must be finite).

    Raises:
        ConfigError: naming the source and the field.
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is type(None):
            continue
        if base is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    raise ConfigError(f"{source}: field {name!r} must be a finite number, got {value!r}")
                return float(value)
        elif base is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif base is tuple:
            if isinstance(value, (list, tuple)):
                return tuple(value)
        elif base in (str, bool, dict, list):
            if isinstance(value, base):
                return value
        elif base is typing.Literal:
            if value in typing.get_args(option):
                return value
        elif dataclasses.is_dataclass(base) and isinstance(base, type):
            if isinstance(value, base):
                return value
            if isinstance(value, Mapping):  # a nested config (e.g. an adapter's): built and checked field by field
                return config_from_dict(base, value, source=f"{source}: field {name!r}")
        else:  # Any, or a type this checker does not know: the config's own validate() decides
            return value
    raise ConfigError(f"{source}: field {name!r} must be {_describe(options)}, got {value!r}")


def config_from_dict(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """Build the config dataclass ``cls`` from ``values``, checking names and types, then its ``validate()``.

    Raises:
        ConfigError: an unknown field (with the closest known one), a value of the wrong type, or what the
            config's ``validate`` refuses.
    """
    known = [f.name for f in dataclasses.fields(cls)]
    for name in values:
        if name not in known:
            raise ConfigError(
                f"{source}: unknown field {name!r}{did_you_mean(name, known)} (fields: {', '.join(known)})"
            )
    hints = typing.get_type_hints(cls)
    coerced = {name: coerce(name, value, hints[name], source) for name, value in values.items()}
    try:
        config = cls(**coerced)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"{source}: {_one_line(error)}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            if "source" in inspect.signature(validate).parameters:
                validate(source=source)
            else:
                validate()
        except ConfigError:
            raise
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{source}: {_one_line(error)}") from None
    return config


def load_config(cls: type[C], path: str | Path | None, overrides: Iterable[str] = ()) -> C:
    """Read the recipe at ``path`` (None: the dataclass's defaults), apply ``overrides``, build and check ``cls``."""
    values = read_recipe(path) if path is not None else {}
    apply_overrides(values, overrides)
    return config_from_dict(cls, values, source=str(path) if path is not None else "override")


def check_options(
    options: Mapping[str, Any],
    factory: Callable[..., Any],
    field: str,
    source: str,
    *,
    owner: str = "",
    reserved: Iterable[str] = (),
) -> None:
    """Check the keys and value types of a ``*_options`` mapping against the keyword parameters of ``factory``.

    Args:
        options: the mapping (e.g. ``hypergrad_options``).
        factory: what the options are passed to (a class or a function); its signature and type hints decide.
        field: the config field holding ``options``.
        source: the recipe (file name) for the message.
        owner: what ``factory`` builds, for the message (e.g. ``"estimator 'neumann'"``).
        reserved: parameters the caller sets itself (not options).

    Raises:
        ConfigError: ``field.key`` is not an option (with the closest one) or has a value of the wrong type.
    """
    if not isinstance(options, Mapping):
        raise ConfigError(f"{source}: field {field!r} must be a mapping of option: value, got {options!r}")
    target = factory.__init__ if inspect.isclass(factory) else factory
    signature = inspect.signature(factory)
    parameters = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in set(reserved) and name != "self"
    }
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # hints that do not resolve at run time: check names only
        hints = {}
    for key, value in options.items():
        if key not in parameters:
            if open_ended:
                continue
            what = f" of {owner}" if owner else ""
            known = ", ".join(parameters) or "none"
            raise ConfigError(
                f"{source}: field '{field}.{key}': not an option{what}{did_you_mean(key, parameters)} "
                f"(options: {known})"
            )
        if key in hints:
            coerce(f"{field}.{key}", value, hints[key], source)


def as_yaml(config: Any) -> str:
    """The resolved config as YAML (what ``--print-config`` shows and a run directory keeps)."""
    return yaml.safe_dump(plain_data(dataclasses.asdict(config)), sort_keys=False)


def plain_data(value: Any) -> Any:
    """``value`` as YAML gives it back: mappings and lists of plain values (tuples become lists)."""
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def _describe(options: tuple[Any, ...]) -> str:
    names = []
    for option in options:
        base = typing.get_origin(option) or option
        if base is type(None):
            names.append("null")
        elif base is typing.Literal:
            names.append(" or ".join(repr(v) for v in typing.get_args(option)))
        elif dataclasses.is_dataclass(base):
            names.append(f"a mapping of {base.__name__} fields")
        else:
            names.append({float: "a number", int: "an integer", bool: "true or false"}.get(base, base.__name__))
    return " or ".join(names)


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else type(error).__name__


__all__ = [
    "ConfigError",
    "apply_overrides",
    "as_yaml",
    "check_fields",
    "check_flag",
    "check_options",
    "check_positive",
    "check_probability",
    "coerce",
    "config_from_dict",
    "config_help",
    "did_you_mean",
    "help_field",
    "load_config",
    "parse_assignments",
    "plain_data",
    "preset_config",
    "read_recipe",
]

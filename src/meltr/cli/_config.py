"""What every subcommand shares: ``--config X.yaml``, ``key=value`` overrides, ``--print-config``, ``--out``.

A subcommand's options are shorthands for fields of its config dataclass: the recipe file is read first, then the
options given on the command line, then the ``key=value`` overrides, and :func:`meltr.config.config_from_dict`
checks the result. Defaults live in the dataclass only (an option that is not given changes nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from meltr.config import apply_overrides, as_yaml, config_from_dict, read_recipe

C = TypeVar("C")


def add_config_arguments(parser: argparse.ArgumentParser, example: str = "seed=1", required: bool = False) -> None:
    """``--config`` (a recipe file; ``required`` for commands whose defaults alone are no run), ``KEY=VALUE ...``
    and ``--print-config``."""
    parser.add_argument(
        "--config", type=Path, default=None, required=required, help="YAML recipe (fields of the command's config)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"change a field (key.sub=value inside a mapping), e.g. {example}",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def add_unsafe_load(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="read checkpoints that hold pickled objects (legacy or foreign files); unpickling runs any code a "
        "file carries, so use it only for files you trust",
    )


def resolve(
    cls: type[C],
    args: argparse.Namespace,
    options: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> C:
    """The config of a command: recipe, then the given options (None = not given), then ``overrides`` and the
    command line's ``KEY=VALUE`` overrides.

    An override inside a mapping field (``model.dim=64``) changes that key of the field's value (the recipe's, else
    the dataclass default's) and keeps the others.
    """
    path = getattr(args, "config", None)
    values = read_recipe(path) if path is not None else {}
    values.update({k: v for k, v in (options or {}).items() if v is not None})
    every = [*overrides, *(getattr(args, "overrides", []) or [])]
    defaults = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for item in every:
        head = item.partition("=")[0].strip().split(".")[0]
        if "." in item.partition("=")[0] and head not in values and head in defaults:
            default = defaults[head]
            if default.default_factory is not dataclasses.MISSING:
                value = default.default_factory()
                if isinstance(value, dict):
                    values[head] = dict(value)
    apply_overrides(values, every)
    return config_from_dict(cls, values, source=str(path) if path is not None else "command line")


def print_config(config: Any) -> int:
    print(as_yaml(config), end="")
    return 0

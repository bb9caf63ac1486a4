"""YAML as meltr reads it: PyYAML's safe loader with YAML 1.2's floats, so that ``lr: 1e-3`` is a number.

PyYAML implements YAML 1.1, whose floats need a dot: ``1e-3`` reads as the string ``"1e-3"``, which then fails
far from the recipe that wrote it. Every recipe, override and saved run config of meltr goes through :func:`load`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """Safe loader that also resolves exponent-only floats (``1e-3``, ``+2E5``) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(text: str) -> Any:
    """Parse a YAML document (safe: plain data only)."""
    return yaml.load(text, Loader=_Loader)


def parse_assignments(pairs: list[str], option: str, command: str) -> dict[str, Any]:
    """``["dim=64", "lr=1e-3", "name=x"]`` -> ``{"dim": 64, "lr": 0.001, "name": "x"}`` (values read as YAML).

    Raises ``SystemExit`` naming the command and the option when a pair is not ``KEY=VALUE``.
    """
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"meltr {command}: {option} expects KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = load(value)
    return parsed

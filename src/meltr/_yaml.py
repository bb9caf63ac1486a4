"""YAML as meltr reads it: PyYAML's safe loader with YAML 1.2's floats, so that ``lr: 1e-3`` is a number.

PyYAML implements YAML 1.1, whose floats need a dot: ``1e-3`` reads as the string ``"1e-3"``, which then fails
far from the recipe that wrote it. Every recipe, override and saved run config of meltr goes through :func:`load`,
which also refuses a mapping that repeats a key.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """Safe loader that also resolves exponent-only floats (``1e-3``, ``+2E5``) as floats and refuses duplicate
    keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", None
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(text: str) -> Any:
    """Parse a YAML document (safe: plain data only)."""
    return yaml.load(text, Loader=_Loader)

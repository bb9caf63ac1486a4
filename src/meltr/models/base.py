"""The backbone protocol and its registry (configs use :mod:`meltr.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from meltr._registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")

SIZES: tuple[str, ...] = ("default", "tiny")
"""Preset sizes every backbone offers: ``default`` (1-5M parameters) and ``tiny`` (< 100k, for tests)."""


@runtime_checkable
class Backbone(Protocol):
    """What a reference backbone offers (structural: the backbones do not inherit from it).

    ``forward(batch)`` is the backbone contract of :mod:`meltr.contract`: a ``task name -> per-sample loss
    [B]`` mapping with exactly the names in ``tasks``. The other methods give the representations downstream
    heads use.
    """

    tasks: tuple[str, ...]

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]: ...

    def encode_text(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` unit-norm text embeddings; retrieval similarity = dot product with video embeddings."""
        ...

    def encode_video(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, d]`` unit-norm video embeddings."""
        ...

    def fused(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` joint video-text representation (for QA / sentiment heads)."""
        ...

    def match_score(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B]`` matching logit of each (text, video) pair of the batch."""
        ...


TOKEN_KEYS: tuple[str, ...] = ("text", "transcript", "question")


def require(batch: Mapping[str, Tensor], keys: tuple[str, ...], vocab_size: int, model: str) -> None:
    """Check that ``batch`` has ``keys`` and that the token ids among them fit the vocabulary."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"{model} needs batch keys {missing}; the batch has {sorted(batch)}")
    for key in keys:
        if key in TOKEN_KEYS and batch[key].numel() and int(batch[key].max()) >= vocab_size:
            raise ValueError(
                f"batch[{key!r}] holds token id {int(batch[key].max())} >= vocab_size={vocab_size}; "
                "build the backbone with the world's vocab_size"
            )


def build_backbone(name: str, size: str = "default", *, vocab_size: int, **overrides: Any) -> nn.Module:
    """Build the backbone registered under ``name`` (``BACKBONES.names()``: allinone, univl, violet).

    Args:
        name: backbone name.
        size: ``"default"`` or ``"tiny"``.
        vocab_size: vocabulary size of the token ids the backbone will read.
        **overrides: fields of the backbone's config to change (e.g. ``dim=128``, ``image_size=64``).
    """
    return BACKBONES.build(name, size=size, vocab_size=vocab_size, **overrides)


__all__ = [
    "BACKBONES",
    "SIZES",
    "Backbone",
    "build_backbone",
]

"""What the single-stream backbones (Violet, All-in-one) share: one transformer over text and patch tokens.

Both embed text with :class:`~meltr.models.layers.TextEmbedding` and frame patches with
:class:`~meltr.models.layers.PatchEmbedding`, tell the two apart by a learned modality embedding (row 0 text, row 1
visual), run one :class:`~meltr.models.layers.Transformer` over them, and keep a learned ``[d]`` visual token next to
the patches (Violet's [MASK] patch, All-in-one's frame token). Since the text and video tokens of that encoder change
from call to call, the backbone pushes each call's :class:`~meltr.models.layout.TokenLayout` onto ``token_layouts``
for the adapters inside it (:mod:`meltr.models.layout`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from meltr.models.layers import PatchEmbedding, TextEmbedding, Transformer
from meltr.models.layout import AdapterSite, TokenLayouts

SINGLE_STREAM_SITES: tuple[AdapterSite, ...] = (AdapterSite("encoder", "mixed"),)
"""The one adapter site of a single-stream backbone: its encoder, whose tokens are text then video."""


SINGLE_STREAM_SIZES: tuple[str, ...] = (
    "vocab_size",
    "dim",
    "num_heads",
    "ff_dim",
    "layers",
    "image_size",
    "patch_size",
    "channels",
    "max_frames",
    "max_text_len",
)
"""The config fields :func:`add_single_stream` builds from that must be positive ints (a config checks them with
:func:`meltr.config.check_positive`)."""


def add_single_stream(model: nn.Module, config: Any, visual_token: str) -> None:
    """Give ``model`` the modules of a single-stream backbone, built from ``config``'s :data:`SINGLE_STREAM_SIZES`
    and ``dropout``.

    Sets, in this order, ``token_layouts``, ``text_embedding``, ``patch_embedding``, the ``[d]`` parameter named
    ``visual_token`` (drawn from ``N(0, 0.02^2)``), ``modality_embedding`` and ``encoder``. The order is part of the
    contract: it fixes the initial weights a seed gives and the order of the state_dict's keys, on which the shipped
    checkpoints and the measured numbers rest.
    """
    c = config
    model.token_layouts = TokenLayouts()
    model.text_embedding = TextEmbedding(c.vocab_size, c.dim, c.max_text_len)
    model.patch_embedding = PatchEmbedding(c.dim, c.image_size, c.patch_size, c.channels, c.max_frames)
    model.register_parameter(visual_token, nn.Parameter(torch.randn(c.dim) * 0.02))
    model.modality_embedding = nn.Embedding(2, c.dim)
    model.encoder = Transformer(c.dim, c.layers, c.num_heads, c.ff_dim, c.dropout)


__all__ = ["SINGLE_STREAM_SITES", "SINGLE_STREAM_SIZES", "add_single_stream"]

"""AdaptFormer (Chen et al., NeurIPS 2022): a scaled bottleneck in parallel to the MLP of every adapted block.

peft has no AdaptFormer (its ``adaption_prompt`` is LLaMA-Adapter), so this is a small module of meltr, injected
with the same machinery as MSTA (:class:`~meltr.adapters.AdaptedBlock`, :data:`~meltr.adapters.ADAPTERS`) and
therefore with the same disable / enable / save / load / unload. In a pre-norm block ``x' = x + Attn(LN1 x)``:

    out = x' + MLP(LN2 x') + s * W_up ReLU(W_down LN2 x')                        (AdaptMLP, Eq. (1)-(2) of AdaptFormer)

i.e. ``block.mlp`` is wrapped so that it computes ``MLP(h) + s * Adapter(h)`` on its own input ``h = LN2 x'``. The
official code feeds the adapter ``x'`` through an optional LayerNorm of its own (``adapter_layernorm_option="in"``);
here the adapter shares the block's frozen ``LN2`` instead, so it adds no normalisation parameters. ``W_down`` is
Kaiming-uniform (as ``nn.Linear``), ``W_up`` and both biases are zero (the official initialisation): the adapted
model starts exactly at the frozen backbone. The adapter is non-linear (ReLU), so it cannot be merged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from meltr.adapters.base import ADAPTERS, AdaptedBlock, AdapterMergeError
from meltr.adapters.layouts import adapted_indices, adapter_sites, check_unadapted, freeze
from meltr.config import help_field


@dataclass
class AdaptFormerConfig:
    """Configuration of :func:`inject_adaptformer` (every field has help text)."""

    bottleneck_dim: int = help_field("Width r of the bottleneck (AdaptFormer's 'mid_dim', 64 in the paper).", 16)
    scale: float = help_field("s, the factor of the adapter's output (0.1 in the paper).", 0.1)
    first_block: int = help_field(
        "Index (0-based, negative counts from the last block) of the first adapted block of each encoder; "
        "blocks first_block..L-1 get an adapter.",
        0,
    )
    init: Literal["zero_up", "kaiming"] = help_field(
        "'zero_up': the paper's initialisation (up-projection and biases zero, the model starts at the frozen "
        "backbone); 'kaiming': every weight Kaiming-uniform (an adapter that is not zero, for tests).",
        "zero_up",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.bottleneck_dim, int) or isinstance(self.bottleneck_dim, bool) or self.bottleneck_dim < 1:
            raise ValueError(f"AdaptFormerConfig.bottleneck_dim must be a positive int, got {self.bottleneck_dim!r}")
        if not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"AdaptFormerConfig.scale must be a finite number, got {self.scale!r}")
        if self.init not in ("zero_up", "kaiming"):
            raise ValueError(f"AdaptFormerConfig.init must be 'zero_up' or 'kaiming', got {self.init!r}")


class AdaptMLP(nn.Module):
    """AdaptFormer's bottleneck ``W_up ReLU(W_down h)`` of one block (the scale lives in the wrapper).

    Args:
        dim: the block's width ``d``.
        bottleneck_dim: ``r``.
        init: ``"zero_up"`` or ``"kaiming"`` (see :class:`AdaptFormerConfig`).
    """

    def __init__(self, dim: int, bottleneck_dim: int, init: str = "zero_up") -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck_dim)
        self.up = nn.Linear(bottleneck_dim, dim)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        if init == "zero_up":
            nn.init.zeros_(self.up.weight)
        else:
            nn.init.kaiming_uniform_(self.up.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.up(F.relu(self.down(hidden)))

    def merge_into(self, block: nn.Module) -> None:
        """AdaptFormer cannot be merged: the ReLU between its projections makes it non-linear in its input.

        Raises:
            AdapterMergeError: always.
        """
        raise AdapterMergeError(
            "AdaptFormer cannot be merged into the MLP: its bottleneck has a ReLU; use disable_adapter(model) for "
            "the frozen backbone's outputs, or run the adapter unmerged"
        )

    def unmerge_from(self, block: nn.Module) -> None:
        """Nothing is ever merged (see :meth:`merge_into`).

        Raises:
            AdapterMergeError: always.
        """
        raise AdapterMergeError("AdaptFormer is never merged (it cannot be), so there is nothing to unmerge")


def inject_adaptformer(model: nn.Module, config: AdaptFormerConfig | None = None, **overrides: Any) -> nn.Module:
    """Put an AdaptFormer bottleneck in parallel to the MLP of blocks ``first_block..L-1`` of every encoder of
    ``model`` (the ``adapter_sites`` its class declares) and freeze everything else, in place.

    Args:
        model: a backbone that declares its ``adapter_sites`` (UniVL, Violet, AllInOne).
        config: the configuration (default :class:`AdaptFormerConfig`).
        **overrides: fields of the configuration to change.

    Returns:
        ``model``.

    Raises:
        ValueError: the model already has an adapter, a field of the config is invalid, or no block is left.
        KeyError: the backbone declares no adapter sites (the message says how to).
    """
    config = dataclasses.replace(config or AdaptFormerConfig(), **overrides)
    check_unadapted(model)
    plan = []  # checked in full before the model changes
    for site in adapter_sites(model, "AdaptFormer"):
        stack = model.get_submodule(site.path)
        plan.append((stack, adapted_indices(len(stack.blocks), config.first_block, "AdaptFormerConfig.first_block")))
    restore = freeze(model)
    for stack, indices in plan:
        for index in indices:
            block = stack.blocks[index]
            dim = block.mlp_norm.normalized_shape[0]
            block.mlp = AdaptedBlock(block.mlp, AdaptMLP(dim, config.bottleneck_dim, config.init), config.scale)
    model._adapter_undo = restore
    model.adapter_method = "adaptformer"
    model.adapter_config = config
    return model


@ADAPTERS.register("adaptformer")
def build_adaptformer(model: nn.Module, config: AdaptFormerConfig | None = None, **overrides: Any) -> nn.Module:
    """Registry entry of AdaptFormer: :func:`inject_adaptformer`."""
    return inject_adaptformer(model, config, **overrides)


__all__ = ["AdaptFormerConfig", "AdaptMLP", "inject_adaptformer"]

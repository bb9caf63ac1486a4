"""MSTA, the Multimodal Spatiotemporal Adapter (Sec. 3 of "Efficient Transfer Learning for Video-language Foundation
Models", CVPR 2025, arXiv:2411.11223).

Per adapted block ``j`` (blocks ``k..L`` of the video and the text encoder), with ``sigma`` = GELU:

    text:   A_t(x) = W_t^{u}( sigma( W^{s} sigma(W_t^{d} x) ) )
    video:  z = sigma( W^{s} sigma(W_v^{d} x) ),   A_v(x) = W_v^{u-s} z + W_v^{u-t} * z       (* : conv over time)
    block:  x_j = E_j(x_{j-1}) + lambda A_j(x_{j-1})                                               (MSTA, Eq. 1)

``W^{s}`` (``r x r``) is ONE module shared by the two modalities of a block, so it gets gradient from both; the
down- and up-projections are per modality. The video branch's up-projection is the sum of a spatial (per-token
linear) and a temporal one, a 3D convolution ``Conv3d(r, d, kernel=(t, 1, 1))`` over a ``[B, r, F, T, 1]`` view of
the bottleneck states (``F`` frames, ``T`` tokens per frame), i.e. a temporal convolution across frames at each
token position, zero-padded in time.

How the backbones lay out video tokens (:class:`~meltr.models.layout.TokenLayout`, declared by each backbone, see
:mod:`meltr.adapters.layouts`):

- UniVL: separate encoders; the video encoder sees ``[B, F, d]`` frame tokens (``T = 1``), the text encoder text
  only. Block ``i`` counted from the top of the text encoder shares its bottleneck with block ``i`` counted from
  the top of the video encoder; a block without a partner (the deeper encoder's extra blocks) gets its own.
- Violet: one encoder over ``[text; F*P patches]``, ``[B, L + F*P, d]``.
- All-in-one: one encoder over ``[text; frame token, P patches]`` of each frame, ``[B*F, L + 1 + P, d]``.

In a single-stream encoder both modalities share one block, so one adapter routes the leading text tokens through
the text branch and the others through the video branch; it reads how many tokens are text from the layout the
backbone pushes on its ``token_layouts`` for every call of the encoder.

Initialisation: the paper initialises "all modules in MSTA" with Kaiming initialisation, up-projections included, so
the adapted model does not start at the frozen one (``init="kaiming"``, the default). ``init="zero_up"`` zeroes the
up-projections (AdaptFormer's / LoRA's convention): the adapted model then starts exactly at the frozen backbone,
but the down- and bottleneck projections get no gradient until the up-projections have moved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.adapters.base import ADAPTERS, AdaptedBlock, AdapterMergeError
from meltr.adapters.layouts import adapted_indices, adapter_sites, check_unadapted, freeze, token_layouts
from meltr.config import help_field
from meltr.models.layout import TokenLayout, TokenLayouts

MODALITIES: tuple[str, ...] = ("video", "text")


@dataclass
class MSTAConfig:
    """Configuration of :func:`inject_msta` (peft-style: every field has help text)."""

    bottleneck_dim: int = help_field("Width r of the bottleneck (down-projection output, shared layer, up input).", 16)
    scale: float = help_field(
        "lambda of Eq. (1): the adapter's output is multiplied by it before the residual sum.", 0.1
    )
    first_block: int = help_field(
        "Index (0-based, negative counts from the last block) of the first adapted block of each encoder; blocks "
        "first_block..L-1 are adapted, the lower ones stay untouched. The paper's k is first_block + 1 (k=1 for "
        "base-to-novel, k=8 of 12 for few-shot).",
        0,
    )
    modalities: tuple[str, ...] = help_field(
        "Branches to adapt: ('video', 'text') is MSTA; ('text',) the language-only and ('video',) the vision-only "
        "ablation (the other modality's tokens pass through the frozen block unchanged).",
        ("video", "text"),
    )
    shared_bottleneck: bool = help_field(
        "One bottleneck projection shared by the video and text branches of a block (MSTA). False gives each "
        "modality its own (the 'no shared layer' ablation).",
        True,
    )
    temporal_up: bool = help_field(
        "Add the temporal up-projection (a convolution over frames) to the video branch's spatial up-projection.",
        True,
    )
    temporal_kernel: int = help_field("Frames spanned by the temporal convolution (odd; zero-padded in time).", 3)
    init: Literal["kaiming", "zero_up"] = help_field(
        "'kaiming': every adapter layer Kaiming-initialised, as the paper; 'zero_up': up-projections zero, so the "
        "adapted model starts exactly at the frozen backbone.",
        "kaiming",
    )

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        if not isinstance(self.bottleneck_dim, int) or self.bottleneck_dim < 1:
            raise ValueError(f"MSTAConfig.bottleneck_dim must be a positive int, got {self.bottleneck_dim!r}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(
                f"MSTAConfig.modalities must be a non-empty subset of {MODALITIES} without repeats, "
                f"got {self.modalities!r}"
            )
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
            raise ValueError(f"MSTAConfig.temporal_kernel must be a positive odd int, got {self.temporal_kernel}")
        if self.init not in ("kaiming", "zero_up"):
            raise ValueError(f"MSTAConfig.init must be 'kaiming' or 'zero_up', got {self.init!r}")


# -- the adapter -------------------------------------------------------------------------------------------------


def _bottleneck(width: int) -> nn.Linear:
    return nn.Linear(width, width)


class MSTA(nn.Module):
    """The MSTA adapter of one block: the branches of the modalities this block carries around the bottleneck(s).

    Args:
        dim: the block's width ``d``.
        config: the adapter's configuration.
        role: ``"text"``, ``"video"`` (every token of the block is of that modality) or ``"mixed"`` (leading text
            tokens, then video tokens, as told by ``router``).
        bottlenecks: ``{modality: nn.Linear(r, r)}`` for the modalities of ``role`` that are adapted; the same
            module under both keys when shared. Registered as ``bottleneck`` if shared, else
            ``<modality>_bottleneck``.
        router: the backbone's :class:`~meltr.models.layout.TokenLayouts`, whose ``current()`` is the layout of the
            call in progress (``mixed`` only).
    """

    def __init__(
        self,
        dim: int,
        config: MSTAConfig,
        role: str,
        bottlenecks: dict[str, nn.Linear],
        router: TokenLayouts | None = None,
    ) -> None:
        super().__init__()
        r = config.bottleneck_dim
        self.role, self.router = role, router
        self.branches = tuple(m for m in MODALITIES if m in bottlenecks)
        shared = len(self.branches) == 2 and bottlenecks["video"] is bottlenecks["text"]
        if shared or (len(self.branches) == 1 and config.shared_bottleneck):
            self.bottleneck = bottlenecks[self.branches[0]]
        else:
            for modality in self.branches:
                self.add_module(f"{modality}_bottleneck", bottlenecks[modality])
        if "video" in self.branches:
            self.video_down = nn.Linear(dim, r)
            self.video_up_spatial = nn.Linear(r, dim)
            t = config.temporal_kernel
            self.video_up_temporal = (
                nn.Conv3d(r, dim, (t, 1, 1), padding=(t // 2, 0, 0)) if config.temporal_up else None
            )
        if "text" in self.branches:
            self.text_down = nn.Linear(dim, r)
            self.text_up = nn.Linear(r, dim)
        self._initialise(config.init)

    def _initialise(self, init: str) -> None:
        """Kaiming-normal weights (fan-in, for the GELU that follows), zero biases; ``zero_up`` zeroes the ups."""
        for name, module in self.named_children():
            if not isinstance(module, (nn.Linear, nn.Conv3d)):
                continue
            if init == "zero_up" and "_up" in name:
                nn.init.zeros_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)

    def _shared(self, modality: str) -> nn.Linear:
        return self.bottleneck if hasattr(self, "bottleneck") else getattr(self, f"{modality}_bottleneck")

    def _hidden(self, x: Tensor, modality: str) -> Tensor:
        down = self.video_down if modality == "video" else self.text_down
        return F.gelu(self._shared(modality)(F.gelu(down(x))))

    def text_branch(self, x: Tensor) -> Tensor:
        """``A_t``: text tokens ``[..., d]`` -> ``[..., d]``."""
        return self.text_up(self._hidden(x, "text"))

    def video_branch(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """``A_v``: video tokens ``[N, M, d]`` laid out as ``layout`` says -> ``[N, M, d]``."""
        hidden = self._hidden(x, "video")
        out = self.video_up_spatial(hidden)
        if self.video_up_temporal is not None:
            grid = layout.video_grid(hidden)  # [B, F, T, r]
            temporal = self.video_up_temporal(grid.permute(0, 3, 1, 2).unsqueeze(-1))  # [B, d, F, T, 1]
            out = out + temporal.squeeze(-1).permute(0, 2, 3, 1).reshape(out.shape)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The adapter's output for the block input ``x`` ``[N, M, d]``; zero on tokens of an unadapted modality."""
        if self.role == "text":
            return self.text_branch(x)
        if self.role == "video":
            return self.video_branch(x, TokenLayout(0, x.shape[1]))
        layout = self.router.current()
        text, video = x[:, : layout.text_tokens], x[:, layout.text_tokens :]
        parts = [
            self.text_branch(text) if "text" in self.branches else torch.zeros_like(text),
            self.video_branch(video, layout)
            if "video" in self.branches and video.shape[1]
            else torch.zeros_like(video),
        ]
        return torch.cat(parts, dim=1)

    def merge_into(self, block: nn.Module) -> None:
        """MSTA cannot be merged.

        It runs in parallel to a whole transformer block (attention and a GELU MLP), has a GELU before and after its
        bottleneck, and its temporal convolution mixes tokens of different frames: no weight of the block can absorb
        it, even with the GELUs removed. Use :func:`~meltr.adapters.disable_adapter` to get the frozen backbone back
        exactly, or keep the adapter unmerged at inference.

        Raises:
            AdapterMergeError: always.
        """
        raise AdapterMergeError(
            "MSTA cannot be merged into the backbone: it is a non-linear (GELU) adapter in parallel to a whole "
            "transformer block, with a convolution across frames; use disable_adapter(model) / "
            "adapter_disabled(model) for the frozen backbone's outputs, or run the adapter unmerged"
        )

    def unmerge_from(self, block: nn.Module) -> None:
        """Nothing is ever merged (see :meth:`merge_into`).

        Raises:
            AdapterMergeError: always.
        """
        raise AdapterMergeError("MSTA is never merged (it cannot be), so there is nothing to unmerge")


# -- injection ---------------------------------------------------------------------------------------------------


def inject_msta(model: nn.Module, config: MSTAConfig | None = None, **overrides: Any) -> nn.Module:
    """Inject MSTA into the video and text encoders of ``model`` (in place) and freeze everything else.

    Blocks ``first_block..L-1`` of every encoder the backbone declares (``adapter_sites``) are wrapped in
    :class:`~meltr.adapters.AdaptedBlock`; afterwards exactly the adapters' parameters have ``requires_grad``.

    Args:
        model: a backbone that declares its ``adapter_sites`` (UniVL, Violet, AllInOne).
        config: the configuration (default :class:`MSTAConfig`).
        **overrides: fields of the configuration to change.

    Returns:
        ``model``.

    Raises:
        ValueError: the model already has an adapter, or no encoder block is left to adapt.
        KeyError: the backbone declares no adapter sites (the message says how to).
    """
    config = dataclasses.replace(config or MSTAConfig(), **overrides)
    check_unadapted(model)
    sites = adapter_sites(model, "MSTA")
    router = token_layouts(model, "MSTA") if any(site.role == "mixed" for site in sites) else None
    plan = []  # checked in full before the model changes, so that a bad config leaves it untouched
    for site in sites:
        stack = model.get_submodule(site.path)
        plan.append((site, stack, adapted_indices(len(stack.blocks), config.first_block, "MSTAConfig.first_block")))
    restore = freeze(model)

    r = config.bottleneck_dim
    # Bottlenecks shared across encoders: the i-th adapted block from the top of each encoder shares one.
    shared_from_top: dict[int, nn.Linear] = {}
    for site, stack, indices in plan:
        for index in indices:
            block = stack.blocks[index]
            dim = block.mlp_norm.normalized_shape[0]
            carried = [m for m in config.modalities if site.role in ("mixed", m)]
            if not carried:
                continue
            if config.shared_bottleneck:
                from_top = len(stack.blocks) - 1 - index
                bottleneck = shared_from_top.setdefault(from_top, _bottleneck(r))
                bottlenecks = dict.fromkeys(carried, bottleneck)
            else:
                bottlenecks = {m: _bottleneck(r) for m in carried}
            adapter = MSTA(dim, config, site.role, bottlenecks, router)
            stack.blocks[index] = AdaptedBlock(block, adapter, config.scale)

    model._adapter_undo = restore
    model.adapter_method = "msta"
    model.adapter_config = config
    return model


@ADAPTERS.register("msta")
def build_msta(model: nn.Module, config: MSTAConfig | None = None, **overrides: Any) -> nn.Module:
    """Registry entry of MSTA: :func:`inject_msta`."""
    return inject_msta(model, config, **overrides)


def msta_config_help() -> dict[str, str]:
    """The help text of every field of :class:`MSTAConfig`."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(MSTAConfig)}


__all__ = [
    "MSTA",
    "MSTAConfig",
    "inject_msta",
    "msta_config_help",
]

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

How the backbones lay out video tokens (:class:`TokenLayout`):

- UniVL: separate encoders; the video encoder sees ``[B, F, d]`` frame tokens (``T = 1``), the text encoder text
  only. Block ``i`` counted from the top of the text encoder shares its bottleneck with block ``i`` counted from
  the top of the video encoder; a block without a partner (the deeper encoder's extra blocks) gets its own.
- Violet: one encoder over ``[text; F*P patches]``, ``[B, L + F*P, d]``.
- All-in-one: one encoder over ``[text; frame token, P patches]`` of each frame, ``[B*F, L + 1 + P, d]``.

In a single-stream encoder both modalities share one block, so one adapter routes the leading text tokens through
the text branch and the others through the video branch. How many tokens are text is known only to the backbone's
``_encode(text, text_mask, visual)``: injection shadows that method on the instance with a recorder of the layout
(:class:`_LayoutRecorder`), which :func:`~meltr.adapters.unload_adapter` removes.

Initialisation: the paper initialises "all modules in MSTA" with Kaiming initialisation, up-projections included, so
the adapted model does not start at the frozen one (``init="kaiming"``, the default). ``init="zero_up"`` zeroes the
up-projections (AdaptFormer's / LoRA's convention): the adapted model then starts exactly at the frozen backbone,
but the down- and bottleneck projections get no gradient until the up-projections have moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.adapters.base import ADAPTERS, AdaptedBlock, AdapterMergeError
from meltr.config import help_field

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


# -- token layouts -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenLayout:
    """Which tokens of a block's input ``[N, M, d]`` are text and how the video tokens are arranged.

    Args:
        text_tokens: the first ``text_tokens`` tokens of every sequence are text, the rest video.
        frames: frames ``F`` of the video tokens (0 if there are none).
        frames_in_batch: the sequences are per frame, ``N = B * F`` and ``M - text_tokens = T`` tokens
            (All-in-one); otherwise ``N = B`` and ``M - text_tokens = F * T``, frame-major.
    """

    text_tokens: int
    frames: int = 0
    frames_in_batch: bool = False

    def video_grid(self, video: Tensor) -> Tensor:
        """Video tokens ``[N, M', d]`` -> ``[B, F, T, d]``."""
        count, width, dim = video.shape
        if self.frames_in_batch:
            return video.reshape(count // self.frames, self.frames, width, dim)
        if width % self.frames:
            raise ValueError(f"{width} video tokens do not split into {self.frames} frames")
        return video.reshape(count, self.frames, width // self.frames, dim)


class _LayoutRouter:
    """The layout of the single-stream encoder's current call, set by :class:`_LayoutRecorder`."""

    def __init__(self) -> None:
        self.stack: list[TokenLayout] = []

    def current(self) -> TokenLayout:
        if not self.stack:
            raise RuntimeError(
                "an MSTA adapter of a single-stream encoder ran outside the backbone's _encode, so it does not know "
                "which tokens are text; call the backbone's forward / encode_* methods"
            )
        return self.stack[-1]


class _LayoutRecorder:
    """Shadows ``model._encode(text, text_mask, visual)`` on the instance: records the token layout, then calls the
    class's ``_encode``."""

    def __init__(self, model: nn.Module, router: _LayoutRouter, describe: Callable[..., TokenLayout]) -> None:
        self.model, self.router, self.describe = model, router, describe

    def __call__(self, text: Tensor | None, text_mask: Tensor | None, visual: Tensor | None) -> Tensor:
        self.router.stack.append(self.describe(self.model, text, visual))
        try:
            return type(self.model)._encode(self.model, text, text_mask, visual)
        finally:
            self.router.stack.pop()


def _violet_layout(model: nn.Module, text: Tensor | None, visual: Tensor | None) -> TokenLayout:
    length = 0 if text is None else text.shape[1]
    frames = 0 if visual is None else visual.shape[1] // model.patch_embedding.num_patches
    return TokenLayout(length, frames, frames_in_batch=False)


def _allinone_layout(model: nn.Module, text: Tensor | None, visual: Tensor | None) -> TokenLayout:
    length = 0 if text is None else text.shape[1]
    frames = 0 if visual is None else visual.shape[1]
    return TokenLayout(length, frames, frames_in_batch=True)


@dataclass(frozen=True)
class EncoderSite:
    """A transformer stack MSTA adapts and the modality of its tokens ('text', 'video' or 'mixed')."""

    path: str
    role: str


@dataclass(frozen=True)
class BackboneLayout:
    """Where MSTA goes in one backbone class: its sites and, for single-stream encoders, the layout recorder."""

    sites: tuple[EncoderSite, ...]
    describe: Callable[..., TokenLayout] | None = None


BACKBONE_LAYOUTS: dict[str, BackboneLayout] = {
    "UniVL": BackboneLayout((EncoderSite("video_encoder", "video"), EncoderSite("text_encoder", "text"))),
    "Violet": BackboneLayout((EncoderSite("encoder", "mixed"),), _violet_layout),
    "AllInOne": BackboneLayout((EncoderSite("encoder", "mixed"),), _allinone_layout),
}
"""MSTA's sites per backbone class name; add an entry to adapt another backbone."""


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
        router: the layout of the current call (``mixed`` only).
    """

    def __init__(
        self,
        dim: int,
        config: MSTAConfig,
        role: str,
        bottlenecks: dict[str, nn.Linear],
        router: _LayoutRouter | None = None,
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


def _adapted_indices(depth: int, first_block: int) -> list[int]:
    start = first_block + depth if first_block < 0 else first_block
    if not 0 <= start < depth:
        raise ValueError(
            f"MSTAConfig.first_block={first_block} leaves no block to adapt in an encoder of {depth} blocks; "
            f"use a value in [{-depth}, {depth - 1}]"
        )
    return list(range(start, depth))


class _Restore:
    """Undoes what :func:`inject_msta` did besides wrapping blocks (a class, not a closure, so that an adapted model
    can still be pickled): drop the layout recorder, restore ``requires_grad``."""

    def __init__(self, requires_grad: dict[str, bool]) -> None:
        self.requires_grad = requires_grad

    def __call__(self, model: nn.Module) -> None:
        model.__dict__.pop("_encode", None)
        for name, p in model.named_parameters():
            p.requires_grad_(self.requires_grad.get(name, True))


def inject_msta(model: nn.Module, config: MSTAConfig | None = None, **overrides: Any) -> nn.Module:
    """Inject MSTA into the video and text encoders of ``model`` (in place) and freeze everything else.

    Blocks ``first_block..L-1`` of every encoder named in :data:`BACKBONE_LAYOUTS` are wrapped in
    :class:`~meltr.adapters.AdaptedBlock`; afterwards exactly the adapters' parameters have ``requires_grad``.

    Args:
        model: a backbone whose class is in :data:`BACKBONE_LAYOUTS` (UniVL, Violet, AllInOne).
        config: the configuration (default :class:`MSTAConfig`).
        **overrides: fields of the configuration to change.

    Returns:
        ``model``.

    Raises:
        ValueError: the model already has an adapter, or no encoder block is left to adapt.
        KeyError: the backbone class has no layout (the message lists those that have).
    """
    config = dataclasses.replace(config or MSTAConfig(), **overrides)
    if getattr(model, "adapter_method", None) is not None:
        raise ValueError(f"the model already has a {model.adapter_method!r} adapter; unload_adapter(model) first")
    name = type(model).__name__
    if name not in BACKBONE_LAYOUTS:
        raise KeyError(
            f"MSTA does not know where the encoders of {name} are; known: {', '.join(sorted(BACKBONE_LAYOUTS))}. "
            f"Add BACKBONE_LAYOUTS[{name!r}] = BackboneLayout(sites=(EncoderSite('<path>', 'text'|'video'|'mixed'),))"
        )
    layout = BACKBONE_LAYOUTS[name]
    plan = []  # checked in full before the model changes, so that a bad config leaves it untouched
    for site in layout.sites:
        stack = model.get_submodule(site.path)
        plan.append((site, stack, _adapted_indices(len(stack.blocks), config.first_block)))
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)

    router = _LayoutRouter() if layout.describe is not None else None
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

    if layout.describe is not None:
        model._encode = _LayoutRecorder(model, router, layout.describe)

    model._adapter_undo = _Restore(requires_grad)
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
    "BACKBONE_LAYOUTS",
    "MSTA",
    "BackboneLayout",
    "EncoderSite",
    "MSTAConfig",
    "TokenLayout",
    "inject_msta",
    "msta_config_help",
]

"""A Violet-style backbone (Fu et al., 2021): one video-text transformer with VTM, MLM and MVM.

Violet encodes frame patches with Video Swin and text with BERT's embeddings, then runs one transformer over
the concatenated tokens. Its masked visual-token modelling (MVM) predicts the DALL-E dVAE code of each masked
patch; here a fixed :class:`PatchQuantizer` (the nearest of fixed random colour prototypes) stands in for
the dVAE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.config import check_flag, check_positive, check_probability, help_field, preset_config
from meltr.models.base import BACKBONES, require
from meltr.models.layers import TokenPredictionHead, init_weights, patchify
from meltr.models.layout import TokenLayout
from meltr.models.losses import masked_token_loss, pair_matching_loss, symmetric_info_nce
from meltr.models.masking import (
    mask_text,
    other_samples_of_same_clip,
    sample_negatives,
    sample_positions,
    special_tokens,
    special_tokens_field,
)
from meltr.models.single_stream import SINGLE_STREAM_SITES, SINGLE_STREAM_SIZES, add_single_stream

VIOLET_TASKS: tuple[str, ...] = ("vtm", "mlm", "mvm")


class PatchQuantizer(nn.Module):
    """A fixed visual tokeniser standing in for DALL-E's dVAE: the code of a patch is the nearest of
    ``codebook_size`` fixed prototypes to the patch's colour layout.

    A patch's descriptor is the mean colour of each of its ``grid x grid`` sub-blocks (``C grid^2`` numbers in
    [0, 1]; pooling makes the code robust to pixel noise). The prototypes are drawn uniformly from that cube
    once, from ``seed``, and kept as a buffer (saved with the model): like DALL-E's codes for Violet, the code
    of a patch never changes during training.

    Args:
        patch_size: side ``p`` of a patch.
        channels: colour channels ``C``.
        codebook_size: number of codes.
        grid: sub-blocks per side of a patch; must divide ``patch_size``.
        seed: seed of the prototypes.
    """

    def __init__(
        self, patch_size: int, channels: int = 3, codebook_size: int = 256, grid: int = 1, seed: int = 0
    ) -> None:
        super().__init__()
        if patch_size % grid:
            raise ValueError(f"the quantiser's grid ({grid}) must divide the patch_size ({patch_size})")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {codebook_size}")
        self.patch_size, self.channels, self.grid = patch_size, channels, grid
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("codebook", torch.rand(codebook_size, channels * grid**2, generator=generator))

    def describe(self, patches: Tensor) -> Tensor:
        """``[..., C p p]`` flattened patches (from :func:`patchify`) -> ``[..., C grid^2]`` block colours."""
        block = self.patch_size // self.grid
        shape = (*patches.shape[:-1], self.channels, self.grid, block, self.grid, block)
        return patches.reshape(shape).mean(dim=(-3, -1)).flatten(-3)

    @torch.no_grad()
    def forward(self, patches: Tensor) -> Tensor:
        """``[..., C p p]`` pixels in [0, 1] -> int64 codes ``[...]`` in ``[0, codebook_size)``."""
        descriptor = self.describe(patches)
        codebook = self.codebook.to(descriptor.dtype)
        distance = (codebook**2).sum(-1) - 2 * descriptor @ codebook.t()  # + |descriptor|^2, the same for all
        return distance.argmin(-1)


@dataclass
class VioletConfig:
    """Configuration of :class:`Violet` (``default``: ~2.3M parameters at vocab_size=1000)."""

    vocab_size: int = help_field("Vocabulary size; token ids lie in [0, vocab_size).", 1000)
    dim: int = help_field("Width of the transformer.", 192)
    num_heads: int = help_field("Attention heads.", 4)
    ff_dim: int = help_field("Hidden width of the MLP of every block.", 768)
    layers: int = help_field("Blocks of the video-text transformer (Violet: 12).", 4)
    dropout: float = help_field(
        "Residual dropout. 0 keeps the losses deterministic given the masks (Violet: 0.1).", 0.0
    )
    image_size: int = help_field("Frame height and width in pixels.", 32)
    patch_size: int = help_field("Side of a patch; each patch is one visual token and one MVM target.", 16)
    channels: int = help_field("Colour channels of a frame.", 3)
    max_frames: int = help_field("Most frames a clip may have.", 64)
    max_text_len: int = help_field("Most tokens a caption may have.", 64)
    special_tokens: dict[str, int] = special_tokens_field()
    text_mask_prob: float = help_field("Share of the text tokens masked for MLM.", 0.15)
    patch_mask_prob: float = help_field("Share of the visual tokens masked for MVM.", 0.15)
    codebook_size: int = help_field("Codes of the fixed patch quantiser (DALL-E: 8192).", 256)
    codebook_grid: int = help_field(
        "Sub-blocks per side of a patch whose mean colours the quantiser reads (must divide patch_size).", 1
    )
    codebook_seed: int = help_field("Seed of the patch quantiser's prototypes.", 0)
    contrastive: bool = help_field(
        "Add a video-text contrastive task 'vtc' (not in Violet; ALBEF's ITC): symmetric InfoNCE between the "
        "projected [CLS] state of the text alone and the mean state of the video alone, both through the same "
        "transformer.",
        False,
    )
    hard_negatives: bool = help_field(
        "Draw VTM's negative video by VTC's similarity (ALBEF's hard negatives) instead of uniformly; needs "
        "contrastive.",
        False,
    )
    temperature: float = help_field("Temperature of VTC's InfoNCE over cosine similarities (ALBEF: 0.07).", 0.05)

    def __post_init__(self) -> None:
        self.special_tokens = special_tokens(self.special_tokens)
        check_flag(self, "contrastive", "hard_negatives")
        if self.hard_negatives and not self.contrastive:
            raise ValueError("VioletConfig.hard_negatives draws negatives by VTC's similarity; set contrastive=true")
        if not self.temperature > 0:
            raise ValueError(f"VioletConfig.temperature must be positive, got {self.temperature!r}")
        check_positive(self, *SINGLE_STREAM_SIZES, "codebook_size", "codebook_grid")
        check_probability(self, "dropout", "text_mask_prob", "patch_mask_prob")


VIOLET_PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    "tiny": {"dim": 32, "num_heads": 2, "ff_dim": 64, "layers": 2, "patch_size": 8},
}


class Violet(nn.Module):
    """Violet-style video-text transformer; ``forward(batch)`` gives ``vtm``, ``mlm``, ``mvm``, each ``[B]``.

    The token sequence is ``[text tokens; F x P patch tokens]`` (text first, so position 0 is [CLS]).

    - ``vtm``: video-text matching from the [CLS] state, binary cross-entropy of the true pair and of one
      in-batch negative (the text with another clip's video).
    - ``mlm``: masked language modelling; ``mvm``: prediction of the quantiser code of each masked patch
      (masked patches get a learned [MASK] embedding). Text and patches are masked in the same pass, as in
      Violet.
    - ``vtc`` (only with ``contrastive``; not one of Violet's tasks): ALBEF's image-text contrastive loss,
      symmetric InfoNCE of ``s_ij = <t_i, v_j> / tau`` between the unit-norm projected [CLS] state of text ``i``
      alone and the mean state of video ``j`` alone (:meth:`encode_text`, :meth:`encode_video`). With
      ``hard_negatives``, VTM's negative video for text ``i`` is ``j`` with probability ``softmax_j(s_ij)``
      over the other clips (ALBEF, Li et al. 2021, Sec. 3.2): a video the contrastive head confuses with the
      true one, so VTM must read what tells them apart.

    Args:
        config: the configuration (default: :class:`VioletConfig`).
    """

    tasks: tuple[str, ...] = VIOLET_TASKS
    retrieval_loss = "vtm"  # the primary loss of text-to-video retrieval (MELTR Sec. 5)
    matching_loss = "vtm"  # the loss scored by the cross encoder (match_score)
    adapter_sites = SINGLE_STREAM_SITES

    def __init__(self, config: VioletConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VioletConfig()
        add_single_stream(self, c, visual_token="visual_mask_token")
        self.mlm_head = TokenPredictionHead(c.dim, c.vocab_size)
        self.mvm_head = nn.Sequential(
            nn.Linear(c.dim, c.dim), nn.GELU(), nn.LayerNorm(c.dim), nn.Linear(c.dim, c.codebook_size)
        )
        self.vtm_head = nn.Sequential(nn.Linear(c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, 1))
        self.tasks = (*VIOLET_TASKS, "vtc") if c.contrastive else VIOLET_TASKS
        if c.contrastive:  # only then: a checkpoint made without them loads as it was saved
            self.text_projection = nn.Linear(c.dim, c.dim)
            self.video_projection = nn.Linear(c.dim, c.dim)
        self.apply(init_weights)
        self.quantizer = PatchQuantizer(c.patch_size, c.channels, c.codebook_size, c.codebook_grid, c.codebook_seed)

    def _video(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["video"].to(self.visual_mask_token.dtype)

    def _encode(self, text: Tensor | None, text_mask: Tensor | None, visual: Tensor | None) -> Tensor:
        """The transformer over ``[text; visual]`` embeddings (either may be None) -> ``[B, L + N, d]``; the call's
        :class:`~meltr.models.layout.TokenLayout` is on ``token_layouts`` meanwhile."""
        layout = TokenLayout(
            0 if text is None else text.shape[1],
            0 if visual is None else visual.shape[1] // self.patch_embedding.num_patches,
        )
        parts, masks = [], []
        if text is not None:
            parts.append(text + self.modality_embedding.weight[0])
            masks.append(text_mask)
        if visual is not None:
            parts.append(visual + self.modality_embedding.weight[1])
            masks.append(torch.ones(visual.shape[:2], dtype=torch.bool, device=visual.device))
        with self.token_layouts.push(layout):
            return self.encoder(torch.cat(parts, dim=1), torch.cat(masks, dim=1))

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"vtm", "mlm", "mvm"}`` per-sample losses ``[B]``.

        Args:
            batch: needs ``video``, ``text``, ``text_mask``; uses ``clip_id`` if present (negatives).
            generator: RNG of the masks and negatives (default: the global one).
        """
        c = self.config
        require(batch, ("video", "text", "text_mask"), c.vocab_size, "Violet")
        text, text_mask, video = batch["text"], batch["text_mask"].bool(), self._video(batch)
        size, length = text.shape
        frames, patches = video.shape[1], self.patch_embedding.num_patches
        masked_text, text_selected = mask_text(text, text_mask, c, generator)
        eligible = torch.ones(size, frames * patches, dtype=torch.bool, device=text.device)
        patch_selected = sample_positions(eligible, c.patch_mask_prob, generator)
        clip_id = batch.get("clip_id")
        visual = self.patch_embedding(video).flatten(1, 2)
        losses = {}
        similarity = None
        if c.contrastive:
            similarity = self._text_vector(text, text_mask) @ self._video_vector(visual).t() / c.temperature
            losses["vtc"] = symmetric_info_nce(similarity, other_samples_of_same_clip(clip_id, size, text.device))
        hard = similarity if c.hard_negatives else None
        partner, has_partner = sample_negatives(size, clip_id, generator, text.device, hard)

        masked_visual = self.patch_embedding(
            video, patch_selected.view(size, frames, patches), self.visual_mask_token
        ).flatten(1, 2)
        masked_states = self._encode(self.text_embedding(masked_text), text_mask, masked_visual)
        mlm_logits = self.mlm_head(masked_states[:, :length], self.text_embedding.word.weight)
        codes = self.quantizer(patchify(video, c.patch_size)).flatten(1, 2)

        words = self.text_embedding(text)
        pair_states = self._encode(
            torch.cat([words, words]), torch.cat([text_mask, text_mask]), torch.cat([visual, visual[partner]])
        )
        logits = self.vtm_head(pair_states[:, 0]).squeeze(-1)
        return {
            "vtm": pair_matching_loss(logits[:size], logits[size:], has_partner),
            "mlm": masked_token_loss(mlm_logits, text, text_selected),
            "mvm": masked_token_loss(self.mvm_head(masked_states[:, length:]), codes, patch_selected),
            **losses,
        }

    def _text_vector(self, text: Tensor, mask: Tensor) -> Tensor:
        cls = self._encode(self.text_embedding(text), mask, None)[:, 0]
        return F.normalize(self.text_projection(cls) if self.config.contrastive else cls, dim=-1)

    def _video_vector(self, visual: Tensor) -> Tensor:
        mean = self._encode(None, None, visual).mean(1)
        return F.normalize(self.video_projection(mean) if self.config.contrastive else mean, dim=-1)

    def encode_text(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` unit-norm [CLS] state of the text alone, projected by VTC's head with ``contrastive``.
        Without it Violet's pretext tasks do not train it as a retrieval embedding (Violet retrieves with
        :meth:`match_score`)."""
        return self._text_vector(batch[text_key], batch[f"{text_key}_mask"].bool())

    def encode_video(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, d]`` unit-norm mean state of the patches alone, projected by VTC's head with ``contrastive``
        (see :meth:`encode_text`)."""
        return self._video_vector(self.patch_embedding(self._video(batch)).flatten(1, 2))

    def fused(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` [CLS] state of the joint pass over (text, video)."""
        mask = batch[f"{text_key}_mask"].bool()
        visual = self.patch_embedding(self._video(batch)).flatten(1, 2)
        return self._encode(self.text_embedding(batch[text_key]), mask, visual)[:, 0]

    def match_score(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B]`` VTM logit of each (text, video) pair."""
        return self.vtm_head(self.fused(batch, text_key)).squeeze(-1)


@BACKBONES.register("violet")
def build_violet(size: str = "default", **overrides: object) -> Violet:
    """A :class:`Violet` from the preset ``size`` (``default`` or ``tiny``) and config ``overrides``."""
    return Violet(preset_config(VioletConfig, VIOLET_PRESETS, size, overrides))

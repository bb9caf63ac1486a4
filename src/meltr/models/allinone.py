"""An All-in-one-style backbone (Wang et al., 2022): ONE unified transformer over video and text tokens, with
temporal token rolling, and its VTM, MLM and VTC losses.

All-in-one runs each frame's patch tokens together with the (repeated) text tokens through a single ViT;
before every block a few of each frame's patch tokens are rolled one frame forward and as many one frame
backward in time (token rolling, ``TemporalRoll(v=0)`` of the official code), the only temporal mixing; the
states are averaged over frames at the end. The same encoder encodes text alone and video alone for the
contrastive VTC loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.config import check_flag, check_positive, check_probability, help_field, preset_config
from meltr.models.base import BACKBONES, require
from meltr.models.layers import TokenPredictionHead, init_weights
from meltr.models.layout import TokenLayout
from meltr.models.losses import binary_matching_loss, masked_token_loss, symmetric_info_nce
from meltr.models.masking import (
    mask_text,
    other_samples_of_same_clip,
    sample_negatives,
    special_tokens,
    special_tokens_field,
)
from meltr.models.single_stream import SINGLE_STREAM_SITES, SINGLE_STREAM_SIZES, add_single_stream

ALLINONE_TASKS: tuple[str, ...] = ("vtm", "mlm", "vtc")


def roll_tokens(visual: Tensor, count: int) -> Tensor:
    """All-in-one's temporal token rolling.

    Of each frame's tokens ``[frame token, patch_1..patch_P]``, patches ``1..count`` take the states of the
    previous frame, the last ``count`` patches those of the next frame (circularly in time); the frame token
    and the other patches stay.

    Args:
        visual: ``[B, F, 1 + P, d]``.
        count: tokens rolled in each direction (``2 count <= P``).

    Returns:
        ``[B, F, 1 + P, d]``.
    """
    if count == 0:
        return visual
    width = visual.shape[2]
    return torch.cat(
        [
            visual[:, :, :1],
            visual[:, :, 1 : 1 + count].roll(1, dims=1),
            visual[:, :, 1 + count : width - count],
            visual[:, :, width - count :].roll(-1, dims=1),
        ],
        dim=2,
    )


@dataclass
class AllInOneConfig:
    """Configuration of :class:`AllInOne` (``default``: ~1.1M parameters at vocab_size=1000; narrower than the
    others because every frame carries its own copy of the text tokens)."""

    vocab_size: int = help_field("Vocabulary size; token ids lie in [0, vocab_size).", 1000)
    dim: int = help_field("Width of the unified transformer.", 128)
    num_heads: int = help_field("Attention heads.", 4)
    ff_dim: int = help_field("Hidden width of the MLP of every block.", 512)
    layers: int = help_field("Blocks of the unified transformer (All-in-one-B: 12).", 4)
    dropout: float = help_field("Residual dropout. 0 keeps the losses deterministic given the masks.", 0.0)
    image_size: int = help_field("Frame height and width in pixels.", 32)
    patch_size: int = help_field("Side of a patch (one visual token).", 16)
    channels: int = help_field("Colour channels of a frame.", 3)
    max_frames: int = help_field("Most frames a clip may have.", 64)
    max_text_len: int = help_field("Most tokens a caption may have.", 64)
    special_tokens: dict[str, int] = special_tokens_field()
    text_mask_prob: float = help_field("Share of the text tokens masked for MLM.", 0.15)
    roll_fraction: float = help_field(
        "Share of a frame's patch tokens rolled forward in time before each block (as many again backward); "
        "at least one token each way if positive. All-in-one rolls 1/8 each way (n_div=8).",
        0.125,
    )
    temperature: float = help_field("Temperature of VTC's InfoNCE over cosine similarities (All-in-one: 0.05).", 0.05)
    hard_negatives: bool = help_field(
        "Draw VTM's negative video by VTC's similarity (ALBEF's hard negatives) instead of uniformly.", False
    )

    def __post_init__(self) -> None:
        self.special_tokens = special_tokens(self.special_tokens)
        check_flag(self, "hard_negatives")
        check_positive(self, *SINGLE_STREAM_SIZES)
        check_probability(self, "dropout", "text_mask_prob", "roll_fraction")
        if self.temperature <= 0:
            raise ValueError(f"AllInOneConfig.temperature must be positive, got {self.temperature}")
        if (
            self.image_size % self.patch_size == 0
            and 2 * self.rolled_tokens > (self.image_size // self.patch_size) ** 2
        ):
            raise ValueError(
                f"AllInOneConfig.roll_fraction={self.roll_fraction} rolls {self.rolled_tokens} tokens each "
                f"way but a frame has only {(self.image_size // self.patch_size) ** 2} patches; lower it"
            )

    @property
    def rolled_tokens(self) -> int:
        """Patch tokens rolled in each direction."""
        if self.roll_fraction == 0:
            return 0
        return max(1, int(self.roll_fraction * (self.image_size // self.patch_size) ** 2))


ALLINONE_PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    "tiny": {"dim": 32, "num_heads": 2, "ff_dim": 64, "layers": 2, "patch_size": 8},
}


class AllInOne(nn.Module):
    """All-in-one-style unified transformer; ``forward(batch)`` gives ``vtm``, ``mlm``, ``vtc``, each ``[B]``.

    - ``vtm``: each sample's text is paired with its own video or, with probability 1/2, another clip's video
      (All-in-one's ITM with ``false_image``); binary cross-entropy of the pooled [CLS] state. With
      ``hard_negatives`` the other video of text ``i`` is ``j`` with probability ``softmax_j(s_ij)`` over the
      other clips, ``s`` VTC's logits (ALBEF, Li et al. 2021, Sec. 3.2); else uniform.
    - ``mlm``: masked language modelling over the text states of the joint pass.
    - ``vtc``: symmetric InfoNCE between the [CLS] state of the text alone and the frame-token state of the
      video alone, both through the same encoder and a linear projection (All-in-one's ``ind_itc``).

    Args:
        config: the configuration (default: :class:`AllInOneConfig`).
    """

    tasks: tuple[str, ...] = ALLINONE_TASKS
    retrieval_loss = "vtc"  # the primary loss of text-to-video retrieval (MELTR Sec. 5)
    matching_loss = "vtm"  # the loss scored by the cross encoder (match_score)
    adapter_sites = SINGLE_STREAM_SITES

    def __init__(self, config: AllInOneConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or AllInOneConfig()
        add_single_stream(self, c, visual_token="frame_token")
        self.pooler = nn.Linear(c.dim, c.dim)
        self.vtm_head = nn.Linear(c.dim, 1)
        self.mlm_head = TokenPredictionHead(c.dim, c.vocab_size)
        self.text_projection = nn.Linear(c.dim, c.dim)
        self.video_projection = nn.Linear(c.dim, c.dim)
        self.apply(init_weights)

    def _visual(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, F, 1 + P, d]``: a frame token then the patch tokens of every frame."""
        video = batch["video"].to(self.frame_token.dtype)
        patches = self.patch_embedding(video)
        frame = self.frame_token + self.patch_embedding.temporal_position[: video.shape[1]]
        return torch.cat([frame[None, :, None].expand(video.shape[0], -1, -1, -1), patches], dim=2)

    def _encode(self, text: Tensor | None, text_mask: Tensor | None, visual: Tensor | None) -> Tensor:
        """The unified transformer; text ``[B, L, d]`` and/or visual ``[B, F, 1 + P, d]`` embeddings.

        Returns:
            ``[B, L + 1 + P, d]``: the states averaged over frames (text alone: ``[B, L, d]``). The call's
            :class:`~meltr.models.layout.TokenLayout` is on ``token_layouts`` meanwhile.
        """
        layout = TokenLayout(
            0 if text is None else text.shape[1], 0 if visual is None else visual.shape[1], frames_in_batch=True
        )
        with self.token_layouts.push(layout):
            return self._encode_frames(text, text_mask, visual)

    def _encode_frames(self, text: Tensor | None, text_mask: Tensor | None, visual: Tensor | None) -> Tensor:
        if visual is None:
            return self.encoder(text + self.modality_embedding.weight[0], text_mask)
        size, frames, width, dim = visual.shape
        x = (visual + self.modality_embedding.weight[1]).flatten(0, 1)
        mask = None
        length = 0
        if text is not None:
            length = text.shape[1]
            words = (text + self.modality_embedding.weight[0]).repeat_interleave(frames, dim=0)
            x = torch.cat([words, x], dim=1)
            frame_mask = torch.ones(size * frames, width, dtype=torch.bool, device=x.device)
            mask = torch.cat([text_mask.repeat_interleave(frames, dim=0), frame_mask], dim=1)
        count = self.config.rolled_tokens
        for block in self.encoder.blocks:
            rolled = roll_tokens(x[:, length:].reshape(size, frames, width, dim), count)
            x = block(torch.cat([x[:, :length], rolled.flatten(0, 1)], dim=1), mask)
        x = self.encoder.norm(x)
        return x.view(size, frames, *x.shape[1:]).mean(1)

    def _match_logits(self, states: Tensor) -> Tensor:
        return self.vtm_head(torch.tanh(self.pooler(states[:, 0]))).squeeze(-1)

    def _text_vector(self, text: Tensor, mask: Tensor) -> Tensor:
        return F.normalize(self.text_projection(self._encode(self.text_embedding(text), mask, None)[:, 0]), dim=-1)

    def _video_vector(self, visual: Tensor) -> Tensor:
        return F.normalize(self.video_projection(self._encode(None, None, visual)[:, 0]), dim=-1)

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"vtm", "mlm", "vtc"}`` per-sample losses ``[B]``.

        Args:
            batch: needs ``video``, ``text``, ``text_mask``; uses ``clip_id`` if present (negatives).
            generator: RNG of the masks and negatives (default: the global one).
        """
        c = self.config
        require(batch, ("video", "text", "text_mask"), c.vocab_size, "AllInOne")
        text, text_mask = batch["text"], batch["text_mask"].bool()
        size = text.shape[0]
        clip_id = batch.get("clip_id")
        masked_text, text_selected = mask_text(text, text_mask, c, generator)
        visual = self._visual(batch)
        similarity = self._text_vector(text, text_mask) @ self._video_vector(visual).t()
        hard = similarity / c.temperature if c.hard_negatives else None
        partner, has_partner = sample_negatives(size, clip_id, generator, text.device, hard)
        swap = (torch.rand(size, generator=generator, device=text.device) < 0.5) & has_partner
        shown = torch.where(swap, partner, torch.arange(size, device=text.device))

        words = self.text_embedding(text)
        states = self._encode(
            torch.cat([words, self.text_embedding(masked_text)]),
            torch.cat([text_mask, text_mask]),
            torch.cat([visual[shown], visual]),
        )
        matching, masked = states.split(size)
        mlm_logits = self.mlm_head(masked[:, : text.shape[1]], self.text_embedding.word.weight)
        return {
            "vtm": binary_matching_loss(self._match_logits(matching), ~swap),
            "mlm": masked_token_loss(mlm_logits, text, text_selected),
            "vtc": symmetric_info_nce(
                similarity / c.temperature, other_samples_of_same_clip(clip_id, size, text.device)
            ),
        }

    def encode_text(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` unit-norm text embeddings (VTC's)."""
        return self._text_vector(batch[text_key], batch[f"{text_key}_mask"].bool())

    def encode_video(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, d]`` unit-norm video embeddings (VTC's); similarity / temperature gives VTC's logits."""
        return self._video_vector(self._visual(batch))

    def fused(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` pooled (tanh) [CLS] state of the joint pass over (text, video)."""
        mask = batch[f"{text_key}_mask"].bool()
        states = self._encode(self.text_embedding(batch[text_key]), mask, self._visual(batch))
        return torch.tanh(self.pooler(states[:, 0]))

    def match_score(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B]`` VTM logit of each (text, video) pair."""
        return self.vtm_head(self.fused(batch, text_key)).squeeze(-1)


@BACKBONES.register("allinone")
def build_allinone(size: str = "default", **overrides: object) -> AllInOne:
    """An :class:`AllInOne` from the preset ``size`` (``default`` or ``tiny``) and config ``overrides``."""
    return AllInOne(preset_config(AllInOneConfig, ALLINONE_PRESETS, size, overrides))

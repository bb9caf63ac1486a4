"""A UniVL-style backbone (Luo et al., 2020) with the eight pretext losses MELTR fine-tunes it with.

Four transformer modules as in UniVL: a text encoder, a video encoder over frame features, a cross encoder
over the concatenated text and frame states, and a caption decoder that attends to the cross encoder's output.
The losses are the five of Sec. 3.1 of MELTR (Joint, Align, CMLM, CMFM, Decoder) and the three "advanced" ones
of its implementation details (M-Joint, M-Align, M-Decoder: the same computed on masked text and masked
frames).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.config import check_flag, check_positive, check_probability, help_field, preset_config
from meltr.models.base import (
    BACKBONES,
    require,
)
from meltr.models.layers import (
    PatchEmbedding,
    TextEmbedding,
    TokenPredictionHead,
    Transformer,
    causal_mask,
    check_video_shape,
    init_weights,
    masked_mean,
    patchify,
)
from meltr.models.layout import AdapterSite
from meltr.models.losses import frame_nce, masked_token_loss, pair_matching_loss, symmetric_info_nce
from meltr.models.masking import (
    mask_frames,
    mask_text,
    other_samples_of_same_clip,
    sample_negatives,
    special_tokens,
    special_tokens_field,
)

FRAME_STEMS: tuple[str, ...] = ("patch_mean", "conv", "conv_pool", "features")

UNIVL_TASKS: tuple[str, ...] = (
    "joint",
    "align",
    "cmlm",
    "cmfm",
    "decoder",
    "m_joint",
    "m_align",
    "m_decoder",
)


@dataclass
class UniVLConfig:
    """Configuration of :class:`UniVL` (``default``: ~3.8M parameters at vocab_size=1000)."""

    vocab_size: int = help_field("Vocabulary size; token ids lie in [0, vocab_size).", 1000)
    dim: int = help_field("Width of every module.", 192)
    num_heads: int = help_field("Attention heads of every module.", 4)
    ff_dim: int = help_field("Hidden width of the MLP of every block.", 768)
    text_layers: int = help_field("Blocks of the text encoder (UniVL: 12, BERT-base).", 2)
    video_layers: int = help_field("Blocks of the video encoder (UniVL: 6).", 1)
    cross_layers: int = help_field("Blocks of the cross encoder (UniVL: 2).", 2)
    decoder_layers: int = help_field("Blocks of the caption decoder (UniVL: 3).", 2)
    dropout: float = help_field(
        "Residual dropout. 0 keeps the losses deterministic given the masks, which the hypergradient "
        "estimators assume (they evaluate the losses several times at one point); UniVL uses 0.1.",
        0.0,
    )
    image_size: int = help_field("Frame height and width in pixels.", 32)
    patch_size: int = help_field("Side of the patches a frame is cut into before pooling to a frame feature.", 8)
    frame_stem: str = help_field(
        "How a frame becomes one feature vector: 'patch_mean' (a linear map of every patch, GELU, mean over the "
        "patches: where an object is and its outline are pooled away), 'conv' (two strided convolutions, the "
        "second down to a grid of one cell per patch, flattened, then linear: keeps the layout) or 'conv_pool' "
        "(three 3x3 convolutions to a grid of 4x4-pixel cells, then per channel its max and its soft-argmax over "
        "the grid: an outline is recognised wherever it is, and located), or 'features' (pre-extracted "
        "per-second features, UniVL's S3D: the batch's video is float [B, T, feature_dim] with a video_mask "
        "[B, T]; a linear map, and CMFM predicts the standardised features themselves, as UniVL).",
        "patch_mean",
    )
    feature_dim: int = help_field("Width of a pre-extracted feature row (frame_stem 'features'; S3D: 1024).", 1024)
    channels: int = help_field("Colour channels of a frame.", 3)
    max_frames: int = help_field("Most frames a clip may have.", 64)
    max_text_len: int = help_field("Most tokens a caption or transcript may have.", 64)
    special_tokens: dict[str, int] = special_tokens_field()
    text_mask_prob: float = help_field("Share of the text tokens masked for CMLM and the M-losses (UniVL: 0.15).", 0.15)
    frame_mask_prob: float = help_field("Share of the frames masked for CMFM and the M-losses (UniVL: 0.15).", 0.15)
    temperature: float = help_field("Temperature of Align's InfoNCE over cosine similarities.", 0.05)
    hard_negatives: bool = help_field(
        "Draw each text's negative video for Joint and M-Joint with probability softmax(Align similarity / "
        "temperature) over the other clips of the batch, as ALBEF does (Li et al. 2021; only the text-to-video "
        "direction), instead of uniformly: the negatives that Align finds alike make matching learn what tells "
        "them apart. The partners then depend on the parameters, so the matching losses are piecewise in them.",
        False,
    )
    caption_from_transcript: bool = help_field(
        "Condition the caption decoder on the transcript as well as the video (YouCook2's V+T setting); "
        "otherwise on the video alone.",
        False,
    )

    def __post_init__(self) -> None:
        self.special_tokens = special_tokens(self.special_tokens)
        check_positive(
            self,
            "vocab_size",
            "dim",
            "num_heads",
            "ff_dim",
            "text_layers",
            "video_layers",
            "cross_layers",
            "decoder_layers",
            "image_size",
            "patch_size",
            "channels",
            "max_frames",
            "max_text_len",
            "feature_dim",
        )
        check_probability(self, "dropout", "text_mask_prob", "frame_mask_prob")
        check_flag(self, "hard_negatives", "caption_from_transcript")
        if self.frame_stem not in FRAME_STEMS:
            choices = ", ".join(FRAME_STEMS)
            raise ValueError(f"UniVLConfig.frame_stem must be one of {choices}, got {self.frame_stem!r}")
        if self.frame_stem == "conv" and (self.patch_size % 4 or self.image_size % self.patch_size):
            raise ValueError(
                "UniVLConfig: the conv frame stem needs a patch_size divisible by 4 that divides image_size, "
                f"got patch_size={self.patch_size}, image_size={self.image_size}"
            )
        if self.frame_stem == "conv_pool" and self.image_size % 4:
            raise ValueError(
                f"UniVLConfig: the conv_pool frame stem needs an image_size divisible by 4, got {self.image_size}"
            )
        if self.temperature <= 0:
            raise ValueError(f"UniVLConfig.temperature must be positive, got {self.temperature}")


class ConvFrameStem(nn.Module):
    """Frames to one feature each, keeping the layout: ``Conv(p/2, stride p/2) -> GELU -> Conv(3, stride 2) -> GELU``
    (a ``(H/p) x (W/p)`` grid, one cell per patch), flattened, then a linear map to ``dim``.

    Args:
        dim: output width.
        image_size: frame height and width.
        patch_size: side ``p`` of a grid cell (divisible by 4).
        channels: colour channels.
    """

    def __init__(self, dim: int, image_size: int, patch_size: int, channels: int) -> None:
        super().__init__()
        width = max(8, dim // 4)
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, patch_size // 2, stride=patch_size // 2),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.projection = nn.Linear(2 * width * (image_size // patch_size) ** 2, dim)

    def forward(self, video: Tensor) -> Tensor:
        """``[B, F, C, H, W]`` pixels in [0, 1] -> ``[B, F, dim]``."""
        grid = self.features(video.flatten(0, 1) * 2.0 - 1.0)
        return self.projection(grid.flatten(1)).view(*video.shape[:2], -1)


class PooledConvFrameStem(nn.Module):
    """Frames to one feature each, recognising an outline wherever it is: ``Conv(3, s2) -> GELU -> Conv(3, s2) ->
    GELU -> Conv(3) -> GELU`` (a grid of ``4 x 4``-pixel cells), then per channel its max over the grid and its
    spatial soft-argmax (the expected ``(x, y)`` in [-1, 1] under the softmax of the channel over the cells; Levine
    et al., 2016), then a linear map to ``dim``.

    The max makes a channel that detects an outline fire wherever the outline is; the soft-argmax says where.

    Args:
        dim: output width.
        image_size: frame height and width (divisible by 4).
        channels: colour channels.
    """

    def __init__(self, dim: int, image_size: int, channels: int) -> None:
        super().__init__()
        width = max(8, dim // 4)
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
        )
        cells = torch.linspace(-1.0, 1.0, image_size // 4)
        where = torch.stack(torch.meshgrid(cells, cells, indexing="xy")).flatten(1)  # [2, cells], (x, y)
        self.register_buffer("cell_coordinates", where.t().contiguous(), persistent=False)
        self.projection = nn.Linear(3 * width, dim)

    def forward(self, video: Tensor) -> Tensor:
        """``[B, F, C, H, W]`` pixels in [0, 1] -> ``[B, F, dim]``."""
        grid = self.features(video.flatten(0, 1) * 2.0 - 1.0).flatten(2)  # [N, width, cells]
        where = grid.softmax(-1) @ self.cell_coordinates.to(grid.dtype)  # [N, width, 2]
        pooled = torch.cat([grid.amax(-1), where.flatten(1)], dim=1)
        return self.projection(pooled).view(*video.shape[:2], -1)


UNIVL_PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    "tiny": {
        "dim": 32,
        "num_heads": 2,
        "ff_dim": 64,
        "text_layers": 1,
        "video_layers": 1,
        "cross_layers": 1,
        "decoder_layers": 1,
    },
}


class UniVL(nn.Module):
    """UniVL-style video-language model; ``forward(batch)`` returns the eight pretext losses, each ``[B]``.

    - ``joint``: video-text matching through the cross encoder, binary cross-entropy of the true pair and of
      one in-batch negative (the text with another clip's video; uniform, or ALBEF's hard negatives with
      ``hard_negatives``).
    - ``align``: symmetric InfoNCE between mean-pooled text and video encoder states (cosine / temperature).
    - ``cmlm``: masked language modelling from the cross encoder (text and frames both masked, as in UniVL).
    - ``cmfm``: masked frame modelling, NCE of each masked frame's prediction against all frames of the batch;
      the frame features predicted are fixed descriptors of the pixels (per-patch channel means,
      standardised), standing in for UniVL's frozen S3D features.
    - ``decoder``: caption generation, teacher forcing, mean token cross-entropy, conditioned on the video
      (and the transcript if ``caption_from_transcript``).
    - ``m_joint``, ``m_align``, ``m_decoder``: the same on the masked text and frames (the decoder still
      predicts the original caption).

    Masks (15% of tokens, BERT's 80/10/10; 15% of frames zeroed) and negatives are drawn from ``generator`` or
    the global RNG, in a fixed order.

    Args:
        config: the configuration (default: :class:`UniVLConfig`).
    """

    tasks: tuple[str, ...] = UNIVL_TASKS
    retrieval_loss = "align"  # the primary loss of text-to-video retrieval (MELTR Sec. 5)
    matching_loss = "joint"  # the loss scored by the cross encoder (match_score), as Table 1's UniVL-Joint
    adapter_sites = (AdapterSite("video_encoder", "video"), AdapterSite("text_encoder", "text"))

    def __init__(self, config: UniVLConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or UniVLConfig()
        block = {"num_heads": c.num_heads, "ff_dim": c.ff_dim, "dropout": c.dropout}
        self.text_embedding = TextEmbedding(c.vocab_size, c.dim, c.max_text_len)
        self.text_encoder = Transformer(c.dim, c.text_layers, **block)
        if c.frame_stem == "patch_mean":
            self.patch_embedding = PatchEmbedding(c.dim, c.image_size, c.patch_size, c.channels, c.max_frames)
        elif c.frame_stem == "features":
            self.feature_projection = nn.Linear(c.feature_dim, c.dim)
            self.frame_position = nn.Parameter(torch.randn(c.max_frames, c.dim) * 0.02)
        else:
            self.conv_stem = (
                ConvFrameStem(c.dim, c.image_size, c.patch_size, c.channels)
                if c.frame_stem == "conv"
                else PooledConvFrameStem(c.dim, c.image_size, c.channels)
            )
            self.frame_position = nn.Parameter(torch.randn(c.max_frames, c.dim) * 0.02)
        self.frame_projection = nn.Linear(c.dim, c.dim)
        self.video_encoder = Transformer(c.dim, c.video_layers, **block)
        self.modality_embedding = nn.Embedding(2, c.dim)
        self.cross_encoder = Transformer(c.dim, c.cross_layers, **block)
        self.decoder = Transformer(c.dim, c.decoder_layers, cross_attention=True, **block)
        self.mlm_head = TokenPredictionHead(c.dim, c.vocab_size)
        self.caption_head = TokenPredictionHead(c.dim, c.vocab_size)
        frame_width = c.feature_dim if c.frame_stem == "features" else c.channels * (c.image_size // c.patch_size) ** 2
        self.frame_head = nn.Linear(c.dim, frame_width)
        self.match_head = nn.Linear(c.dim, 1)
        self.apply(init_weights)

    # -- encoders ------------------------------------------------------------------------------------------

    def _video(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["video"].to(self.frame_projection.weight.dtype)

    def _video_mask(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, F]``: the batch's ``video_mask`` (False on padded feature rows), else every frame."""
        if "video_mask" in batch:
            return batch["video_mask"].bool()
        return torch.ones(batch["video"].shape[:2], dtype=torch.bool, device=batch["video"].device)

    def _text_states(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.text_encoder(self.text_embedding(tokens), mask)

    def _video_states(self, video: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, F, C, H, W]`` (or features ``[B, F, feature_dim]``) -> ``[B, F, d]``: one feature per frame
        (``frame_stem``), linear, encoder (attending to the frames where ``mask`` ``[B, F]`` is True; ``None``:
        every frame).

        ``patch_mean`` adds the spatial and temporal positions to the patch tokens before the GELU; ``conv``,
        ``conv_pool`` and ``features`` add the temporal position to the frame feature.
        """
        c = self.config
        if c.frame_stem == "features":
            if video.dim() != 3 or video.shape[-1] != c.feature_dim or video.shape[1] > c.max_frames:
                raise ValueError(
                    f"UniVL with frame_stem 'features' takes video [B, T <= {c.max_frames}, {c.feature_dim}], got "
                    f"{tuple(video.shape)}; set feature_dim (and max_frames) to the features' shape"
                )
            frames = self.frame_projection(self.feature_projection(video)) + self.frame_position[: video.shape[1]]
        elif c.frame_stem == "patch_mean":
            frames = self.frame_projection(F.gelu(self.patch_embedding(video)).mean(2))
        else:
            count = check_video_shape(video, c.channels, c.image_size, c.max_frames)
            frames = self.frame_projection(self.conv_stem(video)) + self.frame_position[:count]
        return self.video_encoder(frames, mask)

    def _cross(
        self, text_states: Tensor | None, text_mask: Tensor | None, video_states: Tensor, frame_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Cross encoder over ``[text; frames]`` (or frames alone) -> states ``[B, L + F, d]`` and mask."""
        frames = video_states + self.modality_embedding.weight[1]
        if text_states is None:
            tokens, mask = frames, frame_mask
        else:
            tokens = torch.cat([text_states + self.modality_embedding.weight[0], frames], dim=1)
            mask = torch.cat([text_mask, frame_mask], dim=1)
        return self.cross_encoder(tokens, mask), mask

    def _text_vector(self, states: Tensor, mask: Tensor) -> Tensor:
        """Unit-norm mean of the text states over real tokens but [CLS] (UniVL's pooling for similarity)."""
        words = mask & (torch.arange(mask.shape[1], device=mask.device) > 0)
        return F.normalize(masked_mean(states, words), dim=-1)

    def _video_vector(self, states: Tensor, mask: Tensor) -> Tensor:
        return F.normalize(masked_mean(states, mask), dim=-1)

    def _frame_targets(self, video: Tensor) -> Tensor:
        """Fixed frame descriptors ``[B, F, D]``: each patch's mean colour (``C * P``), or the pre-extracted
        features, standardised per frame."""
        if self.config.frame_stem == "features":
            return F.layer_norm(video, video.shape[-1:])
        batch, frames, channels = video.shape[:3]
        patches = patchify(video, self.config.patch_size)
        means = patches.reshape(batch, frames, patches.shape[2], channels, -1).mean(-1).flatten(2)
        return F.layer_norm(means, means.shape[-1:])

    def _caption_logits(self, memory: Tensor, memory_mask: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Teacher forcing: logits ``[B, L - 1, V]`` of tokens ``1..L-1`` given ``0..L-2`` and the memory."""
        inputs = self.text_embedding(tokens[:, :-1])
        states = self.decoder(inputs, causal_mask(mask[:, :-1]), memory, memory_mask)
        return self.caption_head(states, self.text_embedding.word.weight)

    def _matching(
        self, text_states: Tensor, text_mask: Tensor, video_states: Tensor, video_mask: Tensor, partner: Tensor
    ):
        """One cross pass over the true pairs and the negatives ``(text_i, video_partner(i))``.

        Returns:
            positive logits ``[B]``, negative logits ``[B]``, cross states of the true pairs
            ``[B, L + F, d]``.
        """
        size = text_states.shape[0]
        states, _ = self._cross(
            torch.cat([text_states, text_states]),
            torch.cat([text_mask, text_mask]),
            torch.cat([video_states, video_states[partner]]),
            torch.cat([video_mask, video_mask[partner]]),
        )
        logits = self.match_head(states[:, 0]).squeeze(-1)
        return logits[:size], logits[size:], states[:size]

    def _align_logits(self, text_states: Tensor, text_mask: Tensor, video_states: Tensor, video_mask: Tensor) -> Tensor:
        """Align's ``[B, B]`` logits: the cosine of every text with every video, over the temperature."""
        similarity = self._text_vector(text_states, text_mask) @ self._video_vector(video_states, video_mask).t()
        return similarity / self.config.temperature

    # -- the contract --------------------------------------------------------------------------------------

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The eight pretext losses ``{task: [B]}`` in the order of :attr:`tasks`.

        Args:
            batch: needs ``video``, ``text``, ``text_mask`` (and ``transcript``, ``transcript_mask`` if
                ``caption_from_transcript``); uses ``clip_id`` if present to keep other captions of a clip out
                of the negatives.
            generator: RNG of the masks and negatives (default: the global one).
        """
        c = self.config
        keys = ("video", "text", "text_mask") + (("transcript", "transcript_mask") if c.caption_from_transcript else ())
        require(batch, keys, c.vocab_size, "UniVL")
        text, text_mask, video, video_mask = (
            batch["text"],
            batch["text_mask"].bool(),
            self._video(batch),
            self._video_mask(batch),
        )
        size, length = text.shape
        clip_id = batch.get("clip_id")
        masked_text, text_selected = mask_text(text, text_mask, c, generator)
        masked_video, frame_selected = mask_frames(video, c.frame_mask_prob, generator, eligible=video_mask)
        exclude = other_samples_of_same_clip(clip_id, size, text.device)

        both_masks = torch.cat([text_mask, text_mask])
        text_states, masked_text_states = self._text_states(torch.cat([text, masked_text]), both_masks).split(size)
        both_video_masks = torch.cat([video_mask, video_mask])
        video_states, masked_video_states = self._video_states(
            torch.cat([video, masked_video]), both_video_masks
        ).split(size)
        align_logits = self._align_logits(text_states, text_mask, video_states, video_mask)
        hard = align_logits if c.hard_negatives else None
        partner, has_partner = sample_negatives(size, clip_id, generator, text.device, hard)

        positive, negative, _ = self._matching(text_states, text_mask, video_states, video_mask, partner)
        m_positive, m_negative, masked_cross = self._matching(
            masked_text_states, text_mask, masked_video_states, video_mask, partner
        )
        cmlm_logits = self.mlm_head(masked_cross[:, :length], self.text_embedding.word.weight)
        predicted_frames = self.frame_head(masked_cross[:, length:])

        transcript_states = transcript_mask = None
        if c.caption_from_transcript:
            transcript, transcript_mask = batch["transcript"], batch["transcript_mask"].bool()
            masked_transcript, _ = mask_text(transcript, transcript_mask, c, generator)
            transcript_mask = torch.cat([transcript_mask, transcript_mask])
            transcript_states = self._text_states(torch.cat([transcript, masked_transcript]), transcript_mask)
        memory, memory_mask = self._cross(
            transcript_states, transcript_mask, torch.cat([video_states, masked_video_states]), both_video_masks
        )
        captions = torch.cat([text, text])
        caption_loss = masked_token_loss(
            self._caption_logits(memory, memory_mask, captions, both_masks),
            captions[:, 1:],
            both_masks[:, 1:],
        )
        decoder, m_decoder = caption_loss.split(size)

        return {
            "joint": pair_matching_loss(positive, negative, has_partner),
            "align": symmetric_info_nce(align_logits, exclude),
            "cmlm": masked_token_loss(cmlm_logits, text, text_selected),
            "cmfm": frame_nce(predicted_frames, self._frame_targets(video), frame_selected, exclude, video_mask),
            "decoder": decoder,
            "m_joint": pair_matching_loss(m_positive, m_negative, has_partner),
            "m_align": symmetric_info_nce(
                self._align_logits(masked_text_states, text_mask, masked_video_states, video_mask), exclude
            ),
            "m_decoder": m_decoder,
        }

    # -- representations for downstream heads --------------------------------------------------------------

    def encode_text(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` unit-norm text embeddings (Align's) of ``text_key``: text, transcript or question."""
        mask = batch[f"{text_key}_mask"].bool()
        return self._text_vector(self._text_states(batch[text_key], mask), mask)

    def encode_video(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, d]`` unit-norm video embeddings (Align's); similarity / temperature gives Align's logits."""
        video_mask = self._video_mask(batch)
        return self._video_vector(self._video_states(self._video(batch), video_mask), video_mask)

    def fused(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]`` cross-encoder state at [CLS] of each (text, video) pair."""
        mask = batch[f"{text_key}_mask"].bool()
        video_mask = self._video_mask(batch)
        video_states = self._video_states(self._video(batch), video_mask)
        states, _ = self._cross(self._text_states(batch[text_key], mask), mask, video_states, video_mask)
        return states[:, 0]

    def match_score(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B]`` Joint's matching logit of each (text, video) pair."""
        return self.match_head(self.fused(batch, text_key)).squeeze(-1)

    @torch.no_grad()
    def generate(self, batch: Mapping[str, Tensor], max_len: int = 20) -> Tensor:
        """Greedy captioning.

        Args:
            batch: needs ``video`` (and the transcript if ``caption_from_transcript``).
            max_len: most tokens of a caption, [CLS] and [SEP] included.

        Returns:
            int64 ``[B, <= max_len]`` in the text layout: [CLS] first, [SEP] last (unless cut at ``max_len``),
            [PAD] after. [PAD], [CLS] and [MASK] are never generated.
        """
        if not 2 <= max_len <= self.config.max_text_len:
            raise ValueError(f"max_len must be in [2, max_text_len={self.config.max_text_len}], got {max_len}")
        video_mask = self._video_mask(batch)
        video_states = self._video_states(self._video(batch), video_mask)
        transcript_states = transcript_mask = None
        if self.config.caption_from_transcript:
            transcript_mask = batch["transcript_mask"].bool()
            transcript_states = self._text_states(batch["transcript"], transcript_mask)
        memory, memory_mask = self._cross(transcript_states, transcript_mask, video_states, video_mask)
        size = video_states.shape[0]
        ids = self.config.special_tokens
        tokens = torch.full((size, 1), ids["cls"], dtype=torch.long, device=video_states.device)
        finished = torch.zeros(size, dtype=torch.bool, device=tokens.device)
        never = torch.tensor([ids["pad"], ids["cls"], ids["mask"]], device=tokens.device)
        for _ in range(max_len - 1):
            padded = torch.cat([tokens, torch.full_like(tokens[:, :1], ids["pad"])], dim=1)
            logits = self._caption_logits(memory, memory_mask, padded, torch.ones_like(padded, dtype=torch.bool))
            logits = logits[:, -1].index_fill(-1, never, torch.finfo(logits.dtype).min)
            step = torch.where(finished, torch.full_like(finished, ids["pad"], dtype=torch.long), logits.argmax(-1))
            tokens = torch.cat([tokens, step[:, None]], dim=1)
            finished = finished | (step == ids["sep"])
            if bool(finished.all()):
                break
        return tokens


@BACKBONES.register("univl")
def build_univl(size: str = "default", **overrides: object) -> UniVL:
    """A :class:`UniVL` from the preset ``size`` (``default`` or ``tiny``) and config ``overrides``."""
    return UniVL(preset_config(UniVLConfig, UNIVL_PRESETS, size, overrides))

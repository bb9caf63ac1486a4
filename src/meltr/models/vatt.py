"""A VATT-style tri-modal backbone (Akbari et al., NeurIPS 2021) with the two cross-modal alignment losses of Wu et
al. (NeurIPS 2022): one *modality-agnostic* transformer, shared by video, audio and text.

VATT's modality-agnostic variant tokenises each modality on its own (video: linear projection of 3-D tubelets; audio:
linear projection of 1-D windows of the raw waveform; text: word embeddings), adds per-modality positions, and runs
every modality, separately, through the *same* transformer. The pooled outputs are projected into two common spaces,
fine and coarse (Sec. 3.2 of VATT):

- video and audio into ``S_va`` (linear heads ``g_v->va``, ``g_a->va``);
- video from ``S_va`` on into ``S_vt`` (``g_va->vt``), text into ``S_vt`` (linear ``g_t->vt``).

Two simplifications for the tiny sizes, both because the original choice made the ``S_vt`` embeddings collapse (every
clip the same vector, MIL-NCE stuck at ``log(2B - 1)``) within the first Adam steps: the outputs are mean-pooled over
the real tokens instead of read at an ``[AGG]`` token (at initialisation an ``[AGG]`` output is nearly the same for
every clip), and ``g_va->vt`` is linear instead of VATT's two-layer ReLU MLP. A learned embedding per modality is
added to its tokens. An audio token is by default made from the log-magnitude spectrum of its window
(``audio_input="spectrum"``, a fixed front-end that spares a tiny model learning a filter bank; the world's events
sound as tones of given pitches); ``audio_input="waveform"`` is VATT's raw-sample tokeniser.

The losses (Sec. 2 of Wu et al., :mod:`meltr.models.losses`): ``cma_va``, NCE between ``S_va`` video and audio
embeddings; ``cma_vt``, MIL-NCE between the ``S_vt`` video embedding and a *bag* of ``k`` captions of the clip (batch
key ``text_bag`` ``[B, K, L]`` with ``text_bag_mask``; without it the bag is the batch's one caption, ``K = 1``).
Both are per-sample ``[B]``, so the per-sample curriculum of :mod:`meltr.surgery` can read them.

DropToken (Sec. 3.3 of VATT): during training a random share ``drop_token`` of the video and audio tokens of each
sample is left out (at least one token stays), VATT's way of cutting the cost of long raw inputs; the
surviving tokens keep their positions. Evaluation (``model.eval()``) sees every token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.config import check_positive, check_probability, help_field, preset_config
from meltr.models.base import BACKBONES, require
from meltr.models.layers import (
    TextEmbedding,
    Transformer,
    check_video_shape,
    init_weights,
    masked_mean,
    patchify,
)
from meltr.models.losses import info_nce, mil_nce

VATT_TASKS: tuple[str, ...] = ("cma_va", "cma_vt")
VIDEO_SPACES: tuple[str, ...] = ("vt", "va", "pooled")
AUDIO_SPACES: tuple[str, ...] = ("va", "pooled")
TEXT_SPACES: tuple[str, ...] = ("vt", "pooled")
AUDIO_INPUTS: tuple[str, ...] = ("spectrum", "waveform")


@dataclass
class VattConfig:
    """Configuration of :class:`Vatt` (``default``: ~1.5M parameters at vocab_size=1000)."""

    vocab_size: int = help_field("Vocabulary size; token ids lie in [0, vocab_size).", 1000)
    dim: int = help_field("Width of the shared transformer and of both common spaces S_va and S_vt.", 128)
    num_heads: int = help_field("Attention heads.", 4)
    ff_dim: int = help_field("Hidden width of the MLP of every block.", 512)
    layers: int = help_field("Blocks of the shared modality-agnostic transformer (VATT-MA-Medium: 12).", 6)
    dropout: float = help_field("Residual dropout. 0 keeps the losses deterministic given the dropped tokens.", 0.0)
    image_size: int = help_field("Frame height and width in pixels.", 32)
    patch_size: int = help_field("Spatial side of a video tubelet (VATT: 16).", 8)
    tubelet_frames: int = help_field("Frames per video tubelet; must divide the clip's frames (VATT: 4).", 2)
    channels: int = help_field("Colour channels of a frame.", 3)
    max_frames: int = help_field("Most frames a clip may have.", 64)
    audio_patch: int = help_field(
        "Waveform samples per audio token; must divide the clip's audio length (VATT: 128).", 64
    )
    audio_input: str = help_field(
        "What an audio token is made from: 'spectrum', log(1 + |rfft|) of the Hann-windowed window (a fixed "
        "front-end, as MMV's spectrograms), or 'waveform', the raw samples (VATT).",
        "spectrum",
    )
    max_audio_samples: int = help_field("Longest waveform a clip may have (size of the audio position table).", 4096)
    max_text_len: int = help_field("Most tokens a caption may have.", 64)
    drop_token: float = help_field(
        "DropToken: share of each sample's video and audio tokens left out in training (VATT: 0.5; 0 = off).", 0.25
    )
    temperature: float = help_field("Temperature of both NCE losses over cosine similarities (VATT: 0.07).", 0.07)

    def __post_init__(self) -> None:
        check_positive(
            self,
            "vocab_size",
            "dim",
            "num_heads",
            "ff_dim",
            "layers",
            "image_size",
            "patch_size",
            "tubelet_frames",
            "channels",
            "max_frames",
            "audio_patch",
            "max_audio_samples",
            "max_text_len",
        )
        check_probability(self, "dropout")
        if self.audio_input not in AUDIO_INPUTS:
            raise ValueError(f"VattConfig.audio_input must be one of {list(AUDIO_INPUTS)}, got {self.audio_input!r}")
        if not 0.0 <= self.drop_token < 1.0:
            raise ValueError(f"VattConfig.drop_token must be in [0, 1), got {self.drop_token!r}")
        if not self.temperature > 0:
            raise ValueError(f"VattConfig.temperature must be positive, got {self.temperature!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"VattConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.image_size % self.patch_size:
            raise ValueError(f"VattConfig.patch_size ({self.patch_size}) must divide image_size ({self.image_size})")
        if self.max_audio_samples < self.audio_patch:
            raise ValueError(
                f"VattConfig.max_audio_samples ({self.max_audio_samples}) must be at least audio_patch "
                f"({self.audio_patch})"
            )


VATT_PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    "tiny": {"dim": 32, "num_heads": 2, "ff_dim": 64, "layers": 2},
}


def drop_tokens(tokens: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """DropToken: keep a random ``1 - rate`` share (at least one) of each sample's tokens.

    Args:
        tokens: ``[B, N, d]``.
        rate: share left out.
        generator: RNG of the choice (default: the global one).

    Returns:
        ``[B, max(1, round((1 - rate) N)), d]``, the kept tokens in their original order.
    """
    if rate == 0.0:
        return tokens
    batch, count, dim = tokens.shape
    keep = max(1, round((1.0 - rate) * count))
    scores = torch.rand(batch, count, generator=generator, device=tokens.device)
    kept = scores.argsort(dim=1)[:, :keep].sort(dim=1).values
    return tokens.gather(1, kept[..., None].expand(batch, keep, dim))


class Vatt(nn.Module):
    """VATT-style modality-agnostic backbone; ``forward(batch)`` gives ``cma_va`` and ``cma_vt``, each ``[B]``.

    Args:
        config: the configuration (default: :class:`VattConfig`).
    """

    tasks: tuple[str, ...] = VATT_TASKS

    def __init__(self, config: VattConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VattConfig()
        patches = (c.image_size // c.patch_size) ** 2
        # Tokenisers and positions: the only modality-specific parts below the projection heads.
        self.video_projection = nn.Linear(c.tubelet_frames * c.channels * c.patch_size**2, c.dim)
        self.video_spatial_position = nn.Parameter(torch.randn(patches, c.dim) * 0.02)
        self.video_temporal_position = nn.Parameter(torch.randn(c.max_frames // c.tubelet_frames + 1, c.dim) * 0.02)
        audio_features = c.audio_patch // 2 + 1 if c.audio_input == "spectrum" else c.audio_patch
        self.audio_projection = nn.Linear(audio_features, c.dim)
        self.register_buffer("audio_window", torch.hann_window(c.audio_patch, periodic=False), persistent=False)
        self.audio_position = nn.Parameter(torch.randn(c.max_audio_samples // c.audio_patch, c.dim) * 0.02)
        self.text_embedding = TextEmbedding(c.vocab_size, c.dim, c.max_text_len)
        self.modality_embedding = nn.Parameter(torch.randn(3, c.dim) * 0.02)  # video, audio, text
        self.encoder = Transformer(c.dim, c.layers, c.num_heads, c.ff_dim, c.dropout)
        # VATT's fine-and-coarse projection heads.
        self.video_to_va = nn.Linear(c.dim, c.dim)
        self.audio_to_va = nn.Linear(c.dim, c.dim)
        self.va_to_vt = nn.Linear(c.dim, c.dim)
        self.text_to_vt = nn.Linear(c.dim, c.dim)
        self.apply(init_weights)

    # ------------------------------------------------------------------------------------------ tokenisers

    def _video_tokens(self, video: Tensor) -> Tensor:
        """``[B, F, C, H, W]`` pixels in [0, 1] -> ``[B, (F/t) P, d]`` tubelet tokens with positions."""
        c = self.config
        frames = check_video_shape(video, c.channels, c.image_size, c.max_frames)
        batch = video.shape[0]
        if frames % c.tubelet_frames:
            raise ValueError(f"tubelet_frames={c.tubelet_frames} must divide the clips' {frames} frames")
        patches = patchify(video.to(self.video_projection.weight.dtype) * 2.0 - 1.0, c.patch_size)  # [B, F, P, D]
        steps = frames // c.tubelet_frames
        tubelets = patches.view(batch, steps, c.tubelet_frames, patches.shape[2], -1).transpose(2, 3).flatten(3)
        tokens = self.video_projection(tubelets) + self.video_spatial_position
        return (tokens + self.video_temporal_position[:steps, None]).flatten(1, 2)

    def _audio_tokens(self, audio: Tensor) -> Tensor:
        """``[B, S]`` waveform -> ``[B, S / audio_patch, d]`` tokens (from each window's spectrum or samples)."""
        c = self.config
        if audio.dim() != 2:
            raise ValueError(f"audio must be a [B, samples] waveform, got shape {tuple(audio.shape)}")
        samples = audio.shape[1]
        if samples % c.audio_patch or samples > c.max_audio_samples:
            raise ValueError(
                f"the audio has {samples} samples: audio_patch={c.audio_patch} must divide it and "
                f"max_audio_samples={c.max_audio_samples} bound it; pass audio_patch= / max_audio_samples="
            )
        windows = audio.to(self.audio_projection.weight.dtype).reshape(audio.shape[0], -1, c.audio_patch)
        if c.audio_input == "spectrum":
            windows = torch.fft.rfft(windows * self.audio_window.to(windows.dtype)).abs().log1p()
        return self.audio_projection(windows) + self.audio_position[: windows.shape[1]]

    def _encode(self, tokens: Tensor, modality: int, mask: Tensor | None = None) -> Tensor:
        """The shared transformer over ``tokens`` ``[B, N, d]`` (plus the modality's embedding), mean-pooled over
        the real tokens (``mask`` ``[B, N]``, True = real) -> ``[B, d]``."""
        states = self.encoder(tokens + self.modality_embedding[modality], mask)
        return states.mean(1) if mask is None else masked_mean(states, mask)

    def _pooled_video(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        tokens = self._video_tokens(batch["video"])
        if self.training:
            tokens = drop_tokens(tokens, self.config.drop_token, generator)
        return self._encode(tokens, 0)

    def _pooled_audio(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        tokens = self._audio_tokens(batch["audio"])
        if self.training:
            tokens = drop_tokens(tokens, self.config.drop_token, generator)
        return self._encode(tokens, 1)

    def _pooled_text(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``[..., L]`` token ids and mask -> ``[..., d]``."""
        lead = tokens.shape[:-1]
        flat_tokens, flat_mask = tokens.reshape(-1, tokens.shape[-1]), mask.reshape(-1, mask.shape[-1]).bool()
        # Columns that are padding in every row change nothing (masked keys, discarded queries): cut them.
        real = flat_mask.any(0).nonzero()
        length = int(real.max()) + 1 if real.numel() else 1
        flat_tokens, flat_mask = flat_tokens[:, :length], flat_mask[:, :length]
        return self._encode(self.text_embedding(flat_tokens), 2, flat_mask).view(*lead, -1)

    def _bag(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The positive bag ``[B, K, L]`` and its mask: ``text_bag`` if the batch has one, else ``text`` (``K = 1``)."""
        if "text_bag" in batch:
            if "text_bag_mask" not in batch:
                raise KeyError(f"Vatt: a batch with text_bag needs text_bag_mask; the batch has {sorted(batch)}")
            bag, mask = batch["text_bag"], batch["text_bag_mask"]
            if bag.dim() != 3 or bag.shape[0] != batch["video"].shape[0] or mask.shape != bag.shape:
                raise ValueError(
                    f"text_bag must be [B, K, L] with a mask of its shape, got {tuple(bag.shape)}, {tuple(mask.shape)}"
                )
            return bag, mask
        return batch["text"][:, None], batch["text_mask"][:, None]

    # ------------------------------------------------------------------------------------------ the contract

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"cma_va", "cma_vt"}`` per-sample losses ``[B]`` (Sec. 2 of Wu et al., NeurIPS 2022).

        Args:
            batch: needs ``video``, ``audio``, ``text`` and ``text_mask``; ``text_bag`` / ``text_bag_mask``
                (``[B, K, L]``) give MIL-NCE its bag of ``K`` captions per clip.
            generator: RNG of DropToken (default: the global one).
        """
        c = self.config
        require(batch, ("video", "audio", "text", "text_mask"), c.vocab_size, "Vatt")
        bag, bag_mask = self._bag(batch)
        if bag.numel() and int(bag.max()) >= c.vocab_size:
            raise ValueError(f"batch['text_bag'] holds token id {int(bag.max())} >= vocab_size={c.vocab_size}")
        video_va = self.video_to_va(self._pooled_video(batch, generator))
        audio_va = self.audio_to_va(self._pooled_audio(batch, generator))
        text_vt = self.text_to_vt(self._pooled_text(bag, bag_mask))  # [B, K, d]
        return {
            "cma_va": info_nce(video_va, audio_va, c.temperature, reduction="none"),
            "cma_vt": mil_nce(self.va_to_vt(video_va), text_vt, c.temperature, reduction="none"),
        }

    def encode_video(self, batch: Mapping[str, Tensor], space: str = "vt") -> Tensor:
        """``[B, d]`` video embeddings: unit-norm in ``S_vt`` (retrieval against :meth:`encode_text`, the
        default) or ``S_va``, or the shared transformer's pooled output (``"pooled"``, for linear probes)."""
        _check_space(space, VIDEO_SPACES)
        pooled = self._pooled_video(batch)
        if space == "pooled":
            return pooled
        video_va = self.video_to_va(pooled)
        return F.normalize(video_va if space == "va" else self.va_to_vt(video_va), dim=-1)

    def encode_audio(self, batch: Mapping[str, Tensor], space: str = "va") -> Tensor:
        """``[B, d]`` audio embeddings: unit-norm in ``S_va`` or the pooled output (``"pooled"``)."""
        _check_space(space, AUDIO_SPACES)
        pooled = self._pooled_audio(batch)
        return pooled if space == "pooled" else F.normalize(self.audio_to_va(pooled), dim=-1)

    def encode_text(self, batch: Mapping[str, Tensor], text_key: str = "text", space: str = "vt") -> Tensor:
        """``[B, d]`` text embeddings: unit-norm in ``S_vt`` or the pooled output (``"pooled"``)."""
        _check_space(space, TEXT_SPACES)
        pooled = self._pooled_text(batch[text_key], batch[f"{text_key}_mask"])
        return pooled if space == "pooled" else F.normalize(self.text_to_vt(pooled), dim=-1)

    def fused(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B, d]``: the mean of the video's and the text's pooled outputs (VATT has no joint encoder)."""
        return (self.encode_video(batch, "pooled") + self.encode_text(batch, text_key, "pooled")) / 2

    def match_score(self, batch: Mapping[str, Tensor], text_key: str = "text") -> Tensor:
        """``[B]`` cosine similarity in ``S_vt`` of each (text, video) pair over the temperature."""
        similarity = (self.encode_video(batch) * self.encode_text(batch, text_key)).sum(-1)
        return similarity / self.config.temperature


def _check_space(space: str, spaces: tuple[str, ...]) -> None:
    if space not in spaces:
        raise ValueError(f"unknown embedding space {space!r}; choose one of: {', '.join(spaces)}")


@BACKBONES.register("vatt")
def build_vatt(size: str = "default", **overrides: object) -> Vatt:
    """A :class:`Vatt` from the preset ``size`` (``default`` or ``tiny``) and config ``overrides``."""
    return Vatt(preset_config(VattConfig, VATT_PRESETS, size, overrides))


__all__ = [
    "AUDIO_SPACES",
    "TEXT_SPACES",
    "VATT_TASKS",
    "VIDEO_SPACES",
    "Vatt",
    "VattConfig",
    "build_vatt",
    "drop_tokens",
]

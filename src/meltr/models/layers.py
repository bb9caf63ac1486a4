"""The building blocks every backbone shares: one hand-written transformer block, embeddings and heads.

Attention is written with plain ``matmul`` + ``softmax`` rather than ``F.scaled_dot_product_attention``: on
CPU the fused kernels of torch 2.13 support neither double backward nor forward-mode AD, and the backbones are
differentiated both ways (the hypergradient of MELTR, Eq. (9)-(11), and ``torch.func.jvp``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over the last two dimensions.

    Args:
        query: ``[..., Lq, d]``.
        key: ``[..., Lk, d]``.
        value: ``[..., Lk, dv]``.
        mask: boolean, broadcastable to ``[..., Lq, Lk]``; True = may attend. A query that may attend to
            nothing gets the mean of the values instead of NaN (masked scores are the most negative finite
            number, not ``-inf``).

    Returns:
        ``[..., Lq, dv]``.
    """
    scores = (query * query.shape[-1] ** -0.5) @ key.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) @ value


def _for_heads(mask: Tensor | None) -> Tensor | None:
    """A key mask ``[B, Lk]`` or a full mask ``[B, Lq, Lk]`` -> broadcastable to ``[B, heads, Lq, Lk]``."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask[:, None, None, :]
    if mask.dim() == 3:
        return mask[:, None]
    raise ValueError(f"an attention mask must be [B, Lk] or [B, Lq, Lk], got shape {tuple(mask.shape)}")


class MultiHeadAttention(nn.Module):
    """Multi-head attention (self-attention, or cross-attention when given a ``context``).

    Args:
        dim: model width ``d``.
        num_heads: heads; ``dim`` must be divisible by it.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``x`` ``[B, Lq, d]`` attends to ``context`` ``[B, Lk, d]`` (default ``x``) under ``mask``."""
        context = x if context is None else context
        heads = attention(
            self._split(self.query(x)),
            self._split(self.key(context)),
            self._split(self.value(context)),
            _for_heads(mask),
        )
        return self.out(heads.transpose(1, 2).flatten(2))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + SA(LN x)``, then ``x + CA(LN x, memory)`` (optional), then ``x + MLP(LN x)``.

    Args:
        dim: model width.
        num_heads: attention heads.
        ff_dim: hidden width of the MLP (GELU).
        dropout: dropout on each residual branch.
        cross_attention: add a cross-attention sub-layer over a ``memory`` (a decoder block).
    """

    def __init__(
        self, dim: int, num_heads: int, ff_dim: int, dropout: float = 0.0, cross_attention: bool = False
    ) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, num_heads)
        self.cross_norm = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attention = MultiHeadAttention(dim, num_heads) if cross_attention else None
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """``x`` ``[B, L, d]``; ``mask`` ``[B, L]`` (keys) or ``[B, L, L]``; ``memory`` ``[B, M, d]``,
        ``memory_mask`` ``[B, M]`` for a cross-attention block."""
        x = x + self.dropout(self.attention(self.attention_norm(x), mask=mask))
        if self.cross_attention is not None:
            if memory is None:
                raise ValueError("this block has cross-attention: pass memory=")
            x = x + self.dropout(self.cross_attention(self.cross_norm(x), context=memory, mask=memory_mask))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    """A stack of :class:`TransformerBlock` and a final LayerNorm (the pre-norm convention).

    Args:
        dim: model width.
        depth: number of blocks.
        num_heads: attention heads.
        ff_dim: MLP hidden width.
        dropout: residual dropout.
        cross_attention: blocks with cross-attention (a decoder).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.0,
        cross_attention: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, ff_dim, dropout, cross_attention) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        for block in self.blocks:
            x = block(x, mask, memory, memory_mask)
        return self.norm(x)


def causal_mask(key_mask: Tensor) -> Tensor:
    """``[B, L]`` key mask -> ``[B, L, L]``: position ``i`` attends to real positions ``j <= i``."""
    length = key_mask.shape[-1]
    lower = torch.ones(length, length, dtype=torch.bool, device=key_mask.device).tril()
    return lower[None] & key_mask[:, None, :]


def patchify(video: Tensor, patch_size: int) -> Tensor:
    """Cut frames into non-overlapping square patches.

    Args:
        video: ``[B, F, C, H, W]``.
        patch_size: side ``p`` of a patch; must divide ``H`` and ``W``.

    Returns:
        ``[B, F, (H/p)(W/p), C p p]``, patches in row-major order, each flattened channel-first.
    """
    batch, frames, channels, height, width = video.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size {patch_size} must divide the frame size {height}x{width}")
    rows, cols = height // patch_size, width // patch_size
    patches = video.reshape(batch, frames, channels, rows, patch_size, cols, patch_size)
    return patches.permute(0, 1, 3, 5, 2, 4, 6).reshape(batch, frames, rows * cols, channels * patch_size**2)


def check_video_shape(video: Tensor, channels: int, image_size: int, max_frames: int) -> int:
    """Raise a ``ValueError`` with the fix unless ``video`` is ``[B, F, channels, image_size, image_size]`` with
    ``F <= max_frames``; return ``F``."""
    _, frames, got_channels, height, width = video.shape
    if (got_channels, height, width) != (channels, image_size, image_size):
        raise ValueError(
            f"frames are {got_channels}x{height}x{width} but the backbone was built for "
            f"{channels}x{image_size}x{image_size}; pass image_size={height} (and channels=) to build_backbone"
        )
    if frames > max_frames:
        raise ValueError(
            f"clips have {frames} frames, more than max_frames={max_frames}; pass max_frames={frames} to build_backbone"
        )
    return frames


class PatchEmbedding(nn.Module):
    """Frames to patch tokens: a linear map of every ``p x p`` patch plus spatial and temporal positions.

    Args:
        dim: token width.
        image_size: frame height and width.
        patch_size: patch side.
        channels: colour channels.
        max_frames: most frames a clip may have (size of the temporal position table).
    """

    def __init__(self, dim: int, image_size: int, patch_size: int, channels: int, max_frames: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.num_patches = (image_size // patch_size) ** 2
        self.projection = nn.Linear(channels * patch_size**2, dim)
        self.spatial_position = nn.Parameter(torch.randn(self.num_patches, dim) * 0.02)
        self.temporal_position = nn.Parameter(torch.randn(max_frames, dim) * 0.02)

    def forward(self, video: Tensor, masked: Tensor | None = None, mask_token: Tensor | None = None) -> Tensor:
        """``[B, F, C, H, W]`` pixels in [0, 1] -> ``[B, F, P, d]`` tokens.

        Where ``masked`` ``[B, F, P]`` is True the patch's projection is replaced by ``mask_token`` ``[d]``
        before the positions are added (BEiT's and Violet's masked visual modelling).
        """
        frames = check_video_shape(video, self.channels, self.image_size, self.temporal_position.shape[0])
        tokens = self.projection(patchify(video * 2.0 - 1.0, self.patch_size))
        if masked is not None:
            tokens = torch.where(masked[..., None], mask_token, tokens)
        return tokens + self.spatial_position + self.temporal_position[:frames, None]


class TextEmbedding(nn.Module):
    """Token ids -> word embedding + learned position embedding.

    Args:
        vocab_size: vocabulary size.
        dim: width.
        max_len: most tokens a sequence may have.
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, L]`` int64 -> ``[B, L, d]``."""
        length = tokens.shape[-1]
        if length > self.position.shape[0]:
            raise ValueError(
                f"sequences have {length} tokens, more than max_text_len={self.position.shape[0]}; "
                f"pass max_text_len={length} to build_backbone"
            )
        return self.word(tokens) + self.position[:length]


class TokenPredictionHead(nn.Module):
    """BERT's language-model head: dense, GELU, LayerNorm, then the tied word-embedding matrix and a bias.

    Args:
        dim: input width.
        vocab_size: vocabulary size.
    """

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, word_embedding: Tensor) -> Tensor:
        """``[..., d]`` -> logits ``[..., V]``; ``word_embedding`` ``[V, d]`` is the tied output matrix."""
        return self.norm(F.gelu(self.dense(hidden))) @ word_embedding.t() + self.bias


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: Linear and Embedding weights ~ N(0, 0.02), biases 0, LayerNorm (1, 0).

    Use with ``model.apply(init_weights)``.
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` ``[B, N, ...]`` over the positions where ``mask`` ``[B, N]`` is True (0 if none)."""
    weights = mask.to(values.dtype)
    while weights.dim() < values.dim():
        weights = weights.unsqueeze(-1)
    total = torch.where(weights > 0, values, torch.zeros_like(values)).sum(1)
    return total / weights.sum(1).clamp(min=1.0)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (tied parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "MultiHeadAttention",
    "PatchEmbedding",
    "TextEmbedding",
    "TokenPredictionHead",
    "Transformer",
    "TransformerBlock",
    "attention",
    "causal_mask",
    "count_parameters",
    "init_weights",
    "masked_mean",
    "patchify",
]

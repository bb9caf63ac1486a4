"""The Meta Loss Transformer (MELTR, Sec. 4.1 of Kim et al., CVPR 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.combine.base import COMBINERS, LossCombiner


@COMBINERS.register("meltr")
class MetaLossTransformer(LossCombiner):
    """``MELTR(l; phi)``: a transformer that reads the task losses and outputs one loss.

    Each loss ``l_t`` becomes a token ``SE(l_t) + TE(t)`` with the scale embedding ``SE = MLP`` (Linear 1->h, ReLU,
    Linear h->d) and a learnable task embedding ``TE`` (Eq. 5; the task order is fixed, so ``TE`` is the only
    positional information). The tokens go through a transformer encoder, are mean-pooled and projected to a scalar
    by a linear layer without bias. Nothing constrains the sign of the output, as in the official code.

    Defaults are the official UniVL setting (d=256, MLP hidden 128, feed-forward 512, 8 heads, 1 layer), except
    dropout, which defaults to 0 here (official: 0.1) so that the combined loss, its sensitivity and the
    hypergradient are deterministic functions of the losses; pass ``dropout=0.1`` for the official behaviour.

    Args:
        tasks: task order (``l_0`` is ``primary_task``'s loss).
        primary_task: the primary task (default: the first).
        d_model: token width ``d``.
        mlp_hidden: hidden width of the scale-embedding MLP.
        ff_dim: feed-forward width of the encoder layers.
        num_heads: attention heads.
        num_layers: encoder layers.
        dropout: dropout inside the encoder layers.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        primary_task: str | None = None,
        d_model: int = 256,
        mlp_hidden: int = 128,
        ff_dim: int = 512,
        num_heads: int = 8,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(tasks, primary_task)
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.scale_embedding = nn.Sequential(nn.Linear(1, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, d_model))
        self.task_embedding = nn.Embedding(self.num_tasks, d_model)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ff_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1, bias=False)
        self.register_buffer("task_ids", torch.arange(self.num_tasks), persistent=False)

    def combine(self, losses: Tensor) -> Tensor:
        batch_shape = losses.shape[:-1]
        dtype = self.head.weight.dtype
        rows = losses.reshape(-1, self.num_tasks, 1).to(dtype)
        tokens = self.scale_embedding(rows) + self.task_embedding(self.task_ids)
        # The math kernel is the one CPU attention kernel with double-backward and forward-mode AD in torch;
        # with T tokens it costs nothing.
        with sdpa_kernel(SDPBackend.MATH):
            encoded = self.encoder(tokens)
        out = self.head(encoded.mean(dim=1)).squeeze(-1)
        return out.reshape(batch_shape).to(losses.dtype)

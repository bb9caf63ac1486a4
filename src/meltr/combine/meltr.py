"""The Meta Loss Transformer (MELTR, Sec. 4.1 of Kim et al., CVPR 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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

    Two ways to start (``init``):

    - ``"official"``: every layer at PyTorch's default initialisation, as the official code; the initial
      combination is an arbitrary function of the losses (its slopes ``dM/dl_t`` have random signs).
    - ``"residual"``: ``M(l) = sum_t l_t + f(l)`` with ``f`` the transformer above and its output layer
      initialised to zero, so MELTR starts exactly at equal weights and meta steps learn a correction. The
      regulariser ``|M(l) - sum_t l_t|`` is then ``|f(l)|``.

    Two ways to read the losses (``inputs``):

    - ``"per_sample"``: each sample's losses are one set of tokens; ``L_aux`` is the mean of ``M`` over samples;
    - ``"batch_mean"``: the official code's input, ``M`` of the batch-mean losses (one set of tokens per batch).
      Per-sample losses are averaged first; ``combine`` returns that one value for every sample, so the mean over
      samples is ``M(mean_b l_b)`` and ``dM/dl_{b,t}`` is the slope at the batch mean.

    Sizes default to the official UniVL setting (d=256, MLP hidden 128, feed-forward 512, 8 heads, 1 layer).
    Dropout defaults to 0 (the official module declares 0.1) so that the combined loss, its sensitivity and the
    hypergradient are deterministic functions of the losses. The official UniVL code puts its MELTR module in eval
    mode once and never back, so it never applies that dropout either.

    Args:
        tasks: task order (``l_0`` is ``primary_task``'s loss).
        primary_task: the primary task (default: the first).
        d_model: token width ``d``.
        mlp_hidden: hidden width of the scale-embedding MLP.
        ff_dim: feed-forward width of the encoder layers.
        num_heads: attention heads.
        num_layers: encoder layers.
        dropout: dropout inside the encoder layers.
        init: ``"official"`` (PyTorch's default initialisation) or ``"residual"`` (equal weights plus a learned,
            zero-initialised correction).
        inputs: ``"per_sample"`` or ``"batch_mean"`` (the official code's) loss inputs.
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
        init: Literal["official", "residual"] = "official",
        inputs: Literal["per_sample", "batch_mean"] = "per_sample",
    ) -> None:
        super().__init__(tasks, primary_task)
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if init not in ("official", "residual"):
            raise ValueError(f"combiner option 'init' must be 'official' or 'residual', got {init!r}")
        if inputs not in ("per_sample", "batch_mean"):
            raise ValueError(f"combiner option 'inputs' must be 'per_sample' or 'batch_mean', got {inputs!r}")
        self.init = init
        self.inputs = inputs
        self.scale_embedding = nn.Sequential(nn.Linear(1, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, d_model))
        self.task_embedding = nn.Embedding(self.num_tasks, d_model)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ff_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1, bias=False)
        if init == "residual":
            nn.init.zeros_(self.head.weight)
        self.register_buffer("task_ids", torch.arange(self.num_tasks), persistent=False)

    def combine(self, losses: Tensor) -> Tensor:
        if self.inputs == "batch_mean" and losses.dim() == 2:
            return self._combine(losses.mean(0)).expand(losses.shape[0])
        return self._combine(losses)

    def _combine(self, losses: Tensor) -> Tensor:
        batch_shape = losses.shape[:-1]
        dtype = self.head.weight.dtype
        rows = losses.reshape(-1, self.num_tasks, 1).to(dtype)
        tokens = self.scale_embedding(rows) + self.task_embedding(self.task_ids)
        # The math kernel is the one CPU attention kernel with double-backward and forward-mode AD in torch;
        # with T tokens it costs nothing.
        with sdpa_kernel(SDPBackend.MATH):
            encoded = self.encoder(tokens)
        out = self.head(encoded.mean(dim=1)).squeeze(-1).reshape(batch_shape).to(losses.dtype)
        return out + losses.sum(-1) if self.init == "residual" else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, init={self.init!r}, inputs={self.inputs!r}"

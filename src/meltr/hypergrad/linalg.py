"""Parameter lists as vectors: gradients that are zero where there is no dependence, and inner products.

The estimators, solvers and backends of :mod:`meltr.hypergrad` all work on lists of tensors shaped like the
parameters (``Params``); this is the floor they share.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Params = list[Tensor]


def grad_or_zeros(
    outputs: Tensor | Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor] | None = None,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> Params:
    """``torch.autograd.grad`` that returns zeros for inputs the outputs do not depend on."""
    inputs = list(inputs)
    if not inputs:
        return []
    if isinstance(outputs, Tensor):
        outputs, grad_outputs = [outputs], None if grad_outputs is None else list(grad_outputs)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs or [None] * len(outputs), strict=True) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    outs, gouts = zip(*pairs, strict=True)
    grads = torch.autograd.grad(
        list(outs),
        inputs,
        grad_outputs=None if grad_outputs is None else list(gouts),
        create_graph=create_graph,
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``<a, b>`` of two parameter lists."""
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


__all__ = ["Params", "dot", "grad_or_zeros"]

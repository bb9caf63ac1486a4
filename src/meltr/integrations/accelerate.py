"""Accelerate: a learner whose inner gradients go through ``accelerator.backward``.

Usage (``torchrun --nproc_per_node=2 train.py`` or ``accelerate launch``; docs/integrations.md has the whole
script)::

    accelerator = Accelerator()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    learner = prepare_learner(accelerator, model, combiner, optimizer, meta_every=3)
    for batch in loader:
        learner.step(batch)

The prepared model is DDP-wrapped under several processes: the learner's inner backward is synchronised by DDP,
its meta steps run on the unwrapped module with every hypergradient all-reduced by hand, so all ranks keep
identical backbones and combiners. Accumulate with the learner's ``accumulate=N`` (micro-batches before the last
skip DDP's all-reduce), not with ``Accelerator(gradient_accumulation_steps=...)``, so that meta steps count
optimiser steps. ``mixed_precision="bf16"`` autocasts the inner forward (Accelerate wraps the model's forward);
meta steps call the original forward in float32.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from meltr.combine.base import LossCombiner
from meltr.learner import AuxiliaryLearner


def prepare_learner(
    accelerator: Accelerator,
    model: nn.Module,
    combiner: LossCombiner,
    optimizer: torch.optim.Optimizer,
    **learner_options: Any,
) -> AuxiliaryLearner:
    """An :class:`~meltr.learner.AuxiliaryLearner` for a model and optimiser already passed to
    ``accelerator.prepare``.

    Args:
        accelerator: the run's ``Accelerator``.
        model: the prepared backbone (``forward(batch) -> {task: loss}``).
        combiner: the loss combiner; moved to ``accelerator.device``. Not prepared: it is not DDP-wrapped (meta steps
            keep its copies identical by all-reducing the hypergradient).
        optimizer: the prepared optimiser over the backbone.
        **learner_options: options of :class:`~meltr.learner.AuxiliaryLearner`, except ``backward`` and
            ``grad_scaler``.

    Raises:
        ValueError: ``learner_options`` sets ``backward`` or ``grad_scaler``; the accelerator uses fp16 loss scaling
            or gradient accumulation.
    """
    reserved = sorted({"backward", "grad_scaler"} & set(learner_options))
    if reserved:
        raise ValueError(f"prepare_learner sets {reserved} itself (accelerator.backward); remove them")
    if accelerator.scaler is not None:
        raise ValueError(
            "prepare_learner does not support Accelerate's fp16 loss scaler; use mixed_precision='bf16', or a plain "
            "loop with AuxiliaryLearner(grad_scaler=torch.amp.GradScaler(...), precision='fp16')"
        )
    if accelerator.gradient_accumulation_steps != 1:
        raise ValueError(
            "accumulate with the learner (prepare_learner(..., accumulate=N)), not with "
            "Accelerator(gradient_accumulation_steps=N): meta steps must count optimiser steps"
        )
    combiner.to(accelerator.device)
    return AuxiliaryLearner(model, combiner, optimizer, backward=accelerator.backward, **learner_options)


__all__ = ["prepare_learner"]

"""Downstream tasks: a backbone plus (where needed) a head, exposing all of its losses through the contract.

A :class:`TaskModel` returns ``{task: loss}`` with the backbone's pretext losses and the task's primary loss; the
primary loss is always also an input of the combiner (MELTR Sec. 4.1). Each task knows how to read the world
(:meth:`TaskModel.loader_options`) and how to score itself with the field's standard metrics (:meth:`evaluate`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn
from tqdm import tqdm

from meltr._registry import Registry

TASKS: Registry[type[TaskModel]] = Registry("downstream task")


class TaskModel(nn.Module):
    """Backbone + head; ``forward(batch) -> {task: per-sample loss}`` with ``primary_task`` among the tasks.

    Args:
        backbone: a reference backbone of :mod:`meltr.models` (or any module with the same methods).
        backbone_name: its registry name (the primary loss of retrieval depends on it).
    """

    name = "task"
    metric = "score"  # the validation metric that selects the best checkpoint (higher is better)

    def __init__(self, backbone: nn.Module, backbone_name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone_name = backbone_name
        self.primary_task = ""
        self.tasks: tuple[str, ...] = tuple(backbone.tasks)

    def head_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The losses a head adds to the backbone's (none by default)."""
        return {}

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        losses = dict(self.backbone(batch))
        losses.update(self.head_losses(batch))
        return losses

    def loader_options(self, split: str) -> dict[str, Any]:
        """Keyword arguments of ``World.loader`` for ``split`` (which caption / question a sample carries)."""
        return {}

    def evaluate(self, world, split: str, batch_size: int = 64, **options: Any) -> dict[str, float]:
        """The task's standard metrics on ``split`` of ``world`` (``progress=True``: a bar while scoring)."""
        raise NotImplementedError


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (dropout off) inside the block; its training flag is restored on leaving it, even on
    an error."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def scoring_bar(progress: bool, total: int | None = None, unit: str = "batch", iterable: Any = None) -> tqdm:
    """The progress bar of an evaluation (over ``iterable`` if given): on stderr, only on a terminal, and only if
    ``progress`` is asked for."""
    return tqdm(iterable, total=total, desc="scoring", unit=unit, disable=None if progress else True, leave=False)


def build_task(name: str, backbone: nn.Module, backbone_name: str, **options: Any) -> TaskModel:
    """Build the downstream task ``name`` (``retrieval``, ``captioning``, ``qa``, ``sentiment``) on ``backbone``."""
    return TASKS.build(name, backbone, backbone_name, **options)

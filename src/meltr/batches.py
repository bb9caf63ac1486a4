"""Batches as the learner stores and replays them: micro-batch groups, device moves, replay storage policies.

An optimiser step of a loop with gradient accumulation sees ``N`` micro-batches; the learner keeps them together as
one :class:`MicroBatches` group, so that the replay buffer, ``meta_every`` and the meta step count optimiser steps.
A group's task losses are those of the concatenated batch (:func:`meltr.contract.concat_task_losses`).

Replay storage (:class:`ReplayStorage`) decides what the replay buffer holds for a batch and how it gets the batch
back: the batch itself (``"device"``), a detached copy on the CPU moved back on demand (``"cpu"``), or only the
dataset indices it was built from, re-fetched through a user function when a meta step samples it (``"index"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor


class MicroBatches(list):
    """The micro-batches of one optimiser step under gradient accumulation, in the order they were seen."""


def map_tensors(batch: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor of a batch made of mappings, lists and tuples; other leaves pass through."""
    if isinstance(batch, Tensor):
        return fn(batch)
    if isinstance(batch, MicroBatches):
        return MicroBatches(map_tensors(b, fn) for b in batch)
    if isinstance(batch, Mapping):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(map_tensors(v, fn) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor on ``device`` (tensors already there are not copied)."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=True))


def batch_nbytes(batch: Any) -> int:
    """Bytes held by the tensors of a batch (views counted once per tensor)."""
    total = 0

    def count(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    map_tensors(batch, count)
    return total


@dataclass
class ReplayStorage:
    """What the replay buffer keeps of a batch, and how it gets the batch back.

    Args:
        mode: ``"device"`` keeps the batch object itself (the official code); ``"cpu"`` keeps a detached copy on the
            CPU and moves it to ``device`` when sampled; ``"index"`` keeps only ``batch[index_key]`` (a tensor of
            dataset indices, on the CPU) and rebuilds the batch with ``fetch(indices)``. Re-fetching gives the same
            batch only if building a batch is deterministic (no random augmentation).
        device: where sampled batches go (default: where the batch was; for ``"index"`` the fetched batch as is).
        fetch: ``indices -> batch``, required by ``"index"``.
        index_key: the batch key holding the dataset indices.
    """

    mode: Literal["device", "cpu", "index"] = "device"
    device: torch.device | str | None = None
    fetch: Callable[[Tensor], Any] | None = None
    index_key: str = "index"

    def __post_init__(self) -> None:
        if self.mode not in ("device", "cpu", "index"):
            raise ValueError(f"replay_storage must be 'device', 'cpu' or 'index', got {self.mode!r}")
        if self.mode == "index" and self.fetch is None:
            raise ValueError("replay_storage='index' needs replay_fetch, a function dataset indices -> batch")

    def keep(self, batch: Any) -> Any:
        """The record of ``batch`` that the buffer stores."""
        if isinstance(batch, MicroBatches):
            return MicroBatches(self.keep(b) for b in batch)
        if self.mode == "cpu":
            return map_tensors(batch, lambda t: t.detach().to("cpu", copy=True))
        if self.mode == "index":
            if not isinstance(batch, Mapping) or self.index_key not in batch:
                keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
                raise KeyError(
                    f"replay_storage='index' needs every batch to carry its dataset indices under "
                    f"{self.index_key!r} (replay_index_key); the batch has {keys}"
                )
            return torch.as_tensor(batch[self.index_key]).detach().to("cpu", copy=True)
        return batch

    def restore(self, record: Any) -> Any:
        """The batch a stored record stands for."""
        if isinstance(record, MicroBatches):
            return MicroBatches(self.restore(r) for r in record)
        if self.mode == "index":
            batch = self.fetch(record)
            return batch if self.device is None else to_device(batch, self.device)
        if self.mode == "cpu" and self.device is not None:
            return to_device(record, self.device)
        return record


__all__ = ["MicroBatches", "ReplayStorage", "batch_nbytes", "map_tensors", "to_device"]

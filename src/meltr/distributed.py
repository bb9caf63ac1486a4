"""The few torch.distributed operations the bi-level learner needs (no-ops in a single process)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (second-order passes must run on it: DDP's
    gradient hooks do not support double backward)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def original_forward(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with the forward it had before Accelerate's mixed precision wrapped it in autocast.

    ``accelerator.prepare`` (also inside the HF Trainer) replaces ``module.forward`` by an autocast wrapper and keeps
    the original as ``module._original_forward``; a wrapper that re-enables autocast inside every call would put the
    meta step's passes in bf16/fp16, so meta steps run the original for their duration.
    """
    original = module.__dict__.get("_original_forward")
    if original is None or "forward" not in module.__dict__:
        yield module
        return
    wrapped = module.__dict__["forward"]
    module.forward = original
    try:
        yield module
    finally:
        module.forward = wrapped


def all_reduce_mean(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Average a list of tensors over processes in one flat all-reduce; detached copies in a single process."""
    tensors = [t.detach() for t in tensors]
    if not is_distributed() or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def any_process(flag: bool) -> bool:
    """True if ``flag`` is true on any process, so that every rank takes the same branch."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)

"""The backbone contract: a model used with meltr yields a mapping ``task name -> loss``.

Each loss is either a scalar (a batch-level loss) or a per-sample vector of shape ``[B]``. Everything downstream
(combiners, the bi-level learner, gradient surgery) depends on that mapping only, never on a backbone's internals.

The combiner fixes the task order. :func:`stack_task_losses` turns the mapping into one tensor in that order:

- every loss per-sample ``[B]``          -> ``[B, T]`` (per-sample mode);
- otherwise (some or all losses scalar)  -> ``[T]``, per-sample losses reduced by their mean (batch-level mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

TaskLosses = Mapping[str, Tensor]


def check_task_names(losses: Mapping[str, object], tasks: Sequence[str]) -> None:
    """Raise a ``ValueError`` naming every missing and every unexpected task.

    Args:
        losses: the mapping a backbone returned.
        tasks: the task order fixed by the combiner.
    """
    given, expected = set(losses), set(tasks)
    if given == expected:
        return
    missing = [t for t in tasks if t not in given]
    extra = sorted(given - expected)
    parts = []
    if missing:
        parts.append(f"missing task(s) {missing}")
    if extra:
        parts.append(f"unexpected task(s) {extra}")
    raise ValueError(
        "the backbone's losses do not match the combiner's tasks: "
        + "; ".join(parts)
        + f" (the combiner expects exactly {list(tasks)})"
    )


def stack_task_losses(losses: TaskLosses, tasks: Sequence[str]) -> Tensor:
    """Stack a ``task -> loss`` mapping into a tensor in the order of ``tasks``.

    Args:
        losses: the mapping returned by a backbone; each value a scalar or a ``[B]`` vector.
        tasks: the task order.

    Returns:
        ``[T]`` if any loss is a scalar, else ``[B, T]``.

    Raises:
        ValueError: a task is missing, unexpected or misspelt; a loss is not a tensor, has the wrong shape, or
            per-sample losses disagree on the batch size. The message names the task(s).
    """
    check_task_names(losses, tasks)
    for task in tasks:
        value = losses[task]
        if not isinstance(value, Tensor):
            raise ValueError(f"task {task!r}: the loss must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() > 1:
            raise ValueError(
                f"task {task!r}: a loss must be a scalar or a per-sample vector of shape [B], "
                f"got shape {tuple(value.shape)}"
            )
        if not value.is_floating_point():
            raise ValueError(f"task {task!r}: the loss must be a floating-point tensor, got {value.dtype}")
    sizes = {task: losses[task].shape[0] for task in tasks if losses[task].dim() == 1}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"per-sample losses disagree on the batch size: {sizes}")
    if len(sizes) == len(tasks):
        return torch.stack([losses[t] for t in tasks], dim=-1)
    return torch.stack([losses[t].mean() if losses[t].dim() == 1 else losses[t] for t in tasks])


def concat_task_losses(parts: Sequence[Tensor]) -> Tensor:
    """The stacked losses of a batch split into micro-batches, from each micro-batch's stacked losses.

    Per-sample losses ``[B_i, T]`` are concatenated (exactly the losses of the whole batch, for a backbone whose
    per-sample losses do not depend on the other samples); batch-level losses ``[T]`` are averaged (the whole
    batch's means when the micro-batches have equal sizes).
    """
    if not parts:
        raise ValueError("a group of micro-batches needs at least one micro-batch")
    if parts[0].dim() == 2:
        return torch.cat(list(parts), dim=0)
    return torch.stack(list(parts)).mean(0)


def nonfinite_tasks(stacked: Tensor, tasks: Sequence[str]) -> list[str]:
    """The tasks whose loss (any sample of it) is NaN or infinite."""
    bad = ~torch.isfinite(stacked.detach())
    if stacked.dim() == 2:
        bad = bad.any(dim=0)
    return [t for t, b in zip(tasks, bad.tolist(), strict=True) if b]

"""Linear combiners: fixed coefficients (single-task, equal-weight, manual) and AuxiLearn's learned weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from meltr.combine.base import COMBINERS, LossCombiner


class FixedWeights(LossCombiner):
    """``M(l) = sum_t c_t l_t`` with fixed coefficients ``c`` (no meta parameters).

    Args:
        tasks: task order.
        weights: one coefficient per task, as a sequence in task order or a ``task -> coefficient`` mapping
            (tasks left out of a mapping get 0).
        primary_task: the primary task (default: the first).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        weights: Sequence[float] | Mapping[str, float],
        primary_task: str | None = None,
    ) -> None:
        super().__init__(tasks, primary_task)
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(self.tasks))
            if unknown:
                raise ValueError(f"weights name unknown task(s) {unknown}; the tasks are {list(self.tasks)}")
            values = [float(weights.get(t, 0.0)) for t in self.tasks]
        else:
            values = [float(w) for w in weights]
            if len(values) != self.num_tasks:
                raise ValueError(f"expected {self.num_tasks} weights for tasks {list(self.tasks)}, got {len(values)}")
        coefficients = torch.tensor(values)
        if not torch.isfinite(coefficients).all():
            raise ValueError(f"weights must be finite, got {values}")
        self.register_buffer("weights", coefficients)

    def combine(self, losses: Tensor) -> Tensor:
        return (losses * self.weights.to(losses.dtype)).sum(-1)


@COMBINERS.register("single_task")
def single_task(tasks: Sequence[str], primary_task: str | None = None) -> FixedWeights:
    """Fine-tune on the primary task's loss alone (the usual practice)."""
    primary = next(iter(tasks)) if primary_task is None else primary_task
    return FixedWeights(tasks, {primary: 1.0}, primary_task=primary)


@COMBINERS.register("equal_weight")
def equal_weight(tasks: Sequence[str], primary_task: str | None = None) -> FixedWeights:
    """Multi-task learning with every loss weighted 1."""
    return FixedWeights(tasks, [1.0] * len(tuple(tasks)), primary_task=primary_task)


@COMBINERS.register("manual")
def manual(
    tasks: Sequence[str],
    primary_task: str | None = None,
    weights: Sequence[float] | Mapping[str, float] | None = None,
) -> FixedWeights:
    """Any manual coefficient vector (Table 7's schemes (A)-(E) are in the shipped config ``reproduce/table7``)."""
    if weights is None:
        raise ValueError("manual combiner: give `weights`, one coefficient per task or a mapping task -> coefficient")
    return FixedWeights(tasks, weights, primary_task=primary_task)


@COMBINERS.register("learned_linear")
class LearnedLinear(LossCombiner):
    """AuxiLearn's linear auxiliary network: ``M(l) = sum_t w_t l_t`` with learned ``w >= 0``.

    Navon et al., "Auxiliary Learning by Implicit Differentiation", ICLR 2021 (the linear combination). The weights
    start at ``init`` and are clamped at zero after every meta step, as AuxiLearn does.
    """

    def __init__(self, tasks: Sequence[str], primary_task: str | None = None, init: float = 1.0) -> None:
        super().__init__(tasks, primary_task)
        self.weights = nn.Parameter(torch.full((self.num_tasks,), float(init)))

    def combine(self, losses: Tensor) -> Tensor:
        return (losses * self.weights.to(losses.dtype)).sum(-1)

    @torch.no_grad()
    def project_(self) -> None:
        self.weights.clamp_(min=0.0)

"""The loss-combiner protocol: task losses in a fixed order -> the one loss the model trains on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from meltr._registry import Registry
from meltr.contract import stack_task_losses

COMBINERS: Registry[LossCombiner] = Registry("combiner")


class LossCombiner(nn.Module):
    """Base of every combiner: fixes the task order and validates what a backbone returns.

    A combiner is a function ``M(l; phi)`` of the task losses ``l = [l_0, ..., l_T]`` (``l_0`` the primary task's).
    Subclasses implement :meth:`combine`, which maps ``[..., T] -> [...]``; calling the module reduces that to the
    scalar training loss ``L_aux`` (the mean over samples for per-sample losses ``[B, T]``).

    Args:
        tasks: task names in the order the combiner reads them.
        primary_task: the task whose loss is ``l_0`` (default: the first of ``tasks``).
    """

    def __init__(self, tasks: Sequence[str], primary_task: str | None = None) -> None:
        super().__init__()
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("a combiner needs at least one task")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"task names must be unique, got {list(tasks)}")
        primary_task = tasks[0] if primary_task is None else primary_task
        if primary_task not in tasks:
            raise ValueError(f"primary_task {primary_task!r} is not one of the tasks {list(tasks)}")
        self.tasks = tasks
        self.primary_task = primary_task
        self.primary_index = tasks.index(primary_task)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def combine(self, losses: Tensor) -> Tensor:
        """``M(l)`` for each row: ``[T] -> []`` or ``[B, T] -> [B]``."""
        raise NotImplementedError

    def stack(self, losses: Mapping[str, Tensor] | Tensor) -> Tensor:
        """Validate and stack a ``task -> loss`` mapping (a tensor passes through after a shape check)."""
        if isinstance(losses, Mapping):
            return stack_task_losses(losses, self.tasks)
        if losses.dim() not in (1, 2) or losses.shape[-1] != self.num_tasks:
            raise ValueError(
                f"expected losses of shape [T] or [B, T] with T={self.num_tasks} ({list(self.tasks)}), "
                f"got {tuple(losses.shape)}"
            )
        return losses

    def forward(self, losses: Mapping[str, Tensor] | Tensor) -> Tensor:
        """The scalar training loss ``L_aux``: ``M(l)``, averaged over samples for per-sample losses."""
        return self.combine(self.stack(losses)).mean()

    def meta_parameters(self) -> list[nn.Parameter]:
        """The parameters ``phi`` that the meta step learns (empty for fixed combiners)."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def project_(self) -> None:
        """Keep ``phi`` in its feasible set after a meta step (a no-op unless a combiner constrains ``phi``)."""

    def sensitivity(self, losses: Mapping[str, Tensor] | Tensor) -> Tensor:
        """``dM/dl_t`` per task at the given losses (the quantity of Fig. 3b and Fig. 4 of MELTR).

        Args:
            losses: ``[T]`` or ``[B, T]`` (or a mapping), the point at which to differentiate.

        Returns:
            A tensor of the same shape as the stacked losses: per-sample derivatives for ``[B, T]``.
        """
        point = self.stack(losses).detach().clone().requires_grad_(True)
        was_training = self.training
        self.eval()
        try:
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.combine(point).sum(), point, allow_unused=True)
        finally:
            self.train(was_training)
        return torch.zeros_like(point) if grad is None else grad

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, primary_task={self.primary_task!r}"

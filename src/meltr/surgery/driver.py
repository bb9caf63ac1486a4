"""The surgery driver: task losses -> per-task gradients -> a method -> ``p.grad``.

It works on the backbone contract alone (a mapping ``task -> loss``, scalar or per-sample ``[B]``) and composes
with any combiner: given one, task ``t``'s gradient is weighted by the combiner's sensitivity ``s_t = dM/dl_t`` at
the current losses, so that ``sum_t g_t`` is exactly the gradient of the combined loss (``M(l) ~ sum_t s_t l_t``
locally) and the surgery acts on the terms of that sum. Without a combiner ``s_t = 1`` (the plain sum of losses).

Per-task gradients: one backward pass per task (``torch.autograd.grad``, graph retained), written into one flat
``[T, P]`` buffer, one row per task; the update direction ``[P]`` reaches each ``p.grad`` as a view (no copy when
the parameter's dtype is the buffer's).

Per-sample gradients (per-sample curriculum): ``autograd.grad(..., is_grads_batched=True)``, i.e. the backward pass
vmapped over one-hot output cotangents. It differentiates the per-sample losses *as the backbone computed them on the
batch*, so a contrastive loss keeps its in-batch negatives (re-running the model on one sample through
``torch.func.functional_call`` would change the loss, and the contract's batch is opaque to the driver anyway).
``chunk_size`` bounds the memory at ``[T, chunk_size, P]``.

Data parallelism: the per-task gradients are all-reduced (``all_reduce_mean``, one flat all-reduce of ``[T, P]``)
*before* the method sees them, so every process projects / gates the same global gradients and takes the same
decision. :class:`SurgeryStep` runs the forward pass on the unwrapped module (``meltr.distributed.unwrap``), and the
driver only calls ``torch.autograd.grad``, which never fires DDP's gradient hooks: DDP never averages the summed
gradient on its own. (DDP's buffer broadcast, done in its forward, is skipped with it.) Per-sample alignments are
local to each process; ``dropped`` holds local sample indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from meltr.combine.base import LossCombiner
from meltr.contract import stack_task_losses
from meltr.distributed import all_reduce_mean, any_process, unwrap
from meltr.surgery.base import SURGERY, GradientSurgery, SurgeryResult, TaskGradients, cosine_matrix

Reduce = Callable[[Sequence[Tensor]], list[Tensor]]


class ParameterLayout:
    """Where each parameter lives in a flat buffer ``[..., P]``.

    Args:
        params: the parameters, all on one device. The buffer's dtype is theirs (promoted if they differ).
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("no parameter to differentiate: give at least one tensor with requires_grad=True")
        devices = {p.device for p in self.params}
        if len(devices) > 1:
            raise ValueError(f"the parameters must share one device, got {sorted(map(str, devices))}")
        self.device = devices.pop()
        dtype = self.params[0].dtype
        for p in self.params[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        self.dtype = dtype
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.size = self.offsets[-1]

    def empty(self, *leading: int) -> Tensor:
        return torch.zeros(*leading, self.size, dtype=self.dtype, device=self.device)

    def views(self, flat: Tensor) -> list[Tensor]:
        """Views of ``flat`` ``[..., P]`` in the parameters' shapes, ``[..., *p.shape]`` each."""
        lead = flat.shape[:-1]
        return [
            flat[..., start:stop].view((*lead, *p.shape))
            for p, start, stop in zip(self.params, self.offsets, self.offsets[1:], strict=False)
        ]

    def fill(self, flat: Tensor, grads: Sequence[Tensor | None]) -> Tensor:
        """Copy ``grads`` (``None``: zero) into ``flat`` and return it."""
        for view, grad in zip(self.views(flat), grads, strict=True):
            if grad is not None:
                view.copy_(grad)
        return flat


def _gradients(output: Tensor, params: list[Tensor], grad_outputs: Tensor | None = None, batched: bool = False):
    return torch.autograd.grad(
        output,
        params,
        grad_outputs=grad_outputs,
        retain_graph=True,
        allow_unused=True,
        is_grads_batched=batched,
    )


def task_gradients(
    task_losses: Mapping[str, Tensor],
    params: Iterable[Tensor],
    combiner: LossCombiner | None = None,
    *,
    chunk_size: int | None = None,
    vectorize: bool = True,
    reduce: Reduce = all_reduce_mean,
) -> TaskGradients:
    """The per-task gradients of a backbone's losses, as the methods read them.

    Task ``t``'s gradient is ``g_t = grad_w (1/B) sum_i s_{i,t} l_{i,t}`` for per-sample losses ``[B]`` (``s`` the
    combiner's per-sample sensitivity, or 1), ``grad_w s_t l_t`` otherwise; per-sample gradients are
    ``g_{t,i} = s_{i,t} grad_w l_{i,t}`` (so ``g_t = mean_i g_{t,i}``).

    Args:
        task_losses: ``{task: loss}``, each a scalar or a ``[B]`` vector (the contract).
        params: the parameters ``w``; those without ``requires_grad`` are skipped.
        combiner: weights the tasks by ``dM/dl_t`` and fixes the task order (default: the mapping's order, weight 1).
        chunk_size: samples per batched backward pass for per-sample gradients (default: the whole batch).
        vectorize: per-sample gradients by batched backward passes; ``False`` loops over samples (for operations
            without a batching rule).
        reduce: averages a list of tensors over processes (:func:`meltr.distributed.all_reduce_mean`).
    """
    layout = ParameterLayout([p for p in params if p.requires_grad])
    tasks = tuple(combiner.tasks) if combiner is not None else tuple(task_losses)
    stacked = stack_task_losses(task_losses, tasks)
    if not stacked.requires_grad:
        raise ValueError("no task loss depends on a parameter that requires grad: nothing to differentiate")
    if combiner is not None:
        weights = combiner.sensitivity(stacked.detach()).to(stacked.dtype)
    else:
        weights = torch.ones_like(stacked)
    weights = weights.detach()
    per_sample = stacked.dim() == 2
    batch_size = stacked.shape[0] if per_sample else None

    def reduced(flat: Tensor) -> Tensor:
        return reduce([flat])[0]

    def batch_gradients(keep: Tensor | None = None) -> Tensor:
        flat = layout.empty(len(tasks))
        for t in range(len(tasks)):
            weight = weights[..., t] if keep is None else weights[..., t] * keep.to(weights.dtype)
            objective = (weight * stacked[..., t]).mean()
            layout.fill(flat[t], _gradients(objective, layout.params))
        return reduced(flat)

    flat = batch_gradients()
    if not per_sample:
        return TaskGradients(flat, tasks, any_process=any_process)

    chunk = batch_size if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")

    def sample_chunks() -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, batch_size, chunk):
            indices = torch.arange(start, min(start + chunk, batch_size), device=stacked.device)
            out = layout.empty(len(tasks), len(indices))
            for t in range(len(tasks)):
                if vectorize:
                    cotangents = torch.zeros(len(indices), batch_size, dtype=stacked.dtype, device=stacked.device)
                    cotangents[torch.arange(len(indices)), indices] = weights[indices, t]
                    layout.fill(out[t], _gradients(stacked[:, t], layout.params, cotangents, batched=True))
                else:
                    for c, i in enumerate(indices.tolist()):
                        layout.fill(out[t, c], _gradients(weights[i, t] * stacked[i, t], layout.params))
            yield indices, out

    return TaskGradients(
        flat,
        tasks,
        sample_chunks=sample_chunks,
        restrict=batch_gradients,
        batch_size=batch_size,
        any_process=any_process,
    )


@dataclass
class SurgeryStats:
    """What one surgery step measured, for logging.

    Attributes:
        step: the step the method saw (the curriculum's clock).
        method: the method's name.
        losses: each task's (batch-mean) loss.
        cosine: ``"a|b" -> cos(g_a, g_b)`` for every task pair, before surgery (0 if a gradient is zero).
        projected: whether realignment projected any gradient.
        updated: ``False`` when the curriculum vetoed the update (``p.grad`` got zeros, no optimiser step).
        gamma: the curriculum's threshold at this step.
        alignment: the batch-level alignment the curriculum measured.
        dropped_fraction: fraction of this process's samples the per-sample curriculum dropped.
        dropped: their (process-local) indices, ascending.
        sample_alignment: ``[B]`` per-sample alignments (per-sample curriculum), for precision / recall analyses.
    """

    step: int
    method: str
    losses: dict[str, float]
    cosine: dict[str, float]
    projected: bool = False
    updated: bool = True
    gamma: float | None = None
    alignment: float | None = None
    dropped_fraction: float = 0.0
    dropped: list[int] = field(default_factory=list)
    sample_alignment: Tensor | None = None

    def as_dict(self) -> dict[str, Any]:
        """A flat ``name -> number`` row (``loss/<task>``, ``cosine/<a>|<b>``); the index lists are left out."""
        row: dict[str, Any] = {
            "step": self.step,
            "projected": self.projected,
            "updated": self.updated,
            "gamma": math.nan if self.gamma is None else self.gamma,
            "alignment": math.nan if self.alignment is None else self.alignment,
            "dropped_fraction": self.dropped_fraction,
        }
        row.update({f"loss/{t}": v for t, v in self.losses.items()})
        row.update({f"cosine/{k}": v for k, v in self.cosine.items()})
        return row


def _method(method: str | GradientSurgery) -> tuple[GradientSurgery, str]:
    if isinstance(method, str):
        return SURGERY.build(method), method
    return method, type(method).__name__


def write_gradients(layout: ParameterLayout, direction: Tensor) -> None:
    """Accumulate ``direction`` ``[P]`` into each ``p.grad`` as ``backward()`` does (a view if ``p.grad`` is None)."""
    for p, view in zip(layout.params, layout.views(direction), strict=True):
        view = view.detach().to(p.dtype)
        if p.grad is None:
            p.grad = view
        else:
            p.grad.add_(view)


def surgery_backward(
    task_losses: Mapping[str, Tensor],
    params: Iterable[Tensor],
    method: str | GradientSurgery = "none",
    combiner: LossCombiner | None = None,
    *,
    step: int = 0,
    chunk_size: int | None = None,
    vectorize: bool = True,
    reduce: Reduce = all_reduce_mean,
) -> SurgeryStats:
    """``backward()`` with gradient surgery: per-task gradients -> ``method`` -> accumulated into ``p.grad``.

    With ``method="none"`` and a combiner, ``p.grad`` receives exactly the gradient of ``combiner(task_losses)``.

    Args:
        task_losses: ``{task: loss}`` from a backbone (computed on the unwrapped module under DDP).
        params: the parameters to differentiate (those without ``requires_grad`` are skipped).
        method: a registered name (``none``, ``realign``, ``curriculum``, ``both``) or a method object.
        combiner: weights task gradients by ``dM/dl_t`` (see :func:`task_gradients`).
        step: the training step (the curriculum's clock, the seed of random projection orders).
        chunk_size: samples per batched backward pass for per-sample gradients.
        vectorize: batched (vmapped) per-sample backward passes, else a loop over samples.
        reduce: averages per-task gradients over processes before the method runs.

    Returns:
        The step's :class:`SurgeryStats`.
    """
    method, name = _method(method)
    params = [p for p in params if p.requires_grad]
    grads = task_gradients(task_losses, params, combiner, chunk_size=chunk_size, vectorize=vectorize, reduce=reduce)
    result: SurgeryResult = method(grads, step)
    write_gradients(ParameterLayout(params), result.direction)
    return _stats(step, name, task_losses, grads, result)


def _stats(
    step: int, name: str, task_losses: Mapping[str, Tensor], grads: TaskGradients, result: SurgeryResult
) -> SurgeryStats:
    cosines = cosine_matrix(grads.gram())
    pairs = [(a, b) for a in range(grads.num_tasks) for b in range(a + 1, grads.num_tasks)]
    dropped = [] if result.dropped is None else result.dropped.tolist()
    return SurgeryStats(
        step=step,
        method=name,
        losses={t: float(task_losses[t].detach().mean()) for t in grads.tasks},
        cosine={f"{grads.tasks[a]}|{grads.tasks[b]}": float(cosines[a, b]) for a, b in pairs},
        projected=result.projected,
        updated=result.updated,
        gamma=result.gamma,
        alignment=result.alignment,
        dropped_fraction=len(dropped) / grads.batch_size if grads.batch_size else 0.0,
        dropped=dropped,
        sample_alignment=None if result.sample_alignment is None else result.sample_alignment.detach(),
    )


class SurgeryStep:
    """One training step with gradient surgery: forward, per-task gradients, surgery, optimiser step.

    The forward pass runs on the unwrapped module (so that under DDP nothing but the driver synchronises gradients);
    when the curriculum vetoes an update the optimiser does not step (momentum and weight decay would still move the
    weights otherwise).

    Args:
        model: a module (or DDP-wrapped module) whose ``forward(batch)`` returns ``{task: loss}``.
        combiner: the loss combiner whose terms the surgery acts on; ``None`` for the plain sum of losses.
        method: a registered method name or a method object.
        optimizer: the optimiser over the model's parameters.
        chunk_size: samples per batched backward pass for per-sample gradients.
        vectorize: batched per-sample backward passes, else a loop over samples.
    """

    def __init__(
        self,
        model: nn.Module,
        combiner: LossCombiner | None,
        method: str | GradientSurgery,
        optimizer: torch.optim.Optimizer,
        *,
        chunk_size: int | None = None,
        vectorize: bool = True,
    ) -> None:
        self.model = model
        self.combiner = combiner
        self.method, self.method_name = _method(method)
        self.optimizer = optimizer
        self.chunk_size = chunk_size
        self.vectorize = vectorize
        self.params = [p for p in unwrap(model).parameters() if p.requires_grad]
        self.steps = 0

    def step(self, batch: Any) -> SurgeryStats:
        """One step on ``batch``; the curriculum's clock is the number of steps taken before it."""
        self.model.train()
        losses = unwrap(self.model)(batch)
        self.optimizer.zero_grad(set_to_none=True)
        stats = surgery_backward(
            losses,
            self.params,
            self.method,
            self.combiner,
            step=self.steps,
            chunk_size=self.chunk_size,
            vectorize=self.vectorize,
        )
        stats.method = self.method_name
        if stats.updated:
            self.optimizer.step()
        self.steps += 1
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])


__all__ = [
    "ParameterLayout",
    "SurgeryStats",
    "SurgeryStep",
    "surgery_backward",
    "task_gradients",
    "write_gradients",
]

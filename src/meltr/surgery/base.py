"""The gradient-surgery protocol: per-task gradients in, one update direction out.

A method is a callable ``method(grads, step) -> SurgeryResult``. ``grads`` is a :class:`TaskGradients`: the flat
per-task gradients ``G`` of one batch, ``[T, P]`` (row ``t`` is task ``t``'s gradient over all ``P`` parameter
entries), plus, when the losses are per-sample, on-demand access to per-sample gradients and to the gradients of a
subset of the samples. ``step`` is the training step (the curriculum's clock and the seed of random orders).

Everything a method decides is a function of ``G``, of the ``T x T`` Gram matrix ``G G^T`` and of ``step``, so every
process of a data-parallel run, holding the same all-reduced ``G``, takes the same decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from meltr._registry import Registry


@dataclass
class SurgeryResult:
    """What a method returns.

    Attributes:
        direction: ``[P]``, the update direction (a gradient: the optimiser descends along it).
        updated: ``False`` when the method vetoes the update (the curriculum); ``direction`` is then zero and the
            driver skips the optimiser step.
        projected: whether any task gradient was projected (realignment).
        gamma: the curriculum's threshold at this step.
        alignment: the batch-level alignment the curriculum compared with ``gamma``.
        sample_alignment: ``[B]``, each sample's alignment (per-sample curriculum).
        dropped: indices of the samples left out of the update (per-sample curriculum), ascending.
    """

    direction: Tensor
    updated: bool = True
    projected: bool = False
    gamma: float | None = None
    alignment: float | None = None
    sample_alignment: Tensor | None = None
    dropped: Tensor | None = None


class GradientSurgery(Protocol):
    """``method(grads, step) -> SurgeryResult``."""

    def __call__(self, grads: TaskGradients, step: int = 0) -> SurgeryResult: ...


SURGERY: Registry[GradientSurgery] = Registry("gradient surgery")

SampleChunks = Callable[[], Iterator[tuple[Tensor, Tensor]]]


class TaskGradients:
    """The per-task gradients of one batch, as a method reads them.

    Per-sample gradients are ``g_{t,i}`` with ``g_t = (1/B) sum_i g_{t,i}``, the batch gradient (the mean over
    samples, as the contract reduces per-sample losses).

    Args:
        flat: ``[T, P]``, row ``t`` the (combiner-weighted, all-reduced) gradient of task ``t``.
        tasks: the task names, in row order (default ``"0", "1", ...``).
        sample_chunks: a function yielding ``(indices [C], per-sample gradients [T, C, P])`` chunk by chunk, so that
            ``[T, B, P]`` never has to be held at once; ``None`` when the losses are not per-sample.
        restrict: ``keep [B] bool -> [T, P]``, the batch gradients with the samples not kept weighing zero (still
            divided by ``B``), all-reduced like ``flat``.
        batch_size: ``B`` (with ``sample_chunks``).
        any_process: ``flag -> bool``, true if the flag is true on any process (identity in a single process).
    """

    def __init__(
        self,
        flat: Tensor,
        tasks: tuple[str, ...] | None = None,
        *,
        sample_chunks: SampleChunks | None = None,
        restrict: Callable[[Tensor], Tensor] | None = None,
        batch_size: int | None = None,
        any_process: Callable[[bool], bool] = bool,
    ) -> None:
        if flat.dim() != 2:
            raise ValueError(f"task gradients must be [T, P], got shape {tuple(flat.shape)}")
        self.flat = flat
        self.tasks = tuple(str(t) for t in range(flat.shape[0])) if tasks is None else tuple(tasks)
        if len(self.tasks) != flat.shape[0]:
            raise ValueError(f"{len(self.tasks)} task names for {flat.shape[0]} rows of gradients")
        self._sample_chunks = sample_chunks
        self._restrict = restrict
        self.batch_size = batch_size
        self.any_process = any_process

    @classmethod
    def from_samples(cls, per_sample: Tensor, tasks: tuple[str, ...] | None = None) -> TaskGradients:
        """Task gradients from explicit per-sample gradients ``[B, T, P]`` (tests, small problems)."""
        if per_sample.dim() != 3:
            raise ValueError(f"per-sample gradients must be [B, T, P], got shape {tuple(per_sample.shape)}")
        batch = per_sample.shape[0]

        def chunks() -> Iterator[tuple[Tensor, Tensor]]:
            yield torch.arange(batch), per_sample.transpose(0, 1)

        def restrict(keep: Tensor) -> Tensor:
            return (per_sample * keep.to(per_sample.dtype)[:, None, None]).sum(0) / batch

        return cls(per_sample.mean(0), tasks, sample_chunks=chunks, restrict=restrict, batch_size=batch)

    @property
    def flat(self) -> Tensor:
        return self._flat

    @flat.setter
    def flat(self, value: Tensor) -> None:
        self._flat = value
        self._gram: Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return self.flat.shape[0]

    @property
    def has_samples(self) -> bool:
        return self._sample_chunks is not None

    def gram(self) -> Tensor:
        """``G G^T``, ``[T, T]``: every inner product between task gradients (computed once)."""
        if self._gram is None:
            self._gram = self.flat @ self.flat.T
        return self._gram

    def sample_chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(indices [C], per-sample gradients [T, C, P])`` over the batch."""
        if self._sample_chunks is None:
            raise ValueError(
                "this method needs per-sample gradients, but the losses are not per-sample: have every task return "
                "a [B] vector of per-sample losses, or use the batch-level variant (per_sample=False)"
            )
        return self._sample_chunks()

    def restrict(self, keep: Tensor) -> Tensor:
        """``[T, P]``: the batch gradients of the kept samples only (``keep``: ``[B]`` booleans)."""
        if self._restrict is None:
            raise ValueError("restricting the gradients to some samples needs per-sample losses")
        return self._restrict(keep)


def pairwise_alignment(gram: Tensor, measure: str) -> Tensor:
    """Alignment of every pair of task gradients from their Gram matrix ``[..., T, T]``.

    ``"dot"``: ``g_a . g_b``; ``"cosine"``: ``g_a . g_b / (|g_a| |g_b|)``, defined as 0 when either is zero (so a
    zero gradient never yields NaN).
    """
    if measure == "dot":
        return gram
    if measure == "cosine":
        norms = gram.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()
        scale = norms.unsqueeze(-1) * norms.unsqueeze(-2)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.where(scale > 0, gram / safe, torch.zeros_like(gram))
    raise ValueError(f"unknown alignment measure {measure!r}; choose 'dot' or 'cosine'")


def cosine_matrix(gram: Tensor) -> Tensor:
    """Pairwise cosines of the task gradients, ``[T, T]`` (0 where a gradient is zero)."""
    return pairwise_alignment(gram, "cosine")


@SURGERY.register("none")
@dataclass(frozen=True)
class PlainSum:
    """No surgery: the update direction is ``sum_t g_t``, the gradient of the (locally linearised) combined loss."""

    def __call__(self, grads: TaskGradients, step: int = 0) -> SurgeryResult:
        return SurgeryResult(direction=grads.flat.sum(0))


def build_surgery(name: str, **options) -> GradientSurgery:
    """Build the gradient-surgery method registered under ``name`` (see ``SURGERY.names()``) with its options."""
    return SURGERY.build(name, **options)

"""Gradient-based curriculum learning (CL, Algorithm 2 of Wu et al., NeurIPS 2022) and its threshold schedules.

Algorithm 2: at each step the threshold ``gamma`` is raised ("curriculumly"), the two task gradients are computed
and flattened, and the parameters are updated with ``g_va + g_vt`` only ``if g_va . g_vt > gamma``; otherwise the
step makes no update. The listing compares the inner product; the text calls ``cos(g_va, g_vt)`` the indicator of
misalignment. Both are offered (``measure="dot"``, the listing and the default, or ``"cosine"``); the cosine is
scale-free, so its ``gamma`` lives in ``[-1, 1]`` whatever the loss scale.

Granularity. ``per_sample=False`` is the listing: one decision for the whole batch gradient. ``per_sample=True``
follows the text ("gradually identifies and removes more misaligned samples"): each sample's alignment
``a_i = align(g_va,i, g_vt,i)`` is computed from its own per-sample gradients, the samples with ``a_i <= gamma`` are
dropped (they weigh zero; the others keep their weight ``1/B``), and the update is the sum of the task gradients of the
kept samples. ``gamma`` is then on the scale of per-sample gradients.

More than two tasks: a batch (or a sample) passes only if every pair of tasks does, i.e. the alignment compared with
``gamma`` is the minimum over pairs ``a < b`` (exactly ``g_0 . g_1`` for two tasks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from meltr.surgery.base import SURGERY, SurgeryResult, TaskGradients, pairwise_alignment
from meltr.surgery.realign import projection_orders, realigned_direction, step_generator

SCHEDULES = ("constant", "linear", "step", "cosine")
MEASURES = ("dot", "cosine")


@dataclass(frozen=True)
class GammaSchedule:
    """The curriculum's threshold ``gamma(step)``: monotone from ``start`` to ``end`` over ``steps`` steps, then held.

    With ``p = min(step, steps) / steps``:

    - ``constant``: ``gamma = start``;
    - ``linear``:   ``start + (end - start) p``;
    - ``step``:     ``start + (end - start) floor(stages p) / stages`` (``stages`` equal raises, the last at ``steps``);
    - ``cosine``:   ``start + (end - start) (1 - cos(pi p)) / 2``.

    ``end >= start`` raises the bar over training, as the paper does; ``end < start`` gives a monotone decrease.

    Args:
        kind: one of ``constant``, ``linear``, ``step``, ``cosine``.
        start: ``gamma`` at step 0.
        end: ``gamma`` from step ``steps`` on (``None``: ``start``).
        steps: steps over which ``gamma`` moves from ``start`` to ``end``.
        stages: number of raises of the ``step`` schedule.
    """

    kind: str = "constant"
    start: float = 0.0
    end: float | None = None
    steps: int = 1
    stages: int = 4

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown gamma schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if self.steps < 1 or self.stages < 1:
            raise ValueError(f"steps and stages must be at least 1, got steps={self.steps}, stages={self.stages}")
        if not math.isfinite(self.start) or (self.end is not None and not math.isfinite(self.end)):
            raise ValueError(f"gamma's start and end must be finite, got start={self.start}, end={self.end}")
        if self.kind == "constant" and self.end is not None and self.end != self.start:
            raise ValueError(f"a constant schedule has end == start; got start={self.start}, end={self.end}")

    def __call__(self, step: int) -> float:
        start = float(self.start)
        end = start if self.end is None else float(self.end)
        done = min(max(int(step), 0), self.steps)
        if self.kind == "constant" or done == 0:
            return start
        if done == self.steps:
            return end
        if self.kind == "linear":
            fraction = done / self.steps
        elif self.kind == "step":
            fraction = (done * self.stages // self.steps) / self.stages
        else:
            fraction = (1.0 - math.cos(math.pi * done / self.steps)) / 2.0
        # Clamping keeps the rounded value from overshooting ``end`` just before the last step.
        return min(max(start + (end - start) * fraction, min(start, end)), max(start, end))


def as_schedule(schedule: GammaSchedule | Mapping[str, Any] | float) -> GammaSchedule:
    """A schedule from itself, from its fields as a mapping (YAML), or from a number (a constant ``gamma``)."""
    if isinstance(schedule, GammaSchedule):
        return schedule
    if isinstance(schedule, Mapping):
        return GammaSchedule(**schedule)
    if isinstance(schedule, int | float):
        return GammaSchedule("constant", float(schedule))
    raise TypeError(f"expected a GammaSchedule, a mapping of its fields or a number, got {type(schedule).__name__}")


def alignment(gram: Tensor, measure: str = "dot") -> Tensor:
    """The alignment CL compares with ``gamma``: the minimum over task pairs ``a < b`` of ``g_a . g_b`` (``"dot"``)
    or of their cosine (``"cosine"``, 0 for a zero gradient), from Gram matrices ``[..., T, T]`` -> ``[...]``."""
    num_tasks = gram.shape[-1]
    if num_tasks < 2:
        raise ValueError(f"the curriculum compares task gradients and needs at least two tasks, got {num_tasks}")
    rows, cols = torch.triu_indices(num_tasks, num_tasks, 1, device=gram.device)
    return pairwise_alignment(gram, measure)[..., rows, cols].amin(-1)


def sample_alignments(grads: TaskGradients, measure: str = "dot") -> Tensor:
    """``[B]``: each sample's alignment, from its per-sample gradients, chunk by chunk."""
    out = torch.empty(grads.batch_size or 0, dtype=grads.flat.dtype, device=grads.flat.device)
    for indices, chunk in grads.sample_chunks():
        per_sample = chunk.transpose(0, 1)  # [C, T, P]
        out[indices] = alignment(per_sample @ per_sample.transpose(1, 2), measure)
    return out


def _check(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown alignment measure {measure!r}; choose one of {', '.join(MEASURES)}")


def curriculum_select(
    grads: TaskGradients, gamma: float, measure: str = "dot", per_sample: bool = False
) -> tuple[Tensor, SurgeryResult]:
    """The gradients CL lets through, ``[T, P]``, and the decision (a result whose ``direction`` is still unset).

    Batch level: ``G`` if ``align(G) > gamma`` else zeros. Per sample: the gradients of the samples with
    ``a_i > gamma``. Every process calls ``grads.restrict`` (an all-reduce) whatever its own samples, and the update
    happens if any sample is kept on any process.
    """
    batch_alignment = float(alignment(grads.gram(), measure))
    if not per_sample:
        keep = batch_alignment > gamma
        kept = grads.flat if keep else torch.zeros_like(grads.flat)
        decision = SurgeryResult(grads.flat.new_zeros(()), updated=keep, gamma=gamma, alignment=batch_alignment)
        return kept, decision
    scores = sample_alignments(grads, measure)
    keep_mask = scores > gamma  # NaN alignments are dropped too
    kept = grads.restrict(keep_mask)
    updated = grads.any_process(bool(keep_mask.any()))
    decision = SurgeryResult(
        grads.flat.new_zeros(()),
        updated=updated,
        gamma=gamma,
        alignment=batch_alignment,
        sample_alignment=scores,
        dropped=(~keep_mask).nonzero().flatten(),
    )
    return kept, decision


@SURGERY.register("curriculum")
@dataclass(frozen=True)
class Curriculum:
    """CL: update only with what is aligned beyond ``gamma(step)`` (Algorithm 2 of Wu et al., NeurIPS 2022).

    Args:
        schedule: ``gamma(step)``: a :class:`GammaSchedule`, its fields as a mapping, or a number (constant).
        measure: ``"dot"`` (Algorithm 2's ``g_va . g_vt``) or ``"cosine"`` (the text's ``cos(g_va, g_vt)``).
        per_sample: decide per sample (needs per-sample losses) instead of once for the batch.
    """

    schedule: GammaSchedule | Mapping[str, Any] | float = GammaSchedule()
    measure: str = "dot"
    per_sample: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", as_schedule(self.schedule))
        _check(self.measure)

    def __call__(self, grads: TaskGradients, step: int = 0) -> SurgeryResult:
        kept, result = curriculum_select(grads, self.schedule(step), self.measure, self.per_sample)
        result.direction = kept.sum(0) if result.updated else torch.zeros_like(grads.flat[0])
        return result


@SURGERY.register("both")
@dataclass(frozen=True)
class RealignCurriculum:
    """ "+ Both" of Wu et al. (NeurIPS 2022): CL selects (the batch, or its aligned samples), then GR realigns the task
    gradients of what was selected and sums them.

    The curriculum reads the original gradients. At batch level with ``measure="dot"`` and ``gamma >= 0`` a batch
    that passes has ``g_a . g_b > 0`` and realignment changes nothing; the two interact per sample or with
    ``gamma < 0``.

    Args:
        schedule: ``gamma(step)`` (see :class:`Curriculum`).
        measure: ``"dot"`` or ``"cosine"``.
        per_sample: per-sample curriculum.
        seed: seed of the realignment's random projection orders (more than two tasks).
    """

    schedule: GammaSchedule | Mapping[str, Any] | float = GammaSchedule()
    measure: str = "dot"
    per_sample: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", as_schedule(self.schedule))
        _check(self.measure)

    def __call__(self, grads: TaskGradients, step: int = 0) -> SurgeryResult:
        kept, result = curriculum_select(grads, self.schedule(step), self.measure, self.per_sample)
        if not result.updated:
            result.direction = torch.zeros_like(grads.flat[0])
            return result
        orders = projection_orders(grads.num_tasks, step_generator(self.seed, step))
        gram = grads.gram() if kept is grads.flat else None  # batch level: the Gram matrix is already known
        result.direction, result.projected = realigned_direction(kept, orders, gram)
        return result

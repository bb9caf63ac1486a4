"""Cross-modality gradient realignment (GR, Algorithm 1 of Wu et al., NeurIPS 2022) and its PCGrad generalisation.

Two tasks (Algorithm 1): when ``g_a . g_b < 0``, each gradient is projected onto the normal plane of the *original*
other one, and the two are summed::

    g_a' = g_a - (g_a . g_b / |g_b|^2) g_b,        g_b' = g_b - (g_b . g_a / |g_a|^2) g_a,        d = g_a' + g_b'.

Both projections read the original vectors (the algorithm copies ``g_hat <- g`` first and projects ``g_hat_va``
against ``g_vt``, then ``g_hat_vt`` against ``g_va``, never against a projected vector); the paper's listing drops
the trailing ``g_vt`` / ``g_va`` factor of the projection, a typo: the text says "re-projecting to the orthogonal
direction to each other".

``T`` tasks: PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1). For each task
``i``, ``g_i^PC <- g_i``; for each other task ``j`` in a random order, if ``g_i^PC . g_j < 0`` then
``g_i^PC <- g_i^PC - (g_i^PC . g_j / |g_j|^2) g_j`` (the running ``g_i^PC`` against the original ``g_j``); the
direction is ``sum_i g_i^PC``. With two tasks this is exactly Algorithm 1 above, whatever the order.

Every ``g_i^PC`` is a combination ``sum_k C_ik g_k`` of the original gradients, and every inner product the
procedure needs is one of the Gram matrix ``G G^T``; so the projections run on ``T x T`` numbers in float64 and the
``[T, P]`` gradients are read twice: once for the Gram matrix, once for the final combination ``(1^T C) G``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from meltr.surgery.base import SURGERY, SurgeryResult, TaskGradients

Orders = Sequence[Sequence[int]]


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, step)``: every process draws the same random orders."""
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be non-negative, got seed={seed}, step={step}")
    return torch.Generator().manual_seed(seed * 2**32 + step)


def projection_orders(num_tasks: int, generator: torch.Generator | None = None) -> list[list[int]]:
    """For each task, the order in which the other tasks are visited: random if ``generator``, else ascending."""
    orders = []
    for i in range(num_tasks):
        order = (
            torch.randperm(num_tasks, generator=generator).tolist() if generator is not None else list(range(num_tasks))
        )
        orders.append([j for j in order if j != i])
    return orders


def realign_coefficients(gram: Tensor, orders: Orders | None = None) -> tuple[Tensor, bool]:
    """The PCGrad combination matrix ``C`` (``g_i^PC = sum_k C_ik g_k``) from the Gram matrix of the gradients.

    Args:
        gram: ``[T, T]``, ``gram[i, j] = g_i . g_j``.
        orders: ``orders[i]``, the other tasks in the order task ``i`` is projected against them (ascending if
            ``None``).

    Returns:
        ``(C, projected)``: ``C`` ``[T, T]`` in float64 on the CPU, and whether any projection happened. A zero
        ``g_j`` is never projected onto (``g_i . g_j = 0`` is no conflict), so zero gradients give no NaN.
    """
    num_tasks = gram.shape[0]
    if gram.shape != (num_tasks, num_tasks):
        raise ValueError(f"expected a square Gram matrix, got shape {tuple(gram.shape)}")
    gram = gram.detach().to("cpu", torch.float64)
    orders = projection_orders(num_tasks) if orders is None else orders
    coefficients = torch.eye(num_tasks, dtype=torch.float64)
    projected = False
    for i in range(num_tasks):
        for j in orders[i]:
            if j == i:
                continue
            norm_sq = gram[j, j]
            conflict = coefficients[i] @ gram[:, j]  # g_i^PC . g_j
            # A zero (or underflowed) |g_j|^2 cannot be projected onto; its inner products vanish with it.
            if conflict < 0 and norm_sq > 0:
                coefficients[i, j] -= conflict / norm_sq
                projected = True
    return coefficients, projected


def realign_gradients(
    flat: Tensor, orders: Orders | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, bool]:
    """The realigned per-task gradients ``[T, P]`` and whether any projection happened.

    Args:
        flat: ``[T, P]``, one gradient per row.
        orders: explicit projection orders (see :func:`realign_coefficients`); overrides ``generator``.
        generator: draws a random order per task (PCGrad); ascending orders without one.
    """
    if orders is None:
        orders = projection_orders(flat.shape[0], generator)
    coefficients, projected = realign_coefficients(flat @ flat.T, orders)
    if not projected:
        return flat, False
    return coefficients.to(flat.device, flat.dtype) @ flat, True


def realigned_direction(flat: Tensor, orders: Orders, gram: Tensor | None = None) -> tuple[Tensor, bool]:
    """``sum_i g_i^PC`` ``[P]`` (exactly ``flat.sum(0)`` when nothing conflicts) and whether anything was projected.

    Args:
        flat: ``[T, P]``, one gradient per row.
        orders: the projection orders (see :func:`realign_coefficients`).
        gram: ``flat @ flat.T`` if already at hand.
    """
    coefficients, projected = realign_coefficients(flat @ flat.T if gram is None else gram, orders)
    if not projected:
        return flat.sum(0), False
    return coefficients.sum(0).to(flat.device, flat.dtype) @ flat, True


@SURGERY.register("realign")
@dataclass(frozen=True)
class Realign:
    """GR: Algorithm 1 of Wu et al. (NeurIPS 2022) for two tasks, PCGrad (Yu et al., NeurIPS 2020) for more.

    Args:
        seed: seed of the random projection orders (drawn afresh at each step from ``(seed, step)``, so runs and
            processes agree); irrelevant for two tasks.
    """

    seed: int = 0

    def __call__(self, grads: TaskGradients, step: int = 0) -> SurgeryResult:
        orders = projection_orders(grads.num_tasks, step_generator(self.seed, step))
        direction, projected = realigned_direction(grads.flat, orders, grads.gram())
        return SurgeryResult(direction=direction, projected=projected)

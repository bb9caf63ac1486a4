"""Linear solvers of ``H q = b`` from Hessian-vector products, as small factories (torchopt's ``linear_solve``
style): ``solve_cg(**options)`` and ``solve_neumann(**options)`` return ``solve(hvp, b, stats=None) -> q``.

``hvp(v)`` is ``H v`` for a parameter list ``v``; ``b`` and ``q`` are parameter lists. ``stats``, if given, is a
dict that receives the solver's diagnostics (``cg_residual``, ``cg_negative_curvature``,
``neumann_last_term_norm``). The implicit hypergradient estimators (:mod:`meltr.hypergrad.estimators`) are one
solver each around the same mixed term.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from meltr.hypergrad.linalg import Params, dot

HVP = Callable[[Params], Params]
Solve = Callable[..., Params]


def solve_neumann(terms: int = 3, lr: float = 0.1) -> Solve:
    """The truncated Neumann series ``q = lr * sum_{j=0}^{terms} (I - lr H)^j b`` (Eq. 10 of MELTR, AuxiLearn's
    AID-FP): exact in the limit of many terms when ``0 < lr < 2 / lambda_max(H)``.

    Args:
        terms: number of Hessian-vector products.
        lr: the series' step size.
    """

    def solve(hvp: HVP, b: Params, stats: dict[str, float] | None = None) -> Params:
        total = [x.clone() for x in b]
        current = b
        for _ in range(terms):
            hessian_vector = hvp(current)
            current = [c - lr * h for c, h in zip(current, hessian_vector, strict=True)]
            total = [t + c for t, c in zip(total, current, strict=True)]
        if stats is not None:
            stats["neumann_last_term_norm"] = float(torch.sqrt(dot(current, current)))
        return [lr * t for t in total]

    return solve


def solve_cg(iters: int = 5, damping: float = 0.0, tol: float = 1e-10) -> Solve:
    """Conjugate gradient on ``(H + damping I) q = b``, started at zero.

    Stops after ``iters`` iterations, at a residual ``tol * ||b||``, or on non-positive curvature (a non-convex
    backbone's Hessian may be indefinite; the iterate reached so far is kept, or the search direction itself on the
    first iteration).

    Args:
        iters: maximum number of iterations.
        damping: Tikhonov damping added to ``H``.
        tol: relative residual at which to stop.
    """

    def solve(hvp: HVP, b: Params, stats: dict[str, float] | None = None) -> Params:
        stats = {} if stats is None else stats
        solution = [torch.zeros_like(x) for x in b]
        residual = [x.clone() for x in b]
        direction = [x.clone() for x in b]
        residual_sq = dot(residual, residual)
        target = tol * torch.sqrt(residual_sq)
        for iteration in range(iters):
            if torch.sqrt(residual_sq) <= target:
                break
            product = hvp(direction)
            if damping:
                product = [h + damping * d for h, d in zip(product, direction, strict=True)]
            curvature = dot(direction, product)
            if curvature <= 0:
                if iteration == 0:
                    solution = direction
                stats["cg_negative_curvature"] = 1.0
                break
            step = residual_sq / curvature
            solution = [s + step * d for s, d in zip(solution, direction, strict=True)]
            residual = [r - step * h for r, h in zip(residual, product, strict=True)]
            new_sq = dot(residual, residual)
            direction = [r + (new_sq / residual_sq) * d for r, d in zip(residual, direction, strict=True)]
            residual_sq = new_sq
        stats["cg_residual"] = float(torch.sqrt(residual_sq))
        return solution

    return solve


__all__ = ["HVP", "Solve", "solve_cg", "solve_neumann"]

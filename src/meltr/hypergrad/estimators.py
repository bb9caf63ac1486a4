"""Hypergradient estimators: one protocol, one row of Table 8 of MELTR each.

An estimator is a callable ``estimator(problem) -> [dL_pri/dphi per meta parameter]``. They share the implicit
form (Eq. 9 of MELTR, with the regulariser's direct term)

    dL_pri/dphi = d_phi L_pri - grad_phi <q, grad_w L_aux>,    q ~ H^-1 grad_w L_pri,    H = grad_w^2 L_aux,

and differ in ``q``; the unrolled estimator differentiates through an explicit step instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from meltr._registry import Registry
from meltr.hypergrad.problem import MetaProblem, Params, dot

Estimator = Callable[[MetaProblem], Params]
ESTIMATORS: Registry[Estimator] = Registry("hypergradient estimator")


def _check(estimator: object, **ok: bool) -> None:
    """Raise a ``ValueError`` naming the first option whose check failed."""
    for name, passed in ok.items():
        if not passed:
            raise ValueError(
                f"{type(estimator).__name__} option {name!r} is out of range, got {getattr(estimator, name)!r} "
                "(counts are non-negative integers, step sizes finite and positive)"
            )


def _subtract(direct: Params, mixed: Params, scale: float = 1.0) -> Params:
    return [d - scale * m for d, m in zip(direct, mixed, strict=True)]


@ESTIMATORS.register("identity")
@dataclass(frozen=True)
class Identity:
    """AID-FP-Lite, MELTR's own estimator (Kim et al., CVPR 2023, Eq. 11 and Algorithm 1): ``H = I``.

    ``dL_pri/dphi ~ d_phi L_pri - grad_phi <grad_w L_pri, grad_w L_aux>``.
    """

    def __call__(self, problem: MetaProblem) -> Params:
        v, direct = problem.primary_gradients()
        return _subtract(direct, problem.mixed(v))


def _neumann_series(problem: MetaProblem, v: Params, terms: int, lr: float, fresh_batches: bool) -> Params:
    """``q = lr * sum_{j=0}^{terms} (I - lr H)^j v``, the truncated Neumann series of ``H^-1 v`` (Eq. 10)."""
    total = [x.clone() for x in v]
    current = v
    aux_grad = None
    for _ in range(terms):
        if fresh_batches or aux_grad is None:
            batch = problem.sample_train_batch() if fresh_batches and problem.sample_train_batch else None
            aux_grad = problem.aux_gradient(batch, create_graph=True)
        hessian_vector = problem.hvp(aux_grad, current)
        current = [c - lr * h for c, h in zip(current, hessian_vector, strict=True)]
        total = [t + c for t, c in zip(total, current, strict=True)]
    problem.stats["neumann_last_term_norm"] = float(torch.sqrt(dot(current, current)))
    return [lr * t for t in total]


@ESTIMATORS.register("neumann")
@dataclass(frozen=True)
class Neumann:
    """AID-FP as in AuxiLearn (Navon et al., ICLR 2021; Lorraine et al., AISTATS 2020): truncated Neumann series.

    ``H^-1 ~ lr * sum_{j=0}^{terms} (I - lr H)^j`` with Hessian-vector products on the train-side batch; exact in the
    limit of many terms when ``0 < lr < 2 / lambda_max(H)``.

    Args:
        terms: number of Hessian-vector products (AuxiLearn: 3).
        lr: the series' step size.
        fresh_batches: each Hessian-vector product on a fresh train-side batch (StocBiO, see :func:`stocbio`).
    """

    terms: int = 3
    lr: float = 0.1
    fresh_batches: bool = False

    def __post_init__(self) -> None:
        _check(self, terms=self.terms >= 0, lr=math.isfinite(self.lr) and self.lr > 0)

    def __call__(self, problem: MetaProblem) -> Params:
        v, direct = problem.primary_gradients()
        q = _neumann_series(problem, v, self.terms, self.lr, fresh_batches=self.fresh_batches)
        return _subtract(direct, problem.mixed(q))


@ESTIMATORS.register("stocbio")
def stocbio(terms: int = 3, lr: float = 0.1) -> Neumann:
    """StocBiO (Ji, Yang and Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design", ICML 2021).

    The Neumann series of :class:`Neumann`, but each Hessian-vector product on a fresh train-side batch, so that the
    estimate of ``H^-1`` averages over data; the mixed term uses the step's own train-side batch.
    """
    return Neumann(terms, lr, fresh_batches=True)


@ESTIMATORS.register("cg")
@dataclass(frozen=True)
class ConjugateGradient:
    """AID-CG (Pedregosa, ICML 2016; Grazzi et al., ICML 2020): solve ``(H + damping I) q = grad_w L_pri`` by CG.

    Conjugate gradient on Hessian-vector products, started at zero, stopped after ``iters`` iterations, at a
    residual ``tol * ||grad_w L_pri||``, or on non-positive curvature (a non-convex backbone's Hessian may be
    indefinite; the iterate reached so far is kept, or the search direction itself on the first iteration).

    Args:
        iters: maximum number of iterations.
        damping: Tikhonov damping added to ``H``.
        tol: relative residual at which to stop.
    """

    iters: int = 5
    damping: float = 0.0
    tol: float = 1e-10

    def __post_init__(self) -> None:
        _check(
            self,
            iters=self.iters >= 1,
            damping=math.isfinite(self.damping) and self.damping >= 0,
            tol=math.isfinite(self.tol) and self.tol >= 0,
        )

    def __call__(self, problem: MetaProblem) -> Params:
        v, direct = problem.primary_gradients()
        aux_grad = problem.aux_gradient(create_graph=True)
        solution = [torch.zeros_like(x) for x in v]
        residual = [x.clone() for x in v]
        direction = [x.clone() for x in v]
        residual_sq = dot(residual, residual)
        target = self.tol * torch.sqrt(residual_sq)
        for iteration in range(self.iters):
            if torch.sqrt(residual_sq) <= target:
                break
            product = problem.hvp(aux_grad, direction)
            if self.damping:
                product = [h + self.damping * d for h, d in zip(product, direction, strict=True)]
            curvature = dot(direction, product)
            if curvature <= 0:
                if iteration == 0:
                    solution = direction
                problem.stats["cg_negative_curvature"] = 1.0
                break
            step = residual_sq / curvature
            solution = [s + step * d for s, d in zip(solution, direction, strict=True)]
            residual = [r - step * h for r, h in zip(residual, product, strict=True)]
            new_sq = dot(residual, residual)
            direction = [r + (new_sq / residual_sq) * d for r, d in zip(residual, direction, strict=True)]
            residual_sq = new_sq
        problem.stats["cg_residual"] = float(torch.sqrt(residual_sq))
        return _subtract(direct, problem.mixed(solution, aux_grad))


@ESTIMATORS.register("unrolled")
@dataclass(frozen=True)
class Unrolled:
    """ITD, Meta-Weight-Net style (Shu et al., NeurIPS 2019): differentiate through one explicit look-ahead step.

    With ``w' = w - lr * grad_w L_aux(w, phi)`` (``lr`` the inner learning rate),

        d/dphi L_pri(w', phi) = d_phi L_pri(w', phi) - lr * grad_phi <grad_w' L_pri(w', phi), grad_w L_aux(w, phi)>,

    which is exactly autograd through the step, computed with the same mixed-term backends as the AID estimators.

    Args:
        lr: look-ahead step size (default: the learner's inner learning rate).
    """

    lr: float | None = None

    def __post_init__(self) -> None:
        _check(self, lr=self.lr is None or (math.isfinite(self.lr) and self.lr > 0))

    def __call__(self, problem: MetaProblem) -> Params:
        lr = problem.lookahead_lr if self.lr is None else self.lr
        aux_grad = problem.aux_gradient(create_graph=problem.backend == "double_backward")
        step = problem.reduce([g.detach() for g in aux_grad])
        lookahead = [(w.detach() - lr * g).requires_grad_(True) for w, g in zip(problem.params, step, strict=True)]
        v, direct = problem.primary_gradients(params=lookahead)
        return _subtract(direct, problem.mixed(v, aux_grad), scale=lr)


def build_estimator(name: str, **options) -> Estimator:
    """Build the estimator registered under ``name`` (see ``ESTIMATORS.names()``) with its options."""
    return ESTIMATORS.build(name, **options)

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

from meltr._registry import Registry
from meltr.hypergrad.linalg import Params
from meltr.hypergrad.problem import MetaProblem
from meltr.hypergrad.solvers import solve_cg, solve_neumann

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


HVP_ROUTES = ("reverse", "forward")
"""How the Hessian-based estimators compute ``H v``: ``reverse`` (a backward through a ``create_graph`` gradient
built once per meta step: :meth:`MetaProblem.hvp`) or ``forward`` (forward-over-reverse, no graph kept:
:meth:`MetaProblem.hvp_forward`). Both are exact. ``reverse`` is every backend's default: on the UniVL-style
backbone a forward-over-reverse product costs about twice a reverse one and more memory
(``python benchmarks/hvp_routes.py``, docs/hypergrad-benchmark.md)."""


def _route(estimator: object, problem: MetaProblem) -> str:
    """The estimator's ``hvp`` option, else the backend's ``hvp_route`` attribute, else ``reverse``."""
    chosen = getattr(estimator, "hvp", None)
    return chosen or getattr(problem.backend, "hvp_route", "reverse")


class _Products:
    """``H v`` on the step's train-side batch by the chosen route; the reverse route builds ``grad_w L_aux`` with
    its graph at the first product and keeps it for the others and for the mixed term, which every backend then
    takes through it (exact, and cheaper than a new pass: :func:`meltr.hypergrad.backends._through_kept_graph`)."""

    def __init__(self, problem: MetaProblem, route: str) -> None:
        self.problem, self.route = problem, route
        self.aux_grad: Params | None = None

    def __call__(self, vector: Params) -> Params:
        if self.route == "forward":
            return self.problem.hvp_forward(vector)
        if self.aux_grad is None:
            self.aux_grad = self.problem.aux_gradient(create_graph=True)
        return self.problem.hvp(self.aux_grad, vector)

    def for_mixed(self) -> Params | None:
        """The kept gradient with its graph (None on the forward route), handed over to the mixed term."""
        keep, self.aux_grad = self.aux_grad, None
        return keep


@ESTIMATORS.register("identity")
@dataclass(frozen=True)
class Identity:
    """AID-FP-Lite, MELTR's own estimator (Kim et al., CVPR 2023, Eq. 11 and Algorithm 1): ``H = I``.

    ``dL_pri/dphi ~ d_phi L_pri - grad_phi <grad_w L_pri, grad_w L_aux>``.
    """

    def __call__(self, problem: MetaProblem) -> Params:
        v, direct = problem.primary_gradients()
        return _subtract(direct, problem.mixed(v))


@ESTIMATORS.register("neumann")
@dataclass(frozen=True)
class Neumann:
    """AID-FP as in AuxiLearn (Navon et al., ICLR 2021; Lorraine et al., AISTATS 2020): truncated Neumann series.

    ``H^-1 ~ lr * sum_{j=0}^{terms} (I - lr H)^j`` (:func:`~meltr.hypergrad.solvers.solve_neumann`) with
    Hessian-vector products on the train-side batch; exact in the limit of many terms when
    ``0 < lr < 2 / lambda_max(H)``.

    Args:
        terms: number of Hessian-vector products (AuxiLearn: 3).
        lr: the series' step size.
        fresh_batches: each Hessian-vector product on a fresh train-side batch (StocBiO, see :func:`stocbio`).
        hvp: how each ``H v`` is computed, ``reverse`` or ``forward`` (:data:`HVP_ROUTES`); None: the backend's
            route (``hvp_route`` of the backend function, chosen by benchmarks/hvp_routes.py).
    """

    terms: int = 3
    lr: float = 0.1
    fresh_batches: bool = False
    hvp: str | None = None

    def __post_init__(self) -> None:
        _check(
            self,
            terms=self.terms >= 0,
            lr=math.isfinite(self.lr) and self.lr > 0,
            hvp=self.hvp is None or self.hvp in HVP_ROUTES,
        )

    def __call__(self, problem: MetaProblem) -> Params:
        v, direct = problem.primary_gradients()
        route = _route(self, problem)
        if self.fresh_batches:

            def hvp(vector: Params) -> Params:
                batch = problem.sample_train_batch() if problem.sample_train_batch else None
                if route == "forward":
                    return problem.hvp_forward(vector, batch)
                return problem.hvp(problem.aux_gradient(batch, create_graph=True), vector)

            q = solve_neumann(self.terms, self.lr)(hvp, v, problem.stats)
            return _subtract(direct, problem.mixed(q))
        products = _Products(problem, route)
        q = solve_neumann(self.terms, self.lr)(products, v, problem.stats)
        return _subtract(direct, problem.mixed(q, products.for_mixed()))


@ESTIMATORS.register("stocbio")
def stocbio(terms: int = 3, lr: float = 0.1, hvp: str | None = None) -> Neumann:
    """StocBiO (Ji, Yang and Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design", ICML 2021).

    The Neumann series of :class:`Neumann`, but each Hessian-vector product on a fresh train-side batch, so that the
    estimate of ``H^-1`` averages over data; the mixed term uses the step's own train-side batch.
    """
    return Neumann(terms, lr, fresh_batches=True, hvp=hvp)


@ESTIMATORS.register("cg")
@dataclass(frozen=True)
class ConjugateGradient:
    """AID-CG (Pedregosa, ICML 2016; Grazzi et al., ICML 2020): solve ``(H + damping I) q = grad_w L_pri`` by CG.

    :func:`~meltr.hypergrad.solvers.solve_cg` on Hessian-vector products of the step's train-side batch: started at
    zero, stopped after ``iters`` iterations, at a residual ``tol * ||grad_w L_pri||``, or on non-positive curvature.

    Args:
        iters: maximum number of iterations.
        damping: Tikhonov damping added to ``H``.
        tol: relative residual at which to stop.
        hvp: how each ``H v`` is computed, ``reverse`` or ``forward`` (:data:`HVP_ROUTES`); None: the backend's
            route.
    """

    iters: int = 5
    damping: float = 0.0
    tol: float = 1e-10
    hvp: str | None = None

    def __post_init__(self) -> None:
        _check(
            self,
            iters=self.iters >= 1,
            damping=math.isfinite(self.damping) and self.damping >= 0,
            tol=math.isfinite(self.tol) and self.tol >= 0,
            hvp=self.hvp is None or self.hvp in HVP_ROUTES,
        )

    def __call__(self, problem: MetaProblem) -> Params:
        v, direct = problem.primary_gradients()
        products = _Products(problem, _route(self, problem))
        solution = solve_cg(self.iters, self.damping, self.tol)(products, v, problem.stats)
        return _subtract(direct, problem.mixed(solution, products.for_mixed()))


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
        aux_grad = problem.aux_gradient(create_graph=getattr(problem.backend, "needs_aux_graph", False))
        step = problem.reduce([g.detach() for g in aux_grad])
        lookahead = [(w.detach() - lr * g).requires_grad_(True) for w, g in zip(problem.params, step, strict=True)]
        v, direct = problem.primary_gradients(params=lookahead)
        return _subtract(direct, problem.mixed(v, aux_grad), scale=lr)


def build_estimator(name: str, **options) -> Estimator:
    """Build the estimator registered under ``name`` (see ``ESTIMATORS.names()``) with its options."""
    return ESTIMATORS.build(name, **options)

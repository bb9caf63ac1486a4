"""Backends for the mixed term ``grad_phi <v, grad_w L_aux>`` of every hypergradient estimator.

``L_aux = M(l(w); phi)``, so ``grad_w L_aux = sum_t g_t grad_w l_t`` with ``g_t = dM/dl_t``, and for any vector ``v``

    grad_phi <v, grad_w L_aux> = sum_t c_t grad_phi g_t(l; phi),    c_t = <v, grad_w l_t>,

with ``c_t`` independent of ``phi`` (the chain rule through ``g_t``; ``v`` and ``grad_w l_t`` do not depend on ``phi``).
Three ways to get it:

- ``double_backward``: differentiate ``<v, grad_w L_aux>`` with respect to ``phi`` through the backbone's backward
  graph, the official three-call computation, kept as the reference;
- ``jvp``: ``c = d/de l(w + e v)`` by one forward-mode pass, then a double backward through the tiny combiner only;
- ``finite_difference``: ``c ~ (l(w + e v) - l(w - e v)) / 2e`` by two no-grad forwards with
  ``||e v|| = fd_scale * ||w||``;
- ``forward_difference``: ``c ~ (l(w + e v) - l(w)) / e``, one-sided: one no-grad forward when ``l(w)`` on the
  train-side batch is already known (:meth:`MetaProblem.losses_at_w`: the inner step's forward, or a forward the
  meta step made anyway), two otherwise. Its truncation error is ``O(e)`` instead of ``O(e^2)``: not exact, its
  error against float64 is in docs/hypergrad-benchmark.md.

For per-sample losses ``[B, T]`` the same holds with one ``c_{bt}`` per sample and task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from meltr._registry import Registry
from meltr.hypergrad.linalg import Params, grad_or_zeros

MetaProblem = Any  # a meltr.hypergrad.MetaProblem (which holds its backend, so this module cannot import it)
Backend = Callable[[MetaProblem, Params, "Params | None"], Params]
BACKENDS: Registry[Backend] = Registry("hypergradient backend")
DEFAULT_FD_SCALE = 1e-5  # central differences: the most accurate step on the UniVL-style backbone in float32
DEFAULT_FORWARD_FD_SCALE = 1e-6  # one-sided differences: their O(e) truncation wants a smaller step


@BACKENDS.register("double_backward")
def double_backward(problem: MetaProblem, vector: Params, aux_grad: Params | None = None) -> Params:
    """``grad_phi <v, grad_w L_aux>`` by differentiating ``grad_w L_aux`` (built with ``create_graph``) again."""
    if aux_grad is None:
        aux_grad = problem.aux_gradient(create_graph=True)
    return grad_or_zeros(aux_grad, problem.meta_params, grad_outputs=vector)


double_backward.needs_aux_graph = True  # it reuses a grad_w L_aux built with create_graph=True


def _through_kept_graph(problem: MetaProblem, vector: Params, aux_grad: Params | None) -> Params | None:
    """The mixed term through a ``create_graph`` gradient the caller already holds, else None.

    A Hessian-based estimator (Neumann, CG) builds ``grad_w L_aux`` with its graph for the Hessian-vector products
    anyway; differentiating it once more with respect to ``phi`` is exact and cheaper than a new pass over the
    backbone (0.79 against 1.18 training steps for the ``jvp`` pass on the UniVL-style backbone,
    ``python benchmarks/hvp_routes.py --parts``), so every backend takes it when it is there.
    """
    if aux_grad is None or not any(g.requires_grad for g in aux_grad):
        return None
    return double_backward(problem, vector, aux_grad)


def _combiner_contraction(problem: MetaProblem, losses: Tensor, directional: Tensor) -> Params:
    """``grad_phi sum_t c_t dM/dl_t`` at the (detached) losses: a double backward through the combiner alone."""
    point = losses.detach().requires_grad_(True)
    with torch.enable_grad():
        (sensitivity,) = torch.autograd.grad(problem.combiner(point), point, create_graph=True)
        contraction = (sensitivity * directional.detach()).sum()
    return grad_or_zeros(contraction, problem.meta_params)


@BACKENDS.register("jvp")
def jvp(problem: MetaProblem, vector: Params, aux_grad: Params | None = None) -> Params:
    """Forward-mode directional derivatives ``c = <v, grad_w l>`` of the loss vector, then the combiner's part (or,
    given a ``create_graph`` gradient, a backward through it: see :func:`_through_kept_graph`)."""
    kept = _through_kept_graph(problem, vector, aux_grad)
    if kept is not None:
        return kept

    def losses_at(*params: Tensor) -> Tensor:
        return problem.task_losses(problem.train_batch, params, record=False)

    primals = tuple(p.detach() for p in problem.params)
    tangents = tuple(v.detach().to(p.dtype) for v, p in zip(vector, primals, strict=True))
    with torch.no_grad():  # forward-mode AD does not need the reverse graph
        losses, directional = torch.func.jvp(losses_at, primals, tangents)
    return _combiner_contraction(problem, losses, directional)


def _step(problem: MetaProblem, vector: Params, fd_scale: float | None, default: float) -> float:
    """``e`` with ``||e v|| = fd_scale * max(||w||, 1)`` (``fd_scale``, else ``problem.fd_scale``, else
    ``default``); 0 for ``v = 0``."""
    scale = fd_scale if fd_scale is not None else getattr(problem, "fd_scale", None)
    scale = default if scale is None else scale
    weights = torch.sqrt(sum((p.detach().double() ** 2).sum() for p in problem.params))
    direction = torch.sqrt(sum((v.detach().double() ** 2).sum() for v in vector))
    if float(direction) == 0.0:
        return 0.0
    return float(scale * max(float(weights), 1.0) / float(direction))


@BACKENDS.register("finite_difference")
def finite_difference(
    problem: MetaProblem, vector: Params, aux_grad: Params | None = None, fd_scale: float | None = None
) -> Params:
    """Central differences of the loss vector along ``v``, then the combiner's part.

    The step ``e`` makes ``||e v|| = fd_scale * ||w||`` (``problem.fd_scale``, default ``1e-5``), a step relative to
    the scale of the weights so that it neither drowns in float32 rounding nor leaves the linear regime (1e-5 is the
    most accurate step on the UniVL-style backbone in float32, docs/hypergrad-benchmark.md). Given a ``create_graph``
    gradient, the exact mixed term through it instead (:func:`_through_kept_graph`).
    """
    kept = _through_kept_graph(problem, vector, aux_grad)
    if kept is not None:
        return kept
    eps = _step(problem, vector, fd_scale, default=DEFAULT_FD_SCALE)
    if eps == 0.0:
        return [torch.zeros_like(p) for p in problem.meta_params]
    with torch.no_grad():
        plus = problem.task_losses(
            problem.train_batch, [p + eps * v for p, v in zip(problem.params, vector, strict=True)]
        )
        minus = problem.task_losses(
            problem.train_batch, [p - eps * v for p, v in zip(problem.params, vector, strict=True)]
        )
    directional = (plus - minus) / (2 * eps)
    return _combiner_contraction(problem, (plus + minus) / 2, directional)


@BACKENDS.register("forward_difference")
def forward_difference(
    problem: MetaProblem, vector: Params, aux_grad: Params | None = None, fd_scale: float | None = None
) -> Params:
    """One-sided differences ``c ~ (l(w + e v) - l(w)) / e`` of the loss vector along ``v``, then the combiner's part.

    ``dM/dl`` is taken at ``l(w)`` itself (the central backend takes it at the midpoint). ``l(w)`` comes from
    ``problem.losses_at_w(train_batch)``: free when the meta step already has it, one no-grad forward otherwise.
    The step is ``||e v|| = fd_scale * ||w||`` with a default of ``1e-6``, ten times smaller than the central
    backend's: the error is ``O(e)`` truncation plus float32 rounding of the losses divided by ``e``, and these
    losses bend sharply (on the tiny UniVL backbone in float32 the error is 3e-2 at 1e-5, 3e-3 at 1e-6). Given a
    ``create_graph`` gradient, the exact mixed term through it instead (:func:`_through_kept_graph`).
    """
    kept = _through_kept_graph(problem, vector, aux_grad)
    if kept is not None:
        return kept
    eps = _step(problem, vector, fd_scale, default=DEFAULT_FORWARD_FD_SCALE)
    if eps == 0.0:
        return [torch.zeros_like(p) for p in problem.meta_params]
    base = problem.losses_at_w(problem.train_batch)
    with torch.no_grad():
        plus = problem.task_losses(
            problem.train_batch, [p + eps * v for p, v in zip(problem.params, vector, strict=True)]
        )
    return _combiner_contraction(problem, base, (plus - base.to(plus.dtype)) / eps)

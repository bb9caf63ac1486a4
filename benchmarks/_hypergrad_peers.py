"""The same bi-level problem solved with Betty (betty-ml 0.2.1) and TorchOpt (0.7.3), used as libraries.

Both get the benchmark's problem unchanged: the UniVL-style backbone's eight per-sample losses, MELTR's combiner,
``L_aux = M(l; phi)`` on the train-side batch and ``L_pri = l_align + gamma |M(l) - sum_t l_t|`` on the meta batch,
each batch with its own replayed masks, and the official meta optimiser (Adam 1e-3, weight decay 3e-5, clip 50).

- Betty: an ``ImplicitProblem`` per level, wired by an ``Engine``; its meta step is the upper problem's
  ``one_step_descent`` on the meta batch, whose best-response Jacobian is ``darts`` (central finite differences of
  ``grad_phi L_aux`` along ``v``, step ``darts_alpha / ||v||``), ``neumann`` or ``cg`` (``Config`` options).
- TorchOpt: ``torchopt.diff.implicit.custom_root`` on the optimality condition ``grad_w L_aux = 0`` with
  ``solve_cg`` or ``solve_inv(ns=True)`` (Neumann series); the hypergradient is ``autograd.grad`` of ``L_pri`` at the
  returned solution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from _hypergrad_worker import (
    CG_ITERS,
    CLIP_NORM,
    GAMMA,
    INNER_LR,
    META_LR,
    META_WEIGHT_DECAY,
    NEUMANN,
    Setup,
    seeded_losses,
)
from meltr.hypergrad import primary_objective


# -- Betty ---------------------------------------------------------------------------------------------------------
def betty_problems(setup: Setup, kind: str, capture: list | None = None):
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine
    from betty.problems import ImplicitProblem

    class Inner(ImplicitProblem):
        def training_step(self, batch):
            return self.outer.module(seeded_losses(setup, batch, self.module))

    class Outer(ImplicitProblem):
        def training_step(self, batch):
            loss, _, _ = primary_objective(self.module, seeded_losses(setup, batch, self.inner.module), GAMMA)
            return loss

    if capture is not None:

        def custom_optimizer_step(self, *args, **kwargs):  # record phi.grad instead of stepping
            capture[:] = [p.grad.detach().clone() for p in self.module.meta_parameters()]

        Outer.custom_optimizer_step = custom_optimizer_step

    options = {"darts": {}, "neumann": {"neumann_iterations": NEUMANN["terms"], "neumann_alpha": NEUMANN["lr"]}}
    options["cg"] = {"cg_iterations": CG_ITERS, "cg_alpha": 1.0}
    inner = Inner(
        name="inner",
        config=Config(type=kind, unroll_steps=3, **options[kind]),
        module=setup.model,
        # Betty rebuilds the optimiser as ``type(opt)(params, **opt.defaults)``, which torch 2.13's AdamW refuses
        # (its defaults hold ``decoupled_weight_decay``): Adam with that flag is the same update and survives it.
        optimizer=torch.optim.Adam(setup.model.parameters(), lr=INNER_LR, decoupled_weight_decay=True),
        train_data_loader=[setup.train_batch],
    )
    outer = Outer(
        name="outer",
        # Betty clips before a custom optimiser step: no clipping when the raw hypergradient is captured
        config=Config(retain_graph=True, gradient_clipping=0.0 if capture is not None else CLIP_NORM),
        module=setup.combiner,
        optimizer=torch.optim.Adam(setup.combiner.meta_parameters(), lr=META_LR, weight_decay=META_WEIGHT_DECAY),
        train_data_loader=[setup.meta_batch],
    )
    engine = Engine(
        problems=[outer, inner],
        config=EngineConfig(train_iters=1, logger_type="none"),
        dependencies={"u2l": {outer: [inner]}, "l2u": {inner: [outer]}},
    )
    inner.cur_batch = setup.train_batch  # the batch of the last inner step: Betty's train-side batch
    return engine, inner, outer


def betty_meta_step(setup: Setup, kind: str, capture: list | None = None) -> Callable[[], Any]:
    """Betty's upper-level step on the meta batch (direct gradient + best-response Jacobian + Adam)."""
    _, _, outer = betty_problems(setup, kind, capture)

    def step() -> None:
        with sdpa_kernel(SDPBackend.MATH):
            outer.one_step_descent(batch=setup.meta_batch)

    return step


# -- TorchOpt ------------------------------------------------------------------------------------------------------
def torchopt_meta_step(setup: Setup, kind: str, capture: list | None = None) -> Callable[[], Any]:
    """``custom_root`` implicit differentiation of ``grad_w L_aux(w, phi) = 0`` at the current ``w``."""
    import torchopt
    from torchopt.diff.implicit import custom_root

    model, combiner = setup.model, setup.combiner
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    phi_names = [n for n, p in combiner.named_parameters() if p.requires_grad]
    phi = combiner.meta_parameters()
    meta_optimizer = torch.optim.Adam(phi, lr=META_LR, weight_decay=META_WEIGHT_DECAY)

    def model_at(params):
        return lambda batch: functional_call(model, dict(zip(names, params, strict=True)), (batch,))

    def aux_loss(params, meta_params):
        losses = seeded_losses(setup, setup.train_batch, model_at(params))
        return functional_call(combiner, dict(zip(phi_names, meta_params, strict=True)), (losses,))

    def optimality(params, meta_params):
        return torch.func.grad(aux_loss, argnums=0)(params, meta_params)

    if kind == "cg":
        solve = torchopt.linear_solve.solve_cg(maxiter=CG_ITERS)
    elif kind == "neumann":
        solve = torchopt.linear_solve.solve_inv(ns=True, maxiter=NEUMANN["terms"], alpha=NEUMANN["lr"])
    else:
        raise ValueError(f"unknown TorchOpt solver {kind!r}")

    @custom_root(optimality, argnums=1, solve=solve)
    def inner_solution(params, meta_params):
        return params  # the training loop is the inner solver: w is its current iterate

    def step() -> None:
        with sdpa_kernel(SDPBackend.MATH):
            params = tuple(p.detach() for p in model.parameters() if p.requires_grad)
            solution = inner_solution(params, tuple(phi))
            losses = seeded_losses(setup, setup.meta_batch, model_at(solution))
            loss, _, _ = primary_objective(combiner, losses, GAMMA)
            hyper = torch.autograd.grad(loss, phi)
        if capture is not None:
            capture[:] = [g.detach().clone() for g in hyper]
            return
        meta_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(phi, hyper, strict=True):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(phi, CLIP_NORM)
        meta_optimizer.step()

    return step


def peer_hypergradient(setup: Setup, method: str) -> list[torch.Tensor]:
    """The hypergradient a peer computes for the setup's batches (no step taken)."""
    library, kind = method.split(":")
    captured: list[torch.Tensor] = []
    build = betty_meta_step if library == "betty" else torchopt_meta_step
    build(setup, kind, captured)()
    return captured


__all__ = ["INNER_LR", "betty_meta_step", "peer_hypergradient", "torchopt_meta_step"]

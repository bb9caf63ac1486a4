"""Every estimator against an exact reference, in float64, on ridge-regression inner problems.

The inner problem has per-sample losses ``l_bt = (x_bt . w - y_bt)^2 + lam ||w||^2``; with a linear combiner
``L_aux = mean_b sum_t phi_t l_bt`` its Hessian, optimum and mixed derivatives are explicit.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from meltr.combine import LearnedLinear, MetaLossTransformer
from meltr.hypergrad import BACKENDS, ESTIMATORS, MetaProblem, build_estimator

TASKS = ("primary", "aux_a", "aux_b")
DIM, SAMPLES, LAM, GAMMA = 6, 20, 0.5, 0.1


class Ridge(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, batch):
        return per_sample_losses(self.weight, batch)


def per_sample_losses(weight, batch):
    errors = (batch["x"] @ weight - batch["y"]) ** 2 + LAM * (weight**2).sum()
    return {t: errors[:, i] for i, t in enumerate(TASKS)}


class PerSample(nn.Module):
    """``M(l_b)`` per sample, so that functional_call can swap the combiner's parameters."""

    def __init__(self, combiner):
        super().__init__()
        self.inner = combiner

    def forward(self, losses):
        return self.inner.combine(losses)


def make_batch(generator):
    x = torch.randn(SAMPLES, len(TASKS), DIM, generator=generator, dtype=torch.float64)
    y = torch.randn(SAMPLES, len(TASKS), generator=generator, dtype=torch.float64)
    return {"x": x, "y": y}


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return {
        "train": make_batch(g),
        "meta": make_batch(g),
        "w": torch.randn(DIM, generator=g, dtype=torch.float64),
    }


def linear_combiner(phi=(1.0, 0.6, 0.4)):
    combiner = LearnedLinear(TASKS).double()
    with torch.no_grad():
        combiner.weights.copy_(torch.tensor(phi, dtype=torch.float64))
    return combiner


def make_problem(model, combiner, data, backend="double_backward", direct_term=True, lookahead_lr=0.05):
    return MetaProblem(
        model=model,
        combiner=combiner,
        param_names=["weight"],
        train_batch=data["train"],
        meta_batch=data["meta"],
        reg_weight=GAMMA,
        direct_term=direct_term,
        backend=BACKENDS.get(backend),
        sample_train_batch=lambda: data["train"],
        lookahead_lr=lookahead_lr,
    )


# -- closed form for the linear combiner --------------------------------------------------------------------------
def task_gradients(w, batch):
    """``grad_w l_bt`` explicitly: ``[B, T, d]``."""
    residual = batch["x"] @ w - batch["y"]
    return 2 * residual[..., None] * batch["x"] + 2 * LAM * w


def task_hessians(batch):
    """``grad_w^2`` of the batch-mean loss of each task: ``[T, d, d]``."""
    x = batch["x"]
    return 2 * torch.einsum("btd,bte->tde", x, x) / x.shape[0] + 2 * LAM * torch.eye(DIM, dtype=x.dtype)


def closed_form(w, phi, data, direct_term=True, reg_batch="meta"):
    """``(d_phi L_pri, grad_w L_pri, J)`` with ``J[:, t] = grad_phi_t grad_w L_aux = mean_b grad_w l_bt``."""
    reg = data[reg_batch]
    losses = torch.stack([per_sample_losses(w, reg)[t] for t in TASKS], dim=1)  # [B, T]
    sign = torch.sign((losses * (phi - 1)).sum(1))
    grads_reg = task_gradients(w, reg)  # [B, T, d]
    grad_pri = task_gradients(w, data["meta"])[:, 0].mean(0)
    grad_pri = grad_pri + GAMMA * (sign[:, None] * (grads_reg * (phi - 1)[None, :, None]).sum(1)).mean(0)
    direct = GAMMA * (sign[:, None] * losses).mean(0) if direct_term else torch.zeros_like(phi)
    jac = task_gradients(w, data["train"]).mean(0).T  # [d, T]
    return direct, grad_pri, jac


@pytest.mark.parametrize("backend", BACKENDS.names())
def test_identity_matches_eq11_with_h_equal_identity(data, backend):
    combiner = linear_combiner()
    phi = combiner.weights.detach().clone()
    direct, grad_pri, jac = closed_form(data["w"], phi, data)
    expected = direct - grad_pri @ jac
    (got,) = build_estimator("identity")(make_problem(Ridge(data["w"]), combiner, data, backend))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("direct_term", [True, False])
def test_regulariser_on_the_train_side_batch(data, direct_term):
    """The official code's placement: ``L_reg`` on the train-side batch, ``l_0`` on the meta batch."""
    combiner = linear_combiner()
    phi = combiner.weights.detach().clone()
    direct, grad_pri, jac = closed_form(data["w"], phi, data, direct_term, reg_batch="train")
    problem = make_problem(Ridge(data["w"]), combiner, data, direct_term=direct_term)
    problem.reg_batch = "train"
    (got,) = build_estimator("identity")(problem)
    torch.testing.assert_close(got, direct - grad_pri @ jac, rtol=1e-6, atol=1e-12)
    on_meta = closed_form(data["w"], phi, data, direct_term)
    assert not torch.allclose(got, on_meta[0] - on_meta[1] @ on_meta[2])


@pytest.mark.parametrize("hvp", [None, "reverse", "forward"])
@pytest.mark.parametrize("backend", BACKENDS.names())
@pytest.mark.parametrize("name", ["cg", "neumann", "stocbio"])
def test_implicit_estimators_match_the_exact_inverse_hessian(data, backend, name, hvp):
    """Every estimator x backend x Hessian-vector product route (None: the backend's own choice)."""
    combiner = linear_combiner()
    phi = combiner.weights.detach().clone()
    direct, grad_pri, jac = closed_form(data["w"], phi, data)
    hessian = (phi[:, None, None] * task_hessians(data["train"])).sum(0)
    expected = direct - torch.linalg.solve(hessian, grad_pri) @ jac
    top = float(torch.linalg.eigvalsh(hessian).max())
    options = {"iters": DIM, "tol": 0.0} if name == "cg" else {"terms": 400, "lr": 1.0 / top}
    (got,) = build_estimator(name, hvp=hvp, **options)(make_problem(Ridge(data["w"]), combiner, data, backend))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-10)


def test_few_neumann_terms_are_not_exact(data):
    """The comparison above has teeth: three terms of the series are far from the exact inverse."""
    combiner = linear_combiner()
    phi = combiner.weights.detach().clone()
    direct, grad_pri, jac = closed_form(data["w"], phi, data)
    hessian = (phi[:, None, None] * task_hessians(data["train"])).sum(0)
    expected = direct - torch.linalg.solve(hessian, grad_pri) @ jac
    top = float(torch.linalg.eigvalsh(hessian).max())
    (got,) = build_estimator("neumann", terms=3, lr=1.0 / top)(make_problem(Ridge(data["w"]), combiner, data))
    assert (got - expected).norm() > 1e-2 * expected.norm()


@pytest.mark.parametrize("backend", BACKENDS.names())
@pytest.mark.parametrize("direct_term", [True, False])
def test_unrolled_matches_autograd_through_one_explicit_step(data, backend, direct_term):
    lr = 0.05
    combiner = linear_combiner()
    phi = combiner.weights.detach().clone().requires_grad_(True)
    w = data["w"]
    # w' = w - lr * grad_w L_aux, written out explicitly, then L_pri(w', phi) and autograd to phi.
    lookahead = w - lr * (phi[None, :, None] * task_gradients(w, data["train"])).sum(1).mean(0)
    meta = torch.stack([per_sample_losses(lookahead, data["meta"])[t] for t in TASKS], dim=1)
    reg_phi = phi if direct_term else phi.detach()
    objective = meta[:, 0].mean() + GAMMA * ((meta * reg_phi).sum(1) - meta.sum(1)).abs().mean()
    (expected,) = torch.autograd.grad(objective, phi)
    problem = make_problem(Ridge(w), combiner, data, backend, direct_term=direct_term, lookahead_lr=lr)
    (got,) = build_estimator("unrolled")(problem)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-10)


def test_cg_equals_the_true_derivative_through_the_inner_optimum(data):
    """At ``w = w*(phi)`` the implicit hypergradient is the total derivative of ``phi -> L_pri(w*(phi), phi)``."""
    phi = torch.tensor([1.0, 0.6, 0.4], dtype=torch.float64, requires_grad=True)
    x, y = data["train"]["x"], data["train"]["y"]
    rhs = 2 * torch.einsum("btd,bt->td", x, y) / x.shape[0]
    optimum = torch.linalg.solve(
        (phi[:, None, None] * task_hessians(data["train"])).sum(0), (phi[:, None] * rhs).sum(0)
    )
    meta = torch.stack([per_sample_losses(optimum, data["meta"])[t] for t in TASKS], dim=1)
    objective = meta[:, 0].mean() + GAMMA * ((meta * phi).sum(1) - meta.sum(1)).abs().mean()
    (expected,) = torch.autograd.grad(objective, phi)
    combiner = linear_combiner(phi.tolist())
    (got,) = build_estimator("cg", iters=DIM, tol=0.0)(make_problem(Ridge(optimum.detach()), combiner, data))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS.names())
@pytest.mark.parametrize("name", ["identity", "cg"])
def test_meltr_combiner_against_explicit_jacobian_and_hessian(data, backend, name):
    """A non-linear combiner: ``J = d(grad_w L_aux)/dphi`` by jacrev, ``H`` by the dense Hessian."""
    torch.manual_seed(0)
    combiner = MetaLossTransformer(TASKS, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2).double()
    w = data["w"]
    names, values = zip(*combiner.named_parameters(), strict=True)

    def aux_objective(weight, *phi):
        losses = torch.stack([per_sample_losses(weight, data["train"])[t] for t in TASKS], dim=1)
        return functional_call(combiner, dict(zip(names, phi, strict=True)), (losses,))

    per_sample = PerSample(combiner)

    def pri_objective(weight, *phi):
        losses = torch.stack([per_sample_losses(weight, data["meta"])[t] for t in TASKS], dim=1)
        m = functional_call(per_sample, {f"inner.{n}": p for n, p in zip(names, phi, strict=True)}, (losses,))
        return losses[:, 0].mean() + GAMMA * (m - losses.sum(1)).abs().mean()

    argnums = tuple(range(len(values) + 1))
    grads = torch.func.grad(pri_objective, argnums=argnums)(w, *values)
    grad_pri, direct = grads[0], grads[1:]
    if name == "cg":
        hessian = torch.func.hessian(aux_objective, argnums=0)(w, *values)
        u = torch.linalg.solve(hessian, grad_pri)
    else:
        u = grad_pri
    jacobians = torch.func.jacrev(torch.func.grad(aux_objective, argnums=0), argnums=argnums[1:])(w, *values)
    expected = [d - torch.tensordot(u, j, dims=([0], [0])) for d, j in zip(direct, jacobians, strict=True)]
    options = {"iters": DIM, "tol": 0.0} if name == "cg" else {}
    got = ESTIMATORS.build(name, **options)(make_problem(Ridge(w), combiner, data, backend))
    # Central differences evaluate dM/dl at the midpoint of l(w +- e v), off l(w) by O(e^2): 1e-3, not 1e-4; one-sided
    # differences are off by O(e) in c, with a ten times smaller step.
    rtol = 1e-3 if backend in ("finite_difference", "forward_difference") else 1e-4
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=rtol, atol=1e-9)

"""Second-order and forward-mode differentiation through every tiny backbone (float64 references).

The hypergradient estimators need ``c_t = <v, grad_w l_t>`` (one ``torch.func.jvp`` of the loss vector) and
Hessian-vector products (double backward); both must run through the backbones and agree with reverse mode.
"""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import random_batch, tiny
from torch.func import functional_call, grad, jvp

from meltr.contract import stack_task_losses


@pytest.fixture
def setup(backbone_name):
    model = tiny(backbone_name).double()
    params = {name: p.detach() for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(1)
    direction = {name: torch.randn(p.shape, generator=generator, dtype=p.dtype) for name, p in params.items()}
    batch = random_batch()

    def loss_matrix(parameters):
        torch.manual_seed(0)  # the same masks and negatives at every evaluation
        return stack_task_losses(functional_call(model, parameters, (batch,)), model.tasks)  # [B, T]

    return model, params, direction, loss_matrix


def dot(grads, direction):
    return sum((g * direction[name]).sum() for name, g in grads.items())


def reverse_grad(function, params):
    leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    grads = torch.autograd.grad(function(leaves), list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def test_jvp_of_the_loss_vector_equals_reverse_mode_directional_derivatives(setup):
    model, params, direction, loss_matrix = setup
    _, tangent = jvp(loss_matrix, (params,), (direction,))  # [B, T]
    assert tangent.shape == (4, len(model.tasks))
    per_task = torch.stack(
        [
            dot(reverse_grad(lambda p, t=t: loss_matrix(p)[:, t].mean(), params), direction)
            for t in range(len(model.tasks))
        ]
    )
    torch.testing.assert_close(tangent.mean(0), per_task, rtol=1e-5, atol=1e-8)
    weights = torch.randn(tangent.shape, generator=torch.Generator().manual_seed(2), dtype=tangent.dtype)
    every_sample = dot(reverse_grad(lambda p: (loss_matrix(p) * weights).sum(), params), direction)
    torch.testing.assert_close((tangent * weights).sum(), every_sample, rtol=1e-5, atol=1e-8)


def test_double_backward_equals_forward_over_reverse(setup):
    _, params, direction, loss_matrix = setup

    def total(parameters):
        return loss_matrix(parameters).mean(0).sum()

    leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    first = torch.autograd.grad(total(leaves), list(leaves.values()), create_graph=True)
    hessian_vector = torch.autograd.grad(dot(dict(zip(leaves, first, strict=True)), direction), list(leaves.values()))
    _, forward_over_reverse = jvp(grad(total), (params,), (direction,))
    for name, value in zip(leaves, hessian_vector, strict=True):
        assert torch.isfinite(value).all(), name
        torch.testing.assert_close(value, forward_over_reverse[name], rtol=1e-6, atol=1e-9, msg=name)
    assert any(value.abs().sum() > 0 for value in hessian_vector)


def test_every_parameter_gets_a_gradient(setup):
    model, params, _, loss_matrix = setup
    grads = reverse_grad(lambda p: loss_matrix(p).sum(), params)
    silent = [name for name, g in grads.items() if g.abs().sum() == 0]
    assert not silent, f"{type(model).__name__} parameters outside every loss: {silent}"

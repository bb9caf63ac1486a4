"""GR (Algorithm 1 of Wu et al.) and its PCGrad generalisation against projections computed by hand."""

import pytest
import torch

from meltr.surgery import Realign, TaskGradients, realign_coefficients, realign_gradients, realigned_direction
from meltr.surgery.realign import projection_orders, step_generator


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_two_conflicting_tasks_project_against_the_original_vectors():
    # g_a . g_b = -3 + 2 = -1, |g_b|^2 = 5, |g_a|^2 = 10:
    # g_a' = (3, 1) + (1/5)(-1, 2) = (2.8, 1.4);  g_b' = (-1, 2) + (1/10)(3, 1) = (-0.7, 2.1).
    # (Projecting g_b against the already projected g_a' would leave g_b unchanged and give (1.8, 3.4).)
    grads = tensor([[3.0, 1.0], [-1.0, 2.0]])
    projected, did = realign_gradients(grads)
    assert did
    torch.testing.assert_close(projected, tensor([[2.8, 1.4], [-0.7, 2.1]]))
    direction, _ = realigned_direction(grads, projection_orders(2))
    torch.testing.assert_close(direction, tensor([2.1, 3.5]))
    # Each realigned gradient is orthogonal to the other original one.
    torch.testing.assert_close(projected[0] @ grads[1], tensor(0.0))
    torch.testing.assert_close(projected[1] @ grads[0], tensor(0.0))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_two_tasks_do_not_depend_on_the_seed(seed):
    result = Realign(seed=seed)(TaskGradients(tensor([[3.0, 1.0], [-1.0, 2.0]])), step=5)
    assert result.projected
    torch.testing.assert_close(result.direction, tensor([2.1, 3.5]))


@pytest.mark.parametrize(
    "grads",
    [
        [[1.0, 2.0], [3.0, -1.0]],  # g_a . g_b = 1 > 0
        [[1.0, 0.0], [0.0, 5.0]],  # orthogonal: no conflict
        [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]],  # three tasks, all inner products >= 0
    ],
)
def test_no_conflict_leaves_the_plain_sum(grads):
    grads = tensor(grads)
    projected, did = realign_gradients(grads)
    assert not did
    assert torch.equal(projected, grads)
    result = Realign()(TaskGradients(grads))
    assert not result.projected
    assert torch.equal(result.direction, grads.sum(0))


def test_exact_opposition_cancels_both_gradients():
    # g_b = -g_a: g_a' = g_a - (-|g_a|^2 / |g_a|^2)(-g_a) = 0, and symmetrically g_b' = 0.
    grads = tensor([[1.0, -2.0, 2.0], [-1.0, 2.0, -2.0]])
    projected, did = realign_gradients(grads)
    assert did
    torch.testing.assert_close(projected, torch.zeros(2, 3, dtype=torch.float64))
    torch.testing.assert_close(Realign()(TaskGradients(grads)).direction, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("grads", [[[0.0, 0.0], [1.0, -1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [-1e-30, 0.0]]])
def test_zero_gradients_give_no_nan(grads):
    grads = torch.tensor(grads, dtype=torch.float32)
    projected, did = realign_gradients(grads)
    assert not did
    assert torch.isfinite(projected).all()
    assert torch.equal(Realign()(TaskGradients(grads)).direction, grads.sum(0))


def test_an_underflowing_norm_is_not_divided_by():
    # |g_b|^2 = 1e-60 underflows to 0 in float32 while g_a . g_b = -1e-30 does not.
    grads = torch.tensor([[1.0, 0.0], [-1e-30, 0.0]], dtype=torch.float32)
    projected, _ = realign_gradients(grads)
    assert torch.isfinite(projected).all()


def test_three_tasks_by_hand_in_ascending_order():
    # g0 = (2, 0), g1 = (-1, 1), g2 = (0, -1).
    # task 0 vs 1: g0.g1 = -2 -> g0 + (2/2) g1 = (1, 1); vs 2: (1, 1).g2 = -1 -> (1, 1) + g2 = (1, 0).
    # task 1 vs 0: -2 -> g1 + (2/4) g0 = (0, 1); vs 2: -1 -> (0, 1) + g2 = (0, 0).
    # task 2 vs 0: 0, no conflict; vs 1: -1 -> g2 + (1/2) g1 = (-0.5, -0.5).
    grads = tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -1.0]])
    projected, did = realign_gradients(grads, orders=[[1, 2], [0, 2], [0, 1]])
    assert did
    torch.testing.assert_close(projected, tensor([[1.0, 0.0], [0.0, 0.0], [-0.5, -0.5]]))
    torch.testing.assert_close(realigned_direction(grads, [[1, 2], [0, 2], [0, 1]])[0], tensor([0.5, -0.5]))


def test_three_tasks_by_hand_in_another_order():
    # Same gradients, each task visiting the others in descending order:
    # task 0 vs 2: 0; vs 1: -2 -> (1, 1).
    # task 1 vs 2: -1 -> g1 + g2 = (-1, 0); vs 0: (-1, 0).g0 = -2 -> (-1, 0) + (2/4) g0 = (0, 0).
    # task 2 vs 1: -1 -> (-0.5, -0.5); vs 0: (-0.5, -0.5).g0 = -1 -> + (1/4) g0 = (0, -0.5).
    grads = tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -1.0]])
    orders = [[2, 1], [2, 0], [1, 0]]
    projected, _ = realign_gradients(grads, orders=orders)
    torch.testing.assert_close(projected, tensor([[1.0, 1.0], [0.0, 0.0], [0.0, -0.5]]))
    torch.testing.assert_close(realigned_direction(grads, orders)[0], tensor([1.0, 0.5]))


def test_coefficients_express_the_projections_in_the_original_gradients():
    grads = tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -1.0]])
    coefficients, _ = realign_coefficients(grads @ grads.T, [[1, 2], [0, 2], [0, 1]])
    # Row 0: g0 + g1 + g2; row 1: g1 + g0/2 + g2; row 2: g2 + g1/2.
    expected = tensor([[1.0, 1.0, 1.0], [0.5, 1.0, 1.0], [0.0, 0.5, 1.0]])
    torch.testing.assert_close(coefficients, expected)


def test_random_orders_are_seeded_by_seed_and_step():
    grads = torch.randn(5, 11, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    method = Realign(seed=4)
    first = method(TaskGradients(grads), step=2).direction
    assert torch.equal(first, Realign(seed=4)(TaskGradients(grads), step=2).direction)
    orders = projection_orders(5, step_generator(4, 2))
    assert all(sorted(order) == [j for j in range(5) if j != i] for i, order in enumerate(orders))
    torch.testing.assert_close(first, realigned_direction(grads, orders)[0])
    # Some other step draws other orders, and with five random gradients some order matters.
    others = [method(TaskGradients(grads), step=s).direction for s in range(3, 12)]
    assert any(not torch.allclose(first, other) for other in others)

"""The linear solvers (meltr.hypergrad.solvers) against numpy's exact solution of a small symmetric system."""

import numpy as np
import pytest
import torch

from meltr.hypergrad import solve_cg, solve_neumann


def system(seed: int = 0, dim: int = 6):
    """A symmetric positive-definite ``H`` split over two parameter blocks, and ``b``."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    h = a @ a.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)
    b = torch.randn(dim, generator=generator, dtype=torch.float64)

    def hvp(vector):
        flat = h @ torch.cat([v.reshape(-1) for v in vector])
        return [flat[:2].reshape(2, 1), flat[2:]]

    return h, [b[:2].reshape(2, 1), b[2:]], hvp


def flat(params):
    return torch.cat([p.reshape(-1) for p in params]).numpy()


def test_cg_solves_the_system_in_dim_iterations():
    h, b, hvp = system()
    stats = {}
    q = solve_cg(iters=6)(hvp, b, stats)
    np.testing.assert_allclose(flat(q), np.linalg.solve(h.numpy(), flat(b)), rtol=1e-8, atol=1e-10)
    assert stats["cg_residual"] < 1e-8
    assert [tuple(x.shape) for x in q] == [(2, 1), (4,)]


def test_cg_with_damping_solves_the_damped_system():
    h, b, hvp = system(1)
    q = solve_cg(iters=6, damping=0.3)(hvp, b)
    np.testing.assert_allclose(flat(q), np.linalg.solve(h.numpy() + 0.3 * np.eye(6), flat(b)), rtol=1e-8)


def test_cg_stops_on_negative_curvature_with_the_search_direction():
    _, b, _ = system()
    stats = {}
    q = solve_cg(iters=5)(lambda v: [-x for x in v], b, stats)  # H = -I
    assert stats["cg_negative_curvature"] == 1.0
    np.testing.assert_array_equal(flat(q), flat(b))


@pytest.mark.parametrize("terms", [0, 1, 4])
def test_neumann_is_the_truncated_series(terms):
    h, b, hvp = system(2)
    lr = 0.2
    step = np.eye(6) - lr * h.numpy()
    expected = lr * sum(np.linalg.matrix_power(step, j) @ flat(b) for j in range(terms + 1))
    stats = {}
    q = solve_neumann(terms=terms, lr=lr)(hvp, b, stats)
    np.testing.assert_allclose(flat(q), expected, rtol=1e-10)
    assert stats["neumann_last_term_norm"] == pytest.approx(
        np.linalg.norm(np.linalg.matrix_power(step, terms) @ flat(b))
    )


def test_neumann_converges_to_the_inverse():
    h, b, hvp = system(3)
    lr = 1.0 / float(torch.linalg.eigvalsh(h).max())
    q = solve_neumann(terms=400, lr=lr)(hvp, b)
    np.testing.assert_allclose(flat(q), np.linalg.solve(h.numpy(), flat(b)), rtol=1e-6)

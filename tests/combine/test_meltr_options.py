"""MELTR's start (official vs residual init) and its loss inputs (per sample vs batch mean)."""

import pytest
import torch

from meltr.combine import MetaLossTransformer, build_combiner, equal_weight

TASKS = ("primary", "aux_a", "aux_b", "aux_c")
SMALL = {"d_model": 16, "mlp_hidden": 8, "ff_dim": 32, "num_heads": 2}


def test_residual_init_is_equal_weights_exactly():
    torch.manual_seed(0)
    combiner = MetaLossTransformer(TASKS, init="residual", **SMALL)
    reference = equal_weight(TASKS)
    losses = torch.rand(7, len(TASKS)) * 3
    assert torch.equal(combiner.combine(losses), losses.sum(-1))
    assert torch.equal(combiner(losses), losses.sum(-1).mean())
    torch.testing.assert_close(combiner(losses), reference(losses))  # equal_weight: every weight 1
    assert torch.equal(combiner.sensitivity(losses), torch.ones_like(losses))
    # ... and the meta step can move it: the output layer gets a gradient, the correction is then non-zero
    combiner.combine(losses).sum().backward()
    assert combiner.head.weight.grad is not None and combiner.head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        combiner.head.weight.normal_()  # (a constant would vanish: LayerNorm outputs sum to 0)
    assert not torch.allclose(combiner.combine(losses), losses.sum(-1))


def test_official_init_is_not_equal_weights():
    torch.manual_seed(0)
    combiner = MetaLossTransformer(TASKS, **SMALL)
    losses = torch.rand(7, len(TASKS))
    assert not torch.allclose(combiner.sensitivity(losses), torch.ones_like(losses), atol=0.05)


@pytest.mark.parametrize("init", ["official", "residual"])
def test_batch_mean_inputs_combine_the_mean_losses(init):
    torch.manual_seed(1)
    combiner = MetaLossTransformer(TASKS, init=init, inputs="batch_mean", **SMALL).double()
    with torch.no_grad():
        combiner.head.weight.normal_()
    losses = (torch.rand(5, len(TASKS), dtype=torch.float64) * 2).requires_grad_(True)
    mean = losses.detach().mean(0).requires_grad_(True)
    out = combiner(losses)
    expected = combiner.combine(mean)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # dL/dl_{b,t} = (1/B) dM/dl_t at the batch mean, checked against float64 finite differences of M(mean)
    (grad,) = torch.autograd.grad(out, losses)
    eps = 1e-6
    fd = torch.stack(
        [
            (combiner.combine(mean.detach() + eps * e) - combiner.combine(mean.detach() - eps * e)) / (2 * eps)
            for e in torch.eye(len(TASKS), dtype=torch.float64)
        ]
    )
    torch.testing.assert_close(grad, fd.expand(5, -1) / 5, rtol=1e-6, atol=1e-9)
    # per-sample inputs differ (M is not linear)
    per_sample = MetaLossTransformer(TASKS, init=init, **SMALL).double()
    per_sample.load_state_dict(combiner.state_dict())
    assert not torch.allclose(per_sample(losses), out)


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="'init'"):
        build_combiner("meltr", TASKS, init="zeros", **SMALL)
    with pytest.raises(ValueError, match="'inputs'"):
        build_combiner("meltr", TASKS, inputs="mean", **SMALL)

"""The driver writes into p.grad what a manual computation gives, with and without a combiner."""

import pytest
import torch
from surgery_helpers import LinearLosses, build_video_audio_text, flat_grad, unflatten, video_audio_text_batch

from meltr.combine import FixedWeights, MLPCombiner
from meltr.surgery import ParameterLayout, SurgeryStep, surgery_backward, task_gradients


def manual_realign(a, b):
    """Algorithm 1 of Wu et al. written out for two flat gradients."""
    if a @ b >= 0:
        return a + b
    return (a - (a @ b) / (b @ b) * b) + (b - (b @ a) / (a @ a) * a)


def test_literal_gradients_reach_p_grad_realigned():
    # l_va = 3 w + b, l_vt = -w + 2 b: the gradients of test_surgery_realign, realigned sum (2.1, 3.5).
    model = LinearLosses(torch.tensor([[3.0, 1.0], [-1.0, 2.0]]), [(1,), (1,)], ("va", "vt"))
    stats = surgery_backward(model(), model.parameters(), "realign")
    w, b = model.parameters()
    torch.testing.assert_close(w.grad, torch.tensor([2.1], dtype=torch.float64))
    torch.testing.assert_close(b.grad, torch.tensor([3.5], dtype=torch.float64))
    assert stats.projected
    assert stats.cosine["va|vt"] == pytest.approx(-1 / 50**0.5)


def test_realign_on_a_network_matches_a_manual_computation():
    model, batch = build_video_audio_text(), video_audio_text_batch()
    params = list(model.parameters())
    losses = model(batch)
    a, b = flat_grad(losses["va"].mean(), params), flat_grad(losses["vt"].mean(), params)
    expected = unflatten(manual_realign(a, b), params)
    stats = surgery_backward(model(batch), params, "realign")
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert stats.cosine["va|vt"] == pytest.approx(float(a @ b / (a.norm() * b.norm())))
    assert stats.losses["va"] == pytest.approx(float(losses["va"].detach().mean()))


@pytest.mark.parametrize("per_sample", [True, False])
def test_none_with_a_combiner_is_the_combined_gradient(per_sample):
    model, batch = build_video_audio_text(), video_audio_text_batch()
    torch.manual_seed(1)
    combiner = MLPCombiner(("va", "vt"), hidden=(5,)).double()
    losses = model(batch)
    if not per_sample:
        losses = {"va": losses["va"].mean(), "vt": losses["vt"]}  # one scalar: batch-level mode
    expected = torch.autograd.grad(combiner(losses), list(model.parameters()), retain_graph=True)
    surgery_backward(losses, model.parameters(), "none", combiner)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_task_gradients_are_weighted_by_the_combiner_sensitivity():
    model, batch = build_video_audio_text(), video_audio_text_batch()
    params = list(model.parameters())
    combiner = FixedWeights(("va", "vt"), [2.0, -0.5])
    losses = model(batch)
    grads = task_gradients(losses, params, combiner)
    torch.testing.assert_close(grads.flat[0], 2.0 * flat_grad(losses["va"].mean(), params))
    torch.testing.assert_close(grads.flat[1], -0.5 * flat_grad(losses["vt"].mean(), params))
    # And realignment acts on those weighted terms.
    surgery_backward(losses, params, "realign", combiner)
    for p, g in zip(params, unflatten(manual_realign(grads.flat[0], grads.flat[1]), params), strict=True):
        torch.testing.assert_close(p.grad, g)


def test_the_combiner_fixes_the_task_order_and_checks_the_names():
    model = LinearLosses(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), [(2,)], ("va", "vt"))
    grads = task_gradients(model(), model.parameters(), FixedWeights(("vt", "va"), [1.0, 1.0]))
    assert grads.tasks == ("vt", "va")
    torch.testing.assert_close(grads.flat, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="missing task"):
        task_gradients(model(), model.parameters(), FixedWeights(("va", "vt", "extra"), [1.0, 1.0, 1.0]))


def test_gradients_accumulate_like_backward_and_frozen_parameters_are_skipped():
    model = LinearLosses(torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]]), [(2,), (1,)], ("va", "vt"))
    first, second = model.parameters()
    second.requires_grad_(False)
    first.grad = torch.ones(2, dtype=torch.float64)
    surgery_backward(model(), model.parameters(), "none")
    torch.testing.assert_close(first.grad, torch.tensor([3.0, 3.0], dtype=torch.float64))
    assert second.grad is None


def test_the_direction_reaches_p_grad_as_views_of_one_buffer():
    model = LinearLosses(torch.arange(12.0).reshape(2, 6), [(2, 2), (2,)], ("va", "vt"))
    surgery_backward(model(), model.parameters(), "none")
    first, second = model.parameters()
    assert first.grad.shape == (2, 2) and second.grad.shape == (2,)
    assert first.grad.untyped_storage().data_ptr() == second.grad.untyped_storage().data_ptr()
    torch.testing.assert_close(
        torch.cat([first.grad.reshape(-1), second.grad]), torch.arange(12.0).view(2, 6).sum(0).double()
    )


def test_layout_views_round_trip():
    params = [torch.zeros(2, 3), torch.zeros(4), torch.zeros(())]
    layout = ParameterLayout(params)
    flat = torch.arange(11.0)
    views = layout.views(flat)
    assert [v.shape for v in views] == [(2, 3), (4,), ()]
    assert torch.equal(torch.cat([v.reshape(-1) for v in views]), flat)
    batched = layout.views(torch.arange(22.0).view(2, 11))
    assert [v.shape for v in batched] == [(2, 2, 3), (2, 4), (2,)]


def test_surgery_step_matches_a_manual_sgd_step():
    model, batch = build_video_audio_text(), video_audio_text_batch()
    reference = build_video_audio_text()
    losses = reference(batch)
    params = list(reference.parameters())
    a, b = flat_grad(losses["va"].mean(), params), flat_grad(losses["vt"].mean(), params)
    expected = [p.detach() - 0.1 * g for p, g in zip(params, unflatten(manual_realign(a, b), params), strict=True)]
    step = SurgeryStep(model, None, "realign", torch.optim.SGD(model.parameters(), lr=0.1))
    stats = step.step(batch)
    assert stats.method == "realign" and stats.step == 0 and step.steps == 1
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e)
    assert set(stats.as_dict()) >= {"step", "projected", "updated", "gamma", "loss/va", "cosine/va|vt"}


def test_losses_that_need_no_gradient_are_an_error():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="nothing to differentiate"):
        surgery_backward({"va": torch.tensor(1.0), "vt": torch.tensor(2.0)}, [w], "none")

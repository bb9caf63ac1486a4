"""CL (Algorithm 2 of Wu et al.): gamma schedules, batch-level gating and per-sample dropping against brute force."""

import itertools

import pytest
import torch
from surgery_helpers import (
    LinearLosses,
    build_video_audio_text,
    flat_grad,
    unflatten,
    video_audio_text_batch,
)

from meltr.combine import MLPCombiner
from meltr.surgery import (
    SURGERY,
    Curriculum,
    GammaSchedule,
    RealignCurriculum,
    SurgeryStep,
    TaskGradients,
    alignment,
    surgery_backward,
)


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float64)


# -- schedules -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "step", "cosine"])
@pytest.mark.parametrize(("start", "end"), [(0.1, 0.7), (0.5, -0.5)])
def test_schedules_are_monotone_and_hit_their_end_points(kind, start, end):
    schedule = GammaSchedule(kind, start, end, steps=10, stages=3)
    values = [schedule(step) for step in range(16)]
    assert values[0] == start
    assert values[10] == end
    assert all(v == end for v in values[10:])
    pairs = list(itertools.pairwise(values))
    if end > start:
        assert all(a <= b for a, b in pairs)
    else:
        assert all(a >= b for a, b in pairs)
    assert len(set(values)) > 2  # it does move in between


def test_schedule_values_in_between():
    assert GammaSchedule("linear", 0.0, 1.0, steps=4)(1) == pytest.approx(0.25)
    assert GammaSchedule("cosine", 0.0, 1.0, steps=4)(2) == pytest.approx(0.5)
    assert GammaSchedule("cosine", 0.0, 1.0, steps=4)(1) == pytest.approx((1 - 2**-0.5) / 2)
    step = GammaSchedule("step", 0.0, 1.0, steps=10, stages=2)
    assert [step(s) for s in (0, 4, 5, 9, 10)] == [0.0, 0.0, 0.5, 0.5, 1.0]
    constant = GammaSchedule("constant", 0.3)
    assert {constant(s) for s in range(20)} == {0.3}


def test_bad_schedules_say_how_to_fix_them():
    with pytest.raises(ValueError, match="linear"):
        GammaSchedule("exponential")
    with pytest.raises(ValueError, match="at least 1"):
        GammaSchedule("linear", 0.0, 1.0, steps=0)
    with pytest.raises(ValueError, match="end == start"):
        GammaSchedule("constant", 0.0, 1.0)
    with pytest.raises(ValueError, match="dot"):
        Curriculum(measure="angle")


def test_a_mapping_or_a_number_configures_the_schedule():
    method = SURGERY.build("curriculum", schedule={"kind": "linear", "start": 0.0, "end": 2.0, "steps": 4})
    assert method.schedule(2) == pytest.approx(1.0)
    assert Curriculum(schedule=0.25).schedule(100) == 0.25


# -- batch level ---------------------------------------------------------------------------------------------------
GRADS = tensor([[10.0, 0.0], [1.0, 10.0]])  # g_a . g_b = 10, cos = 10 / (10 sqrt(101)) ~ 0.0995


@pytest.mark.parametrize(("measure", "value"), [("dot", 10.0), ("cosine", 1 / 101**0.5)])
def test_alignment_measures(measure, value):
    assert float(alignment(GRADS @ GRADS.T, measure)) == pytest.approx(value)


@pytest.mark.parametrize("name", ["curriculum", "both"])
@pytest.mark.parametrize(("measure", "above", "below"), [("dot", 10.5, 9.5), ("cosine", 0.1, 0.09)])
def test_gamma_above_vetoes_and_gamma_below_is_the_plain_sum(name, measure, above, below):
    vetoed = SURGERY.build(name, schedule=above, measure=measure)(TaskGradients(GRADS))
    assert not vetoed.updated
    assert torch.equal(vetoed.direction, torch.zeros(2, dtype=torch.float64))
    assert vetoed.gamma == above
    passed = SURGERY.build(name, schedule=below, measure=measure)(TaskGradients(GRADS))
    assert passed.updated
    assert torch.equal(passed.direction, GRADS.sum(0))


def test_the_threshold_is_strict():
    assert not Curriculum(schedule=10.0)(TaskGradients(GRADS)).updated


def test_the_curriculum_follows_its_schedule():
    method = Curriculum(schedule={"kind": "linear", "start": 0.0, "end": 20.0, "steps": 10})
    decisions = [method(TaskGradients(GRADS), step).updated for step in range(12)]
    assert decisions == [True] * 5 + [False] * 7  # gamma = 2 * step passes while < 10


def test_three_tasks_pass_only_if_every_pair_does():
    grads = tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # inner products 1, 0, 1
    assert float(alignment(grads @ grads.T)) == 0.0
    assert not Curriculum(schedule=0.5)(TaskGradients(grads)).updated
    assert Curriculum(schedule=-0.5)(TaskGradients(grads)).updated


def test_both_realigns_what_the_curriculum_lets_through():
    grads = tensor([[3.0, 1.0], [-1.0, 2.0]])  # g_a . g_b = -1: realigned sum (2.1, 3.5), see test_surgery_realign
    result = RealignCurriculum(schedule=-2.0)(TaskGradients(grads))
    assert result.updated and result.projected
    torch.testing.assert_close(result.direction, tensor([2.1, 3.5]))
    assert not RealignCurriculum(schedule=-1.0)(TaskGradients(grads)).updated


def test_a_vetoed_step_leaves_zero_gradients_and_the_weights_unmoved():
    model = LinearLosses(GRADS, [(1,), (1,)], ("va", "vt"))
    surgery_backward(model(), model.parameters(), Curriculum(schedule=11.0))
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    step = SurgeryStep(model, None, Curriculum(schedule=11.0), optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    stats = step.step(None)
    assert not stats.updated and stats.gamma == 11.0 and stats.alignment == pytest.approx(10.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    step = SurgeryStep(model, None, Curriculum(schedule=9.0), torch.optim.SGD(model.parameters(), lr=0.1))
    assert step.step(None).updated
    torch.testing.assert_close(torch.cat([p.detach() for p in model.parameters()]), 1 - 0.1 * GRADS.sum(0))


# -- per sample ----------------------------------------------------------------------------------------------------
def brute_force(model, batch):
    """Each sample's task gradients by a loop of autograd calls: ``[B, T, P]``."""
    params = list(model.parameters())
    losses = model(batch)
    return torch.stack(
        [torch.stack([flat_grad(losses[t][i], params) for t in ("va", "vt")]) for i in range(len(losses["va"]))]
    )


def reference_alignment(per_sample, measure):
    a, b = per_sample[:, 0], per_sample[:, 1]
    dots = (a * b).sum(-1)
    return dots if measure == "dot" else dots / (a.norm(dim=-1) * b.norm(dim=-1))


@pytest.mark.parametrize("measure", ["dot", "cosine"])
@pytest.mark.parametrize(("chunk_size", "vectorize"), [(None, True), (3, True), (None, False)])
def test_per_sample_curriculum_drops_exactly_the_samples_below_gamma(measure, chunk_size, vectorize):
    model, batch = build_video_audio_text(), video_audio_text_batch(batch_size=7)
    per_sample = brute_force(model, batch)
    scores = reference_alignment(per_sample, measure)
    ranked = scores.sort().values
    gamma = float((ranked[3] + ranked[4]) / 2)  # four samples below, three above
    expected_dropped = [i for i in range(7) if scores[i] <= gamma]
    assert len(expected_dropped) == 4

    model.zero_grad(set_to_none=True)
    method = Curriculum(schedule=gamma, measure=measure, per_sample=True)
    stats = surgery_backward(model(batch), model.parameters(), method, chunk_size=chunk_size, vectorize=vectorize)

    assert stats.dropped == expected_dropped
    assert stats.dropped_fraction == pytest.approx(4 / 7)
    assert stats.updated and stats.gamma == gamma
    torch.testing.assert_close(stats.sample_alignment, scores)
    keep = torch.tensor([i not in expected_dropped for i in range(7)], dtype=torch.float64)
    expected = (per_sample * keep[:, None, None]).sum((0, 1)) / 7  # kept samples weigh 1/B, dropped ones 0
    for p, g in zip(model.parameters(), unflatten(expected, list(model.parameters())), strict=True):
        torch.testing.assert_close(p.grad, g)


def test_per_sample_curriculum_with_gamma_below_every_sample_is_the_plain_sum():
    model, batch = build_video_audio_text(), video_audio_text_batch()
    losses = model(batch)
    plain = [g.detach() for g in torch.autograd.grad(losses["va"].mean() + losses["vt"].mean(), model.parameters())]
    stats = surgery_backward(model(batch), model.parameters(), Curriculum(schedule=-1e9, per_sample=True))
    assert stats.dropped == [] and stats.updated
    for p, g in zip(model.parameters(), plain, strict=True):
        torch.testing.assert_close(p.grad, g)

    model.zero_grad(set_to_none=True)
    stats = surgery_backward(model(batch), model.parameters(), Curriculum(schedule=1e9, per_sample=True))
    assert stats.dropped == list(range(6)) and not stats.updated
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


def test_per_sample_curriculum_needs_per_sample_losses():
    model = LinearLosses(GRADS, [(1,), (1,)], ("va", "vt"))
    with pytest.raises(ValueError, match="per-sample"):
        surgery_backward(model(), model.parameters(), Curriculum(per_sample=True))


def test_a_sample_at_exactly_gamma_is_dropped():
    # Per-sample inner products 2, 1 and 0 (rows: samples; each sample's two task gradients).
    samples = tensor([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 5.0]], [[0.0, 3.0], [2.0, 0.0]]])
    result = Curriculum(schedule=1.0, per_sample=True)(TaskGradients.from_samples(samples))
    assert result.dropped.tolist() == [1, 2]
    torch.testing.assert_close(result.direction, tensor([2.0, 2.0]) / 3)


def test_per_sample_gradients_carry_the_combiner_sensitivity():
    model, batch = build_video_audio_text(), video_audio_text_batch(batch_size=5)
    torch.manual_seed(3)
    combiner = MLPCombiner(("va", "vt"), hidden=(4,), skip_primary=False).double()
    losses = model(batch)
    sensitivity = combiner.sensitivity(losses)  # [B, T], per sample
    per_sample = brute_force(model, batch) * sensitivity[:, :, None]
    scores = reference_alignment(per_sample, "dot")
    gamma = float(scores.median())
    stats = surgery_backward(losses, model.parameters(), Curriculum(schedule=gamma, per_sample=True), combiner)
    torch.testing.assert_close(stats.sample_alignment, scores)
    assert stats.dropped == [i for i in range(5) if scores[i] <= gamma]

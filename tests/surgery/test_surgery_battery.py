"""The battery every registered gradient-surgery method gets: shapes, finiteness, determinism, zero gradients."""

import pytest
import torch
from surgery_helpers import build_video_audio_text, video_audio_text_batch

from meltr.surgery import SURGERY, SurgeryResult, TaskGradients, build_surgery, surgery_backward

PER_SAMPLE = {"curriculum", "both"}


def variants():
    """Every method with default options, plus the per-sample variants and a permissive curriculum."""
    out = [(name, {}) for name in SURGERY.names()]
    out += [(name, {"per_sample": True, "schedule": -1e9}) for name in sorted(PER_SAMPLE)]
    out += [(name, {"schedule": -1e9, "measure": "cosine"}) for name in sorted(PER_SAMPLE)]
    return out


VARIANTS = variants()
IDS = [f"{name}-{'-'.join(map(str, options.values())) or 'default'}" for name, options in VARIANTS]


def test_every_method_is_in_the_battery():
    assert set(SURGERY.names()) == {"none", "realign", "curriculum", "both"}


def test_an_unknown_method_lists_the_known_ones():
    with pytest.raises(KeyError, match="both, curriculum, none, realign"):
        build_surgery("pcgrad")


def per_sample_gradients(num_tasks, seed=0, batch=5, size=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_tasks, size, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_shape_finiteness_and_determinism(name, options, num_tasks):
    method = build_surgery(name, **options)
    samples = per_sample_gradients(num_tasks)
    first = method(TaskGradients.from_samples(samples), step=3)
    again = build_surgery(name, **options)(TaskGradients.from_samples(samples), step=3)
    assert isinstance(first, SurgeryResult)
    assert first.direction.shape == (7,) and first.direction.dtype == torch.float64
    assert torch.isfinite(first.direction).all()
    assert torch.equal(first.direction, again.direction)
    assert first.updated == again.updated


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_zero_gradients_give_no_nan(name, options):
    method = build_surgery(name, **options)
    for samples in (torch.zeros(4, 2, 5), torch.cat([torch.zeros(4, 1, 5), torch.ones(4, 1, 5)], dim=1)):
        result = method(TaskGradients.from_samples(samples))
        assert torch.isfinite(result.direction).all()
        if result.updated:
            torch.testing.assert_close(result.direction, samples.mean(0).sum(0))
        else:
            assert torch.equal(result.direction, torch.zeros(5))


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_without_conflict_every_permissive_method_is_the_plain_sum(name, options):
    samples = per_sample_gradients(3).abs()  # non-negative entries: every inner product is positive
    result = build_surgery(name, **{**options, **({"schedule": -1e9} if name in PER_SAMPLE else {})})(
        TaskGradients.from_samples(samples)
    )
    assert result.updated and not result.projected
    torch.testing.assert_close(result.direction, samples.mean(0).sum(0))


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_through_the_driver_every_parameter_gets_a_finite_gradient(name, options):
    model, batch = build_video_audio_text(), video_audio_text_batch()
    stats = surgery_backward(model(batch), model.parameters(), build_surgery(name, **options), step=1)
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all()
    assert -1.0 <= stats.cosine["va|vt"] <= 1.0
    assert stats.step == 1
    if options.get("per_sample"):
        assert stats.sample_alignment.shape == (6,)


@pytest.mark.parametrize("measure", ["dot", "cosine"])
def test_a_zero_gradient_has_zero_alignment_and_cosine(measure):
    samples = torch.cat([torch.zeros(3, 1, 4), torch.ones(3, 1, 4)], dim=1)
    result = build_surgery("curriculum", schedule=-0.5, measure=measure, per_sample=True)(
        TaskGradients.from_samples(samples)
    )
    assert result.updated and result.alignment == 0.0
    assert torch.equal(result.sample_alignment, torch.zeros(3))
    model = torch.nn.Linear(2, 1)
    x = torch.ones(3, 2)
    losses = {"va": model(x).sum() * 0.0, "vt": model(x).sum()}
    stats = surgery_backward(losses, model.parameters(), "none")
    assert stats.cosine == {"va|vt": 0.0}

"""The shared battery of the downstream tasks (``TASKS``) over every backbone (``BACKBONES``): each pair either builds
and trains one step with finite losses and finite metrics, or is refused with an error that names the backbone."""

from __future__ import annotations

import io
import math

import pytest
import torch
from tqdm import tqdm

from meltr.combine import build_combiner
from meltr.data import make_world
from meltr.learner import AuxiliaryLearner
from meltr.models import BACKBONES, build_backbone
from meltr.tasks import TASKS, base, build_task

CASES = [(task, backbone) for task in TASKS.names() for backbone in BACKBONES.names()]
SUPPORTED = {  # which pairs build; the others must be refused (the battery checks both)
    "captioning": {"univl"},
    "qa": {"univl", "violet", "allinone", "vatt"},
    "retrieval": {"univl", "violet", "allinone"},
    "sentiment": {"univl", "violet", "allinone", "vatt"},
}


@pytest.fixture(scope="module")
def world():
    return make_world(n_pretrain=0, n_train=16, n_meta=8, n_test=8, seed=0)


def build(task: str, backbone: str, world):
    torch.manual_seed(0)
    shape = {"image_size": world.config.image_size}
    return build_task(task, build_backbone(backbone, "tiny", vocab_size=world.tokenizer.vocab_size, **shape), backbone)


def test_every_task_is_in_the_battery():
    assert set(SUPPORTED) == set(TASKS.names())


@pytest.mark.parametrize(("task", "backbone"), CASES)
def test_a_task_builds_trains_one_step_and_scores_finite_metrics_or_is_refused(task, backbone, world):
    if backbone not in SUPPORTED[task]:
        with pytest.raises(ValueError, match=backbone):
            build(task, backbone, world)
        return
    model = build(task, backbone, world)
    assert model.primary_task in model.tasks
    combiner = build_combiner("equal_weight", model.tasks, model.primary_task)
    learner = AuxiliaryLearner(model, combiner, torch.optim.SGD(model.parameters(), lr=1e-2), seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    batch = next(iter(world.loader("train", 4, seed=0, **model.loader_options("train"))))
    stats = learner.step(batch)
    assert set(stats.losses) == set(model.tasks)
    assert all(math.isfinite(value) for value in stats.losses.values()), stats.losses
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    options = {"meteor": False} if task == "captioning" else {}  # METEOR needs Java; the other scores do not
    metrics = model.evaluate(world, "test", 8, **options)
    assert model.metric in metrics
    assert all(math.isfinite(value) for value in metrics.values()), metrics


@pytest.mark.parametrize(("task", "backbone"), [(t, b) for t, b in CASES if b in SUPPORTED[t]])
def test_a_task_shows_progress_while_scoring_and_scores_the_same(task, backbone, world, monkeypatch):
    bars = []

    class Recorded(tqdm):
        """The bar evaluate() asks for, shown (to a buffer) even off a terminal when progress is on."""

        def __init__(self, *args, **kwargs):
            if kwargs.get("disable") is None:  # progress asked for: a bar on a terminal
                kwargs.update(disable=False, file=io.StringIO())
                bars.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(base, "tqdm", Recorded)
    model = build(task, backbone, world)
    options = {"meteor": False} if task == "captioning" else {}
    quiet = model.evaluate(world, "test", 4, **options)
    assert bars == []
    shown = model.evaluate(world, "test", 4, progress=True, **options)
    assert shown == quiet
    assert len(bars) == 1 and bars[0].total and bars[0].n == bars[0].total, [(b.n, b.total) for b in bars]


def test_evaluation_mode_restores_the_training_flag_even_on_an_error():
    module = torch.nn.Dropout(0.5)
    with pytest.raises(RuntimeError), base.evaluation_mode(module):
        assert not module.training
        raise RuntimeError("scoring failed")
    assert module.training
    with base.evaluation_mode(module.eval()):
        pass
    assert not module.training

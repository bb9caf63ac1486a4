"""Pre-training for a few hundred steps lowers every pretext loss of every backbone (slow: minutes on 2 cores).

Each loss is measured on the same held-out clips with the same masks and negatives (a fixed generator), at the
initialisation ``pretrain`` starts from and after its steps.
"""

import functools

import pytest

from meltr.data import make_world
from meltr.models import BACKBONES, build_backbone
from meltr.recipes.pretrain import PretrainConfig, held_out_losses, initial_backbone, pretrain

AT_CHANCE = "single-stream VTM stays at chance (benchmarks/matching_saddle.py)"

# (size, steps) per backbone: tiny, except UniVL, whose cross-encoder matching (joint, m_joint) leaves chance only
# once Align has aligned the two encoders, which the tiny model does not do within a few hundred steps.
RECIPES = {"univl": ("default", 500)}
DEFAULT_RECIPE = ("tiny", 400)
# Known failures (single-stream matching at chance, benchmarks/matching_saddle.py), expected to fail (strict: the
# run says so when they start passing):
# - the single-stream backbones' video-text matching stays at chance (ln 2) for hundreds of steps from a random
#   initialisation, trained alone as much as in the sum: [CLS] attends uniformly at first, so the head's input is
#   nearly the same for every pair (benchmarks/matching_saddle.py, docs/pretraining.md). All-in-one's VTM leaves
#   chance after about 1300 steps at its default size (its shipped checkpoint, 2000 steps, matches:
#   tests/test_pretrained_checkpoints.py); Violet's, without a contrastive loss to start it, has not in 1500;
# - the VATT-style video-audio NCE stays at chance (log B) for about 600 steps on the default world.
KNOWN_FAILURES = {("violet", "vtm"), ("allinone", "vtm"), ("vatt", "cma_va")}


@functools.cache
def before_and_after(name: str) -> tuple[dict[str, float], dict[str, float]]:
    world = make_world(n_pretrain=2048, n_train=0, n_meta=0, n_test=128)
    size, steps = RECIPES.get(name, DEFAULT_RECIPE)
    config = PretrainConfig(backbone=name, size=size, steps=steps, lr=1e-3, warmup_steps=50, log_every=0)
    initial = initial_backbone(config, world)
    return held_out_losses(initial, world), held_out_losses(pretrain(config, world, log=None).model, world)


def _cases():
    for name in BACKBONES.names():
        for task in build_backbone(name, "tiny", vocab_size=64).tasks:
            marks = [pytest.mark.xfail(strict=True, reason=AT_CHANCE)] if (name, task) in KNOWN_FAILURES else []
            yield pytest.param(name, task, marks=marks, id=f"{name}-{task}")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "task"), list(_cases()))
def test_a_few_hundred_pretraining_steps_lower_every_pretext_loss(name, task):
    before, after = before_and_after(name)
    assert after[task] < 0.98 * before[task], f"{name}/{task}: {before[task]:.3f} -> {after[task]:.3f}"

"""Pre-training for a few hundred steps lowers every pretext loss of every backbone (slow: minutes on 2 cores).

Each loss is measured on the same held-out clips with the same masks and negatives (a fixed generator), at the
initialisation ``pretrain`` starts from and after its steps.
"""

import functools

import pytest

from meltr.data import make_world
from meltr.models import BACKBONES, build_backbone
from meltr.recipes.pretrain import PretrainConfig, held_out_losses, initial_backbone, pretrain

# (size, steps, backbone options) per backbone; the default is tiny for 400 steps.
# - UniVL at its default size: its cross-encoder matching (joint, m_joint) leaves chance only once Align has
#   aligned the two encoders, which the tiny model does not do within a few hundred steps. At 500 steps the two
#   missed the 2% by a hair (0.695 -> 0.684 / 0.685, 0.681 needed); at 800 they are at 0.533 / 0.584
#   (docs/pretraining.md).
# - The single-stream matching (VTM) stays at chance from a random initialisation until a contrastive loss has
#   aligned text and video in the shared transformer (benchmarks/matching_saddle.py, docs/pretraining.md): Violet
#   gets ALBEF's contrastive head (``contrastive``, task ``vtc``) and 800 steps, after which its VTM has left chance.
RECIPES = {
    "univl": ("default", 800, {}),
    "violet": ("tiny", 800, {"contrastive": True}),
}
DEFAULT_RECIPE = ("tiny", 400, {})
# Known failures, expected to fail (strict: the run says so when they start passing), docs/pretraining.md:
# - All-in-one's VTM, although All-in-one has VTC: still 0.687 after 800 steps (0.98 ln 2 = 0.679 needed); it
#   leaves chance after about 1300 steps at its default size;
# - the VATT-style video-audio NCE stays at chance (log B) on the default world, also after 2000 steps or with
#   8192 pretrain clips; it waits until the video side sees the events the audio sounds.
AT_CHANCE = "stays at chance within this budget (docs/pretraining.md, benchmarks/matching_saddle.py)"
KNOWN_FAILURES = {("allinone", "vtm"), ("vatt", "cma_va")}


@functools.cache
def before_and_after(name: str) -> tuple[dict[str, float], dict[str, float]]:
    world = make_world(n_pretrain=2048, n_train=0, n_meta=0, n_test=128)
    size, steps, options = RECIPES.get(name, DEFAULT_RECIPE)
    config = PretrainConfig(
        backbone=name, size=size, steps=steps, lr=1e-3, warmup_steps=50, log_every=0, overrides=options
    )
    initial = initial_backbone(config, world)
    return held_out_losses(initial, world), held_out_losses(pretrain(config, world).model, world)


def _cases():
    for name in BACKBONES.names():
        options = RECIPES.get(name, DEFAULT_RECIPE)[2]
        for task in build_backbone(name, "tiny", vocab_size=64, **options).tasks:
            marks = [pytest.mark.xfail(strict=True, reason=AT_CHANCE)] if (name, task) in KNOWN_FAILURES else []
            yield pytest.param(name, task, marks=marks, id=f"{name}-{task}")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "task"), list(_cases()))
def test_a_few_hundred_pretraining_steps_lower_every_pretext_loss(name, task):
    before, after = before_and_after(name)
    assert after[task] < 0.98 * before[task], f"{name}/{task}: {before[task]:.3f} -> {after[task]:.3f}"

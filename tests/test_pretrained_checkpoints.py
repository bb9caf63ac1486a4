"""The pre-trained checkpoints shipped in src/meltr/assets/checkpoints: loadable, recorded, and useful."""

import pytest
import torch

from meltr.models import BACKBONES, pretrained_path
from meltr.training.checkpoint import load_checkpoint
from meltr.training.pretrain import load_pretrained

SHIPPED = [name for name in BACKBONES.names() if pretrained_path(name).exists()]


def test_the_univl_checkpoint_is_shipped():
    assert "univl" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_checkpoint_records_its_command_recipe_and_world(name):
    payload = load_checkpoint(pretrained_path(name))
    assert payload["backbone"] == name
    assert payload["command"].startswith(f"meltr pretrain --backbone {name} ")
    assert payload["recipe"]["seed"] == 0 and payload["world"]["seed"] == 0
    model = load_pretrained(pretrained_path(name))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_univl_zero_shot_retrieval_is_far_above_chance():
    from meltr.data import make_world
    from meltr.tasks import build_task

    clips = 200
    world = make_world(n_pretrain=0, n_train=0, n_meta=0, n_test=clips)
    model = build_task("retrieval", load_pretrained(pretrained_path("univl")), "univl")
    scores = model.evaluate(world, "test")
    chance_r1, chance_median = 100 / clips, (clips + 1) / 2
    assert scores["t2v/R@1"] >= 3 * chance_r1
    assert scores["t2v/MdR"] <= chance_median / 3

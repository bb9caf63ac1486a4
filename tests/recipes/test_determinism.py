"""A fine-tuning run is a deterministic function of its recipe, whatever the number of CPU threads."""

import torch

import meltr.recipes.finetune as finetune_module
from meltr.recipes import config_path
from meltr.recipes.finetune import FinetuneConfig, finetune

TINY = ["world.n_train=32", "world.n_meta=16", "world.n_test=16", "epochs=1", "meta_every=1", "threads=2"]


def test_finetune_runs_with_deterministic_algorithms_and_restores_the_setting(tmp_path, monkeypatch):
    seen = []
    build = finetune_module.build_task

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return build(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "build_task", spy)
    assert not torch.are_deterministic_algorithms_enabled()
    config = FinetuneConfig.load(config_path("tiny"), [*TINY, f"out_root={tmp_path}"])
    finetune(config, progress=False)
    assert seen == [True]
    assert not torch.are_deterministic_algorithms_enabled()


def test_two_runs_of_one_recipe_are_bit_identical(tmp_path):
    rows = []
    for name in ("a", "b"):
        config = FinetuneConfig.load(config_path("tiny"), [*TINY, f"out_root={tmp_path}", f"name={name}"])
        rows.append(finetune(config, progress=False).epochs)
    assert rows[0] == rows[1]

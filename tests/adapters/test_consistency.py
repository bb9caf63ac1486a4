"""The consistency constraint ``L_CC`` of MSTA, its world descriptions, and MELTR over an MSTA-adapted UniVL with
``L_CC`` as one more task."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from adapter_helpers import random_batch

from meltr.adapters import (
    ConsistencyTask,
    MSTAConfig,
    adapter_parameter_names,
    backbone_state_dict,
    class_descriptions,
    class_prompts,
    consistency_loss,
    inject_msta,
    load_adapter,
    save_adapter,
)
from meltr.combine import build_combiner
from meltr.contract import stack_task_losses
from meltr.data import EVENT_CLASSES, world_tokenizer
from meltr.hypergrad import MetaProblem
from meltr.learner import AuxiliaryLearner
from meltr.models import UNK_ID, build_backbone


def test_consistency_loss_against_a_hand_computation():
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    spatial = torch.tensor([[2.0, 0.0], [-1.0, -1.0]])  # cos 1, cos -1
    temporal = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # cos 0, cos 1/sqrt(2)
    expected = ((2 - 1 - 0) + (2 + 1 - 1 / math.sqrt(2))) / 2
    assert consistency_loss(text, spatial, temporal).item() == pytest.approx(expected, abs=1e-6)


def test_consistency_loss_trains_the_prompt_branch_only():
    text = torch.randn(3, 4, requires_grad=True)
    spatial, temporal = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    consistency_loss(text, spatial, temporal).backward()
    assert text.grad.abs().sum() > 0
    assert spatial.grad is None and temporal.grad is None
    assert consistency_loss(spatial, spatial, spatial).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        consistency_loss(text, spatial[:2], temporal)


def test_every_class_has_a_prompt_and_two_descriptions_in_the_worlds_words():
    tokenizer = world_tokenizer()
    prompts = class_prompts()
    descriptions = class_descriptions()
    assert len(prompts) == len(descriptions) == len(EVENT_CLASSES) == 12
    assert prompts[0] == "a clip of move left"
    for prompt, description in zip(prompts, descriptions, strict=True):
        assert description.spatial != description.temporal
        for text in (prompt, description.spatial, description.temporal):
            assert UNK_ID not in tokenizer.encode(text), text
    with pytest.raises(KeyError, match="WORLD_DESCRIPTIONS"):
        class_descriptions(["fly"])


def consistency_task(init: str = "kaiming") -> tuple[ConsistencyTask, torch.nn.Module, object]:
    tokenizer = world_tokenizer()
    torch.manual_seed(0)
    model = build_backbone("univl", "tiny", vocab_size=tokenizer.vocab_size)
    frozen = copy.deepcopy(model)
    torch.manual_seed(1)
    inject_msta(model, MSTAConfig(bottleneck_dim=4, init=init))
    return ConsistencyTask(model, frozen, tokenizer), frozen, tokenizer


def test_consistency_task_adds_l_cc_to_the_backbone_losses():
    task, frozen, tokenizer = consistency_task()
    batch = random_batch(batch_size=2, frames=4, length=8, vocab_size=tokenizer.vocab_size)
    losses = task(batch, torch.Generator().manual_seed(0))
    assert task.tasks == (*frozen.tasks, "consistency")
    assert stack_task_losses(losses, task.tasks).shape == (len(task.tasks),)  # a scalar task: batch-level mode

    def embed(model, texts):
        tokens = torch.as_tensor(tokenizer.encode_batch(texts, 16))
        return model.encode_text({"text": tokens, "text_mask": tokens != 0})

    descriptions = class_descriptions()
    expected = consistency_loss(
        embed(task.model, class_prompts()),
        embed(frozen, [d.spatial for d in descriptions]),
        embed(frozen, [d.temporal for d in descriptions]),
    )
    torch.testing.assert_close(losses["consistency"], expected)
    assert not any(name.startswith("frozen") for name, _ in task.named_parameters())

    losses["consistency"].backward()
    grads = {n: p.grad for n, p in task.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".adapter." not in n)  # the backbone is frozen
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "text_encoder" in n)
    assert all(g is None for n, g in grads.items() if "video_encoder" in n)  # L_CC reads text only


def test_meltr_step_on_msta_univl_moves_only_the_adapter():
    task, _, tokenizer = consistency_task()
    combiner = build_combiner("meltr", task.tasks, primary_task="align")
    adapter = [p for p in task.parameters() if p.requires_grad]
    learner = AuxiliaryLearner(
        task,
        combiner,
        torch.optim.AdamW(adapter, lr=1e-2, weight_decay=1e-3),
        meta_every=1,
        hypergrad="identity",
        clip_norm=None,
    )
    names = adapter_parameter_names(task)
    assert learner.scope == names
    backbone_before = {k: v.clone() for k, v in backbone_state_dict(task.model).items()}
    adapter_before = [p.detach().clone() for p in adapter]
    combiner_before = [p.detach().clone() for p in combiner.meta_parameters()]

    batch = random_batch(batch_size=2, frames=4, length=8, vocab_size=tokenizer.vocab_size)
    stats = learner.step(batch)
    assert not stats.skipped and stats.meta is not None and not stats.meta.skipped
    assert math.isfinite(stats.meta.hypergrad_norm) and stats.meta.hypergrad_norm > 0
    assert "consistency" in stats.losses
    assert any(not torch.equal(p, q) for p, q in zip(combiner.meta_parameters(), combiner_before, strict=True))

    backbone_after = backbone_state_dict(task.model)
    for key, value in backbone_before.items():
        assert torch.equal(backbone_after[key], value), key
    assert all(not torch.equal(p, q) for p, q in zip(adapter, adapter_before, strict=True))

    problem = MetaProblem(task, combiner, learner.scope, batch, batch)
    assert {id(p) for p in problem.params} == {id(p) for p in adapter}
    assert len(problem.params) == len(adapter)


def test_the_adapter_of_a_consistency_task_saves_and_loads_into_a_bare_backbone(tmp_path):
    task, _, tokenizer = consistency_task()
    save_adapter(task, tmp_path / "msta.pt")
    fresh = build_backbone("univl", "tiny", vocab_size=tokenizer.vocab_size)  # not the task's seed: reload it
    fresh.load_state_dict(backbone_state_dict(task.model))
    assert load_adapter(fresh, tmp_path / "msta.pt") is fresh
    batch = random_batch(batch_size=2, frames=4, length=8, vocab_size=tokenizer.vocab_size)
    assert torch.equal(fresh.encode_text(batch), task.encode_text(batch))
    assert torch.equal(fresh.encode_video(batch), task.encode_video(batch))


def test_l_ce_plus_alpha_l_cc_is_a_manual_combination():
    task, _, tokenizer = consistency_task()
    alpha = 1.0  # the paper's best
    combiner = build_combiner("manual", task.tasks, primary_task="align", weights={"align": 1.0, "consistency": alpha})
    batch = random_batch(batch_size=2, frames=4, length=8, vocab_size=tokenizer.vocab_size)
    losses = task(batch, torch.Generator().manual_seed(0))
    combined = combiner(stack_task_losses(losses, task.tasks))
    torch.testing.assert_close(combined, losses["align"].mean() + alpha * losses["consistency"])

"""meltr inside the Hugging Face Trainer: compute_loss + on_optimizer_step give the plain learner's run (gradient
accumulation and clipping by the Trainer), remove_unused_columns is handled, checkpoints hold the learner."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")

from torch.utils.data import SequentialSampler
from transformers import TrainingArguments

import ddp_worker
from meltr.combine import build_combiner
from meltr.integrations.hf_trainer import STATE_FILE, MeltrTrainer
from meltr.learner import AuxiliaryLearner

SMALL = {"d_model": 8, "mlp_hidden": 4, "ff_dim": 16, "num_heads": 2}
LEARNER = {"meta_every": 2, "hypergrad": "identity", "backend": "jvp", "replay_size": 3, "seed": 0}
STEPS, GLOBAL = 6, 8


class InOrder(MeltrTrainer):
    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset or self.train_dataset)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def samples():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(STEPS * GLOBAL, ddp_worker.DIM, generator=g, dtype=torch.float64)
    y = torch.randn(STEPS * GLOBAL, len(ddp_worker.TASKS), generator=g, dtype=torch.float64)
    return [{"x": x[i], "y": y[i]} for i in range(len(x))]


def parts():
    model = ddp_worker.build_model()
    torch.manual_seed(0)
    combiner = build_combiner("meltr", ddp_worker.TASKS, **SMALL).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    meta = torch.optim.Adam(combiner.meta_parameters(), lr=1e-2)
    return model, combiner, optimizer, meta


def arguments(tmp_path, **overrides):
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": GLOBAL // 2,
        "gradient_accumulation_steps": 2,
        "num_train_epochs": 1,
        "max_grad_norm": 1.0,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


def trainer(tmp_path, **overrides):
    model, combiner, optimizer, meta = parts()
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return InOrder(
        model,
        arguments(tmp_path, **overrides),
        combiner=combiner,
        meta_optimizer=meta,
        learner_options=LEARNER,
        train_dataset=samples(),
        optimizers=(optimizer, constant),
    )


def reference_run():
    model, combiner, optimizer, meta = parts()
    learner = AuxiliaryLearner(
        model, combiner, optimizer, meta_optimizer=meta, accumulate=2, max_grad_norm=1.0, **LEARNER
    )
    data = samples()
    for start in range(0, len(data), GLOBAL // 2):
        chunk = data[start : start + GLOBAL // 2]
        learner.step({k: torch.stack([s[k] for s in chunk]) for k in ("x", "y")})
    return learner


def test_a_trainer_run_is_the_plain_learner_run_with_accumulation_and_clipping(tmp_path):
    run = trainer(tmp_path)
    assert run.args.remove_unused_columns is False
    run.train()
    reference = reference_run()
    assert run.state.global_step == run.learner.inner_steps == STEPS and run.learner.meta_steps == STEPS // 2
    assert all(len(group) == 2 for group in run.learner.replay.batches)
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(run.model.state_dict()[name], value, rtol=1e-5, atol=1e-5)
    for name, value in reference.combiner.state_dict().items():
        torch.testing.assert_close(run.combiner.state_dict()[name], value, rtol=1e-5, atol=1e-5)
    assert any("meta/hypergrad_norm" in row for row in run.state.log_history)


def test_checkpoints_hold_the_learner_and_resume_exactly(tmp_path):
    straight = trainer(tmp_path / "straight")
    straight.train()
    saving = trainer(tmp_path / "saving", save_strategy="steps", save_steps=4)
    saving.train()
    checkpoint = tmp_path / "saving" / "checkpoint-4"
    assert (checkpoint / STATE_FILE).exists()
    resumed = trainer(tmp_path / "resumed")
    with torch.no_grad():  # weights a fresh start could not recover from: only the checkpoint restores them
        for p in [*resumed.model.parameters(), *resumed.combiner.parameters()]:
            p.add_(1.0)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.learner.inner_steps == STEPS and resumed.learner.meta_steps == STEPS // 2
    for part in ("model", "combiner"):
        for name, value in getattr(straight, part).state_dict().items():
            torch.testing.assert_close(getattr(resumed, part).state_dict()[name], value, rtol=1e-12, atol=1e-12)


def test_loop_options_belong_to_the_trainer(tmp_path):
    model, combiner, _, _ = parts()
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        MeltrTrainer(model, arguments(tmp_path), combiner=combiner, learner_options={"accumulate": 2})

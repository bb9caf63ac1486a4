"""meltr under PyTorch Lightning (single process): the same run as the plain learner, global_step once per inner
step, the learner's state in Lightning checkpoints, exact resume. The 2-process DDP run is in
test_loops_ddp.py (slow)."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("lightning")

import lightning_worker

import ddp_worker


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def states(module):
    return {"model": module.backbone.state_dict(), "combiner": module.combiner.state_dict()}


def assert_states_equal(a, b, tol=0.0):
    for part in a:
        for name, value in a[part].items():
            torch.testing.assert_close(value, b[part][name], rtol=tol, atol=tol)


def test_a_lightning_fit_is_the_plain_learner_run_and_counts_inner_steps():
    module = lightning_worker.build_module()
    fit = lightning_worker.trainer()
    fit.fit(module, lightning_worker.loader())
    model = ddp_worker.build_model()
    learner = ddp_worker.train(model, "identity", "double_backward")
    assert_states_equal(states(module), {"model": model.state_dict(), "combiner": learner.combiner.state_dict()})
    # 7 batches, one skipped for a NaN loss: 6 inner steps, 3 meta steps; global_step follows inner steps only.
    assert fit.global_step == module.learner.inner_steps == 6 and module.learner.meta_steps == 3


def test_accumulation_under_lightning_advances_global_step_once_per_optimiser_step():
    module = lightning_worker.build_module(accumulate=2)
    fit = lightning_worker.trainer()
    fit.fit(module, lightning_worker.loader())
    # Batches 1-4 make two optimiser steps; batch 5 (NaN) drops its group; batches 6-7 make the third.
    assert fit.global_step == module.learner.inner_steps == 3 and module.learner.meta_steps == 1


def test_checkpoints_hold_the_learner_and_a_resumed_fit_continues_exactly(tmp_path):
    straight = lightning_worker.build_module()
    lightning_worker.trainer(max_epochs=2).fit(straight, lightning_worker.loader())

    first = lightning_worker.build_module()
    fit = lightning_worker.trainer(max_epochs=1)
    fit.fit(first, lightning_worker.loader())
    path = tmp_path / "epoch1.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert saved["meltr_learner"]["counters"]["meta_steps"] == 3
    assert any(key.startswith("combiner.") for key in saved["state_dict"])

    resumed = lightning_worker.build_module()
    with torch.no_grad():  # weights a fresh start could not recover from: only the checkpoint restores them
        for p in resumed.parameters():
            p.add_(1.0)
    again = lightning_worker.trainer(max_epochs=2)
    again.fit(resumed, lightning_worker.loader(), ckpt_path=path)
    assert again.global_step == 12 and resumed.learner.meta_steps == straight.learner.meta_steps == 6
    assert_states_equal(states(resumed), states(straight))
    torch.testing.assert_close(
        resumed.learner.meta_optimizer.state_dict()["state"], straight.learner.meta_optimizer.state_dict()["state"]
    )


def test_options_lightning_owns_are_refused():
    with pytest.raises(ValueError, match="backward"):
        lightning_worker.build_module(backward=torch.Tensor.backward)


def test_a_precision_plugin_with_a_loss_scaler_is_refused_with_the_fix():
    from lightning.pytorch.plugins.precision import MixedPrecision

    module = lightning_worker.build_module()
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))  # what "16-mixed" is on a GPU
    with pytest.raises(ValueError, match="bf16-mixed"):
        lightning_worker.trainer(plugins=[scaled]).fit(module, lightning_worker.loader())


def test_bf16_mixed_trains_and_meta_steps_run():
    module = lightning_worker.build_module()
    module.backbone.float()
    module.combiner.float()
    shards = [{k: v.float() for k, v in batch.items()} for batch in lightning_worker.loader()]
    lightning_worker.trainer(precision="bf16-mixed").fit(module, torch.utils.data.DataLoader(shards, batch_size=None))
    assert module.learner.inner_steps == 6 and module.learner.meta_steps == 3

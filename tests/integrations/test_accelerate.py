"""meltr under Accelerate in one process: the plain learner's run, and meta steps in float32 under bf16 mixed
precision. The 2-process run is in test_loops_ddp.py (slow)."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("accelerate")

import accelerate_worker
from accelerate import Accelerator
from accelerate.state import AcceleratorState

import ddp_worker
from meltr.combine import build_combiner
from meltr.integrations.accelerate import prepare_learner


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    AcceleratorState._reset_state(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    AcceleratorState._reset_state(True)


def test_a_single_process_accelerate_run_is_the_plain_learner_run():
    _, learner = accelerate_worker.run(accumulate=2)
    model = ddp_worker.build_model()
    reference = ddp_worker.train(model, "identity", "double_backward")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(learner.model.state_dict()[name], value, rtol=1e-12, atol=1e-12)
    for name, value in reference.combiner.state_dict().items():
        torch.testing.assert_close(learner.combiner.state_dict()[name], value, rtol=1e-9, atol=1e-9)


def recorded_meta_step(mixed_precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The inner loss and the hypergradient of one meta step at the initial weights, on one replayed batch."""
    AcceleratorState._reset_state(True)
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    model = ddp_worker.build_model().float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    torch.manual_seed(0)
    combiner = build_combiner("meltr", ddp_worker.TASKS, d_model=8, mlp_hidden=4, ff_dim=16, num_heads=2)
    learner = prepare_learner(accelerator, model, combiner, optimizer, hypergrad="identity", backend="jvp")
    batch = {k: v.float() for k, v in ddp_worker.global_batches()[0].items()}
    inner = combiner(combiner.stack(model(batch))).detach()
    learner.replay.append(batch)
    hypergrads = []
    estimator = learner.estimator
    learner.estimator = lambda problem: hypergrads.append(estimator(problem)) or hypergrads[-1]
    learner.meta_step()
    return inner, torch.cat([g.flatten() for g in hypergrads[0]])


def test_bf16_autocasts_the_inner_forward_while_meta_steps_run_in_float32():
    inner_full, hypergrad_full = recorded_meta_step("no")
    inner_bf16, hypergrad_bf16 = recorded_meta_step("bf16")
    assert not torch.equal(inner_full, inner_bf16)  # Accelerate's autocast is on for the inner forward
    torch.testing.assert_close(hypergrad_bf16, hypergrad_full, rtol=0, atol=0)


def test_options_the_helper_owns_are_refused():
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = ddp_worker.build_model()
    combiner = build_combiner("equal_weight", ddp_worker.TASKS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="backward"):
        prepare_learner(accelerator, model, combiner, optimizer, backward=torch.Tensor.backward)
    with pytest.raises(ValueError, match="accumulate"):
        prepare_learner(accelerator, model, combiner, optimizer)

"""Under DDP every rank keeps identical weights, equal to a single-process run on the same global batches."""

import warnings
from pathlib import Path

import pytest
import torch

import ddp_worker
from torchrun import assert_ranks_match, load_ranks, torchrun


@pytest.mark.parametrize(("estimator", "backend"), [("identity", "double_backward"), ("neumann", "jvp")])
def test_two_ranks_match_each_other_and_a_single_process(tmp_path, estimator, backend):
    result = torchrun(Path(ddp_worker.__file__), str(tmp_path), estimator, backend)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = load_ranks(tmp_path)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ddp_worker.build_model()
        learner = ddp_worker.train(model, estimator, backend)
    assert learner.meta_steps == ranks[0]["meta_steps"] == ranks[1]["meta_steps"] == 3
    assert learner.skipped_steps == ranks[0]["skipped"] == ranks[1]["skipped"] == 1
    # MetaStats are averaged over ranks: both ranks report the single process's values on the global batch.
    assert ranks[0]["meta_history"] == ranks[1]["meta_history"]
    torch.testing.assert_close(
        torch.tensor(ranks[0]["meta_history"]), torch.tensor(learner.meta_history), rtol=1e-6, atol=1e-9
    )

    assert_ranks_match(ranks, {"model": model.state_dict(), "combiner": learner.combiner.state_dict()})
    # The test has teeth: meta steps moved the combiner away from its initial weights.
    torch.manual_seed(0)
    initial = ddp_worker.build_combiner("meltr", ddp_worker.TASKS, d_model=8, mlp_hidden=4, ff_dim=16, num_heads=2)
    moved = max(
        (initial.state_dict()[k].double() - v).abs().max()
        for k, v in learner.combiner.state_dict().items()
        if v.is_floating_point()
    )
    assert moved > 1e-4

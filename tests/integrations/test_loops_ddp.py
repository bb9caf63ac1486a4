"""Two gloo processes under Lightning's DDP and under Accelerate: both ranks end with bit-identical backbone and
combiner weights, equal to a single-process run on the same global batches (ddp_worker.train) to 1e-5."""

from __future__ import annotations

import warnings
from pathlib import Path

import accelerate_worker
import lightning_worker
import pytest

import ddp_worker
from torchrun import assert_ranks_match, load_ranks, torchrun


def single_process_reference() -> dict[str, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ddp_worker.build_model()
        learner = ddp_worker.train(model, "identity", "double_backward")
    return {"model": model.state_dict(), "combiner": learner.combiner.state_dict()}


@pytest.mark.slow
def test_lightning_ddp_ranks_match_each_other_and_a_single_process(tmp_path):
    pytest.importorskip("lightning")
    result = torchrun(Path(lightning_worker.__file__), str(tmp_path), "manual")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = load_ranks(tmp_path)
    assert [r["global_step"] for r in ranks] == [6, 6] and [r["meta_steps"] for r in ranks] == [3, 3]
    assert_ranks_match(ranks, single_process_reference())


@pytest.mark.slow
def test_lightning_ddp_drifts_apart_when_the_learner_bypasses_manual_backward(tmp_path):
    """The hazard the backward= hook removes: Lightning's manual optimisation syncs DDP only in manual_backward."""
    pytest.importorskip("lightning")
    result = torchrun(Path(lightning_worker.__file__), str(tmp_path), "plain")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = load_ranks(tmp_path)
    drift = max((ranks[0]["model"][k] - ranks[1]["model"][k]).abs().max() for k in ranks[0]["model"])
    assert drift > 1e-3
    with pytest.raises(AssertionError):
        assert_ranks_match(ranks, single_process_reference())


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_accelerate_ranks_match_each_other_and_a_single_process(tmp_path, accumulate):
    pytest.importorskip("accelerate")
    result = torchrun(Path(accelerate_worker.__file__), str(tmp_path), str(accumulate))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = load_ranks(tmp_path)
    assert [r["meta_steps"] for r in ranks] == [3, 3] and [r["skipped"] for r in ranks] == [1, 1]
    assert_ranks_match(ranks, single_process_reference())

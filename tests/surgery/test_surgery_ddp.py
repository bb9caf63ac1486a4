"""Under DDP the per-task gradients are all-reduced before the surgery: ranks agree with each other and with a
single-process computation that averages the shards' task gradients first.

The two-process test is marked slow (two torch imports and DDP's first construction take ~10 s on two cores).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import surgery_ddp_worker
import torch


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("surgery_ddp")
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    worker = str(Path(surgery_ddp_worker.__file__))
    processes = [
        subprocess.Popen(
            [sys.executable, worker, str(rank), "2", str(out / "init"), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
    return [torch.load(out / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["realign", "curriculum"])
def test_ranks_match_each_other_and_the_reduce_then_project_reference(ranks, method):
    expected, decisions = surgery_ddp_worker.reference(method, world=2)
    assert ranks[0][method]["decisions"] == ranks[1][method]["decisions"] == decisions
    for name, value in expected.items():
        torch.testing.assert_close(ranks[0][method]["model"][name], ranks[1][method]["model"][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0][method]["model"][name], value)
    if method == "curriculum":
        assert True in decisions and False in decisions  # the test has teeth: both branches were taken


def test_projecting_each_shard_before_averaging_would_differ():
    """The reference has teeth: surgery on each shard's gradients, then averaging, gives another direction."""
    model = surgery_ddp_worker.build_video_audio_text()
    params = list(model.parameters())
    batch = surgery_ddp_worker.batches()[0]
    method = surgery_ddp_worker.build_surgery("realign")
    shards = [
        surgery_ddp_worker.task_gradients(
            model(surgery_ddp_worker.shard(batch, rank, 2)), params, reduce=lambda ts: list(ts)
        )
        for rank in range(2)
    ]
    project_then_average = torch.stack([method(grads).direction for grads in shards]).mean(0)
    averaged = shards[0]
    averaged.flat = torch.stack([grads.flat for grads in shards]).mean(0)
    result = method(averaged)
    assert result.projected
    assert not torch.allclose(result.direction, project_then_average)

"""Worker of test_ddp.py: trains under DistributedDataParallel (torchrun) or, imported, in a single process.

Run as ``torchrun --nproc_per_node=2 tests/ddp_worker.py OUT_DIR ESTIMATOR BACKEND``; each rank writes its final model
and combiner weights to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from meltr.combine import build_combiner
from meltr.learner import AuxiliaryLearner

TASKS = ("primary", "aux_a", "aux_b")
GLOBAL_BATCH, DIM, STEPS, NAN_STEP = 8, 5, 7, 4


class TwoLayer(nn.Module):
    """A shared tanh layer and one linear head per task; per-sample squared errors."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(DIM, 8)
        self.heads = nn.Linear(8, len(TASKS))

    def forward(self, batch):
        errors = (self.heads(torch.tanh(self.trunk(batch["x"]))) - batch["y"]) ** 2
        return {t: errors[:, i] for i, t in enumerate(TASKS)}


def global_batches():
    g = torch.Generator().manual_seed(123)
    batches = []
    for step in range(STEPS):
        x = torch.randn(GLOBAL_BATCH, DIM, generator=g, dtype=torch.float64)
        y = torch.randn(GLOBAL_BATCH, len(TASKS), generator=g, dtype=torch.float64)
        if step == NAN_STEP:
            y[-1, 1] = float("nan")  # lands on the last rank only
        batches.append({"x": x, "y": y})
    return batches


def shard(batch, rank, world):
    size = GLOBAL_BATCH // world
    return {k: v[rank * size : (rank + 1) * size] for k, v in batch.items()}


def train(model, estimator, backend, rank=0, world=1):
    """The same run for every rank count: the same seeds, the same global batches."""
    torch.manual_seed(0)
    combiner = build_combiner("meltr", TASKS, d_model=8, mlp_hidden=4, ff_dim=16, num_heads=2).double()
    inner = torch.optim.Adam(model.parameters(), lr=1e-2)
    meta = torch.optim.Adam(combiner.meta_parameters(), lr=1e-2)
    learner = AuxiliaryLearner(
        model,
        combiner,
        inner,
        meta_optimizer=meta,
        meta_every=2,
        hypergrad=estimator,
        backend=backend,
        replay_size=3,
        seed=0,
    )
    learner.meta_history = []  # (L_pri, l_0, L_reg) of every meta step, as MetaStats report them
    for batch in global_batches():
        meta = learner.step(shard(batch, rank, world)).meta
        if meta is not None:
            learner.meta_history.append((meta.primary_loss, meta.primary_task_loss, meta.regulariser))
    return learner


def build_model():
    torch.manual_seed(42)
    return TwoLayer().double()


def main(out_dir: str, estimator: str, backend: str) -> None:
    import warnings

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    warnings.simplefilter("ignore")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DistributedDataParallel(build_model())
    learner = train(model, estimator, backend, rank, world)
    torch.save(
        {
            "model": model.module.state_dict(),
            "combiner": learner.combiner.state_dict(),
            "meta_steps": learner.meta_steps,
            "skipped": learner.skipped_steps,
            "meta_history": learner.meta_history,
        },
        f"{out_dir}/rank{rank}.pt",
    )
    # Tear down while the interpreter is whole: both ranks past their last collective, DDP's reducer (which holds
    # gloo work objects and their tensors) gone, then the process group. Without this, rank 0 once aborted at exit
    # in CI with "terminate called without an active exception" (SIGABRT), a known gloo teardown race.
    dist.barrier()
    del model, learner
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""Worker of integrations/test_loops_ddp.py: the run of ddp_worker.py under Accelerate (``prepare_learner``).

Run as ``torchrun --nproc_per_node=2 tests/integrations/accelerate_worker.py OUT_DIR ACCUMULATE``; each rank
writes its final model and combiner weights to ``OUT_DIR/rank<r>.pt``. ``ACCUMULATE=2`` feeds each global batch as
two micro-batches.
"""

from __future__ import annotations

import sys
import warnings

import torch

import ddp_worker
from meltr.combine import build_combiner


def run(accumulate: int = 1):
    from accelerate import Accelerator

    from meltr.integrations.accelerate import prepare_learner

    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    model = ddp_worker.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    torch.manual_seed(0)
    combiner = build_combiner("meltr", ddp_worker.TASKS, d_model=8, mlp_hidden=4, ff_dim=16, num_heads=2).double()
    learner = prepare_learner(
        accelerator,
        model,
        combiner,
        optimizer,
        meta_optimizer=torch.optim.Adam(combiner.meta_parameters(), lr=1e-2),
        meta_every=2,
        hypergrad="identity",
        backend="double_backward",
        replay_size=3,
        seed=0,
        accumulate=accumulate,
    )
    for batch in ddp_worker.global_batches():
        local = ddp_worker.shard(batch, rank, world)
        size = next(iter(local.values())).shape[0] // accumulate
        for i in range(accumulate):
            learner.step({k: v[i * size : (i + 1) * size] for k, v in local.items()})
    return accelerator, learner


def main(out_dir: str, accumulate: str) -> None:
    warnings.simplefilter("ignore")
    accelerator, learner = run(int(accumulate))
    torch.save(
        {
            "model": accelerator.unwrap_model(learner.model).state_dict(),
            "combiner": learner.combiner.state_dict(),
            "meta_steps": learner.meta_steps,
            "skipped": learner.skipped_steps,
        },
        f"{out_dir}/rank{accelerator.process_index}.pt",
    )
    accelerator.wait_for_everyone()
    del learner
    accelerator.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:3])

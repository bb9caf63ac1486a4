"""Worker of integrations/test_loops_ddp.py: the run of ddp_worker.py under Lightning's DDP (manual optimisation).

Run as ``torchrun --nproc_per_node=2 tests/integrations/lightning_worker.py OUT_DIR BACKWARD``; ``BACKWARD`` is
``manual`` (the module as shipped: the learner back-propagates through ``manual_backward``) or ``plain`` (the
learner calls ``Tensor.backward`` itself, which Lightning's DDP does not synchronise). Each rank writes its final
model and combiner weights to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

import ddp_worker
from meltr.combine import build_combiner


def build_module(plain_backward: bool = False, **options):
    from meltr.integrations.lightning import MeltrLightningModule

    class PlainBackward(MeltrLightningModule):
        def build_learner(self):
            learner = super().build_learner()
            learner.backward = torch.Tensor.backward  # what a learner unaware of Lightning would do
            return learner

    model = ddp_worker.build_model()
    torch.manual_seed(0)
    combiner = build_combiner("meltr", ddp_worker.TASKS, d_model=8, mlp_hidden=4, ff_dim=16, num_heads=2).double()
    settings = {"meta_every": 2, "hypergrad": "identity", "backend": "double_backward", "replay_size": 3, "seed": 0}
    settings.update(options)
    module_class = PlainBackward if plain_backward else MeltrLightningModule
    return module_class(
        model,
        combiner,
        lambda params: torch.optim.Adam(params, lr=1e-2),
        meta_optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        **settings,
    )


def trainer(devices: int = 1, max_epochs: int = 1, **options):
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    strategy = DDPStrategy(process_group_backend="gloo") if devices > 1 else "auto"
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        **options,
    )


def loader(rank: int = 0, world: int = 1):
    shards = [ddp_worker.shard(batch, rank, world) for batch in ddp_worker.global_batches()]
    return torch.utils.data.DataLoader(shards, batch_size=None)


def main(out_dir: str, backward: str) -> None:
    warnings.simplefilter("ignore")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    module = build_module(plain_backward=backward == "plain")
    fit = trainer(devices=world)
    fit.fit(module, loader(rank, world))
    torch.save(
        {
            "model": module.backbone.state_dict(),
            "combiner": module.combiner.state_dict(),
            "meta_steps": module.learner.meta_steps,
            "skipped": module.learner.skipped_steps,
            "global_step": fit.global_step,
        },
        f"{out_dir}/rank{rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])

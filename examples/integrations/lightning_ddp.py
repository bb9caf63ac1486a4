"""PyTorch Lightning: MELTR fine-tuning of a transformers backbone with manual optimisation, on CPU processes.

Run: ``python examples/integrations/lightning_ddp.py --devices 2`` (Lightning starts the second process itself;
gloo on CPU). docs/integrations.md explains what the module does.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy

from meltr.combine import build_combiner
from meltr.data import make_world
from meltr.integrations.lightning import MeltrLightningModule
from meltr.models.hf import tiny_random_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed")
    args = parser.parse_args()

    torch.manual_seed(0)  # every process builds the same model; DDP also broadcasts rank 0's weights
    world = make_world(n_pretrain=0, n_train=64, n_meta=16, n_test=16, seed=0)
    backbone = tiny_random_backbone(world.tokenizer.vocab_size)
    combiner = build_combiner("meltr", backbone.tasks, d_model=32, mlp_hidden=16, ff_dim=64, num_heads=4)
    module = MeltrLightningModule(
        backbone,
        combiner,
        lambda params: torch.optim.AdamW(params, lr=1e-4),
        meta_every=2,
        max_grad_norm=1.0,
    )
    strategy = DDPStrategy(process_group_backend="gloo") if args.devices > 1 else "auto"
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=strategy,
        precision=args.precision,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # Lightning adds a DistributedSampler to this loader: each process reads its own share of the clips.
    trainer.fit(module, world.loader("train", batch_size=args.batch_size))
    if trainer.is_global_zero:
        learner = module.learner
        print(f"global_step {trainer.global_step}, {learner.inner_steps} inner steps, {learner.meta_steps} meta steps")


if __name__ == "__main__":
    main()

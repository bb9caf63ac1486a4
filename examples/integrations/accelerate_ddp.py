"""Accelerate: MELTR fine-tuning of a transformers backbone, one learner step per batch, under torchrun.

Run: ``torchrun --nproc_per_node 2 examples/integrations/accelerate_ddp.py`` (or ``accelerate launch``; a single
``python`` process works too). docs/integrations.md explains what prepare_learner does.
"""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator

from meltr.combine import build_combiner
from meltr.data import make_world
from meltr.integrations.accelerate import prepare_learner
from meltr.models.hf import tiny_random_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mixed-precision", default="no", help="no or bf16")
    args = parser.parse_args()

    accelerator = Accelerator(cpu=True, mixed_precision=args.mixed_precision)
    torch.manual_seed(0)
    world = make_world(n_pretrain=0, n_train=64, n_meta=16, n_test=16, seed=0)
    backbone = tiny_random_backbone(world.tokenizer.vocab_size)
    combiner = build_combiner("meltr", backbone.tasks, d_model=32, mlp_hidden=16, ff_dim=64, num_heads=4)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4)
    loader = world.loader("train", batch_size=args.batch_size)
    backbone, optimizer, loader = accelerator.prepare(backbone, optimizer, loader)  # shards the loader per process
    learner = prepare_learner(accelerator, backbone, combiner, optimizer, meta_every=2, max_grad_norm=1.0)
    for _ in range(args.epochs):
        for batch in loader:
            stats = learner.step(batch)
            if stats.meta is not None:
                accelerator.print(f"step {learner.inner_steps}: meta L_pri {stats.meta.primary_loss:.3f}")
    accelerator.print(f"{learner.inner_steps} inner steps, {learner.meta_steps} meta steps per process")
    accelerator.end_training()


if __name__ == "__main__":
    main()

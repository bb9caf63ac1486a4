"""A plain PyTorch loop: a transformers backbone (tiny, random, built offline) fine-tuned on the synthetic world with
MELTR, bf16 autocast, gradient accumulation, clipping and a replay buffer of dataset indices.

Run: ``python examples/integrations/plain_loop.py [--steps 12]`` (docs/integrations.md).
"""

from __future__ import annotations

import argparse
import time

import torch

from meltr.combine import build_combiner
from meltr.data import collate, make_world
from meltr.learner import AuxiliaryLearner
from meltr.models.hf import tiny_random_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="micro-batches")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    world = make_world(n_pretrain=0, n_train=64, n_meta=16, n_test=16, seed=0)
    backbone = tiny_random_backbone(world.tokenizer.vocab_size)
    combiner = build_combiner("meltr", backbone.tasks, d_model=32, mlp_hidden=16, ff_dim=64, num_heads=4)
    dataset = world.dataset("train")

    def fetch(clip_ids: torch.Tensor) -> dict[str, torch.Tensor]:  # the replay buffer keeps clip ids only
        return collate([dataset[int(i)] for i in clip_ids])

    learner = AuxiliaryLearner(
        backbone,
        combiner,
        torch.optim.AdamW(backbone.parameters(), lr=1e-4),
        meta_every=2,  # optimiser steps between meta steps
        accumulate=2,  # micro-batches per optimiser step
        max_grad_norm=1.0,
        precision="bf16",  # inner forward under autocast; meta steps in float32
        replay_storage="index",
        replay_fetch=fetch,
        replay_index_key="clip_id",
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    batches = iter(loader)
    started = time.perf_counter()
    for _ in range(args.steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        stats = learner.step(batch)
        if stats.meta is not None:
            print(
                f"optimiser step {learner.inner_steps}: L_aux {stats.combined:.3f}, meta L_pri "
                f"{stats.meta.primary_loss:.3f}, |hypergradient| {stats.meta.hypergrad_norm:.3g}"
            )
    elapsed = time.perf_counter() - started
    print(
        f"{learner.steps} micro-batches, {learner.inner_steps} optimiser steps, {learner.meta_steps} meta steps, "
        f"{learner.skipped_steps} skipped, {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()

"""The Hugging Face Trainer: MELTR fine-tuning of a transformers backbone through MeltrTrainer.

Run: ``python examples/integrations/hf_trainer.py [--output-dir runs/hf-trainer]`` (docs/integrations.md).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import TrainingArguments

from meltr.combine import build_combiner
from meltr.data import collate, make_world
from meltr.integrations.hf_trainer import MeltrTrainer
from meltr.models.hf import tiny_random_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=None, help="checkpoints (default: a temporary directory)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    torch.manual_seed(0)
    world = make_world(n_pretrain=0, n_train=64, n_meta=16, n_test=16, seed=0)
    backbone = tiny_random_backbone(world.tokenizer.vocab_size)
    combiner = build_combiner("meltr", backbone.tasks, d_model=32, mlp_hidden=16, ff_dim=64, num_heads=4)
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="meltr-hf-trainer-")
    training = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=2,  # the Trainer accumulates; meta steps count its optimiser steps
        num_train_epochs=args.epochs,
        learning_rate=1e-4,
        max_grad_norm=1.0,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=2,
        disable_tqdm=True,
        remove_unused_columns=False,  # MeltrTrainer would turn it off anyway: the backbone reads the whole batch
    )
    trainer = MeltrTrainer(
        backbone,
        training,
        combiner=combiner,
        learner_options={"meta_every": 2},
        train_dataset=world.dataset("train"),
        data_collator=collate,
    )
    trainer.train()
    learner = trainer.learner
    print(
        f"global_step {trainer.state.global_step}, {learner.inner_steps} inner steps, {learner.meta_steps} meta steps"
    )


if __name__ == "__main__":
    main()

"""What a meta step costs inside each training loop: plain PyTorch, Lightning, Accelerate and the HF Trainer.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loop_meta_cost.py [--steps 8 --repeats 3]``

The tiny random transformers backbone (``meltr.models.hf.tiny_random_backbone``, BERT text + CLIP-vision per frame)
on the world's clips (batches of 8, 8 frames of 32x32), ``meta_every=1``, the default estimator (identity) and
backend (jvp), one loop after the other in one process. Every step's wall time is the time between the starts of
consecutive learner steps (``learner.step``, or ``learner.inner_loss`` under the HF Trainer), so it includes all the
loop's own work between them; the meta step's time is measured around ``learner.meta_step`` and the inner step is
the rest. Medians over the steps after the first two; the machine is shared, so only ratios within one run mean
anything.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import warnings

import torch

from meltr.combine import build_combiner
from meltr.data import collate, make_world
from meltr.learner import AuxiliaryLearner
from meltr.models.hf import tiny_random_backbone

BATCH = 8


def setup(world):
    torch.manual_seed(0)
    backbone = tiny_random_backbone(world.tokenizer.vocab_size)
    combiner = build_combiner("meltr", backbone.tasks, d_model=32, mlp_hidden=16, ff_dim=64, num_heads=4)
    return backbone, combiner


def timed(learner: AuxiliaryLearner, starts: list[float], metas: list[float]) -> AuxiliaryLearner:
    """Record the start time of every learner step in ``starts`` and the wall time of every meta step in ``metas``."""
    meta_step = learner.meta_step

    def timed_meta():
        start = time.perf_counter()
        out = meta_step()
        metas.append(time.perf_counter() - start)
        return out

    def stamped(method):
        def wrapped(batch):
            starts.append(time.perf_counter())
            return method(batch)

        return wrapped

    learner.meta_step = timed_meta
    learner.step = stamped(learner.step)
    learner.inner_loss = stamped(learner.inner_loss)
    return learner


def plain(world, batches, *spent):
    backbone, combiner = setup(world)
    learner = timed(
        AuxiliaryLearner(backbone, combiner, torch.optim.AdamW(backbone.parameters()), meta_every=1), *spent
    )
    for batch in batches:
        learner.step(batch)


def lightning(world, batches, *spent):
    import lightning.pytorch as pl

    from meltr.integrations.lightning import MeltrLightningModule

    class Timed(MeltrLightningModule):
        def build_learner(self):
            return timed(super().build_learner(), *spent)

    backbone, combiner = setup(world)
    module = Timed(backbone, combiner, torch.optim.AdamW, meta_every=1, log_every=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))


def accelerate(world, batches, *spent):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from meltr.integrations.accelerate import prepare_learner

    AcceleratorState._reset_state(True)
    accelerator = Accelerator(cpu=True)
    backbone, combiner = setup(world)
    optimizer = torch.optim.AdamW(backbone.parameters())
    backbone, optimizer = accelerator.prepare(backbone, optimizer)
    learner = timed(prepare_learner(accelerator, backbone, combiner, optimizer, meta_every=1), *spent)
    for batch in batches:
        learner.step(batch)


def hf_trainer(world, batches, *spent):
    from transformers import TrainingArguments

    from meltr.integrations.hf_trainer import MeltrTrainer

    class Timed(MeltrTrainer):
        def build_learner(self, model):
            return timed(super().build_learner(model), *spent)

    backbone, combiner = setup(world)
    samples = [{k: v[i] for k, v in batch.items()} for batch in batches for i in range(BATCH)]
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=BATCH,
            num_train_epochs=1,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        trainer = Timed(
            backbone,
            arguments,
            combiner=combiner,
            learner_options={"meta_every": 1},
            train_dataset=samples,
            data_collator=collate,
        )
        trainer.train()


LOOPS = {"plain": plain, "lightning": lightning, "accelerate": accelerate, "hf_trainer": hf_trainer}


def measure(loop, world, batches) -> tuple[float, float]:
    """(median inner step, median meta step) in seconds over the steps after the first two."""
    starts: list[float] = []
    metas: list[float] = []
    loop(world, batches, starts, metas)
    steps = [b - a for a, b in itertools.pairwise(starts)]
    inner = [step - meta for step, meta in zip(steps, metas, strict=False)][2:]
    return statistics.median(inner), statistics.median(metas[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    world = make_world(n_pretrain=0, n_train=args.steps * BATCH, n_meta=8, n_test=8, seed=0)
    batches = list(world.loader("train", batch_size=BATCH, shuffle=False))
    rows = {}
    for name, loop in LOOPS.items():
        rows[name] = measure(loop, world, batches)
    base = rows["plain"][0]
    print("| loop | inner step (ms) | meta step (ms) | meta / inner | inner vs plain loop |")
    print("|---|---|---|---|---|")
    for name, (inner, meta) in rows.items():
        print(f"| {name} | {1e3 * inner:.0f} | {1e3 * meta:.0f} | {meta / inner:.2f} | {inner / base:.2f} |")


if __name__ == "__main__":
    main()

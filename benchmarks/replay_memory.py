"""Memory of the learner's replay buffer: whole batches vs CPU copies vs dataset indices.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/replay_memory.py [--image-size 224 --batch 8 --frames 8]``

Each storage mode runs in a fresh process: ``steps`` learner steps on freshly built batches of video clips
``[B, F, 3, H, W]`` (float32; the official replay size, 10) through a model small enough that the clips dominate
memory. Reported per mode: the peak resident memory of the process above its level before the first step (psutil),
the bytes the replay buffer's records hold, and the size of ``learner.state_dict()`` serialised with ``torch.save``
(with the replay buffer in it, and with ``replay_in_checkpoint=False``). On a GPU, ``"device"`` keeps the batches
in GPU memory and ``"cpu"`` moves them to host memory; on this CPU-only machine both live in the same memory, so
``"cpu"`` is expected to match ``"device"`` here and only ``"index"`` saves memory. Results are written to
docs/integrations.md by hand, with the command.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys

import psutil
import torch
from torch import nn

from meltr.batches import batch_nbytes
from meltr.combine import build_combiner
from meltr.learner import AuxiliaryLearner

TASKS = ("primary", "aux")


class Pooled(nn.Module):
    """Mean colour of each clip -> two per-sample squared errors: next to no memory besides the clip itself."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, batch):
        features = batch["video"].mean(dim=(1, 3, 4))
        errors = (self.head(features) - batch["target"]) ** 2
        return {t: errors[:, i] for i, t in enumerate(TASKS)}


def make_batch(step: int, size: int, frames: int, image: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {
        "video": torch.rand(size, frames, 3, image, image, generator=g),
        "target": torch.randn(size, 2, generator=g),
        "index": torch.arange(step * size, (step + 1) * size),
    }


def run_mode(mode: str, steps: int, size: int, frames: int, image: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = Pooled()
    combiner = build_combiner("meltr", TASKS, d_model=8, mlp_hidden=4, ff_dim=16, num_heads=2)

    def fetch(indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return make_batch(int(indices[0]) // size, size, frames, image)

    learner = AuxiliaryLearner(
        model,
        combiner,
        torch.optim.SGD(model.parameters(), lr=0.1),
        meta_every=3,
        replay_size=10,
        replay_storage=mode,
        replay_fetch=fetch if mode == "index" else None,
    )
    process = psutil.Process()
    base = process.memory_info().rss
    peak = base
    for step in range(steps):
        learner.step(make_batch(step, size, frames, image))
        peak = max(peak, process.memory_info().rss)
    records = sum(batch_nbytes(r) for r in learner.replay.batches)
    with_replay, without = io.BytesIO(), io.BytesIO()
    torch.save(learner.state_dict(), with_replay)
    learner.replay_in_checkpoint = False
    torch.save(learner.state_dict(), without)
    return {
        "peak_rss_mib": (peak - base) / 2**20,
        "replay_mib": records / 2**20,
        "checkpoint_mib": with_replay.tell() / 2**20,
        "checkpoint_without_replay_mib": without.tell() / 2**20,
        "batch_mib": batch_nbytes(make_batch(0, size, frames, image)) / 2**20,
        "meta_steps": learner.meta_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--mode", choices=["device", "cpu", "index"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.steps, args.batch, args.frames, args.image_size)))
        return
    results = {}
    for mode in ("device", "cpu", "index"):
        command = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--batch", str(args.batch)]
        command += ["--frames", str(args.frames), "--image-size", str(args.image_size)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    batch = results["device"]["batch_mib"]
    print(
        f"clips [{args.batch}, {args.frames}, 3, {args.image_size}, {args.image_size}] float32: {batch:.1f} MiB a batch"
    )
    print(
        "| replay storage | peak RSS above start (MiB) | replay records (MiB) | checkpoint (MiB) "
        "| checkpoint, replay left out (MiB) | peak vs device |"
    )
    print("|---|---|---|---|---|---|")
    for mode, r in results.items():
        ratio = r["peak_rss_mib"] / results["device"]["peak_rss_mib"]
        print(
            f"| {mode} | {r['peak_rss_mib']:.0f} | {r['replay_mib']:.3f} | {r['checkpoint_mib']:.2f} | "
            f"{r['checkpoint_without_replay_mib']:.2f} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()

"""Does a shipped checkpoint use the video? Each pretext loss on held-out clips with the true videos and with
another clip's video (the batch rolled by one), same masks and negatives.

    OMP_NUM_THREADS=1 python benchmarks/video_dependence.py [--clips 256]

A loss that is as low with the wrong video as with the right one does not read the video.
"""

from __future__ import annotations

import argparse

import torch

from meltr.data import make_world
from meltr.models import BACKBONES, pretrained_path
from meltr.training.backbones import load_pretrained


@torch.no_grad()
def losses(model, world, shuffle: bool) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    batches = list(world.loader("test", 64, shuffle=False, drop_last=True))
    totals: dict[str, float] = {}
    for batch in batches:
        if shuffle:
            batch = {**batch, "video": batch["video"].roll(1, 0)}
        for task, loss in model(batch, generator=generator).items():
            totals[task] = totals.get(task, 0.0) + loss.mean().item() / len(batches)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256, help="test clips (default: 256)")
    args = parser.parse_args()
    world = make_world(n_pretrain=0, n_train=0, n_meta=0, n_test=args.clips)
    print("| backbone | loss | true video | another clip's video |\n|---|---|---|---|")
    for name in BACKBONES.names():
        if not pretrained_path(name).exists():
            continue
        model = load_pretrained(pretrained_path(name)).eval()
        true, wrong = losses(model, world, False), losses(model, world, True)
        for task in true:
            print(f"| {name} | {task} | {true[task]:.3f} | {wrong[task]:.3f} |")


if __name__ == "__main__":
    main()

"""Can UniVL's video side learn an attribute of the clip's subject at all when trained on it directly? The frame
stem, the video encoder and a linear head on the mean frame state are trained with cross-entropy on the
attribute (AdamW), from a random initialisation, then scored on the test clips.

    OMP_NUM_THREADS=1 python benchmarks/supervised_attribute.py [--stem patch_mean|conv|conv_pool] [--attribute shape]
        [--steps 1500] [--world key=value ...]

An attribute this cannot learn is one no pretext loss will teach the embedding either (docs/pretraining.md).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from meltr.analysis.probe import ATTRIBUTES, subject_attributes
from meltr.config import parse_assignments
from meltr.data import make_world
from meltr.models import build_backbone
from meltr.models.univl import FRAME_STEMS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stem", choices=FRAME_STEMS, default="patch_mean", help="UniVL frame stem")
    parser.add_argument("--attribute", choices=ATTRIBUTES, default="shape", help="what to learn (default: shape)")
    parser.add_argument("--steps", type=int, default=1500, help="AdamW steps of 32 clips (default: 1500)")
    parser.add_argument("--world", action="append", default=[], metavar="KEY=VALUE", help="world config field")
    args = parser.parse_args()
    world_fields = parse_assignments(args.world, "--world", "supervised_attribute")
    torch.manual_seed(0)
    world = make_world(n_pretrain=0, n_train=3000, n_meta=0, n_test=1000, **world_fields)
    model = build_backbone(
        "univl",
        "default",
        vocab_size=world.tokenizer.vocab_size,
        image_size=world.config.image_size,
        frame_stem=args.stem,
    )
    train_values = subject_attributes(world.splits["train"])[args.attribute]
    test_values = subject_attributes(world.splits["test"])[args.attribute]
    names = sorted(set(train_values))
    train_y = torch.tensor([names.index(v) for v in train_values])
    test_y = torch.tensor([names.index(v) if v in names else -1 for v in test_values])
    videos = {s: torch.cat([b["video"] for b in world.loader(s, 100, shuffle=False)]) for s in ("train", "test")}

    head = nn.Linear(model.config.dim, len(names))
    video_side = ("patch_embedding", "conv_stem", "frame_projection", "frame_position", "video_encoder")
    trained = [p for n, p in model.named_parameters() if n.startswith(video_side)] + list(head.parameters())
    optimizer = torch.optim.AdamW(trained, lr=1e-3)

    def logits(video: torch.Tensor) -> torch.Tensor:
        return head(model._video_states(video.float()).mean(1))

    generator, start = torch.Generator().manual_seed(0), time.perf_counter()
    for _ in range(args.steps):
        index = torch.randint(0, len(train_y), (32,), generator=generator)
        loss = F.cross_entropy(logits(videos["train"][index]), train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = torch.cat([logits(chunk).argmax(1) for chunk in videos["test"].split(100)])
    accuracy = (predicted == test_y).double().mean().item()
    commonest = max(Counter(test_values).values()) / len(test_values)
    print(
        f"{args.stem} stem, {args.attribute}, world {world_fields or 'default'}: test accuracy {100 * accuracy:.1f}% "
        f"(commonest label {100 * commonest:.1f}%), {args.steps} steps in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()

"""What does a backbone's video embedding know about the clip's subject? A linear probe per attribute (colour,
shape, size, starting row and column, first event) on the frozen ``encode_video`` of the train clips, scored on
the test clips, against the rate of always answering the commonest test label.

    OMP_NUM_THREADS=1 python benchmarks/attribute_probe.py [CHECKPOINT ...] [--train 3000] [--test 1000]

Default checkpoints: every shipped one (src/meltr/assets/checkpoints/). Retrieval needs the captions' words to
find the clip, so an attribute the embedding does not hold caps text-to-video R@1.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from meltr.analysis.probe import ATTRIBUTES, caption_mentions, video_attribute_probe
from meltr.data import make_world
from meltr.models import BACKBONES, pretrained_path
from meltr.training.backbones import load_pretrained


def _shown(path: Path) -> str:
    """The path relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", type=Path, help="backbone files (default: the shipped ones)")
    parser.add_argument("--train", type=int, default=3000, help="clips the probes are fitted on (default: 3000)")
    parser.add_argument("--test", type=int, default=1000, help="clips they are scored on (default: 1000)")
    args = parser.parse_args()
    paths = args.checkpoints or [pretrained_path(n) for n in BACKBONES.names() if pretrained_path(n).exists()]
    world = make_world(n_pretrain=0, n_train=args.train, n_meta=0, n_test=args.test)
    columns, majority = [], {}
    for path in paths:
        start = time.perf_counter()
        torch.manual_seed(0)
        results = video_attribute_probe(load_pretrained(path), world)
        columns.append((path, results))
        majority = {name: (r.classes, r.majority) for name, r in results.items()}
        print(f"probed {path} in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\nLinear probes on the video embedding: {args.train} train clips, {args.test} test clips (accuracy %).\n")
    mentions = caption_mentions(world.splits["test"])
    names = " | ".join(f"`{_shown(p)}`" for p, _ in columns)
    print(f"| attribute | named by test captions | classes | commonest label | {names} |")
    print("|---|---:|---:|---:|" + "---:|" * len(columns))
    for name in ATTRIBUTES:
        classes, rate = majority[name]
        cells = " | ".join(f"{100 * results[name].accuracy:.1f}" for _, results in columns)
        print(f"| {name} | {100 * mentions[name]:.1f} | {classes} | {100 * rate:.1f} | {cells} |")


if __name__ == "__main__":
    main()

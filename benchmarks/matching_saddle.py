"""Why single-stream video-text matching (VTM) stays at chance from a random initialisation.

    OMP_NUM_THREADS=1 python benchmarks/matching_saddle.py [--steps 400] [--backbones violet allinone]
        [--set KEY=VALUE ...] [--all-losses-only] [--world KEY=VALUE ...]

Two measurements on the world and recipe of the slow pre-training test (tests/recipes/test_pretraining_slow.py:
2048 pretrain clips, tiny presets, AdamW lr 1e-3, warm-up 50, seed 0):

1. At the initialisation ``pretrain`` starts from, how much the joint pass's outputs vary across 128 held-out
   (text, video) pairs: the [CLS] state the matching head reads, the mean state of the real tokens, and the
   matching logit. A head whose input hardly varies gets hardly any gradient.
2. Held-out VTM before and after ``--steps`` steps of pre-training on all the pretext losses and on VTM alone
   (``PretrainConfig.tasks``): whether the other losses are what holds VTM at ln 2. ``--set`` changes the
   backbones' options (e.g. ``contrastive=true``: Violet's VTC head, which lets VTM leave chance), and the logged
   VTM of every 25th step is printed, to see when it leaves chance. ``--backbones vatt`` reads VATT's
   video-audio NCE (``cma_va``, chance about log 32) in place of VTM, and skips the spread at initialisation;
   ``--world`` changes the world (e.g. ``n_pretrain=8192``).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from meltr.data import make_world
from meltr.models.layers import masked_mean
from meltr.recipes.pretrain import PretrainConfig, held_out_losses, initial_backbone, pretrain

MATCHING = {"violet": "vtm", "allinone": "vtm", "vatt": "cma_va"}
"""The loss each backbone's run reads."""


@torch.no_grad()
def spread_at_initialisation(name: str, world) -> dict[str, float]:
    """Std across the held-out pairs (mean over the features) of the [CLS] and mean states and of the logit."""
    model = initial_backbone(PretrainConfig(backbone=name, size="tiny"), world).eval()
    batch = next(iter(world.loader("test", len(world["test"]), shuffle=False)))
    mask = batch["text_mask"].bool()
    words = model.text_embedding(batch["text"])
    if name == "violet":
        visual = model.patch_embedding(batch["video"].float()).flatten(1, 2)
    else:
        visual = model._visual(batch)
    states = model._encode(words, mask, visual)  # [B, L + N, d]; All-in-one's averaged over frames
    real = torch.cat([mask, torch.ones(states.shape[0], states.shape[1] - mask.shape[1], dtype=torch.bool)], 1)
    mean = masked_mean(states, real)
    return {
        "[CLS] state": states[:, 0].std(0).mean().item(),
        "mean state": mean.std(0).mean().item(),
        "one token's state": states[:, 1:].std(0).mean().item(),
        "VTM logit": model.match_score(batch).std().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="pre-training steps (default: 400, the slow test's)")
    parser.add_argument("--backbones", nargs="+", default=["violet", "allinone"], choices=sorted(MATCHING))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="backbone options (JSON values)")
    parser.add_argument("--all-losses-only", action="store_true", help="skip the runs on the matching loss alone")
    parser.add_argument("--world", nargs="*", default=[], metavar="KEY=VALUE", help="world options (JSON values)")
    args = parser.parse_args()
    options = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    world_options = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.world)}
    world = make_world(**{"n_pretrain": 2048, "n_train": 0, "n_meta": 0, "n_test": 128, **world_options})

    print("At initialisation: std across 128 held-out pairs (mean over features)\n")
    print("| backbone | [CLS] state | mean state | one token's state | VTM logit |\n|---|---:|---:|---:|---:|")
    for name in args.backbones:
        if MATCHING[name] != "vtm":
            continue
        spread = spread_at_initialisation(name, world)
        print(f"| {name} | " + " | ".join(f"{value:.2g}" for value in spread.values()) + " |")

    print(f"\nHeld-out matching loss (VTM's chance ln 2 = {math.log(2):.3f}) after {args.steps} steps\n")
    print("| backbone | loss | trained on | before | after | lowest logged (every 25 steps) | seconds |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.backbones:
        loss = MATCHING[name]
        for tasks in ((),) if args.all_losses_only else ((), (loss,)):
            config = PretrainConfig(
                backbone=name,
                size="tiny",
                steps=args.steps,
                lr=1e-3,
                warmup_steps=50,
                log_every=25,
                tasks=tasks,
                overrides=options,
            )
            before = held_out_losses(initial_backbone(config, world), world)
            started = time.perf_counter()
            result = pretrain(config, world)
            seconds = time.perf_counter() - started
            after = held_out_losses(result.model, world)
            lowest = min(record[loss] for record in result.history)
            trained = f"{loss} alone" if tasks else "all losses"
            print(
                f"| {name} | {loss} | {trained} | {before[loss]:.3f} | {after[loss]:.3f} | {lowest:.3f} "
                f"| {seconds:.0f} |",
                flush=True,
            )
            print(f"  logged {loss}: " + ", ".join(f"{r['step']}: {r[loss]:.3f}" for r in result.history), flush=True)
            print("  held-out after: " + ", ".join(f"{task} {value:.3f}" for task, value in after.items()), flush=True)


if __name__ == "__main__":
    main()

"""``meltr evaluate``: zero-shot text-to-video retrieval of a (pre-trained) backbone on the world's test split."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="zero-shot text-to-video retrieval of a pre-trained backbone",
        description="Score caption 0 of every test clip against every test clip with the backbone's retrieval "
        "scoring, without fine-tuning, and print R@1/R@5/R@10/MdR next to chance.",
    )
    parser.add_argument("--backbone", default="univl", help="registered backbone (default: univl)")
    parser.add_argument("--checkpoint", default="pretrained", help="'pretrained' (shipped) or a path")
    parser.add_argument("--split", default="test", help="world split (default: test)")
    parser.add_argument("--clips", type=int, default=1000, help="clips in the split (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    parser.add_argument(
        "--config",
        default=None,
        help="a finetune recipe: evaluate its model, without fine-tuning, on its own test split (its world, "
        "downstream shift and task included); the flags above are then ignored",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="with --config: override recipe fields")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config is not None:
        return run_recipe(args)
    if args.overrides:
        print("meltr evaluate: KEY=VALUE overrides need --config RECIPE", file=sys.stderr)
        return 2
    from meltr.recipes.finetune import FinetuneConfig, build_backbone_for, build_world
    from meltr.tasks import build_task

    sizes = {"n_pretrain": 0, "n_train": 0, "n_meta": 0, "n_test": 0, f"n_{args.split}": args.clips}
    try:
        config = FinetuneConfig(backbone=args.backbone, checkpoint=args.checkpoint, world={**sizes, "seed": args.seed})
        config.validate()
        world = build_world(config)
        model = build_task("retrieval", build_backbone_for(config, world), args.backbone)
    except (ValueError, KeyError) as error:
        print(f"meltr evaluate: {error}", file=sys.stderr)
        return 2
    scores = model.evaluate(world, args.split)
    chance = {"t2v/R@1": 100 / args.clips, "t2v/MdR": (args.clips + 1) / 2}
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "checkpoint": args.checkpoint,
                "split": args.split,
                "clips": args.clips,
                "zero_shot": scores,
                "chance": chance,
            },
            indent=1,
        )
    )
    return 0


def run_recipe(args: argparse.Namespace) -> int:
    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig, build_world, zero_shot

    try:
        config = FinetuneConfig.load(config_path(args.config), args.overrides)
        world = build_world(config)
        scores = zero_shot(config, world)
    except (ValueError, KeyError) as error:
        print(f"meltr evaluate: {error}", file=sys.stderr)
        return 2
    clips = len(world.splits["test"])
    summary = {"recipe": str(args.config), "overrides": args.overrides, "task": config.task, "clips": clips}
    summary["zero_shot"] = scores
    if config.task == "retrieval":
        summary["chance"] = {"t2v/R@1": 100 / clips, "t2v/MdR": (clips + 1) / 2}
    print(json.dumps(summary, indent=1))
    return 0

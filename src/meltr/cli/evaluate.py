"""``meltr evaluate``: zero-shot text-to-video retrieval of a (pre-trained) backbone on the world's test split, or
the zero-shot score of a finetune recipe's model on its own test split (``--config``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from meltr.cli._config import add_unsafe_load, print_config
from meltr.config import check_fields, config_from_dict, help_field


@dataclass
class EvaluateConfig:
    """What ``meltr evaluate`` scores without ``--config``."""

    backbone: str = help_field("Registered backbone (meltr.models.BACKBONES).", "univl")
    checkpoint: str = help_field(
        "'pretrained' (the shipped checkpoint) or a backbone file (.pt / .safetensors).", "pretrained"
    )
    split: str = help_field("World split to score: pretrain, train, meta or test.", "test")
    clips: int = help_field("Clips of the split (the first ones; the same as in a larger world).", 1000)
    seed: int = help_field("Seed of the world.", 0)
    batch_size: int = help_field("Clips per forward pass.", 64)

    def validate(self, source: str = "command line") -> None:
        from meltr.data import SPLITS
        from meltr.models import BACKBONES

        check_fields(
            source,
            [
                ("backbone", self.backbone, self.backbone in BACKBONES, f"one of {BACKBONES.names()}"),
                ("checkpoint", self.checkpoint, self.checkpoint != "none", "'pretrained' or a file (not 'none')"),
                ("split", self.split, self.split in SPLITS, f"one of {list(SPLITS)}"),
                ("clips", self.clips, self.clips >= 2, "at least 2 (retrieval ranks clips against each other)"),
                ("batch_size", self.batch_size, self.batch_size >= 1, "at least 1"),
                ("seed", self.seed, self.seed >= 0, "non-negative"),
            ],
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="zero-shot text-to-video retrieval of a pre-trained backbone",
        description="Score caption 0 of every test clip against every test clip with the backbone's retrieval "
        "scoring, without fine-tuning, and print R@1/R@5/R@10/MdR next to chance as JSON on stdout (and --out).",
    )
    parser.add_argument("--backbone", default=None, help="registered backbone (default: univl)")
    parser.add_argument("--checkpoint", default=None, help="'pretrained' (shipped) or a backbone file")
    parser.add_argument("--split", default=None, help="world split (default: test)")
    parser.add_argument("--clips", type=int, default=None, help="clips in the split (default: 1000)")
    parser.add_argument("--seed", type=int, default=None, help="world seed (default: 0)")
    parser.add_argument(
        "--config",
        default=None,
        help="a finetune recipe: evaluate its model, without fine-tuning, on its own test split (its world, "
        "downstream shift and task included); the flags above are then refused",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="with --config: override recipe fields")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    add_unsafe_load(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


FLAGS = ("backbone", "checkpoint", "split", "clips", "seed")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a directory; give a file name for the JSON result")
    if args.config is not None:
        given = [f"--{name}" for name in FLAGS if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} and --config exclude each other; set recipe fields as KEY=VALUE")
        return run_recipe(args)
    if args.overrides:
        raise ValueError("KEY=VALUE overrides need --config RECIPE; use the flags (--clips, --seed, ...) instead")
    from meltr.data import SPLITS, WorldConfig, make_world, world_tokenizer
    from meltr.tasks import build_task
    from meltr.training.backbones import backbone_for

    config = config_from_dict(
        EvaluateConfig, {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}, "command line"
    )
    if args.print_config:
        return print_config(config)
    # the checkpoint is checked before the world is generated: a wrong file fails at once
    backbone = backbone_for(
        config.backbone, config.checkpoint, vocab_size=world_tokenizer().vocab_size, unsafe=args.unsafe_load
    )
    sizes = {f"n_{name}": config.clips if name == config.split else 0 for name in SPLITS}
    world = make_world(WorldConfig(seed=config.seed, **sizes), progress=not args.quiet)
    model = build_task("retrieval", backbone, config.backbone)
    scores = model.evaluate(world, config.split, config.batch_size, progress=not args.quiet)
    chance = {"t2v/R@1": 100 / config.clips, "t2v/MdR": (config.clips + 1) / 2}
    return _emit({**vars(config), "zero_shot": scores, "chance": chance}, args.out)


def run_recipe(args: argparse.Namespace) -> int:
    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig, build_world, zero_shot

    config = FinetuneConfig.load(config_path(args.config), args.overrides)
    if args.print_config:
        return print_config(config)
    world = build_world(config, progress=not args.quiet)
    scores = zero_shot(config, world, unsafe=args.unsafe_load, progress=not args.quiet)
    clips = len(world.splits["test"])
    summary = {"recipe": str(args.config), "overrides": args.overrides, "task": config.task, "clips": clips}
    summary["zero_shot"] = scores
    if config.task == "retrieval":
        summary["chance"] = {"t2v/R@1": 100 / clips, "t2v/MdR": (clips + 1) / 2}
    return _emit(summary, args.out)


def _emit(result: dict, out: Path | None) -> int:
    text = json.dumps(result, indent=1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
    return 0

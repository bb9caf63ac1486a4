"""``meltr adapt``: the base-to-novel experiment of "Efficient Transfer Learning for Video-language Foundation Models"
(MSTA, CVPR 2025) on the synthetic world.

``meltr adapt --seeds 0 1 2 --markdown docs/adapters.md --csv docs/adapters.csv`` fine-tunes the shipped pre-trained
backbone with every method of :data:`meltr.recipes.base_to_novel.METHODS` (full fine-tuning, LoRA through peft,
AdaptFormer, MSTA, MSTA + L_CC, MSTA + MELTR, MSTA's ablations) on the base classes and prints base / novel accuracy
and their harmonic mean, mean ± std over the seeds, with each method's trainable-parameter count. The options are
shorthands for fields of :class:`~meltr.recipes.base_to_novel.BaseToNovelConfig`; ``--config X.yaml`` and
``KEY=VALUE`` (``msta.bottleneck_dim=16``) set any field. Every finished (method, seed) is kept in the run directory
``--runs``; a rerun of the same command reuses them.
"""

from __future__ import annotations

import argparse
import shlex

from meltr.cli._config import add_config_arguments, print_config, resolve
from meltr.recipes.base_to_novel import METHODS

FLAGS = (
    "backbone",
    "checkpoint",
    "seeds",
    "methods",
    "steps",
    "shots",
    "batch_size",
    "lr",
    "lora_lr",
    "full_lr",
    "train_clips",
    "test_clips",
    "class_words",
)
"""The config fields that have an option of their own (``--batch-size`` for ``batch_size``)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` subcommand."""
    parser = subparsers.add_parser(
        "adapt",
        help="base-to-novel generalisation of adapters (MSTA, LoRA, AdaptFormer, full fine-tuning)",
        description="Fine-tune the pre-trained backbone on the base event classes of the world with each method, "
        "test on base and novel classes (CLIP-style prompt matching) and report base / novel accuracy and their "
        "harmonic mean over seeds. Fields: BaseToNovelConfig (meltr.recipes.base_to_novel); the options below set "
        "the fields of the same name.",
    )
    add_config_arguments(parser, "steps=100 msta.bottleneck_dim=16")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: 0 1 2)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD", help=f"rows: {', '.join(METHODS)}")
    parser.add_argument("--backbone", default=None, help="backbone (default: univl)")
    parser.add_argument("--checkpoint", default=None, help="'pretrained' (shipped) or a path")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per trained row")
    parser.add_argument("--shots", type=int, default=None, help="training clips per base class")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of MSTA and AdaptFormer")
    parser.add_argument("--lora-lr", type=float, default=None, help="learning rate of LoRA")
    parser.add_argument("--full-lr", type=float, default=None, help="learning rate of full fine-tuning")
    parser.add_argument("--train-clips", type=int, default=None, help="clips of the train split")
    parser.add_argument("--test-clips", type=int, default=None, help="clips of the test split")
    parser.add_argument("--class-words", choices=("caption", "label"), default=None, help="how prompts word a class")
    parser.add_argument("--markdown", default=None, metavar="PATH", help="write the report into this Markdown file")
    parser.add_argument("--csv", default=None, metavar="PATH", help="write one row per (method, seed) to this CSV")
    parser.add_argument("--runs", default="runs/adapt", metavar="DIR", help="the run directory (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def rerun_command(args: argparse.Namespace, config) -> str:
    """The full command line of this run (every option explicit, from the resolved config), for the report."""
    parts = ["meltr", "adapt"]
    for name in FLAGS:
        value = getattr(config, name)
        parts += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else (value,))]
    if args.config is not None:
        parts += ["--config", str(args.config)]
    for flag in ("markdown", "csv", "runs"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag}", str(getattr(args, flag))]
    return shlex.join([*parts, *args.overrides])


def run(args: argparse.Namespace) -> int:
    """Run the experiment in its run directory, print the table, write the report files."""
    from meltr.recipes.base_to_novel import BaseToNovelConfig, run_base_to_novel, write_markdown
    from meltr.training.backbones import starting_point
    from meltr.training.run_directory import RunDirectory

    config = resolve(BaseToNovelConfig, args, {name: getattr(args, name) for name in FLAGS})
    if args.print_config:
        return print_config(config)
    start = starting_point(config.checkpoint, config.backbone)
    with RunDirectory(args.runs, "base_to_novel", config.as_dict(), start) as directory:
        result = run_base_to_novel(config, progress=not args.no_progress, directory=directory)
    print()
    print(result.markdown_table())
    print(f"\ntrainable parameters (of {result.methods[0].trainable.total:,} in the backbone):")
    for row in result.methods:
        print(f"  {row.label:<34} {row.trainable}")
    print(f"\nwall time {result.seconds:.0f} s")
    command = "OMP_NUM_THREADS=1 " + rerun_command(args, config)
    if args.markdown:
        print(f"wrote {write_markdown(result, args.markdown, command)}")
    if args.csv:
        print(f"wrote {result.write_csv(args.csv)}")
    return 0

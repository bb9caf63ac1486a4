"""``meltr adapt``: the base-to-novel experiment of "Efficient Transfer Learning for Video-language Foundation Models"
(MSTA, CVPR 2025) on the synthetic world.

``meltr adapt --seeds 0 1 2 --markdown docs/adapters.md --csv docs/adapters.csv`` fine-tunes the shipped pre-trained
backbone with every method of :data:`meltr.recipes.base_to_novel.METHODS` (full fine-tuning, LoRA through peft,
AdaptFormer, MSTA, MSTA + L_CC, MSTA + MELTR, MSTA's ablations) on the base classes and prints base / novel accuracy
and their harmonic mean, mean ± std over the seeds, with each method's trainable-parameter count.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from meltr.recipes.base_to_novel import METHODS, BaseToNovelConfig

_DEFAULTS = BaseToNovelConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` subcommand."""
    parser = subparsers.add_parser(
        "adapt",
        help="base-to-novel generalisation of adapters (MSTA, LoRA, AdaptFormer, full fine-tuning)",
        description="Fine-tune the pre-trained backbone on the base event classes of the world with each method, "
        "test on base and novel classes (CLIP-style prompt matching) and report base / novel accuracy and their "
        "harmonic mean over seeds.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(_DEFAULTS.seeds), help="seeds (default: 0 1 2)")
    parser.add_argument(
        "--methods", nargs="+", default=list(_DEFAULTS.methods), metavar="METHOD", help=f"rows: {', '.join(METHODS)}"
    )
    parser.add_argument("--backbone", default=_DEFAULTS.backbone, help="backbone (default: univl)")
    parser.add_argument("--checkpoint", default=_DEFAULTS.checkpoint, help="'pretrained' (shipped) or a path")
    parser.add_argument("--steps", type=int, default=_DEFAULTS.steps, help="optimiser steps per trained row")
    parser.add_argument("--shots", type=int, default=_DEFAULTS.shots, help="training clips per base class")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="clips per batch")
    parser.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="learning rate of MSTA and AdaptFormer")
    parser.add_argument("--lora-lr", type=float, default=_DEFAULTS.lora_lr, help="learning rate of LoRA")
    parser.add_argument("--full-lr", type=float, default=_DEFAULTS.full_lr, help="learning rate of full fine-tuning")
    parser.add_argument("--train-clips", type=int, default=_DEFAULTS.train_clips, help="clips of the train split")
    parser.add_argument("--test-clips", type=int, default=_DEFAULTS.test_clips, help="clips of the test split")
    parser.add_argument(
        "--class-words", choices=("caption", "label"), default=_DEFAULTS.class_words, help="how prompts word a class"
    )
    parser.add_argument("--markdown", default=None, metavar="PATH", help="write the report into this Markdown file")
    parser.add_argument("--csv", default=None, metavar="PATH", help="write one row per (method, seed) to this CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def rerun_command(args: argparse.Namespace) -> str:
    """The full command line of this run (every setting explicit), for the report."""
    parts = ["meltr", "adapt", "--seeds", *map(str, args.seeds), "--methods", *args.methods]
    for flag in ("backbone", "checkpoint", "steps", "shots", "batch_size", "lr", "lora_lr", "full_lr"):
        parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for flag in ("train_clips", "test_clips", "class_words", "markdown", "csv"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Run the experiment, print the table, write the report files."""
    from meltr.recipes.base_to_novel import run_base_to_novel, write_markdown

    try:
        config = BaseToNovelConfig(
            backbone=args.backbone,
            checkpoint=args.checkpoint,
            seeds=tuple(args.seeds),
            methods=tuple(args.methods),
            steps=args.steps,
            shots=args.shots,
            batch_size=args.batch_size,
            lr=args.lr,
            lora_lr=args.lora_lr,
            full_lr=args.full_lr,
            train_clips=args.train_clips,
            test_clips=args.test_clips,
            class_words=args.class_words,
        )
        result = run_base_to_novel(config, progress=not args.no_progress, log=print)
    except (ValueError, KeyError, ImportError) as error:
        print(f"meltr adapt: {error}", file=sys.stderr)
        return 2
    print()
    print(result.markdown_table())
    print(f"\ntrainable parameters (of {result.methods[0].trainable.total:,} in the backbone):")
    for row in result.methods:
        print(f"  {row.label:<34} {row.trainable}")
    print(f"\nwall time {result.seconds:.0f} s")
    command = "OMP_NUM_THREADS=1 " + rerun_command(args)
    if args.markdown:
        print(f"wrote {write_markdown(result, args.markdown, command)}")
    if args.csv:
        print(f"wrote {result.write_csv(args.csv)}")
    return 0

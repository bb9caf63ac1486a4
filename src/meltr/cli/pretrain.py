"""``meltr pretrain``: pre-train a reference backbone on the synthetic world with the sum of its pretext
losses.

``meltr pretrain --backbone univl --size tiny --steps 200 --out runs/pretrain-univl`` writes
``runs/pretrain-univl/backbone.pt`` (read it with :func:`meltr.training.backbones.load_pretrained`) and
``history.json`` (the logged losses) into a claimed run directory
(:class:`~meltr.training.run_directory.RunDirectory`: one run at a time, another recipe's directory refused, an
interrupted run resumed from ``checkpoint.pt``). ``--set dim=128`` changes a field of the backbone's config,
``--world n_pretrain=500`` a field of the world's config. ``--config X.yaml`` reads the fields of
:class:`~meltr.recipes.pretrain.PretrainConfig` from a file and ``KEY=VALUE`` overrides them; the options above
override the file, and their defaults are the dataclass's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

from meltr.cli._config import add_config_arguments, add_unsafe_load, print_config, resolve
from meltr.config import parse_assignments
from meltr.models import BACKBONES, SIZES
from meltr.training.run_directory import RunDirectory

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pre-train a reference backbone on the synthetic world",
        description="Pre-train a reference backbone (meltr.models) on the world's pretrain split by "
        "minimising the sum of its pretext losses, then save it.",
    )
    add_config_arguments(parser, "steps=200 lr=1e-3")
    parser.add_argument("--backbone", choices=BACKBONES.names(), default=None, help="backbone to pre-train")
    parser.add_argument("--size", choices=SIZES, default=None, help="backbone preset")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the initialisation, batches and masks")
    parser.add_argument("--log-every", type=int, default=None, help="log the losses every N steps")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="TASK",
        help="train on these pretext losses only (default: all); the others are still logged, e.g. --tasks vtm",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="directory to write into")
    for flag, dest, what in (
        ("--set", "backbone_options", "the backbone's config (repeatable), e.g. --set dim=128"),
        ("--world", "world", "the world's config (repeatable), e.g. --world n_pretrain=500"),
    ):
        parser.add_argument(
            flag, dest=dest, action="append", default=[], metavar="KEY=VALUE", help=f"change a field of {what}"
        )
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="save the training state every N steps (resumed on rerun)"
    )
    add_unsafe_load(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the world, pre-train, save the checkpoint and the loss history."""
    from meltr.data import WorldConfig, make_world
    from meltr.recipes.pretrain import PretrainConfig, pretrain
    from meltr.training.backbones import save_pretrained

    world_overrides = parse_assignments(args.world, "--world", "pretrain")
    # Only the pretrain split is read; the first clips of a split do not depend on the other splits' sizes.
    sizes = {"n_train": 0, "n_meta": 0, "n_test": 0}
    try:
        world_config = WorldConfig(**{**sizes, **world_overrides})
    except (TypeError, ValueError) as error:
        raise ValueError(f"--world: {error}") from None
    names = ("backbone", "size", "steps", "batch_size", "lr", "seed", "log_every", "tasks")
    options = {name: getattr(args, name) for name in names}
    if args.backbone_options:
        options["overrides"] = parse_assignments(args.backbone_options, "--set", "pretrain")
    config = resolve(PretrainConfig, args, options)
    if args.print_config:
        return print_config(config)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a file; give a directory")
    if world_config.n_pretrain < config.batch_size:
        raise ValueError(
            f"--world n_pretrain={world_config.n_pretrain} is smaller than --batch-size {config.batch_size}; "
            "raise one or lower the other"
        )
    recipe = dataclasses.asdict(config)
    claim = {"pretrain": recipe, "world": dataclasses.asdict(world_config)}
    # One run per directory: a second process, or another recipe's directory, is refused before any work;
    # checkpoint.pt is the state a rerun resumes from.
    with RunDirectory(args.out, "pretrain", claim, resumable="checkpoint.pt") as directory:
        logger.info("generating the world (%d pretrain clips)...", world_config.n_pretrain)
        world = make_world(world_config, progress=True)
        result = pretrain(
            config,
            world,
            checkpoint=directory.file("checkpoint.pt"),
            checkpoint_every=args.checkpoint_every,
            progress=True,
            unsafe=args.unsafe_load,
        )
        path = save_pretrained(
            directory.file("backbone.pt"),
            result.model,
            config.backbone,
            size=config.size,
            recipe=recipe,
            world=dataclasses.asdict(world_config),
            command="meltr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
        directory.write_json("history.json", result.history)
        if result.history:
            from meltr.analysis.plots import plot_history

            plot_history(result.history, args.out / "history.png", f"Pre-training {config.backbone} ({config.size})")
    logger.info("wrote %s and %s", path, args.out / "history.json")
    print(json.dumps({"backbone": str(path), "history": str(args.out / "history.json")}, indent=1))
    return 0

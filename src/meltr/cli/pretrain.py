"""``meltr pretrain``: pre-train a reference backbone on the synthetic world with the sum of its pretext
losses.

``meltr pretrain --backbone univl --size tiny --steps 200 --out runs/pretrain-univl`` writes
``runs/pretrain-univl/backbone.pt`` (read it with :func:`meltr.training.checkpoint.load_pretrained`) and
``history.json`` (the logged losses). ``--set dim=128`` changes a field of the backbone's config,
``--world n_pretrain=500`` a field of the world's config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from meltr._yaml import parse_assignments
from meltr.models import BACKBONES, SIZES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pre-train a reference backbone on the synthetic world",
        description="Pre-train a reference backbone (meltr.models) on the world's pretrain split by "
        "minimising the sum of its pretext losses, then save it.",
    )
    parser.add_argument("--backbone", choices=BACKBONES.names(), default="univl", help="backbone to pre-train")
    parser.add_argument("--size", choices=SIZES, default="default", help="backbone preset")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per batch")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (AdamW)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, batches and masks")
    parser.add_argument("--log-every", type=int, default=50, help="log the losses every N steps")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[],
        metavar="TASK",
        help="train on these pretext losses only (default: all); the others are still logged, e.g. --tasks vtm",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="directory to write into")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a field of the backbone's config (repeatable), e.g. --set dim=128",
    )
    parser.add_argument(
        "--world",
        dest="world",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a field of the world's config (repeatable), e.g. --world n_pretrain=500",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="save the training state every N steps (resumed on rerun)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the world, pre-train, save the checkpoint and the loss history."""
    from meltr.data import WorldConfig, make_world
    from meltr.recipes.pretrain import PretrainConfig, pretrain
    from meltr.training.checkpoint import save_pretrained

    world_overrides = parse_assignments(args.world, "--world", "pretrain")
    # Only the pretrain split is read; the first clips of a split do not depend on the other splits' sizes.
    sizes = {"n_train": 0, "n_meta": 0, "n_test": 0}
    try:
        world_config = WorldConfig(**{**sizes, **world_overrides})
    except (TypeError, ValueError) as error:
        raise SystemExit(f"meltr pretrain: --world: {error}") from None
    try:
        config = PretrainConfig(
            backbone=args.backbone,
            size=args.size,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            log_every=args.log_every,
            overrides=parse_assignments(args.overrides, "--set", "pretrain"),
            tasks=tuple(args.tasks),
        )
    except ValueError as error:
        raise SystemExit(f"meltr pretrain: {error}") from None
    print(f"generating the world ({world_config.n_pretrain} pretrain clips)...", flush=True)
    world = make_world(world_config)
    result = pretrain(
        config,
        world,
        log=lambda line: tqdm.write(line),
        checkpoint=args.out / "checkpoint.pt",
        checkpoint_every=args.checkpoint_every,
        progress=True,
    )
    recipe = dataclasses.asdict(config)
    path = save_pretrained(
        args.out / "backbone.pt",
        result.model,
        args.backbone,
        recipe=recipe,
        world=dataclasses.asdict(world_config),
        command="meltr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    (args.out / "history.json").write_text(json.dumps(result.history, indent=1))
    if result.history:
        from meltr.analysis.plots import plot_history

        plot_history(result.history, args.out / "history.png", f"Pre-training {args.backbone} ({config.size})")
    print(f"wrote {path} and {args.out / 'history.json'}")
    return 0

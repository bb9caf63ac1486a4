"""``meltr finetune --config <shipped name or YAML file> [key=value ...]``: fine-tune with any combiner, test, plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from meltr.cli._config import add_unsafe_load, print_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pre-trained backbone on a downstream task with a loss combiner",
        description="Fine-tune a pre-trained backbone on a downstream task of the synthetic world with any loss "
        "combiner and hypergradient estimator, validate each epoch on the meta split, test the best checkpoint. "
        "Rerunning the same command resumes an interrupted run. Fields: see FinetuneConfig (meltr.recipes.finetune). "
        "The result is printed as JSON on stdout; logs and the progress bar go to stderr.",
    )
    parser.add_argument(
        "--config", required=True, help="a shipped config by name (e.g. tiny, demo_retrieval) or a YAML file"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="override fields, e.g. seed=1 world.n_train=200"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument(
        "--out", type=Path, default=None, help="the run directory (sets out_root and name; default: out_root/name)"
    )
    add_unsafe_load(parser)
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log every step and epoch as TensorBoard scalars in RUN_DIR/tensorboard "
        "(pip install 'meltr[tensorboard]')",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig, finetune

    where = [f"out_root={args.out.parent}", f"name={args.out.name}"] if args.out is not None else []
    config = FinetuneConfig.load(config_path(args.config), [*args.overrides, *where])
    if args.print_config:
        return print_config(config)
    loggers = ()
    if args.tensorboard:
        from meltr.training.loggers import TensorBoardLogger

        loggers = (TensorBoardLogger(config.run_dir / "tensorboard"),)
    result = finetune(config, progress=not args.quiet, unsafe=args.unsafe_load, loggers=loggers)
    print(
        json.dumps(
            {
                "run_dir": str(result.run_dir),
                "primary_task": result.primary_task,
                "best_epoch": result.best_epoch,
                "seconds": round(result.seconds, 1),
                "test": result.test,
            },
            indent=1,
        )
    )
    return 0

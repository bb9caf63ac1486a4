"""``meltr finetune --config <shipped name or YAML file> [key=value ...]``: fine-tune with any combiner, test, plot."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pre-trained backbone on a downstream task with a loss combiner",
        description="Fine-tune a pre-trained backbone on a downstream task of the synthetic world with any loss "
        "combiner and hypergradient estimator, validate each epoch on the meta split, test the best checkpoint. "
        "Rerunning the same command resumes an interrupted run. Fields: see FinetuneConfig (meltr.recipes.finetune).",
    )
    parser.add_argument(
        "--config", required=True, help="a shipped config by name (e.g. tiny, demo_retrieval) or a YAML file"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="override fields, e.g. seed=1 world.n_train=200"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig, finetune

    try:
        config = FinetuneConfig.load(config_path(args.config), args.overrides)
        result = finetune(config, progress=not args.quiet, log=tqdm.write)
    except ValueError as error:
        print(f"meltr finetune: {error}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "run_dir": str(result.run_dir),
                "best_epoch": result.best_epoch,
                "seconds": round(result.seconds, 1),
                "test": result.test,
            },
            indent=1,
        )
    )
    return 0

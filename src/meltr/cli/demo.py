"""``meltr demo``: the README's main job.

Fine-tunes the shipped pre-trained UniVL-style backbone for text-to-video retrieval on the synthetic world with
single-task, equal-weight multi-task and MELTR losses (recipe ``configs/demo_retrieval.yaml``), then prints one
side-by-side table of R@1 / R@5 / R@10 / MdR on the 1000-clip test split and the wall time of each run. Run
directories go to ``runs/demo/``; rerunning reuses finished runs.

``meltr demo --toy`` runs the smallest complete example instead: the helpful / harmful toy problem of
:mod:`meltr.toy`, in seconds.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from tqdm import tqdm

RECIPE = Path(__file__).resolve().parents[3] / "configs" / "demo_retrieval.yaml"
METHODS = ("single_task", "equal_weight", "meltr")
DESCRIPTION = """\
Fine-tune the shipped pre-trained UniVL-style backbone for text-to-video retrieval on the synthetic world with
single-task, equal-weight multi-task and MELTR losses (recipe configs/demo_retrieval.yaml), then print one table
of R@1 / R@5 / R@10 / MdR on the 1000-clip test split and the wall time of each run. Run directories go to
runs/demo/; rerunning reuses finished runs.

meltr demo --toy runs the smallest complete example instead: the helpful / harmful toy problem (meltr.toy),
in seconds."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main demo: single-task vs equal-weight vs MELTR, side by side",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--toy", action="store_true", help="run the toy problem instead (seconds)")
    parser.add_argument("--steps", type=int, default=400, help="--toy: training steps per method (default: 400)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--all-estimators", action="store_true", help="--toy: MELTR with every estimator")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the retrieval recipe (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe fields, e.g. epochs=1")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.toy and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    return run_toy(args) if args.toy else run_retrieval(args)


def run_retrieval(args: argparse.Namespace) -> int:
    import logging

    from meltr.training.finetune import FinetuneConfig, build_world, finetune

    rows = []
    world = None
    for method in METHODS:
        config = FinetuneConfig.load(
            args.recipe,
            [*args.overrides, f"combiner={method}", f"seed={args.seed}", f"name=demo-{method}-s{args.seed}"],
        )
        if world is None:
            logging.getLogger("meltr.demo").info("generating the world (%s)...", config.world)
            world = build_world(config)
        rows.append((method, finetune(config, world=world)))
    print(
        f"\nText-to-video retrieval, UniVL-style backbone (pre-trained), synthetic world, "
        f"{len(world.splits['test'])} test clips, seed {args.seed}\n"
    )
    header = f"{'method':<14}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MdR':>8}{'time (s)':>10}"
    print(header)
    print("-" * len(header))
    for method, result in rows:
        t = result.test
        print(
            f"{method:<14}{t['t2v/R@1']:>8.1f}{t['t2v/R@5']:>8.1f}{t['t2v/R@10']:>8.1f}{t['t2v/MdR']:>8.1f}"
            f"{result.seconds:>10.0f}"
        )
    return 0


def run_toy(args: argparse.Namespace) -> int:
    import torch

    from meltr.hypergrad import ESTIMATORS
    from meltr.toy import TASKS
    from meltr.toy import run as train_toy

    torch.set_num_threads(1)  # the toy's tensors are tiny: threads only add synchronisation
    methods = [("single_task", "-"), ("equal_weight", "-"), ("learned_linear", "identity"), ("meltr", "identity")]
    if args.all_estimators:
        methods += [("meltr", name) for name in ESTIMATORS.names() if name != "identity"]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for combiner, estimator in tqdm(methods, desc="meltr demo (toy problem)", unit="method"):
            result = train_toy(
                combiner, steps=args.steps, seed=args.seed, hypergrad="identity" if estimator == "-" else estimator
            )
            rows.append((combiner, estimator, result))
    header = (
        f"{'combiner':<16}{'estimator':<11}{'primary test loss':>18}"
        + "".join(f"{'dM/d' + t:>14}" for t in TASKS)
        + f"{'time (s)':>10}"
    )
    print(
        "\nHelpful / harmful toy problem (meltr.toy): primary test loss = ||w - w_true||^2 + noise^2 "
        f"(noise^2 = 0.25), {args.steps} steps, seed {args.seed}\n"
    )
    print(header)
    print("-" * len(header))
    for combiner, estimator, result in rows:
        sensitivity = result["sensitivity"]
        print(
            f"{combiner:<16}{estimator:<11}{result['primary_test_loss']:>18.3f}"
            + "".join(f"{sensitivity[t]:>14.2f}" for t in TASKS)
            + f"{result['seconds']:>10.1f}"
        )
    return 0

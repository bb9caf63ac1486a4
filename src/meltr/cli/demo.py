"""``meltr demo``: the README's main job.

Fine-tunes the shipped pre-trained UniVL-style backbone for text-to-video retrieval on the synthetic world with
single-task, equal-weight multi-task and MELTR losses (the shipped config ``demo_retrieval``), then prints one
side-by-side table of R@1 / R@5 / R@10 / MdR on the 1000-clip test split and the wall time of each run. Run
directories go to ``runs/demo/``; rerunning reuses finished runs.

``meltr demo --toy`` runs the smallest complete example instead: the helpful / harmful toy problem of
:mod:`meltr.recipes.toy`, in seconds.
"""

from __future__ import annotations

import argparse
import warnings

from tqdm import tqdm

RECIPE = "demo_retrieval"
METHODS = ("single_task", "equal_weight", "meltr")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main demo: single-task vs equal-weight vs MELTR, side by side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--toy", action="store_true", help="run the toy problem instead (seconds)")
    parser.add_argument("--steps", type=int, default=400, help="--toy: training steps per method (default: 400)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--all-estimators", action="store_true", help="--toy: MELTR with every estimator")
    parser.add_argument(
        "--recipe", default=RECIPE, help="the retrieval config: a shipped name or a YAML file (default: %(default)s)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe fields, e.g. epochs=1")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_toy(args) if args.toy else run_retrieval(args)


def run_retrieval(args: argparse.Namespace) -> int:
    import sys

    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig, build_world, finetune

    rows = []
    world = None
    try:
        recipe = config_path(args.recipe)
        for method in METHODS:
            config = FinetuneConfig.load(
                recipe,
                [*args.overrides, f"combiner={method}", f"seed={args.seed}", f"name=demo-{method}-s{args.seed}"],
            )
            if world is None:
                print(f"generating the world ({config.world})...", flush=True)
                world = build_world(config)
            result = finetune(config, world=world, log=tqdm.write)
            rows.append((method, result))
    except ValueError as error:
        print(f"meltr demo: {error}", file=sys.stderr)
        return 2
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
    from meltr.recipes.toy import TASKS
    from meltr.recipes.toy import run as train_toy

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
        "\nHelpful / harmful toy problem (meltr.recipes.toy): primary test loss = ||w - w_true||^2 + noise^2 "
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

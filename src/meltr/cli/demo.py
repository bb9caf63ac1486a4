"""``meltr demo``: the README's main job.

Until the video demo lands, this runs the smallest complete example of meltr: the helpful / harmful toy problem of
:mod:`meltr.toy`, trained with single-task, equal-weight multi-task and MELTR (each hypergradient estimator with
``--all-estimators``), and prints one side-by-side table.
"""

from __future__ import annotations

import argparse
import warnings

from tqdm import tqdm


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main demo: single-task vs equal-weight vs MELTR, side by side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps per method (default: 400)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--all-estimators", action="store_true", help="run MELTR with every hypergradient estimator")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from meltr.hypergrad import ESTIMATORS
    from meltr.toy import TASKS
    from meltr.toy import run as run_toy

    torch.set_num_threads(1)  # the toy's tensors are tiny: threads only add synchronisation

    methods = [
        ("single_task", "-"),
        ("equal_weight", "-"),
        ("learned_linear", "identity"),
        ("meltr", "identity"),
    ]
    if args.all_estimators:
        methods += [("meltr", name) for name in ESTIMATORS.names() if name != "identity"]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for combiner, estimator in tqdm(methods, desc="meltr demo (toy problem)", unit="method"):
            result = run_toy(
                combiner,
                steps=args.steps,
                seed=args.seed,
                hypergrad="identity" if estimator == "-" else estimator,
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

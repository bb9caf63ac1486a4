"""``meltr demo``: the README's main job.

Fine-tunes the shipped pre-trained UniVL-style backbone for text-to-video retrieval on a downstream shift of the
synthetic world (the shipped config ``demo_retrieval``) with single-task, equal-weight multi-task and MELTR losses,
then prints one side-by-side table of R@1 / R@5 / R@10 / MdR on the 1000-clip test split, with the zero-shot
backbone as the first row and the wall time of each run. ``--seeds N`` repeats it over N worlds and training
seeds (mean +- std); ``--lrs`` tunes every method's learning rate on the validation split. Run directories go to
``runs/demo/``; rerunning reuses finished runs.

``meltr demo --toy`` runs the smallest complete example instead: the helpful / harmful toy problem of
:mod:`meltr.recipes.toy`, in seconds.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from tqdm import tqdm

RECIPE = "demo_retrieval"
METHODS: dict[str, list[str]] = {
    "single_task": ["combiner=single_task"],
    "equal_weight": ["combiner=equal_weight"],
    "meltr": ["combiner=meltr", "combiner_options.init=residual", "meta_lr=0.01"],
    "meltr_official_init": ["combiner=meltr", "combiner_options.init=official"],
}
"""The demo's methods: recipe overrides of each. ``meltr`` is the default MELTR (residual start); the official
random start can be run beside it (``--methods``)."""

DEFAULT_METHODS: tuple[str, ...] = ("single_task", "equal_weight", "meltr")
"""What ``meltr demo`` runs unless ``--methods`` says otherwise (the zero-shot row is always there)."""

DESCRIPTION = """\
Fine-tune the shipped pre-trained UniVL-style backbone for text-to-video retrieval on a downstream shift of the
synthetic world (the shipped config demo_retrieval) with single-task, equal-weight multi-task and MELTR losses,
then print one side-by-side table of R@1 / R@5 / R@10 / MdR on the 1000-clip test split, with the zero-shot
backbone as the first row and the wall time of each run. --seeds N repeats it over N worlds and training seeds
(mean +- std); --lrs tunes every method's learning rate on the validation split. Run directories go to
runs/demo/; rerunning reuses finished runs.

meltr demo --toy runs the smallest complete example instead: the helpful / harmful toy problem
(meltr.recipes.toy), in seconds."""

LEARNING_RATES: dict[str, float] = {
    "single_task": 3e-4,
    "equal_weight": 1e-4,
    "meltr": 1e-4,
    "meltr_official_init": 3e-4,
}
"""Each method's learning rate, chosen among 1e-4 and 3e-4 on the validation split of seed 0 by
``meltr demo --methods single_task equal_weight meltr meltr_official_init --seeds 3 --lrs 1e-4 3e-4 --tune-seeds 1``
(docs/demo.md); a method not listed keeps the recipe's."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main demo: zero-shot vs single-task vs equal-weight vs MELTR, side by side",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--toy", action="store_true", help="run the toy problem instead (seconds)")
    parser.add_argument("--steps", type=int, default=400, help="--toy: training steps per method (default: 400)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="retrieval: run seeds seed .. seed+N-1, each with its own world and training seed, and report "
        "mean +- std (default: 1)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=list(DEFAULT_METHODS),
        help=f"retrieval: methods to run (default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        default=None,
        help="retrieval: tune every method's learning rate over these values on the validation split (the "
        "same budget for each method) and report the test metrics of the chosen one",
    )
    parser.add_argument(
        "--tune-seeds",
        type=int,
        default=None,
        help="with --lrs: tune on the first K seeds only; the other seeds run each method at its chosen "
        "learning rate (default: tune on every seed)",
    )
    parser.add_argument("--all-estimators", action="store_true", help="--toy: MELTR with every estimator")
    parser.add_argument(
        "--config",
        "--recipe",
        dest="config",
        default=RECIPE,
        help="the retrieval recipe: a shipped name or a YAML file (default: %(default)s)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe fields, e.g. epochs=1")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved recipe of every method (first seed, the method's learning rate) and exit",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in ("steps", "seeds") + (("tune_seeds",) if args.tune_seeds is not None else ()):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.print_config:
        return print_configs(args)
    return run_toy(args) if args.toy else run_retrieval(args)


def method_config(args: argparse.Namespace, method: str, seed: int, lr: float | None = None):
    """The recipe of one method's run: the demo recipe, ``args``'s overrides, the seed, the method, the lr."""
    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig

    recipe = config_path(args.config)
    base = [*args.overrides, f"world.seed={seed}", f"seed={seed}"]
    if lr is None:
        lr = LEARNING_RATES.get(method, FinetuneConfig.load(recipe, base).lr)
    return FinetuneConfig.load(recipe, [*base, *METHODS[method], f"lr={lr}", f"name=demo-{method}-lr{lr:g}-s{seed}"])


def print_configs(args: argparse.Namespace) -> int:
    import yaml

    from meltr.config import as_yaml

    if args.toy:
        toy = {"toy": True, "steps": args.steps, "seed": args.seed, "all_estimators": args.all_estimators}
        print(yaml.safe_dump(toy, sort_keys=False), end="")
        return 0
    for method in args.methods:
        print(f"# method {method}, seed {args.seed}")
        print(as_yaml(method_config(args, method, args.seed)), end="")
        print("---")
    return 0


def _stats(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.1f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.1f} +- {std:.1f}"


def run_retrieval(args: argparse.Namespace) -> int:
    import json
    import logging

    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig, build_world, finetune, zero_shot
    from meltr.recipes.tuning import best_choice, validation_score

    seeds = [args.seed + i for i in range(args.seeds)]
    results: dict[str, dict[int, dict]] = {"zero_shot": {}}
    tuning: dict[str, dict[float, list[float]]] = {}
    log = logging.getLogger("meltr.demo")
    recipe = config_path(args.config)
    for seed in seeds:
        world_seed = [f"world.seed={seed}", f"seed={seed}"]
        base = FinetuneConfig.load(recipe, [*args.overrides, *world_seed])
        log.info("seed %d: generating the world (%s)...", seed, base.world)
        world = build_world(base)
        results["zero_shot"][seed] = {"test": zero_shot(base, world), "seconds": 0.0, "lr": None}
        tuned = args.tune_seeds is None or seed < args.seed + args.tune_seeds
        for method in args.methods:
            grid = args.lrs or [LEARNING_RATES.get(method, base.lr)]
            if not tuned:
                grid = [best_choice(tuning[method])]
            runs = {}
            for lr in grid:
                config = method_config(args, method, seed, lr)
                result = finetune(config, world=world)
                if tuned:
                    tuning.setdefault(method, {}).setdefault(lr, []).append(validation_score(result.run_dir))
                runs[lr] = result
            results.setdefault(method, {})[seed] = runs
    # The learning rate of each method: the best mean validation metric over the seeds (never the test split).
    chosen = {m: best_choice(per_lr) for m, per_lr in tuning.items()}
    rows = {"zero_shot": {s: r["test"] for s, r in results["zero_shot"].items()}}
    last = {}
    seconds = {}
    for method, per_seed in results.items():
        if method == "zero_shot":
            continue
        rows[method] = {s: runs[chosen[method]].test for s, runs in per_seed.items()}
        last[method] = {s: runs[chosen[method]].test_last for s, runs in per_seed.items()}
        seconds[method] = [runs[chosen[method]].seconds for runs in per_seed.values()]
    test_clips = len(world.splits["test"])
    print(
        f"\nText-to-video retrieval, UniVL-style backbone (pre-trained), synthetic world with a downstream shift, "
        f"{test_clips} test clips, seeds {seeds} (mean +- std over seeds; epoch and learning rate chosen on the "
        f"{len(world.splits['meta'])}-clip validation split)\n"
    )
    header = f"{'method':<22}{'lr':>9}{'R@1':>14}{'R@5':>14}{'R@10':>14}{'MdR':>14}{'R@1 last ep.':>14}{'time (s)':>10}"
    print(header)
    print("-" * len(header))
    for method, per_seed in rows.items():
        cells = [_stats([t[f"t2v/{k}"] for t in per_seed.values()]) for k in ("R@1", "R@5", "R@10", "MdR")]
        lr = f"{chosen[method]:g}" if method in chosen else "-"
        tail = _stats([t["t2v/R@1"] for t in last[method].values()]) if method in last else "-"
        time = f"{sum(seconds[method]) / len(seconds[method]):.0f}" if method in seconds else "-"
        print(f"{method:<22}{lr:>9}" + "".join(f"{c:>14}" for c in cells) + f"{tail:>14}{time:>10}")
    if args.lrs and len(args.lrs) > 1:
        print("\nValidation R@1 (mean over the tuning seeds) per learning rate:")
        for method, per_lr in tuning.items():
            cells = "  ".join(f"{lr:g}: {sum(v) / len(v):.1f}" for lr, v in per_lr.items())
            print(f"  {method:<22}{cells}")
    summary = {
        "seeds": seeds,
        "tune_seeds": args.tune_seeds,
        "chosen_lr": chosen,
        "test": rows,
        "test_last": last,
        "validation": {m: {f"{lr:g}": v for lr, v in per_lr.items()} for m, per_lr in tuning.items()},
    }
    out = Path(base.out_root) / "demo-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"\n(written to {out})")
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

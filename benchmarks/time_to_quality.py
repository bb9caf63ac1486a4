"""Time-to-quality on the demo recipe: how long MELTR trains to reach the best fixed scheme's final validation metric.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/time_to_quality.py [--seeds 3] [--val-every 8]

The shipped ``demo_retrieval`` recipe (``meltr demo``: the pre-trained UniVL-style backbone, text-to-video retrieval
on a downstream shift), each method at its learning rate of ``meltr.cli.demo.LEARNING_RATES`` (chosen on validation;
the fast MELTR options run at MELTR's), validated on the 1000-clip meta split every ``--val-every`` optimiser steps
of an epoch (the recipe's ``val_every``) and at the end of every epoch. Per seed (its own world and training seed):

- the *best fixed scheme* is whichever of single task and equal weights ends with the higher validation R@1, and its
  final validation R@1 is the *target*;
- a method's *time to quality* is the training time at which its validation R@1 first reaches the target, linearly
  interpolated between the two validations around the crossing (the fixed scheme reaches its own target at the
  latest at its end); the ratio is MELTR's time over the fixed scheme's.

Time is ``train_seconds`` of the run's ``validation.csv``: the cumulative time of the training steps measured inside
the process (learner step and learning-rate schedule; validation, checkpoints and logging excluded). The machine is
shared, so the methods of one seed run one after the other in an order rotated from seed to seed, and every ratio
is between runs of one seed. Run directories go to ``runs/time_to_quality/``; rerunning reuses finished runs (their
times are from the process that trained them). The section ``Time-to-quality`` of docs/hypergrad-benchmark.md and
its targets row are rewritten from the results (also kept in ``runs/time_to_quality/results.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "hypergrad-benchmark.md"
START, END = "<!-- time-to-quality:start -->", "<!-- time-to-quality:end -->"
TARGET_ROW = "| time-to-quality on the demo recipe <= 1.1x the best fixed scheme |"
FIXED = ("single_task", "equal_weight")
FAST = [
    "backend=forward_difference",
    "check_finite_every=0",
    "meta_source=next",
    "meta_train_batch=current",
    "track_sensitivity=false",
]
METHODS: dict[str, list[str]] = {
    "single_task": [],
    "equal_weight": [],
    "meltr": [],
    "meltr_fast": FAST,
    "meltr_fast_last1": [*FAST, "hypergrad_scope=last_blocks(1)", "cache_scope_inputs=true"],
}
"""Each method's overrides on top of the demo's method of the same name (the part of the name before ``_fast``)."""
DESCRIPTIONS = {
    "single_task": "single task (Align only)",
    "equal_weight": "equal weights (all eight losses)",
    "meltr": "MELTR, the recipe's default (identity, `jvp`, replayed batches, full scope)",
    "meltr_fast": "MELTR, fast options (`" + "`, `".join(o.replace("=", ": ") for o in FAST) + "`)",
    "meltr_fast_last1": "MELTR, fast options + `hypergrad_scope: last_blocks(1)`, `cache_scope_inputs: true`",
}
METRIC = "val/t2v/R@1"


def method_config(method: str, seed: int, val_every: int, out_root: Path, overrides: list[str]):
    """The demo's recipe for ``method`` at its demo learning rate, with periodic validation."""
    from meltr.cli.demo import LEARNING_RATES
    from meltr.cli.demo import METHODS as DEMO_METHODS
    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig

    base = method.split("_fast")[0]
    lr = LEARNING_RATES[base]
    return FinetuneConfig.load(
        config_path("demo_retrieval"),
        [
            *overrides,
            f"world.seed={seed}",
            f"seed={seed}",
            *DEMO_METHODS[base],
            *METHODS[method],
            f"lr={lr}",
            f"val_every={val_every}",
            f"out_root={out_root}",
            f"name=ttq-{method}-s{seed}",
        ],
    )


def time_to(curve: list[list[float]], target: float, x: int = 0) -> float | None:
    """First abscissa at which the piecewise-linear curve reaches ``target`` (None: never).

    ``curve`` holds ``[seconds, metric, step]`` per validation and ``x`` picks the abscissa (0: training seconds,
    2: optimiser steps). Between two validations the metric is taken to move linearly, so the crossing is
    interpolated rather than rounded up to a validation.
    """
    previous = None
    for point in curve:
        at, value = point[x], point[1]
        if value >= target:
            if previous is None or previous[1] >= value:
                return at
            t0, v0 = previous
            return t0 + (at - t0) * (target - v0) / (value - v0)
        previous = (at, value)
    return None


def curve_of(run_dir: Path) -> list[list[float]]:
    """``[train_seconds, validation R@1, optimiser step]`` of every validation of a run."""
    rows = json.loads((run_dir / "validation.json").read_text())
    return [[row["train_seconds"], row[METRIC], row["step"]] for row in rows]


def run_all(args: argparse.Namespace) -> dict:
    from meltr.recipes.finetune import build_world, finetune

    results: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_before": os.getloadavg(),
        "seeds": {},
        "val_every": args.val_every,
        "overrides": args.overrides,
        "methods": args.methods,
    }
    wall = time.perf_counter()
    for index, seed in enumerate(range(args.seed, args.seed + args.seeds)):
        world = None
        order = args.methods[index % len(args.methods) :] + args.methods[: index % len(args.methods)]
        per_method = {}
        for method in order:
            config = method_config(method, seed, args.val_every, args.out_root, args.overrides)
            if world is None:
                world = build_world(config)
                results["meta_clips"] = len(world.splits["meta"])
            print(f"seed {seed}: {method} ...", flush=True)
            result = finetune(config, world=world, progress=False)
            per_method[method] = {
                "curve": curve_of(result.run_dir),
                "test": result.test["t2v/R@1"],
                "seconds": result.seconds,
                "run_dir": str(result.run_dir),
            }
        results["seeds"][str(seed)] = {"order": order, "methods": per_method}
        results["load_after"] = os.getloadavg()
        results["wall_s"] = time.perf_counter() - wall
        args.out_root.mkdir(parents=True, exist_ok=True)
        (args.out_root / "results.json").write_text(json.dumps(results, indent=1))
    return results


def summarise(results: dict) -> dict:
    """Per seed: the best fixed scheme, the target, every method's time to it and its ratio to the fixed scheme's."""
    out = {}
    for seed, entry in results["seeds"].items():
        methods = entry["methods"]
        for run in methods.values():  # the steps of each validation (results written before they were kept)
            if len(run["curve"][0]) < 3 and (Path(run["run_dir"]) / "validation.json").exists():
                run["curve"] = curve_of(Path(run["run_dir"]))
        fixed = [m for m in FIXED if m in methods]
        best = max(fixed, key=lambda m: methods[m]["curve"][-1][1])
        target = methods[best]["curve"][-1][1]
        reference = time_to(methods[best]["curve"], target)
        reference_steps = time_to(methods[best]["curve"], target, x=2)
        rows = {}
        for method, run in methods.items():
            reached = time_to(run["curve"], target)
            steps = time_to(run["curve"], target, x=2)
            rows[method] = {
                "final": run["curve"][-1][1],
                "train_s": run["curve"][-1][0],
                "time_to_target": reached,
                "ratio": None if reached is None else reached / reference,
                "step_ratio": None if steps is None else steps / reference_steps,
                "test": run["test"],
            }
        out[seed] = {
            "best_fixed": best,
            "target": target,
            "reference_s": reference,
            "reference_steps": reference_steps,
            "rows": rows,
        }
    return out


def _span(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    text = fmt.format(statistics.median(values))
    return text + (f" [{fmt.format(min(values))}-{fmt.format(max(values))}]" if len(values) > 1 else "")


def report(results: dict, command: str) -> tuple[str, str]:
    """The Markdown section and the targets row."""
    from _hypergrad_report import machine

    summary = summarise(results)
    seeds = list(summary)
    methods = [m for m in results["methods"] if all(m in summary[s]["rows"] for s in seeds)]
    before, after = results["load_before"], results.get("load_after", results["load_before"])
    lines = [START, "## Time-to-quality on the demo recipe\n"]
    lines.append(
        f"Generated by `{command}` on {results['started']} (wall time {results.get('wall_s', 0) / 60:.1f} min); "
        f"machine: {machine()}, 1 intra-op thread; load average (1/5/15 min) {before[0]:.1f}/{before[1]:.1f}/"
        f"{before[2]:.1f} at the start, {after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f} at the end on 2 cores (shared "
        f"with other agents' runs). The demo recipe (`meltr demo`: {len(seeds)} seeds, each its own world and "
        f"training seed: {', '.join(seeds)}), each method at its demo learning rate (`meltr.cli.demo.LEARNING_RATES`; "
        f"the fast options at MELTR's, not re-tuned), validation R@1 on the {results.get('meta_clips', '?')}-clip "
        f"meta split after every {results['val_every']} optimiser steps of an epoch (`val_every: "
        f"{results['val_every']}`) and at each epoch's end. "
        "Target per seed: the final validation R@1 of the better of single task and equal weights on that seed. "
        "Time: cumulative time of the training steps measured inside the process (`train_seconds` of the run's "
        "validation.csv: learner step and schedule; validation, checkpoints and logging excluded), the crossing "
        "interpolated linearly between validations; the methods of a seed ran one after the other, in an order "
        "rotated from seed to seed, so the other core's load falls on all of them. Ratio: a method's time to the "
        "target over the best fixed scheme's time to its own final value (median [min-max] over seeds; "
        "`not reached` when the method never reached the target). The same ratio in optimiser steps (interpolated "
        "alike) does not depend on the machine's load: the time ratio is about the step ratio times the ratio of "
        "the cost of a step, whose load-dependent part the training-time column shows.\n"
    )
    lines.append("| method | reached | time to target / best fixed | steps to target / best fixed | training time / "
                 "best fixed's | final val R@1 | test R@1 |")  # fmt: skip
    lines.append("|---|---|---|---|---|---|---|")
    for method in methods:
        rows = [summary[s]["rows"][method] for s in seeds]
        ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
        step_ratios = [r["step_ratio"] for r in rows if r["step_ratio"] is not None]
        totals = [
            r["train_s"] / summary[s]["rows"][summary[s]["best_fixed"]]["train_s"]
            for s, r in zip(seeds, rows, strict=True)
        ]
        reached = f"{len(ratios)}/{len(rows)}"
        lines.append(
            f"| {DESCRIPTIONS.get(method, method)} | {reached} | {_span(ratios)} | {_span(step_ratios)} | "
            f"{_span(totals)} | "
            f"{_span([r['final'] for r in rows], '{:.1f}')} | {_span([r['test'] for r in rows], '{:.1f}')} |"
        )
    lines.append(
        "\nPer seed (best fixed scheme, target, its time and steps to it; each method's time ratio (step ratio), `-` "
        "if not reached):\n"
    )
    lines.append("| seed | best fixed | target val R@1 | its time (s) / steps | " + " | ".join(methods) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(methods))
    for s in seeds:
        entry = summary[s]
        cells = [
            "-" if row["ratio"] is None else f"{row['ratio']:.2f} ({row['step_ratio']:.2f})"
            for row in (entry["rows"][m] for m in methods)
        ]
        lines.append(
            f"| {s} | {entry['best_fixed']} | {entry['target']:.1f} | {entry['reference_s']:.0f} / "
            f"{entry['reference_steps']:.0f} | " + " | ".join(cells) + " |"
        )
    lines.append(END)
    parts = []
    met_all = True
    for method in (m for m in methods if m.startswith("meltr")):
        ratios = [summary[s]["rows"][method]["ratio"] for s in seeds]
        reached = [r for r in ratios if r is not None]
        met = len(reached) == len(ratios) and statistics.median(reached) <= 1.1
        met_all &= met if method == "meltr" else True
        label = {"meltr": "default", "meltr_fast": "fast options", "meltr_fast_last1": "fast + last_blocks(1)"}
        parts.append(
            f"{label.get(method, method)}: {_span(reached) if reached else 'never'} "
            f"(reached on {len(reached)}/{len(ratios)} seeds)"
        )
    target_row = (
        f"{TARGET_ROW} MELTR / best fixed, median [min-max] over {len(seeds)} seeds (`{command}`): "
        f"{'; '.join(parts)} | {'yes' if met_all else 'no'} (default) |"
    )
    return "\n".join(lines) + "\n", target_row


def write_doc(section: str, target_row: str, doc: Path) -> None:
    """Splice the section (before the per-step table) and the targets row into the report."""
    from _hypergrad_report import splice_section

    text = splice_section(doc.read_text(), section, START, END)
    lines = [target_row if line.startswith(TARGET_ROW) else line for line in text.splitlines()]
    doc.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds seed .. seed+N-1 (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument(
        "--val-every", type=int, default=8, help="validate after every N optimiser steps of an epoch (default: 8)"
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--out-root", type=Path, default=ROOT / "runs" / "time_to_quality")
    parser.add_argument("--output", type=Path, default=DOC, help="the report to splice the section into")
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from the last results")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides for every method")
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))  # _hypergrad_report's machine()
    import torch

    torch.set_num_threads(1)
    if args.report_only:
        results = json.loads((args.out_root / "results.json").read_text())
    else:
        results = run_all(args)
    command = "python benchmarks/time_to_quality.py" + (f" --seeds {args.seeds}" if args.seeds != 3 else "")
    command += f" --val-every {args.val_every}" if args.val_every != 8 else ""
    command += "".join(f" {o}" for o in results["overrides"])
    section, target_row = report(results, command)
    print(section)
    print(target_row)
    write_doc(section, target_row, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

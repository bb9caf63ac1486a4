"""The paper's analyses of a trained combiner (MELTR Sec. 5.2).

- Fig. 3: ``MELTR(l)`` and ``dMELTR/dl_t`` while one input loss sweeps 0 to 3 and the others stay at their
  averages over training;
- Fig. 4: the per-epoch mean of ``dMELTR/dl_t`` for each task, as logged at every training step;
- the meta signal (:mod:`meltr.analysis.meta_signal`): whether the meta steps helped the primary task on held-out
  batches, and how related successive hypergradients were.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from meltr.combine import LossCombiner


def loss_sweep(
    combiner: LossCombiner, averages: torch.Tensor, low: float = 0.0, high: float = 3.0, points: int = 61
) -> dict[str, dict[str, list[float]]]:
    """Fig. 3: for each task ``t``, ``M(l)`` and ``dM/dl_t`` with ``l_t`` on a grid and the others at ``averages``.

    Returns:
        ``{task: {"loss": grid, "value": M, "derivative": dM/dl_t}}``.
    """
    grid = torch.linspace(low, high, points, dtype=averages.dtype)
    out = {}
    for index, task in enumerate(combiner.tasks):
        rows = averages.expand(points, -1).clone()
        rows[:, index] = grid
        with torch.no_grad():
            values = combiner.combine(rows)
        derivative = combiner.sensitivity(rows)[:, index]
        out[task] = {"loss": grid.tolist(), "value": values.tolist(), "derivative": derivative.tolist()}
    return out


def epoch_sensitivity(steps: list[dict[str, Any]], tasks: tuple[str, ...]) -> dict[int, dict[str, float]]:
    """Fig. 4: the mean of the logged ``sensitivity/<task>`` over each epoch's steps."""
    sums: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in steps:
        for task in tasks:
            value = row.get(f"sensitivity/{task}")
            if isinstance(value, int | float) and math.isfinite(value):
                sums[int(row["epoch"])][task].append(float(value))
    return {epoch: {t: sum(v) / len(v) for t, v in per.items()} for epoch, per in sorted(sums.items())}


def analyze_run(run_dir: str | Path) -> list[Path]:
    """Write ``analysis/fig3.png``, ``fig3.csv``, ``fig4.png``, ``fig4.csv`` for a ``meltr finetune`` run."""
    from meltr._yaml import load as yaml_load
    from meltr.combine import build_combiner
    from meltr.training.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    for name in ("config.yaml", "steps.json", "best.pt"):
        if not (run_dir / name).exists():
            raise ValueError(f"{run_dir}: not a finished meltr finetune run directory (no {name})")
    config = yaml_load((run_dir / "config.yaml").read_text())
    steps = json.loads((run_dir / "steps.json").read_text())
    tasks = tuple(k.removeprefix("loss/") for k in steps[0] if k.startswith("loss/"))
    state = load_checkpoint(run_dir / "best.pt")
    primary = _primary(run_dir, config)
    combiner = build_combiner(config["combiner"], tasks, primary, **config.get("combiner_options", {}))
    combiner.load_state_dict(state["combiner"])
    combiner.eval()
    averages = torch.tensor(
        [_mean([r[f"loss/{t}"] for r in steps if not r.get("skipped")]) for t in tasks], dtype=torch.float32
    )
    folder = run_dir / "analysis"
    folder.mkdir(exist_ok=True)

    sweep = loss_sweep(combiner, averages)
    with (folder / "fig3.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["task", "loss", "meltr", "derivative"])
        for task, curve in sweep.items():
            for row in zip(curve["loss"], curve["value"], curve["derivative"], strict=True):
                writer.writerow([task, *row])
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for task, curve in sweep.items():
        left.plot(curve["loss"], curve["value"], label=task)
        right.plot(curve["loss"], curve["derivative"], label=task)
    left.set(xlabel="input loss l_t (others at their averages)", ylabel="MELTR(l)", title="(a) combined loss")
    right.set(xlabel="input loss l_t (others at their averages)", ylabel="dMELTR/dl_t", title="(b) sensitivity")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    right.legend(fontsize=8)
    figure.suptitle(f"Fig. 3 on {run_dir.name} (primary: {primary})")
    figure.tight_layout()
    figure.savefig(folder / "fig3.png", dpi=110)
    plt.close(figure)

    per_epoch = epoch_sensitivity(steps, tasks)
    with (folder / "fig4.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", *tasks])
        for epoch, values in per_epoch.items():
            writer.writerow([epoch, *(values.get(t, math.nan) for t in tasks)])
    figure, axis = plt.subplots(figsize=(8, 4.2))
    epochs = list(per_epoch)
    for task in tasks:
        axis.plot(epochs, [per_epoch[e].get(task, math.nan) for e in epochs], marker="o", label=task)
    axis.set(xlabel="epoch", ylabel="mean dMELTR/dl_t", title=f"Fig. 4 on {run_dir.name}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "fig4.png", dpi=110)
    plt.close(figure)
    return [folder / n for n in ("fig3.png", "fig3.csv", "fig4.png", "fig4.csv")] + write_meta_signal(steps, folder)


def write_meta_signal(steps: list[dict[str, Any]], folder: Path) -> list[Path]:
    """``meta_signal.json`` and ``meta_signal.txt`` (the summary), and ``meta_signal.png`` when anything was logged:
    the look-ahead gain of each checked meta step and the cosine of successive hypergradients, over steps."""
    from meltr.analysis.meta_signal import describe, meta_signal

    summary = meta_signal(steps)
    (folder / "meta_signal.json").write_text(json.dumps(summary, indent=1))
    (folder / "meta_signal.txt").write_text(describe(summary) + "\n")
    paths = [folder / "meta_signal.json", folder / "meta_signal.txt"]
    series = {
        "look-ahead gain (held-out primary loss before - after)": "meta/lookahead/gain",
        "cosine of successive hypergradients": "meta/hypergrad_cosine_prev",
    }
    if any(isinstance(r.get("meta/scope_cosine"), int | float) for r in steps):
        series["cosine of the scoped to the full hypergradient"] = "meta/scope_cosine"
    if not any(isinstance(r.get(key), int | float) for r in steps for key in series.values()):
        return paths
    figure, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.8))
    for axis, (title, key) in zip(axes, series.items(), strict=True):
        points = [(r["step"], r[key]) for r in steps if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        if points:
            axis.plot(*zip(*points, strict=True), marker=".", linestyle="none", alpha=0.7)
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set(xlabel="step", title=title)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "meta_signal.png", dpi=110)
    plt.close(figure)
    return [*paths, folder / "meta_signal.png"]


def _primary(run_dir: Path, config: dict[str, Any]) -> str:
    """The run's primary task as the run saved it (``run.json``); re-derived for runs written before it existed."""
    from meltr.training.run_directory import read_run_info

    saved = read_run_info(run_dir).get("primary_task")
    if saved:
        return saved
    if config["task"] == "retrieval":
        from meltr.models import build_backbone

        with torch.random.fork_rng(devices=[]):  # a throwaway model only to read what its class declares
            return build_backbone(config["backbone"], "tiny", vocab_size=64).retrieval_loss
    return {"captioning": "decoder", "qa": "qa", "sentiment": "sentiment"}[config["task"]]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else 0.0

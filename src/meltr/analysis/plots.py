"""Plots of a fine-tuning run: training curves and per-task sensitivity over time (PNG, matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(row["step"])
            ys.append(float(value))
    return xs, ys


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_run(run_dir: str | Path, steps: Sequence[dict[str, Any]], tasks: Sequence[str]) -> list[Path]:
    """Write ``plots/curves.png`` (each task's loss and the combined loss) and ``plots/sensitivity.png``."""
    folder = Path(run_dir) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    window = max(1, len(steps) // 30)
    written = []
    for name, prefix, title, ylabel in [
        ("curves.png", "loss/", "Training losses (moving average)", "loss"),
        ("sensitivity.png", "sensitivity/", "Sensitivity dM/dl_t of the combiner (moving average)", "dM / dl_t"),
    ]:
        figure, axis = plt.subplots(figsize=(8, 4.5))
        for task in tasks:
            xs, ys = _series(steps, f"{prefix}{task}")
            if xs:
                axis.plot(xs, _smooth(ys, window), label=task)
        if prefix == "loss/":
            xs, ys = _series(steps, "combined")
            if xs:
                axis.plot(xs, _smooth(ys, window), "k--", label="combined (L_aux)")
        axis.set_xlabel("step")
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.legend(fontsize=8, ncol=2)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
        written.append(folder / name)
    return written


def plot_history(history: Sequence[dict[str, Any]], path: str | Path, title: str = "Pre-training") -> Path:
    """Plot a pre-training history (``meltr pretrain``'s ``history.json``): every pretext loss against the step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = [k for k in history[0] if k not in ("step", "lr", "total")] if history else []
    figure, axis = plt.subplots(figsize=(8, 4.5))
    steps = [row["step"] for row in history]
    for task in tasks:
        axis.plot(steps, [row[task] for row in history], label=task)
    axis.set(xlabel="step", ylabel="loss (batch mean)", title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

"""Choosing a setting on the validation split, with the same budget for every method.

A finished :func:`meltr.recipes.finetune.finetune` run keeps, in its run directory, the validation metrics of every
epoch (``epochs.json``) and which epoch it selected (``results.json``). A setting (a learning rate, say) is chosen by
the selected epoch's validation metric, averaged over the tuning seeds; the test split is never read for a choice.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

Choice = TypeVar("Choice", bound=Hashable)


def validation_score(run_dir: str | Path) -> float:
    """The validation metric (``results.json``'s ``metric``, higher is better) of the epoch the run selected.

    Raises:
        ValueError: the directory holds no finished run (names the file that is missing or incomplete).
    """
    run_dir = Path(run_dir)
    try:
        results = json.loads((run_dir / "results.json").read_text())
        epochs = json.loads((run_dir / "epochs.json").read_text())
        selected = next(e for e in epochs if e["epoch"] == results["best_epoch"])
        return float(selected[f"val/{results['metric']}"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, StopIteration) as error:
        raise ValueError(f"{run_dir}: not a finished finetune run ({error!r}); run it to the end first") from None


def best_choice(scores: Mapping[Choice, Sequence[float]]) -> Choice:
    """The choice with the highest mean validation score; the first listed of equals (so a grid's order breaks ties).

    Raises:
        ValueError: no choice, or a choice without scores.
    """
    if not scores or any(len(values) == 0 for values in scores.values()):
        raise ValueError(f"tuning: every choice needs at least one validation score, got {dict(scores)!r}")
    return max(scores, key=lambda choice: statistics.fmean(scores[choice]))


__all__ = ["best_choice", "validation_score"]

"""Learning-rate schedules."""

from __future__ import annotations

import math


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress)))


LR_SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")


def schedule_factor(kind: str, step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate multiplier at optimiser step ``step`` (0-based) of ``total_steps``.

    ``constant``: 1 after the warm-up. ``linear``: linear warm-up to 1 over ``warmup_steps``, then linear decay to 0
    at ``total_steps`` (BERT's ``warmup_linear``, as UniVL's BertAdam). ``cosine``: the same warm-up, then
    ``(1 + cos(pi * progress)) / 2`` down to 0.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {kind!r}; choose one of: {', '.join(LR_SCHEDULES)}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


__all__ = ["LR_SCHEDULES", "learning_rate_factor", "schedule_factor"]

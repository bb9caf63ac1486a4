"""Loss combiners: task losses -> the one loss the model trains on."""

from meltr.combine.base import COMBINERS, LossCombiner
from meltr.combine.linear import (
    FixedWeights,
    LearnedLinear,
    equal_weight,
    manual,
    single_task,
)
from meltr.combine.meltr import MetaLossTransformer
from meltr.combine.mlp import MLPCombiner


def build_combiner(name: str, tasks, primary_task: str | None = None, **options) -> LossCombiner:
    """Build the combiner registered under ``name`` (see ``COMBINERS.names()``)."""
    return COMBINERS.build(name, tasks, primary_task=primary_task, **options)


__all__ = [
    "COMBINERS",
    "FixedWeights",
    "LearnedLinear",
    "LossCombiner",
    "MLPCombiner",
    "MetaLossTransformer",
    "build_combiner",
    "equal_weight",
    "manual",
    "single_task",
]

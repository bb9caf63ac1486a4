"""meltr: learning to fine-tune video-language foundation models with all of their losses.

The public API: loss combiners (``MetaLossTransformer`` and friends), hypergradient estimators and the bi-level
``AuxiliaryLearner`` (Algorithm 1 of MELTR).
"""

from meltr.combine import (
    COMBINERS,
    FixedWeights,
    LearnedLinear,
    LossCombiner,
    MetaLossTransformer,
    MLPCombiner,
    build_combiner,
)
from meltr.contract import stack_task_losses
from meltr.hypergrad import BACKENDS, ESTIMATORS, build_estimator
from meltr.learner import AuxiliaryLearner, NonFiniteLossWarning, StepStats

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "COMBINERS",
    "ESTIMATORS",
    "AuxiliaryLearner",
    "FixedWeights",
    "LearnedLinear",
    "LossCombiner",
    "MLPCombiner",
    "MetaLossTransformer",
    "NonFiniteLossWarning",
    "StepStats",
    "__version__",
    "build_combiner",
    "build_estimator",
    "stack_task_losses",
]

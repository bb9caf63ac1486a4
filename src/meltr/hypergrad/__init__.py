"""Hypergradient estimators of ``dL_pri/dphi`` (Table 8 of MELTR) and the backends of their mixed term."""

from meltr.hypergrad.backends import BACKENDS
from meltr.hypergrad.estimators import (
    ESTIMATORS,
    ConjugateGradient,
    Identity,
    Neumann,
    Unrolled,
    build_estimator,
    stocbio,
)
from meltr.hypergrad.problem import MetaProblem, primary_objective, regulariser

__all__ = [
    "BACKENDS",
    "ESTIMATORS",
    "ConjugateGradient",
    "Identity",
    "MetaProblem",
    "Neumann",
    "Unrolled",
    "build_estimator",
    "primary_objective",
    "regulariser",
    "stocbio",
]

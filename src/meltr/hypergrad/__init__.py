"""Hypergradient estimators of ``dL_pri/dphi`` (Table 8 of MELTR), the linear solvers they build on and the backends
of their mixed term. Names resolve here, once (``ESTIMATORS``, ``BACKENDS``); everything downstream takes the objects.
"""

from meltr.hypergrad.backends import BACKENDS, Backend, double_backward, finite_difference, jvp
from meltr.hypergrad.estimators import (
    ESTIMATORS,
    ConjugateGradient,
    Estimator,
    Identity,
    Neumann,
    Unrolled,
    build_estimator,
    stocbio,
)
from meltr.hypergrad.problem import MetaProblem, primary_objective, regulariser
from meltr.hypergrad.solvers import solve_cg, solve_neumann

__all__ = [
    "BACKENDS",
    "ESTIMATORS",
    "Backend",
    "ConjugateGradient",
    "Estimator",
    "Identity",
    "MetaProblem",
    "Neumann",
    "Unrolled",
    "build_estimator",
    "double_backward",
    "finite_difference",
    "jvp",
    "primary_objective",
    "regulariser",
    "solve_cg",
    "solve_neumann",
    "stocbio",
]

"""Gradient surgery: methods that read the per-task gradients of a batch and return the update direction.

Registered methods (``SURGERY``): ``none`` (the plain sum), ``realign`` (GR, Algorithm 1 of Wu et al., NeurIPS 2022;
PCGrad for more than two tasks), ``curriculum`` (CL, Algorithm 2 there) and ``both`` (CL then GR). The driver
(:func:`surgery_backward`, :class:`SurgeryStep`) computes per-task gradients from any backbone's ``{task: loss}``,
weighted by any combiner's sensitivity, runs a method and writes ``p.grad``.
"""

from meltr.surgery.base import (
    SURGERY,
    GradientSurgery,
    PlainSum,
    SurgeryResult,
    TaskGradients,
    build_surgery,
    cosine_matrix,
    pairwise_alignment,
)
from meltr.surgery.curriculum import (
    Curriculum,
    GammaSchedule,
    RealignCurriculum,
    alignment,
    curriculum_select,
    sample_alignments,
)
from meltr.surgery.driver import (
    ParameterLayout,
    SurgeryStats,
    SurgeryStep,
    surgery_backward,
    task_gradients,
    write_gradients,
)
from meltr.surgery.realign import (
    Realign,
    realign_coefficients,
    realign_gradients,
    realigned_direction,
)

__all__ = [
    "SURGERY",
    "Curriculum",
    "GammaSchedule",
    "GradientSurgery",
    "ParameterLayout",
    "PlainSum",
    "Realign",
    "RealignCurriculum",
    "SurgeryResult",
    "SurgeryStats",
    "SurgeryStep",
    "TaskGradients",
    "alignment",
    "build_surgery",
    "cosine_matrix",
    "curriculum_select",
    "pairwise_alignment",
    "realign_coefficients",
    "realign_gradients",
    "realigned_direction",
    "sample_alignments",
    "surgery_backward",
    "task_gradients",
    "write_gradients",
]

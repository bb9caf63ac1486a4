"""How well a gradient-surgery curriculum's dropped samples match the samples known to be noisy.

The gradient-based curriculum (CL, Algorithm 2 of "Scaling Multimodal Pre-Training via Cross-Modality Gradient
Harmonization", Wu et al., NeurIPS 2022) leaves out samples whose per-task gradients disagree. On data whose
misaligned pairs are known, three scores say whether it leaves out the right ones: precision and recall of the
dropped set (per event or per clip, :func:`drop_precision_recall`, :func:`clip_drop_scores`) and the area under the
ROC curve of the alignment score as a detector of misalignment, whatever the threshold (:func:`alignment_auc`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DropScores:
    """How well a set of dropped samples matches the misaligned ones.

    Attributes:
        precision: ``|dropped & misaligned| / |dropped|`` (NaN when nothing was dropped).
        recall: ``|dropped & misaligned| / |misaligned|`` (NaN when nothing is misaligned).
        dropped: ``|dropped|``.
        misaligned: ``|misaligned|``.
        true_positives: ``|dropped & misaligned|``.
        total: how many samples were judged.
    """

    precision: float
    recall: float
    dropped: int
    misaligned: int
    true_positives: int
    total: int

    @property
    def base_rate(self) -> float:
        """``|misaligned| / total``: the expected precision of dropping samples at random."""
        return self.misaligned / self.total if self.total else math.nan


def drop_precision_recall(dropped: np.ndarray | Sequence[bool], misaligned: np.ndarray | Sequence[bool]) -> DropScores:
    """Precision and recall of ``dropped`` against ``misaligned``, two boolean masks over the same samples."""
    dropped, misaligned = np.asarray(dropped), np.asarray(misaligned)
    if dropped.shape != misaligned.shape or dropped.ndim != 1:
        raise ValueError(
            f"dropped and misaligned must be 1-D masks of one shape, got {dropped.shape}, {misaligned.shape}"
        )
    if dropped.dtype != np.bool_ or misaligned.dtype != np.bool_:
        raise ValueError(f"dropped and misaligned must be boolean, got {dropped.dtype}, {misaligned.dtype}")
    hits = int((dropped & misaligned).sum())
    n_dropped, n_misaligned = int(dropped.sum()), int(misaligned.sum())
    return DropScores(
        precision=hits / n_dropped if n_dropped else math.nan,
        recall=hits / n_misaligned if n_misaligned else math.nan,
        dropped=n_dropped,
        misaligned=n_misaligned,
        true_positives=hits,
        total=int(dropped.size),
    )


def clip_drop_scores(clip_ids: np.ndarray, dropped: np.ndarray, misaligned_record: np.ndarray) -> DropScores:
    """Clip-level scores: a clip counts as dropped when the curriculum dropped it in more than half of the steps that
    showed it; judged against the world's record over *every* clip of the split (a clip never shown is not
    dropped).

    Args:
        clip_ids: ``[E]`` the clip of each (step, sample) event.
        dropped: ``[E]`` booleans, whether that event was dropped.
        misaligned_record: ``[N]`` booleans, the world's record (``WorldSplit.misaligned``).
    """
    clip_ids, dropped = np.asarray(clip_ids), np.asarray(dropped)
    record = np.asarray(misaligned_record)
    if clip_ids.shape != dropped.shape:
        raise ValueError(f"clip_ids and dropped must have one shape, got {clip_ids.shape}, {dropped.shape}")
    if clip_ids.size and (clip_ids.min() < 0 or clip_ids.max() >= record.size):
        raise ValueError(f"clip_ids must index the record of {record.size} clips")
    shown = np.bincount(clip_ids, minlength=record.size)
    times_dropped = np.bincount(clip_ids, weights=dropped.astype(np.float64), minlength=record.size)
    return drop_precision_recall(times_dropped > shown / 2, record.astype(bool))


def alignment_auc(alignment: np.ndarray, misaligned: np.ndarray) -> float:
    """How well an alignment score ranks aligned samples above misaligned ones, whatever the threshold: the
    probability that a random aligned sample scores higher than a random misaligned one, ties counting half (the
    area under the ROC curve of ``-alignment`` as a detector of misalignment; 0.5 = no better than chance).
    NaN when either group is empty."""
    alignment, misaligned = np.asarray(alignment, dtype=np.float64), np.asarray(misaligned, dtype=bool)
    if alignment.shape != misaligned.shape or alignment.ndim != 1:
        raise ValueError(
            f"alignment and misaligned must be 1-D of one shape, got {alignment.shape}, {misaligned.shape}"
        )
    n_misaligned = int(misaligned.sum())
    n_aligned = misaligned.size - n_misaligned
    if n_aligned == 0 or n_misaligned == 0:
        return math.nan
    _, inverse, counts = np.unique(alignment, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties averaged (Mann-Whitney)
    wins = ranks[~misaligned].sum() - n_aligned * (n_aligned + 1) / 2.0
    return float(wins / (n_aligned * n_misaligned))


__all__ = ["DropScores", "alignment_auc", "clip_drop_scores", "drop_precision_recall"]

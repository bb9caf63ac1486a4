"""A curriculum's dropped samples against the known misaligned ones (meltr.metrics.drops): precision, recall and the
AUC of the alignment score, on hand-built examples."""

import math

import numpy as np
import pytest

from meltr.metrics.drops import alignment_auc, clip_drop_scores, drop_precision_recall


def test_precision_and_recall_of_a_hand_built_drop_set():
    dropped = np.array([True, True, False, False, True, False, False])
    misaligned = np.array([True, False, True, False, True, False, False])
    scores = drop_precision_recall(dropped, misaligned)
    assert (scores.true_positives, scores.dropped, scores.misaligned, scores.total) == (2, 3, 3, 7)
    assert scores.precision == pytest.approx(2 / 3) and scores.recall == pytest.approx(2 / 3)
    assert scores.base_rate == pytest.approx(3 / 7)
    perfect = drop_precision_recall(misaligned, misaligned)
    assert perfect.precision == perfect.recall == 1.0
    nothing = drop_precision_recall(np.zeros(7, dtype=bool), misaligned)
    assert math.isnan(nothing.precision) and nothing.recall == 0.0
    clean = drop_precision_recall(dropped, np.zeros(7, dtype=bool))
    assert clean.precision == 0.0 and math.isnan(clean.recall)


def test_clip_level_scores_count_majority_drops_against_the_whole_record():
    # clip 0 dropped 2/2 times, clip 1 1/2 (not a majority), clip 2 0/1, clip 3 2/3; clip 4 never shown.
    clip_ids = np.array([0, 0, 1, 1, 2, 3, 3, 3])
    dropped = np.array([True, True, True, False, False, True, True, False])
    record = np.array([True, False, False, False, True])  # misaligned: clips 0 and 4
    scores = clip_drop_scores(clip_ids, dropped, record)
    assert (scores.dropped, scores.true_positives, scores.misaligned, scores.total) == (2, 1, 2, 5)
    assert scores.precision == 0.5 and scores.recall == 0.5


def test_the_indicator_auc_of_a_hand_built_example():
    # aligned 0.3, 0.1 vs misaligned 0.2, 0.1: pairs won 1, 1, 0 and one tie (1/2) -> 2.5 / 4
    alignment = np.array([0.3, 0.2, 0.1, 0.1])
    misaligned = np.array([False, True, False, True])
    assert alignment_auc(alignment, misaligned) == pytest.approx(0.625)
    assert alignment_auc(np.array([1.0, 2.0, 3.0]), np.array([True, False, False])) == 1.0
    assert alignment_auc(np.array([1.0, 2.0, 3.0]), np.array([False, True, True])) == 0.0
    assert math.isnan(alignment_auc(alignment, np.zeros(4, dtype=bool)))


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        drop_precision_recall(np.zeros(3, dtype=bool), np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        drop_precision_recall(np.zeros(3), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="index the record"):
        clip_drop_scores(np.array([5]), np.array([True]), np.zeros(3, dtype=bool))

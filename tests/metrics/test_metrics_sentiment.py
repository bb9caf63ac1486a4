"""CMU-MOSI metrics on a known vector; every expected value is worked out by hand below."""

import warnings

import numpy as np
import pytest
import torch

from meltr.metrics import sentiment_metrics, weighted_f1

PREDICTIONS = np.array([2.4, -1.2, 0.3, -0.4, 1.6, 0.0, 0.5, 3.7])
LABELS = np.array([1.8, -0.6, -1.0, 0.0, 2.0, 1.2, -3.0, 2.6])


def test_non_zero_convention_by_hand():
    # Sample 3 (label 0) is left out. Sign (> 0) of prediction / label for the other seven:
    #   0: +/+ ok   1: -/- ok   2: +/- FP   4: +/+ ok   5: 0.0 counts as -/+ FN   6: +/- FP   7: +/+ ok
    # BA = 4/7.
    # Class "+": TP 3 (0, 4, 7), FP 2 (2, 6), FN 1 (5): F1 = 2*3 / (2*3 + 2 + 1) = 2/3, support 4.
    # Class "-": TP 1 (1),       FP 1 (5),    FN 2 (2, 6): F1 = 2*1 / (2*1 + 1 + 2) = 2/5, support 3.
    # Weighted F1 = (4 * 2/3 + 3 * 2/5) / 7 = 58/105.
    scores = sentiment_metrics(PREDICTIONS, LABELS)
    assert scores.binary == "non-zero"
    assert scores.num_binary == 7 and scores.num_samples == 8
    assert scores.binary_accuracy == pytest.approx(100 * 4 / 7)
    assert scores.f1 == pytest.approx(100 * 58 / 105)


def test_non_negative_convention_by_hand():
    # All eight kept, positive means >= 0. Prediction / label:
    #   0: +/+ ok  1: -/- ok  2: +/- FP  3: -/+ FN (label 0 is +)  4: +/+ ok  5: +/+ ok  6: +/- FP  7: +/+ ok
    # BA = 5/8.
    # Class "+": TP 4 (0, 4, 5, 7), FP 2 (2, 6), FN 1 (3): F1 = 8/11, support 5.
    # Class "-": TP 1 (1),          FP 1 (3),    FN 2 (2, 6): F1 = 2/5, support 3.
    # Weighted F1 = (5 * 8/11 + 3 * 2/5) / 8 = 133/220.
    scores = sentiment_metrics(PREDICTIONS, LABELS, binary="non-negative")
    assert scores.num_binary == 8
    assert scores.binary_accuracy == pytest.approx(62.5)
    assert scores.f1 == pytest.approx(100 * 133 / 220)


def test_regression_scores_by_hand():
    # |prediction - label|: 0.6 0.6 1.3 0.4 0.4 1.2 3.5 1.1 -> sum 9.1, MAE 9.1/8.
    # Acc-7: clip to [-3, 3] and round half to even:
    #   predictions -> 2 -1 0 -0 2 0 0 3  (0.5 -> 0, 3.7 -> 3)
    #   labels      -> 2 -1 -1 0 2 1 -3 3
    #   equal at 0, 1, 3, 4, 7 -> 5/8.
    scores = sentiment_metrics(PREDICTIONS, LABELS)
    assert scores.mae == pytest.approx(9.1 / 8)
    assert scores.acc7 == pytest.approx(62.5)
    x, y = PREDICTIONS - PREDICTIONS.mean(), LABELS - LABELS.mean()
    assert scores.corr == pytest.approx(np.sum(x * y) / np.sqrt(np.sum(x**2) * np.sum(y**2)))
    assert scores.corr == pytest.approx(np.corrcoef(PREDICTIONS, LABELS)[0, 1])
    assert set(scores.as_dict()) == {"BA", "F1", "MAE", "Corr", "Acc-7"}


def test_acc7_rounds_half_to_even_like_mult():
    # np.round: 2.5 -> 2, 1.5 -> 2, 0.5 -> 0, -2.5 -> -2. With half-up rounding only 1.5 would match.
    scores = sentiment_metrics([2.5, 1.5, 0.5, -2.5], [2.0, 2.0, 0.0, -2.0])
    assert scores.acc7 == pytest.approx(100.0)


def test_correlation_perfect_and_constant():
    assert sentiment_metrics([1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]).corr == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(sentiment_metrics([1.0, 1.0, 1.0], [-1.0, 0.5, 1.0]).corr)


def test_tensor_column_input_equals_numpy():
    from_tensor = sentiment_metrics(torch.tensor(PREDICTIONS).float().unsqueeze(1), torch.tensor(LABELS))
    from_numpy = sentiment_metrics(PREDICTIONS.astype(np.float32), LABELS)
    assert from_tensor == from_numpy


def test_weighted_f1_by_hand_three_classes():
    labels = ["pos", "pos", "pos", "neg", "neg", "neu"]
    predictions = ["pos", "neg", "pos", "neg", "neu", "neu"]
    # pos: TP 2, FP 0, FN 1 -> 4/5, support 3
    # neg: TP 1, FP 1, FN 1 -> 2/4, support 2
    # neu: TP 1, FP 1, FN 0 -> 2/3, support 1
    expected = (3 * 4 / 5 + 2 * 2 / 4 + 1 * 2 / 3) / 6
    assert weighted_f1(predictions, labels) == pytest.approx(expected)
    # A class that is true but never predicted scores F1 0 and still weighs its support (here class 0) ...
    assert weighted_f1([1, 1, 1], [1, 1, 0]) == pytest.approx((2 * 4 / 5 + 1 * 0) / 3)
    # ... a class that is predicted but never true has support 0 and weighs nothing (class 0, F1_1 = 2/3).
    assert weighted_f1([1, 0], [1, 1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sentiment_metrics([1.0, -1.0], [0.0, 0.0]), "non-negative"),
        (lambda: sentiment_metrics([1.0], [1.0], binary="zero"), "non-zero, non-negative"),
        (lambda: sentiment_metrics(np.ones((2, 2)), [1.0, 1.0]), "predictions must be a vector"),
        (lambda: sentiment_metrics(["a"], [1.0]), "predictions must hold numbers"),
    ],
)
def test_bad_sentiment_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()

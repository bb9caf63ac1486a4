"""Multimodal sentiment analysis on CMU-MOSI: BA, F1, MAE, Corr (Table 6 of MELTR) and 7-class accuracy.

The convention is that of the MulT evaluation code (``eval_mosei_senti``), which UniVL and MELTR report:

- MAE and Pearson correlation over all samples, on the raw regression outputs and labels in [-3, 3].
- BA (binary accuracy) and F1 on the sign of the score, with ``binary=`` choosing what "sign" means:

  - ``"non-zero"`` (default, MulT's ``exclude_zero=True``, the "Non0" column of later work): samples whose
    label is exactly 0 are left out; positive is ``> 0`` for labels and predictions alike (a prediction of
    exactly 0 counts as negative).
  - ``"non-negative"`` (the "Has0" column of later work, e.g. MMSA): every sample is kept; positive is
    ``>= 0`` for labels and predictions alike.

- F1 is the F1 of each of the two classes averaged with weights. The MulT code calls
  ``f1_score(preds, truth, average="weighted")``: predictions in scikit-learn's ``y_true`` place, so its weights
  are the counts of *predicted* positives and negatives. Per-class F1 is symmetric in predictions and labels, only
  the weights differ. Here :func:`weighted_f1` (without scikit-learn) weights by the *labels'* support, scikit-learn's
  ``f1_score(truth, preds, average="weighted")``; the two agree when the predicted class balance equals the labels'
  (``weighted_f1(truth, preds)`` gives MulT's number).
- Acc-7: predictions and labels clipped to [-3, 3] and rounded with ``np.round`` (round half to even:
  2.5 -> 2, 1.5 -> 2, -0.5 -> -0), then compared, over all samples.

BA, F1 and Acc-7 are in percent, MAE and Corr raw, as in Table 6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meltr.metrics._inputs import ArrayLike, check_same_length, float_vector, label_list, percent

BINARY_CONVENTIONS = ("non-zero", "non-negative")


@dataclass(frozen=True)
class SentimentScores:
    """CMU-MOSI scores in the units of Table 6 of MELTR.

    Attributes:
        binary_accuracy: BA in percent, over the samples the binary convention keeps.
        f1: support-weighted binary F1 in percent, over the same samples.
        mae: mean absolute error over all samples.
        corr: Pearson correlation over all samples (NaN if predictions or labels are constant).
        acc7: 7-class accuracy in percent over all samples.
        num_samples: the number of samples.
        num_binary: the number of samples BA and F1 were computed on.
        binary: the binary convention used.
    """

    binary_accuracy: float
    f1: float
    mae: float
    corr: float
    acc7: float
    num_samples: int
    num_binary: int
    binary: str

    def as_dict(self) -> dict[str, float]:
        """``{"BA": ..., "F1": ..., "MAE": ..., "Corr": ..., "Acc-7": ...}`` for loggers."""
        return {
            "BA": self.binary_accuracy,
            "F1": self.f1,
            "MAE": self.mae,
            "Corr": self.corr,
            "Acc-7": self.acc7,
        }


def weighted_f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Support-weighted F1, scikit-learn's ``f1_score(labels, predictions, average="weighted")``.

    For every class ``c`` in the labels or predictions, ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)`` (0 when the
    class is never predicted correctly, as scikit-learn's ``zero_division=0``), and

        ``F1_weighted = sum_c support_c * F1_c / N``  with ``support_c = #{i: labels[i] == c}``.

    Args:
        predictions: predicted class per sample (bools, integers or strings).
        labels: true class per sample, of the same length.

    Returns:
        A fraction in [0, 1].

    Raises:
        ValueError: empty or mismatched inputs, or NaN labels; the message names the argument.
    """
    predicted = label_list(predictions, "predictions")
    expected = label_list(labels, "labels")
    num_samples = check_same_length(predictions=predicted, labels=expected)
    total = 0.0
    for cls in set(predicted) | set(expected):
        predicted_c = np.array([p == cls for p in predicted])
        expected_c = np.array([t == cls for t in expected])
        true_pos = np.sum(predicted_c & expected_c)
        false_pos = np.sum(predicted_c & ~expected_c)
        false_neg = np.sum(~predicted_c & expected_c)
        denominator = 2 * true_pos + false_pos + false_neg
        f1_c = 2 * true_pos / denominator if true_pos > 0 else 0.0
        total += np.sum(expected_c) * f1_c
    return float(total / num_samples)


def sentiment_metrics(predictions: ArrayLike, labels: ArrayLike, *, binary: str = "non-zero") -> SentimentScores:
    """BA, F1, MAE, Corr and Acc-7 of sentiment regression outputs (CMU-MOSI, Table 6 of MELTR).

    Args:
        predictions: predicted sentiment score per sample, ``[N]`` or ``[N, 1]`` (array or tensor).
        labels: ground-truth sentiment in [-3, 3] per sample.
        binary: ``"non-zero"`` (default) or ``"non-negative"``; see the module docstring.

    Returns:
        :class:`SentimentScores`.

    Raises:
        ValueError: empty, mismatched, NaN or infinite inputs (the message names the argument); an unknown
            ``binary``; no non-zero label under ``binary="non-zero"``.
    """
    if binary not in BINARY_CONVENTIONS:
        raise ValueError(f"unknown binary convention {binary!r}; choose one of: {', '.join(BINARY_CONVENTIONS)}")
    predicted = float_vector(predictions, "predictions")
    truth = float_vector(labels, "labels")
    num_samples = check_same_length(predictions=predicted, labels=truth)

    if binary == "non-zero":
        kept = truth != 0
        if not kept.any():
            raise ValueError(
                "labels are all 0: the 'non-zero' binary convention keeps no sample; use binary='non-negative'"
            )
        predicted_positive, truth_positive = predicted[kept] > 0, truth[kept] > 0
    else:
        predicted_positive, truth_positive = predicted >= 0, truth >= 0

    seven_class_pred = np.round(np.clip(predicted, -3.0, 3.0))
    seven_class_truth = np.round(np.clip(truth, -3.0, 3.0))
    return SentimentScores(
        binary_accuracy=percent(np.mean(predicted_positive == truth_positive)),
        f1=percent(weighted_f1(predicted_positive, truth_positive)),
        mae=float(np.mean(np.abs(predicted - truth))),
        corr=_pearson(predicted, truth),
        acc7=percent(np.mean(seven_class_pred == seven_class_truth)),
        num_samples=num_samples,
        num_binary=int(truth_positive.size),
        binary=binary,
    )


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """``cov(x, y) / (std(x) std(y))``; NaN (without numpy's division warning) if either is constant."""
    x_centered, y_centered = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(x_centered**2) * np.sum(y_centered**2))
    if denominator == 0:
        return float("nan")
    return float(np.sum(x_centered * y_centered) / denominator)

"""Shared battery: every metric rejects empty, mismatched and NaN input, naming the bad argument."""

import numpy as np
import pytest

from meltr.metrics import caption_metrics, qa_metrics, retrieval_metrics, sentiment_metrics, weighted_f1

NAN = float("nan")


def captions(hypotheses, references):
    return caption_metrics(hypotheses, references, meteor=False, tokenizer="simple")


EMPTY = {
    "retrieval": (lambda: retrieval_metrics(np.zeros((0, 0))), "sim"),
    "captioning": (lambda: captions([], []), "hypotheses"),
    "qa": (lambda: qa_metrics([], []), "predictions"),
    "sentiment": (lambda: sentiment_metrics([], []), "predictions"),
    "weighted_f1": (lambda: weighted_f1([], []), "predictions"),
}
MISMATCHED = {
    "retrieval": (lambda: retrieval_metrics(np.eye(3), video_of_text=[0, 1]), "video_of_text"),
    "captioning": (lambda: captions(["a b", "c d"], [["a b"]]), "references has 1"),
    "qa": (lambda: qa_metrics([1, 2, 3], [1, 2]), "answers has 2"),
    "qa_types": (lambda: qa_metrics([1, 2], [1, 2], ["x"]), "qa_types has 1"),
    "sentiment": (lambda: sentiment_metrics([1.0, 2.0], [1.0]), "labels has 1"),
    "weighted_f1": (lambda: weighted_f1([1, 0], [1]), "labels has 1"),
}
NOT_A_NUMBER = {
    "retrieval": (lambda: retrieval_metrics(np.array([[1.0, NAN], [0.0, 1.0]])), r"sim holds NaN .*\(0, 1\)"),
    "qa": (lambda: qa_metrics([1.0, NAN], [1.0, 2.0]), r"predictions\[1\] is NaN"),
    "sentiment_labels": (lambda: sentiment_metrics([1.0, 2.0], [NAN, 1.0]), "labels holds NaN"),
    "sentiment_inf": (lambda: sentiment_metrics([np.inf, 2.0], [1.0, 1.0]), "predictions holds NaN or inf"),
    "weighted_f1": (lambda: weighted_f1([1, 0], [NAN, 1]), r"labels\[0\] is NaN"),
}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        *[pytest.param(*case, id=f"empty-{name}") for name, case in EMPTY.items()],
        *[pytest.param(*case, id=f"mismatched-{name}") for name, case in MISMATCHED.items()],
        *[pytest.param(*case, id=f"nan-{name}") for name, case in NOT_A_NUMBER.items()],
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()

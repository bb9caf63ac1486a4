"""QA accuracy on known vectors; the expected percentages are counted by hand."""

import numpy as np
import pytest
import torch

from meltr.metrics import qa_metrics

PREDICTIONS = ["run", "jump", "red", "2", "dog", "eat", "cat", "sit"]
ANSWERS = ["run", "walk", "red", "3", "dog", "eat", "dog", "stand"]
#            ok     wrong   ok     wrong  ok     ok     wrong  wrong     -> 4 of 8 correct
TYPES = ["action", "action", "frame", "frame", "frame", "transition", "open", "open"]
# action 1/2, frame 2/3, transition 1/1, open 0/2


def test_overall_and_per_type_accuracy():
    scores = qa_metrics(PREDICTIONS, ANSWERS, TYPES)
    assert scores.accuracy == pytest.approx(50.0)
    expected = {"action": 50.0, "frame": 200 / 3, "open": 0.0, "transition": 100.0}
    assert scores.per_type == pytest.approx(expected)
    assert list(scores.per_type) == sorted(expected)  # sorted by name, whatever the data order
    assert scores.counts == {"action": 2, "frame": 3, "open": 2, "transition": 1}
    assert scores.num_questions == 8
    assert scores.mean_per_type == pytest.approx((50 + 200 / 3 + 0 + 100) / 4)
    assert scores.as_dict()["acc/frame"] == pytest.approx(200 / 3)


def test_class_indices_from_tensors_and_arrays():
    predicted = torch.tensor([3, 1, 4, 1, 5])
    answers = np.array([3, 1, 4, 0, 0])  # 3 of 5 correct
    scores = qa_metrics(predicted, answers)
    assert scores.accuracy == pytest.approx(60.0)
    assert scores.per_type == {} and scores.counts == {}
    with pytest.raises(ValueError, match="qa_types"):
        _ = scores.mean_per_type


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: qa_metrics([1, 2], ["a", "b"]), "map class indices"),
        (lambda: qa_metrics(["a", 1], ["a", "b"]), "predictions mixes strings"),
        (lambda: qa_metrics(["a"], ["a"], qa_types=[1]), "qa_types"),
        (lambda: qa_metrics(np.ones((2, 2)), [1, 1]), "one-dimensional"),
        (lambda: qa_metrics("abc", "abc"), "single string"),
    ],
)
def test_bad_qa_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()

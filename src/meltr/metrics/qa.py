"""Video question answering: accuracy, overall and per question type (Table 3 of MELTR).

TGIF-QA reports one accuracy per sub-task (Action, Transition, FrameQA; its fourth sub-task, Count, is scored
by mean squared error, not accuracy, and MELTR leaves it out); MSVD-QA reports one accuracy over all its
open-ended questions. A prediction is correct when it equals the answer exactly: answers are class indices
into the answer vocabulary, or strings that the dataset reader has already normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meltr.metrics._inputs import ArrayLike, check_same_length, label_list, percent


@dataclass(frozen=True)
class QAScores:
    """QA accuracy as the papers print it.

    Attributes:
        accuracy: the percentage of all questions answered correctly (micro average).
        per_type: question type -> accuracy in percent over that type's questions, types in sorted order
            (empty without ``qa_types``).
        counts: question type -> number of questions of that type.
        num_questions: the number of questions scored.
    """

    accuracy: float
    per_type: dict[str, float]
    counts: dict[str, int]
    num_questions: int

    @property
    def mean_per_type(self) -> float:
        """The unweighted mean of the per-type accuracies (macro average), in percent."""
        if not self.per_type:
            raise ValueError("no per-type accuracies: pass qa_types to qa_metrics")
        return sum(self.per_type.values()) / len(self.per_type)

    def as_dict(self) -> dict[str, float]:
        """``{"acc": ..., "acc/<type>": ...}`` for loggers."""
        return {"acc": self.accuracy, **{f"acc/{name}": value for name, value in self.per_type.items()}}


def qa_metrics(
    predictions: Sequence[str | int] | ArrayLike,
    answers: Sequence[str | int] | ArrayLike,
    qa_types: Sequence[str] | None = None,
) -> QAScores:
    """Accuracy of predicted answers, overall and per question type.

    ``accuracy = 100 * #{i: predictions[i] == answers[i]} / N``; for a type ``t`` the same over the questions
    with ``qa_types[i] == t``.

    Args:
        predictions: the predicted answer per question: strings, or class indices (list, array or tensor).
        answers: the ground-truth answer per question, of the same kind as ``predictions``.
        qa_types: optional question type per question, e.g. ``"action"``, ``"transition"``, ``"frame"``.

    Returns:
        :class:`QAScores`.

    Raises:
        ValueError: empty inputs, mismatched lengths, NaN labels, strings compared with class indices, or a
            question type that is not a string. The message names the argument.
    """
    predicted = label_list(predictions, "predictions")
    expected = label_list(answers, "answers")
    named = {"predictions": predicted, "answers": expected}
    if qa_types is not None:
        types = label_list(qa_types, "qa_types")
        if not isinstance(types[0], str):
            raise ValueError(f"qa_types must hold type names (strings), got {types[0]!r}")
        named["qa_types"] = types
    num_questions = check_same_length(**named)
    if isinstance(predicted[0], str) != isinstance(expected[0], str):
        raise ValueError(
            f"predictions and answers are of different kinds ({predicted[0]!r} vs {expected[0]!r}): map "
            "class indices through the answer vocabulary so that both are strings, or both indices"
        )

    correct = [p == a for p, a in zip(predicted, expected, strict=True)]
    per_type: dict[str, float] = {}
    counts: dict[str, int] = {}
    if qa_types is not None:
        for name in sorted(set(named["qa_types"])):
            hits = [hit for hit, t in zip(correct, named["qa_types"], strict=True) if t == name]
            counts[name] = len(hits)
            per_type[name] = percent(sum(hits) / len(hits))
    return QAScores(
        accuracy=percent(sum(correct) / num_questions),
        per_type=per_type,
        counts=counts,
        num_questions=num_questions,
    )
